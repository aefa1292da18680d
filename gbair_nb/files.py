"""Writing files so that a reader (or a crash) never sees half of one.

Every file the toolkit writes goes through :func:`write_atomic` (or :func:`atomic_path` for writers that want a path,
such as ``DataFrame.to_csv``): the bytes go to a temporary file in the same folder, are flushed and ``fsync``-ed,
then the temporary file is renamed over the target. A rename within one folder is atomic, so the target holds either
its old content or the whole new one. If writing fails, the temporary file is removed and the old content stays.
"""
from __future__ import annotations

import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["write_atomic", "atomic_path", "figure_bytes", "check_writable"]


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (not possible on Windows; harmless to skip there)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it is fsync-ed and renamed to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was::

        with atomic_path(out / "table.csv") as tmp:
            df.to_csv(tmp, index=False)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` whole or not at all; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def figure_bytes(fig, **savefig_kwargs) -> bytes:
    """A matplotlib figure as PNG bytes (for :func:`write_atomic`, or an image widget)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig_kwargs)
    return buf.getvalue()


def check_writable(folder: str | os.PathLike, *, what: str = "--out") -> Path:
    """Raise a clear error now, before any long work, unless files can be created in ``folder``.

    The folder may not exist yet (it is created later); then its nearest existing parent must be writable.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{what} {folder} exists and is not a directory; give a folder")
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    try:
        fd, name = tempfile.mkstemp(prefix=".gbair_nb-write-test.", dir=probe)
    except OSError as e:
        raise PermissionError(f"{what} {folder}: cannot create files in {probe} ({e.strerror}); "
                              "choose a folder you can write to") from None
    os.close(fd)
    os.unlink(name)
    return folder

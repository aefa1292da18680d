"""Writing files so that a reader (or a crash) never sees half of one.

Every file the toolkit writes goes through :func:`write_atomic` (or :func:`atomic_path` for writers that want a path,
such as ``DataFrame.to_csv``): the bytes go to a temporary file in the same folder, are flushed and ``fsync``-ed,
then the temporary file is renamed over the target. A rename within one folder is atomic, so the target holds either
its old content or the whole new one. If writing fails, the temporary file is removed and the old content stays.

A result made of several files (a run folder, the influence tables) is written with :func:`staged_folder`: every
file goes to a hidden folder first, and only when all of them are there do they replace the old set, the file that
marks the set complete (``run.json``) last.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

__all__ = ["write_atomic", "write_csv", "atomic_path", "staged_folder", "figure_bytes", "check_writable"]


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


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0600); a written file gets the usual mode
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


def write_csv(path: str | os.PathLike, table) -> Path:
    """Write a DataFrame as CSV, atomically (:func:`atomic_path`), every text field quoted.

    pandas quotes a field only when it holds a comma, a quote or ``\\n``; a tweet with a bare carriage return
    (``\\r``, 1,564 of the built-in tweets) is written unquoted, and ``pd.read_csv`` then reads it back as two rows.
    Quoting every non-numeric field (``csv.QUOTE_NONNUMERIC``) reads back the same table: numbers, booleans and
    missing values keep their types.
    """
    import csv

    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, quoting=csv.QUOTE_NONNUMERIC)
    return Path(path)


@contextmanager
def staged_folder(folder: str | os.PathLike, *, replaces: Sequence[str] = (), last: str | None = None
                  ) -> Iterator[Path]:
    """Yield a fresh hidden folder inside ``folder``; on a clean exit its files replace the old set in ``folder``.

    Args:
        folder: where the result goes (created if needed). Files in it that ``replaces`` does not match are left
            alone (a user's notes, other results).
        replaces: glob patterns, relative to ``folder``, of the old set (e.g. ``["run.json", "checkpoints/ckpt_*"]``);
            the old files they match are removed when the new set moves in, so no stale file stays beside it.
        last: the file that says "this set is complete" (``run.json``): removed first, moved in last, so a reader
            that finds it never sees a mix of two sets, even if the move is cut short.

    On an exception in the block (a failed write, Ctrl-C) the hidden folder is removed and ``folder`` keeps its old
    files untouched::

        with staged_folder(out, replaces=["report.json", "recovery_curve.png"], last="report.json") as stage:
            write_atomic(stage / "report.json", text)
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        yield stage
        new = sorted(p.relative_to(stage) for p in stage.rglob("*") if p.is_file())
        if last is not None:
            (folder / last).unlink(missing_ok=True)
        for pattern in replaces:
            for old in folder.glob(pattern):
                if old.is_file() and stage not in old.parents:
                    old.unlink()
        for rel in sorted(new, key=lambda r: str(r) == last):  # the marker last
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, folder / rel)
        for sub in {(folder / rel).parent for rel in new}:
            _fsync_dir(sub)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


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

"""An append-only journal file: one JSON object per line, every line on disk before the call that wrote it returns.

:class:`gbair_nb.relabel.RelabelSession` keeps a person's decisions in one (its module docstring gives the entries).
This module is only the file: how a line is saved so that no crash, and no second session on the same file, can
lose or mix decisions.

- **Append**: under the lock, check that the file is still the size this journal left it at, write the line,
  ``fsync``. A write that fails half-way is cut off again, so the next append never joins half a line.
- **Lock**: every read and write holds an advisory lock on ``<journal>.lock`` next to it (the ``filelock`` package:
  ``flock`` on Linux and macOS, ``msvcrt`` locking on Windows). It is held for one append or one replay
  (milliseconds) and released when the call returns or its process dies, so the ``.lock`` file that stays behind is
  harmless. On a network file system without working ``flock``, keep journals on a local disk.
- **Create**: a new journal is created exclusively (``O_EXCL``) with its header as the only line; a second creator
  replays the first one's file instead.
- **Open**: read every line under the lock and hand the entries to the caller's ``replay``; only once that accepted
  them is a last line that a crash cut off (no newline, not valid JSON) dropped from the file, with a warning.
  Blank lines are skipped and line numbers stay those of the file.
"""
from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout

__all__ = ["Journal", "JournalError", "LOCK_TIMEOUT_S", "encode_line"]

LOCK_TIMEOUT_S = 60.0  # a session holds the journal's lock for one append or one replay: milliseconds, not minutes


class JournalError(Exception):
    """A relabel journal that cannot be replayed safely (malformed line, other dataset, changed by another session)."""


def encode_line(entry: dict) -> bytes:
    """One journal line: the entry as UTF-8 JSON (non-ASCII kept readable) and a newline."""
    return (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")


def _write_all(f, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[f.write(view):]
    os.fsync(f.fileno())


class Journal:
    """The file at ``path``: :meth:`open` it once (create or replay), then :meth:`append` entries.

    ``size`` and ``lines`` are how far this journal has read or written the file; an append refuses to write if the
    file's size is not ``size`` (someone else wrote to it meanwhile).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock = FileLock(str(self.lock_path))  # the timeout is given at each acquire
        self.size = 0
        self.lines = 0

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the journal's advisory lock (``<journal>.lock``) around one read or write of the journal."""
        try:
            self._lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout:
            raise JournalError(
                f"journal {self.path} has been locked by another session for {LOCK_TIMEOUT_S:g} s (lock file "
                f"{self.lock_path}); a session holds it only while saving or opening, so that process is stuck: "
                f"stop it, then try again") from None
        try:
            yield
        finally:
            self._lock.release()

    def append(self, entry: dict) -> None:
        """Append one line and fsync it; refuse (:class:`JournalError`, nothing written) if someone else wrote to the
        journal since this one read it."""
        data = encode_line(entry)
        with self.locked():
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = -1
            if size != self.size:
                raise JournalError(
                    f"journal {self.path} was changed by someone else (size {size} bytes, this session wrote up to "
                    f"{self.size}); another session is probably open on it. Create a new RelabelSession (and "
                    f"widget) to reload it; this one is stale and made no change.")
            with open(self.path, "ab", buffering=0) as f:
                try:
                    _write_all(f, data)
                except BaseException:
                    os.ftruncate(f.fileno(), self.size)  # never leave half a line for the next append to join
                    raise
        self.size += len(data)
        self.lines += 1

    def open(self, header: bytes, replay: Callable[[list[tuple[int, dict]]], None], *,
             stacklevel: int = 2) -> bool:
        """Create the journal with ``header`` as its only line, or replay it -- all under the lock.

        ``replay`` gets ``[(line number, entry), ...]`` (the header first) and raises :class:`JournalError` to
        refuse the file; a refused file is left exactly as it was. Returns True when the journal was (re)created,
        False when an existing one was replayed. ``stacklevel`` is that of a warning :meth:`open` itself would
        give (2: the line that called it); a repair's warning points there.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.locked():
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                if self._create(header):
                    return True
                data = self.path.read_bytes()  # created meanwhile by someone not taking the lock: replay theirs
            if not data:
                self._create(header, replace=True)  # a crash right after creating it
                return True
            return self._replay(data, header, replay, stacklevel)

    def _create(self, header: bytes, *, replace: bool = False) -> bool:
        """Write the header as the journal's only line (under the lock). A new file is created exclusively:
        returns False, writing nothing, when it already exists. ``replace=True`` rewrites an existing file that has
        no complete header (a crash while it was being created)."""
        flags = os.O_WRONLY | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(self.path, (flags | os.O_TRUNC) if replace else (flags | os.O_CREAT | os.O_EXCL), 0o666)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "wb", buffering=0) as f:
                _write_all(f, header)
        except BaseException:
            if not replace:  # ours alone (created exclusively, under the lock): leave no half-made journal
                self.path.unlink(missing_ok=True)
            raise
        try:  # make the new directory entry durable too (not possible on Windows; harmless to skip)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass
        self.size = len(header)
        self.lines = 1
        return True

    def _replay(self, data: bytes, header: bytes, replay, stacklevel: int) -> bool:
        chunks = data.split(b"\n")
        tail = chunks.pop()  # b"" when the file ends with a newline
        tail_entry = None
        if tail.strip():
            try:
                tail_entry = json.loads(tail.decode("utf-8"))
                if not isinstance(tail_entry, dict):
                    raise ValueError
            except ValueError:
                tail_entry = None
        entries = []
        for k, chunk in enumerate(chunks, start=1):
            if chunk.strip():  # blank lines (a hand edit) are skipped; line numbers stay those of the file
                entries.append((k, self._parse(chunk, k)))
        if tail_entry is not None:
            entries.append((len(chunks) + 1, tail_entry))
        if not entries:  # only a torn header: nothing was ever decided
            warnings.warn(f"journal {self.path}: its only line (the header) was cut off mid-write; starting it "
                          f"again", RuntimeWarning, stacklevel=stacklevel + 1)
            self._create(header, replace=True)
            return True
        replay(entries)
        # the file is valid: now repair the end on disk so later appends are clean (we hold the lock, so a line
        # without its newline was cut off by a crash, never one that is still being written)
        if tail.strip() and tail_entry is None:
            warnings.warn(f"journal {self.path}: the last line (line {len(chunks) + 1}, {len(tail)} bytes) was cut "
                          f"off mid-write (a crash while saving); it was dropped, every earlier decision is kept",
                          RuntimeWarning, stacklevel=stacklevel + 1)
            with open(self.path, "r+b") as f:
                f.truncate(len(data) - len(tail))
                f.flush()
                os.fsync(f.fileno())
            lines = len(chunks)
        elif tail:
            with open(self.path, "ab") as f:  # complete last entry (or blanks) missing only its newline
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
            lines = len(chunks) + 1
        else:
            lines = len(chunks)
        self.size = self.path.stat().st_size
        self.lines = lines
        return False

    def _parse(self, chunk: bytes, line: int) -> dict:
        try:
            e = json.loads(chunk.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise JournalError(f"journal {self.path}, line {line}: not valid JSON ({err}); "
                               f"content starts {chunk[:60]!r}. Fix or delete that line to resume.") from None
        if not isinstance(e, dict) or "type" not in e:
            raise JournalError(f"journal {self.path}, line {line}: expected a JSON object with a 'type', got {e!r:.80}")
        return e

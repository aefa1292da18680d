"""Trainings kept for reuse: the same data, labels, settings and code give the same run, so train it once.

The main job trains two models before any scorer runs: the clean reference (true labels) and round 0 (the corrupted
labels, shared by every scorer). Both depend only on their inputs, so :func:`cached_train` keeps each in a folder
named by a fingerprint of

- the training data *with its labels* (ids, texts, labels) and the validation and test data they are judged on,
- the training settings (every :class:`~gbair_nb.train.TrainConfig` field, the seed included),
- the code: a hash of every source file of gbair_nb, and the torch / transformers / peft versions,

and a second ``recover`` of the same scenario (another scorer, more rounds) loads instead of training. Any change of
input, even an edited line of the package, gives another fingerprint, hence a new training: a cache hit always
returns what a fresh training would (the loaded run equals the trained one float for float: the final trainable
tensors are the last checkpoint's). The folder is ``$GBAIR_CACHE_DIR/runs`` or the user cache (platformdirs); delete
it to start afresh, or pass ``cache=False``.

The cache is never pruned by itself. Each entry records the code version that wrote it (``cache.json``); an entry of
another version can never be hit again, and :func:`prune_cache` (``python -m gbair_nb cache --prune``) removes those.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from .files import write_atomic

__all__ = ["cache_root", "code_version", "run_fingerprint", "cached_train", "CacheEntry", "cache_entries",
           "prune_cache"]

MARK = "cache.json"  # {"code": code_version(), "what": ..., "created": ...}, written after the run is saved
ENTRY_NAME = re.compile(r"^[0-9a-f]{24}$")  # run_fingerprint's names: nothing else in the folder is ever touched
RECENT_SECONDS = 600  # an entry changed this recently may be being written: pruning leaves it alone

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """``$GBAIR_CACHE_DIR/runs``, else the user cache folder's ``runs`` (platformdirs)."""
    from .llm import cache_dir

    return cache_dir() / "runs"


@lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 (16 hex digits) of every ``.py`` file of the installed gbair_nb, with the versions of torch,
    transformers and peft: a different code base never shares a cached training."""
    import peft
    import torch
    import transformers

    root = Path(__file__).resolve().parent
    h = hashlib.sha256(f"{torch.__version__}|{transformers.__version__}|{peft.__version__}".encode())
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def run_fingerprint(train_ds, config, *, judged_on=()) -> str:
    """The key of one training: training data with labels, the datasets it is evaluated on, settings, code."""
    blob = {"train": train_ds.fingerprint(), "judged_on": [d.fingerprint() for d in judged_on],
            "config": asdict(config), "code": code_version()}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cached_train(train_ds, config, *, val=None, judged_on=(), step=None, cache: bool | str | os.PathLike = True,
                 verbose: bool = False, what: str = "model"):
    """:func:`gbair_nb.train.train` — or the same run loaded from the cache. Returns ``(run, hit)``.

    ``judged_on``: datasets whose identity belongs in the key (what the run's metrics will be taken on).
    ``cache``: True (the default folder), a folder, or False (always train, keep nothing). ``step`` is the training
    step (only the single-process default may use the cache).
    """
    from .runs import load_run
    from .train import forward_backward, train

    step = step or forward_backward
    if cache is False or step is not forward_backward:
        return train(train_ds, val=val, config=config, step=step, verbose=verbose), False
    folder = (cache_root() if cache is True else Path(cache)) / run_fingerprint(train_ds, config,
                                                                                judged_on=judged_on)
    if (folder / "run.json").is_file():
        try:
            run = load_run(folder, train_ds)
            log.info(f"{what}: reused the training cached in {folder}")
            return run, True
        except Exception as e:  # a damaged cache entry is retrained, never trusted
            log.warning(f"{what}: the cached training in {folder} cannot be used ({e}); training again")
    run = train(train_ds, val=val, config=config, step=step, out_dir=folder, verbose=verbose)
    write_atomic(folder / MARK, json.dumps({"code": code_version(), "what": what,
                                            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
    return run, False


@dataclass(frozen=True)
class CacheEntry:
    """One cached training: its folder, size, the code version that wrote it (None: written before entries recorded
    it, so by older code), whether its ``run.json`` is there, and when any of its files last changed."""

    path: Path
    bytes: int
    code: str | None
    complete: bool
    modified: float

    def reusable(self) -> bool:
        """Could :func:`cached_train` of the installed gbair_nb ever load it? Same code version, and complete."""
        return self.complete and self.code == code_version()


def cache_entries(root: str | os.PathLike | None = None) -> list[CacheEntry]:
    """The entries of the cache folder (default :func:`cache_root`), oldest first; other folders are ignored."""
    root = Path(root) if root is not None else cache_root()
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not (folder.is_dir() and ENTRY_NAME.match(folder.name)):
            continue
        files = [f for f in folder.rglob("*") if f.is_file()]
        try:
            code = json.loads((folder / MARK).read_text()).get("code")
        except (OSError, ValueError, AttributeError):
            code = None
        out.append(CacheEntry(folder, sum(f.stat().st_size for f in files), code, (folder / "run.json").is_file(),
                              max([folder.stat().st_mtime, *(f.stat().st_mtime for f in files)])))
    return sorted(out, key=lambda e: e.modified)


def prune_cache(*, everything: bool = False, root: str | os.PathLike | None = None, dry_run: bool = False,
                entries: list[CacheEntry] | None = None) -> tuple[list[CacheEntry], list[CacheEntry]]:
    """Remove the entries no run of the installed gbair_nb can reuse (another code version, or incomplete), or
    with ``everything`` all of them. Entries changed in the last ``RECENT_SECONDS`` are kept: a training in another
    process may be writing one. Returns (removed, kept because recent); ``dry_run`` removes nothing. ``entries``: a
    listing :func:`cache_entries` just made of ``root`` (the CLI shows it first), instead of walking the folder again."""
    now, removed, recent = time.time(), [], []
    for entry in cache_entries(root) if entries is None else entries:
        if not everything and entry.reusable():
            continue
        if now - entry.modified < RECENT_SECONDS:
            recent.append(entry)
            continue
        if not dry_run:
            shutil.rmtree(entry.path)
        removed.append(entry)
    return removed, recent

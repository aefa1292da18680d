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
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

__all__ = ["cache_root", "code_version", "run_fingerprint", "cached_train"]

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
    return run, False

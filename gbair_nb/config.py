"""Quick mode, device choice, seeding and offline setup — the few global switches the toolkit has.

Nothing here runs at import time. Notebooks and the CLI call :func:`setup` once.
"""
from __future__ import annotations

import os
import random

import numpy as np

QUICK_ENV = "GBAIR_QUICK"


def quick_mode(value: bool | None = None) -> bool:
    """Whether quick mode is on: sizes shrink so every job fits a CI run on 2 CPU cores.

    Quick mode is one switch, the environment variable ``GBAIR_QUICK`` ("1" = on). Pass ``value`` to set it
    for this process (and the processes it starts); call with no argument to read it.
    """
    if value is not None:
        os.environ[QUICK_ENV] = "1" if value else "0"
    return os.environ.get(QUICK_ENV, "0").strip().lower() in {"1", "true", "yes", "on"}


def device() -> str:
    """``"cuda"`` when a GPU is visible to torch, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch so a run repeats exactly on the same machine."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(*, quick: bool | None = None, threads: int | None = None, quiet: bool = True) -> dict:
    """Prepare the process for offline work and return a summary of the environment.

    - sets ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1``: built-in models load from site-packages only;
    - optionally switches quick mode on or off and limits torch's CPU threads;
    - quiets transformers' advisory warnings when ``quiet``.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if quick is not None:
        quick_mode(quick)
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if quiet:
        import transformers

        transformers.logging.set_verbosity_error()
    return {
        "quick": quick_mode(),
        "device": device(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }

"""Quick mode, device choice, seeding and an optional process setup — the few global switches the toolkit has.

Nothing here runs at import time, and nothing in the toolkit changes the process on its own: the built-in model and
data are read from installed packages with ``local_files_only=True``, so no environment variable is needed for that.
Notebooks and the CLI call :func:`setup` once; it changes only what it is asked to.
"""
from __future__ import annotations

import contextlib
import os
import random
from typing import Iterator

import numpy as np

QUICK_ENV = "GBAIR_QUICK"
DEVICE_ENV = "GBAIR_DEVICE"


def quick_mode(value: bool | None = None) -> bool:
    """Whether quick mode is on: sizes shrink so every job fits a CI run on 2 CPU cores.

    Quick mode is one switch, the environment variable ``GBAIR_QUICK`` ("1" = on). Pass ``value`` to set it
    for this process (and the processes it starts); call with no argument to read it.
    """
    if value is not None:
        os.environ[QUICK_ENV] = "1" if value else "0"
    return os.environ.get(QUICK_ENV, "0").strip().lower() in {"1", "true", "yes", "on"}


def device() -> str:
    """Where models train and score: ``"cuda"`` when a GPU is visible to torch, else ``"cpu"``.

    ``GBAIR_DEVICE=cpu`` keeps everything on the CPU on a machine with a GPU (a GPU busy with other work, or a run
    that must repeat a CPU result exactly: GPU and CPU arithmetic differ in the last bits, and a loop's later rounds
    can follow them); ``GBAIR_DEVICE=cuda`` insists on the GPU and says so when there is none.
    """
    import torch

    forced = os.environ.get(DEVICE_ENV, "").strip().lower()
    if forced not in ("", "cpu", "cuda"):
        raise ValueError(f"{DEVICE_ENV}={forced!r}: use 'cpu' or 'cuda' (or leave it unset: a GPU when torch sees one)")
    if forced == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{DEVICE_ENV}=cuda, but torch sees no GPU here (torch {torch.__version__}); unset it "
                         "to run on the CPU")
    return forced or ("cuda" if torch.cuda.is_available() else "cpu")


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch so a run repeats exactly on the same machine."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(*, quick: bool | None = None, threads: int | None = None, offline: bool = False,
          quiet: bool = False) -> dict:
    """Prepare this process as asked and return a summary of the environment.

    With no arguments it changes nothing and only reports. Each option changes the whole process, for the code
    that runs after it too (a notebook's own ``from_pretrained`` calls included):

    - ``quick``: switch quick mode on or off (:func:`quick_mode`);
    - ``threads``: limit torch's CPU threads;
    - ``offline=True``: set ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1``, so *nothing* in this process
      reaches the Hugging Face Hub (the toolkit itself never needs it);
    - ``quiet=True``: transformers logs errors only and shows no progress bars, and the tokenizers' fork warning
      is off (``TOKENIZERS_PARALLELISM=false`` unless set); the CLI does this.
    """
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if quick is not None:
        quick_mode(quick)
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if quiet:
        from transformers.utils import logging as hf_logging

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    return {
        "quick": quick_mode(),
        "device": device(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Inside: transformers logs errors only and shows no progress bars; on leaving, both are exactly as before.

    The toolkit wraps the loading of its *built-in* assets in this (their load report always lists the new,
    untrained classifier head, which tells a learner nothing). It is not thread-safe: another thread loading a
    model at the same moment is quiet too.
    """
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars, hub_bars_off = hf_logging.is_progress_bar_enabled(), hub_utils.are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if hub_bars_off:
            hub_utils.disable_progress_bars()
        else:
            hub_utils.enable_progress_bars()

"""The command-line options the commands share, and the argument types behind them (one-line errors).

The data options (``--dataset`` … ``--seed``), the PET method options (``--method``, ``--gmt``), how split sizes
are chosen for a dataset of any size, and a time estimate before long work.
"""
from __future__ import annotations

import argparse

from ..pet import METHODS

__all__ = ["rate", "precision_gate", "positive_int", "seed_int", "keep_ratio", "METHOD_CHOICES",
           "add_method_arguments", "method_overrides", "add_data_arguments", "QUICK_SIZES", "FULL_SIZES", "SIZE_KEYS",
           "choose_sizes", "SECONDS_PER_EXAMPLE_EPOCH", "estimate_seconds", "estimate_note"]

# quick: 300 training examples (57 steps of TrainConfig.quick) learn SMS spam; 200 collapsed to "always ham"
QUICK_SIZES = {"n_train": 300, "n_val": 100, "n_test": 200}
FULL_SIZES = {"n_train": 1500, "n_val": 300, "n_test": 1000}


def rate(text: str) -> float:
    """argparse type: a corruption rate in [0, 1)."""
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= p < 1:
        raise argparse.ArgumentTypeError(f"a corruption rate must be in [0, 1); got {p}")
    return p


def precision_gate(text: str) -> float | None:
    """argparse type: a precision in [0, 1], or ``none`` for no gate."""
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}; give a precision in [0, 1], or 'none' for no "
                                         "gate") from None
    if not 0 <= p <= 1:
        raise argparse.ArgumentTypeError(f"a precision must be in [0, 1]; got {p} (or 'none' for no gate)")
    return p


def positive_int(text: str) -> int:
    """argparse type: a whole number ≥ 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {n}")
    return n


def seed_int(text: str) -> int:
    """argparse type: a seed NumPy accepts, in [0, 2**32)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= n < 2**32:
        raise argparse.ArgumentTypeError(f"a seed must be in [0, {2**32 - 1}]; got {n}")
    return n


def keep_ratio(text: str) -> float:
    """argparse type: the fraction of entries gradient-mask tuning updates, in (0, 1]."""
    try:
        r = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < r <= 1:
        raise argparse.ArgumentTypeError(f"the fraction of entries GMT updates must be in (0, 1]; got {r} "
                                         "(the GMT paper's mask ratio 0.8 is --gmt 0.2)")
    return r


METHOD_CHOICES = list(METHODS)


def add_method_arguments(g) -> None:
    """``--method`` and ``--gmt`` (shared by ``train`` and ``recover``)."""
    g.add_argument("--method", default="prompt_tuning", choices=METHOD_CHOICES,
                   help="PET method (default prompt_tuning); each has its own learning rate (train.METHOD_DEFAULTS)")
    g.add_argument("--gmt", type=keep_ratio, default=None, metavar="KEEP",
                   help="gradient-mask tuning: update only this fraction of each tensor's entries, those with the "
                        "largest gradients (e.g. 0.2; with --method full or lora)")


def method_overrides(args: argparse.Namespace) -> dict:
    """TrainConfig overrides from ``--gmt``."""
    return {} if args.gmt is None else {"gmt": {"keep_ratio": args.gmt}}


def add_data_arguments(parser: argparse.ArgumentParser, *, sizes_from: str | None = None) -> None:
    """``--dataset``, ``--text-col``, ``--label-col``, split sizes and ``--seed`` (shared by data-using commands).

    ``sizes_from``: where the split sizes default from, when not this module's FULL/QUICK sizes (help text only).
    """
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default="sms_spam",
                   help="sms_spam (default), tweets, tweets_binary, or a .csv/.tsv file")
    g.add_argument("--text-col", default="text", help="text column of your file (default: text)")
    g.add_argument("--label-col", default="label", help="label column of your file (default: label)")
    sizes = sizes_from or (f"default {'/'.join(str(v) for v in FULL_SIZES.values())} for train/val/test, quick "
                           f"{'/'.join(str(v) for v in QUICK_SIZES.values())}; a file too small for them: 60/20/20%%")
    g.add_argument("--n-train", type=positive_int, default=None, help=f"training examples ({sizes})")
    g.add_argument("--n-val", type=positive_int, default=None, help="validation examples")
    g.add_argument("--n-test", type=positive_int, default=None, help="test examples")
    g.add_argument("--seed", type=seed_int, default=0,
                   help="seeds the split, the corruption and training, in [0, 2**32) (default 0)")


SIZE_KEYS = ("n_train", "n_val", "n_test")


def choose_sizes(given: dict, n: int, defaults: dict) -> tuple[dict, str]:
    """Split sizes for a dataset of ``n`` examples, and a note saying what was chosen and how to change it.

    ``given``: ``n_train``/``n_val``/``n_test`` from the command line (None = not given). Sizes not given take
    ``defaults`` (counts: they cap a big file at the sizes the built-in data uses, so a job takes the time it takes
    there). When nothing is given and the defaults do not fit, a small file is split 60/20/20.
    """
    chosen = {k: (given.get(k) if given.get(k) is not None else defaults[k]) for k in SIZE_KEYS}
    if all(given.get(k) is None for k in SIZE_KEYS) and sum(defaults[k] for k in SIZE_KEYS) > n:
        chosen = {"n_train": 0.6, "n_val": 0.2, "n_test": 0.2}
        why = f"60/20/20% of its {n:,} examples (too few for the default {'/'.join(map(str, defaults.values()))})"
    elif all(given.get(k) is None for k in SIZE_KEYS):
        why = f"{'/'.join(str(chosen[k]) for k in SIZE_KEYS)} of its {n:,} examples (the default sizes)"
    else:
        why = f"{'/'.join(str(chosen[k]) for k in SIZE_KEYS)} of its {n:,} examples"
    return chosen, f"sizes: train/val/test {why}, stratified by class; change with --n-train/--n-val/--n-test"


# Seconds per training example per epoch for MiniLM at max length 64, batch 16, on a 2-core CPU (1 thread),
# validation pass included: the "PET methods" table of docs/benchmarks.md (s/epoch ÷ 400 training examples).
SECONDS_PER_EXAMPLE_EPOCH = {"head_only": 0.019, "prompt_tuning": 0.047, "lora": 0.035, "gift": 0.040,
                             "full": 0.057}


def estimate_seconds(n_train: int, config, *, trainings: float = 1) -> float | None:
    """Rough wall-clock seconds of ``trainings`` trainings of ``config`` on ``n_train`` examples (MiniLM only).

    Scaled from :data:`SECONDS_PER_EXAMPLE_EPOCH` by epochs and input length (GMT adds ~45%); None for other
    backbones. An estimate: the machine, its load and the texts' lengths move it by a factor of 2 or more.
    """
    per = SECONDS_PER_EXAMPLE_EPOCH.get(config.method)
    if config.backbone != "minilm" or per is None:
        return None
    per *= config.max_length / 64 * (1.45 if config.gmt else 1.0)
    return trainings * n_train * config.epochs * per


def estimate_note(seconds: float | None, what: str, *, gpu: bool | None = None) -> str | None:
    """"estimate: …" in minutes or seconds, or None when there is no estimate.

    The figures are a 2-core CPU's. On a GPU (``gpu``; default: whether the toolkit will use one) the note says so
    and gives the one GPU figure measured (docs/benchmarks.md, "On a GPU"): the default full-mode job, ~18 min
    estimated here, took 38 s on one H200.
    """
    if seconds is None:
        return None
    amount = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{max(seconds, 1):.0f} s"
    note = (f"estimate: about {amount} for {what} on a quiet 2-core CPU (scaled from measured MiniLM speeds; "
            "an estimate: a busy or slower machine takes longer)")
    if gpu is None:
        from ..config import device

        gpu = device() == "cuda"
    if gpu:
        note += ("; this run uses a GPU and takes far less (one H200 did the default job, ~18 min here, in 38 s; "
                 "GBAIR_DEVICE=cpu to stay on the CPU)")
    return note

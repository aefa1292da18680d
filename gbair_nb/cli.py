"""``python -m gbair_nb <subcommand> …`` — the toolkit from a shell.

Subcommands are registered in :data:`SUBCOMMANDS`: name → :class:`Subcommand` (a help line and the module that
provides ``add_arguments(parser)`` and ``run(args) -> int``). A subcommand's module is imported only when that
subcommand runs, so ``--help`` stays fast and a module with heavy imports costs nothing until it is used.

Bad input (unknown dataset, missing file or column, a rate out of range, a folder that cannot be written, …) ends
with one line on stderr, ``error: …``, and exit code 2 — never a traceback, and before any long work starts.
Progress notes (sizes chosen, a time estimate, which file was read) go to the ``gbair_nb`` logger, which
:func:`main` shows on stderr unless ``--quiet``; results go to stdout.

``train`` writes into ``--out DIR`` (all files together once training has finished; an interrupted or failed run
leaves the folder as it was; a new run replaces the old run's files there and nothing else):

- ``run.json`` (config, per-epoch loss and validation metrics, checkpoint list), ``timing.json``,
  ``checkpoints/ckpt_NN.safetensors`` (the trainable tensors and the learning rates in force) — from
  :func:`gbair_nb.train.train`;
- ``data.json``: how the data was built (dataset as given and resolved, columns, split sizes, seed, corruption, each
  split's fingerprint), enough to rebuild it with :func:`load_run_data`;
- ``splits.csv``: ``id, split`` for every example drawn;
- ``corruption.csv``: the training set's ``id, label, noisy_label, is_corrupted`` (+ class names);
- ``test_metrics.json`` and ``test_predictions.csv``: the final model on the held-out test split.

The folder's format and its checks are :mod:`gbair_nb.runs`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["SUBCOMMANDS", "Subcommand", "main", "build_parser", "load_run_data", "QUICK_SIZES", "FULL_SIZES",
           "choose_sizes", "confuser_probs", "estimate_seconds", "seed_int"]

log = logging.getLogger(__name__)

# quick: 300 training examples (57 steps of TrainConfig.quick) learn SMS spam; 200 collapsed to "always ham"
QUICK_SIZES = {"n_train": 300, "n_val": 100, "n_test": 200}
FULL_SIZES = {"n_train": 1500, "n_val": 300, "n_test": 1000}


@dataclass(frozen=True)
class Subcommand:
    """A registered subcommand: ``module`` provides ``add_arguments(parser)`` and ``run(args) -> int``."""

    help: str
    module: str
    add_arguments: str = "add_arguments"
    run: str = "run"

    def load(self):
        mod = importlib.import_module(self.module)
        return getattr(mod, self.add_arguments), getattr(mod, self.run)


# ---------------------------------------------------------------------------------- subcommand registration point
# One line per subcommand. A module joins the CLI by defining
#     def add_arguments(parser: argparse.ArgumentParser) -> None: ...
#     def run(args: argparse.Namespace) -> int: ...            # 0 = success
# and adding an entry here. Raise DataError / PetError / FingerprintError / ValueError / FileNotFoundError for
# bad input: main() turns them into one `error: …` line and exit code 2.
SUBCOMMANDS: dict[str, Subcommand] = {
    "train": Subcommand("train a prompt-tuned classifier on (optionally corrupted) labels; save checkpoints",
                        "gbair_nb.cli", "train_add_arguments", "train_run"),
    "recover": Subcommand("G-BAIR: corrupt, then flag, relabel and retrain for a few rounds; write a report",
                          "gbair_nb.report"),
    "influence": Subcommand("TracIn of a train run: proponents, opponents, self-influence", "gbair_nb.influence_cli"),
}

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError,
                                                IsADirectoryError, PermissionError, FileExistsError)
# DataError, PetError and FingerprintError are ValueErrors; they are listed by name in _user_errors() too.


def _user_errors() -> tuple[type[BaseException], ...]:
    errors = list(USER_ERRORS)
    for module, name in [("gbair_nb.data", "DataError"), ("gbair_nb.pet", "PetError"),
                         ("gbair_nb.train", "FingerprintError")]:
        mod = sys.modules.get(module)  # only if already imported: no import just to catch an error
        if mod is not None and hasattr(mod, name):
            errors.append(getattr(mod, name))
    return tuple(errors)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: …``, exit 2) instead of usage + message."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def invoked_as(argv0: str | None = None) -> str:
    """The command the user typed, for usage lines: ``gbair-nb`` (the console script) or ``python -m gbair_nb``."""
    name = Path(sys.argv[0] if argv0 is None else argv0).stem  # stem: Windows' launcher is gbair-nb.exe
    return "gbair-nb" if name == "gbair-nb" else "python -m gbair_nb"  # -m, torchrun, a test runner: the module


def build_parser(command: str | None = None, *, prog: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser. Only ``command``'s own arguments are added (its module is imported for that)."""
    parser = _Parser(prog=prog or invoked_as(),
                     description="gbair_nb: prompt tuning, TracIn influence and G-BAIR label recovery, offline.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"gbair_nb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, spec in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=spec.help, description=spec.help)
        if name == command:
            add_arguments, run = spec.load()
            add_arguments(p)
            p.set_defaults(_run=run)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m gbair_nb``: returns the exit code (0 ok, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logger = logging.getLogger("gbair_nb")  # the package's progress notes, on stderr while this command runs
    handler, level = logging.StreamHandler(sys.stderr), logger.level
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# ------------------------------------------------------------------------------------------------------- train
def _rate(text: str) -> float:
    """argparse type: a corruption rate in [0, 1)."""
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= p < 1:
        raise argparse.ArgumentTypeError(f"a corruption rate must be in [0, 1); got {p}")
    return p


def _positive_int(text: str) -> int:
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


def _keep_ratio(text: str) -> float:
    try:
        r = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < r <= 1:
        raise argparse.ArgumentTypeError(f"the fraction of entries GMT updates must be in (0, 1]; got {r} "
                                         "(the GMT paper's mask ratio 0.8 is --gmt 0.2)")
    return r


METHOD_CHOICES = ["prompt_tuning", "head_only", "lora", "gift", "full"]


def add_method_arguments(g) -> None:
    """``--method`` and ``--gmt`` (shared by ``train`` and ``recover``)."""
    g.add_argument("--method", default="prompt_tuning", choices=METHOD_CHOICES,
                   help="PET method (default prompt_tuning); each has its own learning rate (train.METHOD_DEFAULTS)")
    g.add_argument("--gmt", type=_keep_ratio, default=None, metavar="KEEP",
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
    g.add_argument("--n-train", type=_positive_int, default=None, help=f"training examples ({sizes})")
    g.add_argument("--n-val", type=_positive_int, default=None, help="validation examples")
    g.add_argument("--n-test", type=_positive_int, default=None, help="test examples")
    g.add_argument("--seed", type=seed_int, default=0,
                   help="seeds the split, the corruption and training, in [0, 2**32) (default 0)")


def train_add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    g = parser.add_argument_group("label corruption")
    g.add_argument("--corrupt", type=_rate, default=0.0, metavar="P",
                   help="fraction of training labels to corrupt, in [0, 1) (default 0)")
    g.add_argument("--mode", default="uniform", choices=["uniform", "class_conditional", "confusable"],
                   help="uniform: to a random other class; class_conditional: SOURCE → TARGET only (binary "
                        "default: class 1 → 0); confusable: to the most likely wrong class of a TF-IDF + "
                        "logistic-regression model (out-of-fold)")
    g.add_argument("--source", default=None, help="class_conditional: the class to corrupt (name or id)")
    g.add_argument("--target", default=None, help="class_conditional: the class it becomes (name or id)")
    g = parser.add_argument_group("training")
    add_method_arguments(g)
    g.add_argument("--epochs", type=_positive_int, default=None, help="epochs (default: TrainConfig's)")
    g.add_argument("--quick", action="store_true",
                   help="quick mode (also GBAIR_QUICK=1): small sizes and short training, for a first look or CI")
    g.add_argument("--quiet", action="store_true", help="no progress bar or notes")
    g.add_argument("--out", required=True, type=Path, help="directory for the run record, checkpoints and metrics")
    g.add_argument("--backbone", default="minilm", help=argparse.SUPPRESS)  # "tiny" for tests


def _class_id(value: str | None, class_names: list[str], what: str) -> int | None:
    if value is None:
        return None
    if value in class_names:
        return class_names.index(value)
    if value.lstrip("-").isdigit() and 0 <= int(value) < len(class_names):
        return int(value)
    from .data import DataError

    raise DataError(f"--{what} {value!r} is not a class of this dataset; use one of {class_names} "
                    f"or an id in [0, {len(class_names) - 1}]")


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


def estimate_note(seconds: float | None, what: str) -> str | None:
    """"estimate: …" in minutes or seconds, or None when there is no estimate."""
    if seconds is None:
        return None
    amount = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{max(seconds, 1):.0f} s"
    return (f"estimate: about {amount} for {what} on a quiet 2-core CPU (scaled from measured MiniLM speeds; "
            "an estimate: a busy or slower machine takes longer)")


def confuser_probs(texts: list[str], labels, seed: int):
    """(n, num_classes) out-of-fold class probabilities of a TF-IDF + logistic-regression model.

    The 'confusable' corruption moves a label to the wrong class this quick model finds most likely; out-of-fold,
    so no example is scored by a model that saw it.
    """
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    folds = int(min(5, np.bincount(labels).min()))
    model = make_pipeline(TfidfVectorizer(min_df=1, ngram_range=(1, 2)), LogisticRegression(max_iter=1000))
    if folds < 2:
        return model.fit(texts, labels).predict_proba(texts)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, texts, labels, cv=cv, method="predict_proba")


def _dataset_spec(dataset: str) -> dict:
    """How ``--dataset`` is recorded: as given, and for a file also its resolved path (so a run folder works from
    any working directory)."""
    from .data import DATASETS

    spec = {"dataset": str(dataset)}
    if str(dataset) not in DATASETS:
        spec["dataset_path"] = str(Path(dataset).resolve())
    return spec


def build_data(args: argparse.Namespace, quick: bool):
    """Load, split and corrupt as the arguments say: returns ``(splits, corruption, spec)``."""
    from .data import corrupt, load_dataset, split

    ds = load_dataset(args.dataset, text_col=args.text_col, label_col=args.label_col)
    sizes, note = choose_sizes({k: getattr(args, k) for k in SIZE_KEYS}, len(ds), QUICK_SIZES if quick else FULL_SIZES)
    splits = split(ds, **sizes, seed=args.seed)
    train_ds = splits.train
    mode = getattr(args, "mode", "uniform")
    p = getattr(args, "corrupt", 0.0)
    source = _class_id(getattr(args, "source", None), ds.class_names, "source")
    target = _class_id(getattr(args, "target", None), ds.class_names, "target")
    probs = confuser_probs(train_ds.texts, train_ds.labels, args.seed) if (mode == "confusable" and p > 0) else None
    corruption = corrupt(train_ds.labels, p=p, mode=mode, seed=args.seed, num_classes=ds.num_classes,
                         source=source, target=target, probs=probs)
    spec = {**_dataset_spec(args.dataset), "text_col": args.text_col, "label_col": args.label_col,
            "class_names": ds.class_names, "sizes": sizes, "split_sizes": splits.sizes(), "seed": args.seed,
            "corruption": {**corruption.summary(), "source": source, "target": target,
                           "confuser": "tfidf+logreg out-of-fold" if probs is not None else None}}
    log.info(f"data: {args.dataset}; {note}")
    return splits, corruption, spec


def load_run_data(out_dir: str | Path):
    """Rebuild ``(splits, corruption)`` of a ``train`` run, every file checked (:func:`gbair_nb.runs.read_run_data`).

    ``splits.train`` carries the *original* labels; train on ``splits.train.with_labels(corruption.noisy_labels)``
    (that is the data the run's checkpoints were trained on).
    """
    from .runs import read_run_data

    out = Path(out_dir)
    if not (out / "data.json").exists():
        raise FileNotFoundError(f"{out} has no data.json: run `python -m gbair_nb train --out {out}` first")
    data = read_run_data(out)
    return data.splits, data.corruption


def train_run(args: argparse.Namespace) -> int:
    from .config import quick_mode
    from .files import check_writable

    quick = quick_mode(True) if args.quick else quick_mode()
    out: Path = check_writable(args.out)
    splits, corruption, spec = build_data(args, quick)  # bad data fails here, before torch is imported

    from .config import setup
    from .files import atomic_path, staged_folder, write_atomic
    from .runs import RUN_FILES, write_data_files
    from .train import TrainConfig, evaluate, train

    setup(quiet=True)
    overrides = {"seed": args.seed, "backbone": args.backbone, **method_overrides(args)}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    config = TrainConfig.for_method(args.method, quick=quick, **overrides)
    noisy_train = splits.train.with_labels(corruption.noisy_labels)
    log.info(f"data: {splits.sizes()}, corrupted {corruption.n_corrupted} of {len(noisy_train)} training labels "
             f"({corruption.mode}); quick mode {'on' if quick else 'off'}")
    note = estimate_note(estimate_seconds(len(noisy_train), config), f"{config.epochs} epochs on "
                                                                     f"{len(noisy_train):,} examples")
    if note:
        log.info(note)
    with staged_folder(out, replaces=RUN_FILES, last="run.json") as stage:  # all files, or the old run untouched
        write_data_files(stage, splits, corruption, spec)
        run = train(noisy_train, val=splits.val, config=config, out_dir=stage, verbose=not args.quiet)
        metrics = evaluate(run, splits.test)
        write_atomic(stage / "test_metrics.json", json.dumps({
            **metrics.as_dict(), "n_test": len(splits.test),
            "report": {k: {m: float(v) for m, v in row.items()} for k, row in metrics.report.T.to_dict().items()},
        }, indent=2))
        import pandas as pd

        preds = pd.DataFrame({"id": splits.test.ids, "label": splits.test.labels, "pred": metrics.preds})
        for c, name in enumerate(splits.test.class_names):
            preds[f"p_{name}"] = metrics.probs[:, c]
        with atomic_path(stage / "test_predictions.csv") as tmp:
            preds.to_csv(tmp, index=False)
    secs = sum(run.timing["epoch_seconds"])
    print(f"test accuracy {metrics.accuracy:.3f}  macro-F1 {metrics.macro_f1:.3f}  "
          f"({len(run.checkpoints)} checkpoints, {secs:.0f} s training) → {out}")
    return 0

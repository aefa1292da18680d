"""``python -m gbair_nb <subcommand> …`` — the toolkit from a shell.

Subcommands are registered in :data:`SUBCOMMANDS`: name → :class:`Subcommand` (a help line and the module that
provides ``add_arguments(parser)`` and ``run(args) -> int``). A subcommand's module is imported only when that
subcommand runs, so ``--help`` stays fast and a module with heavy imports costs nothing until it is used.

Bad input (unknown dataset, missing file or column, a rate out of range, …) ends with one line on stderr,
``error: …``, and exit code 2 — never a traceback.

``train`` writes into ``--out DIR``:

- ``run.json`` (config, per-epoch loss and validation metrics, checkpoint list), ``timing.json``,
  ``checkpoints/ckpt_NN.pt`` (the trainable tensors and the learning rates in force) — from :func:`gbair_nb.train.train`;
- ``data.json``: how the data was built (dataset, columns, split sizes, seed, corruption), enough to rebuild it
  with :func:`load_run_data`;
- ``splits.csv``: ``id, split`` for every example drawn;
- ``corruption.csv``: the training set's ``id, label, noisy_label, is_corrupted`` (+ class names);
- ``test_metrics.json`` and ``test_predictions.csv``: the final model on the held-out test split.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["SUBCOMMANDS", "Subcommand", "main", "build_parser", "load_run_data", "QUICK_SIZES", "FULL_SIZES"]

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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser. Only ``command``'s own arguments are added (its module is imported for that)."""
    parser = _Parser(prog="python -m gbair_nb",
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
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------------------------- train
def _rate(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= p < 1:
        raise argparse.ArgumentTypeError(f"a corruption rate must be in [0, 1); got {p}")
    return p


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {n}")
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
    g.add_argument("--n-train", type=_positive_int, default=None,
                   help=sizes_from or f"training examples (default {FULL_SIZES['n_train']}, quick {QUICK_SIZES['n_train']})")
    g.add_argument("--n-val", type=_positive_int, default=None,
                   help=sizes_from or f"validation examples (default {FULL_SIZES['n_val']}, quick {QUICK_SIZES['n_val']})")
    g.add_argument("--n-test", type=_positive_int, default=None,
                   help=sizes_from or f"test examples (default {FULL_SIZES['n_test']}, quick {QUICK_SIZES['n_test']})")
    g.add_argument("--seed", type=int, default=0, help="seeds the split, the corruption and training (default 0)")


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
    g.add_argument("--quiet", action="store_true", help="no progress bar")
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


def _sizes(args: argparse.Namespace, n: int, quick: bool) -> dict:
    defaults = QUICK_SIZES if quick else FULL_SIZES
    given = {k: getattr(args, k) for k in defaults}
    if all(v is None for v in given.values()) and sum(defaults.values()) > n:
        return {"n_train": 0.6, "n_val": 0.2, "n_test": 0.2}  # a small file: fractions instead
    return {k: (v if v is not None else defaults[k]) for k, v in given.items()}


def _confuser_probs(texts: list[str], labels, seed: int):
    """Out-of-fold class probabilities of a TF-IDF + logistic-regression model (the 'confusable' model)."""
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


def build_data(args: argparse.Namespace, quick: bool):
    """Load, split and corrupt as the arguments say: returns ``(splits, corruption, spec)``."""
    from .data import corrupt, load_dataset, split

    ds = load_dataset(args.dataset, text_col=args.text_col, label_col=args.label_col)
    sizes = _sizes(args, len(ds), quick)
    splits = split(ds, **sizes, seed=args.seed)
    train_ds = splits.train
    mode = getattr(args, "mode", "uniform")
    p = getattr(args, "corrupt", 0.0)
    source = _class_id(getattr(args, "source", None), ds.class_names, "source")
    target = _class_id(getattr(args, "target", None), ds.class_names, "target")
    probs = _confuser_probs(train_ds.texts, train_ds.labels, args.seed) if (mode == "confusable" and p > 0) else None
    corruption = corrupt(train_ds.labels, p=p, mode=mode, seed=args.seed, num_classes=ds.num_classes,
                         source=source, target=target, probs=probs)
    spec = {"dataset": str(args.dataset), "text_col": args.text_col, "label_col": args.label_col,
            "class_names": ds.class_names, "sizes": sizes, "split_sizes": splits.sizes(), "seed": args.seed,
            "corruption": {**corruption.summary(), "source": source, "target": target,
                           "confuser": "tfidf+logreg out-of-fold" if probs is not None else None}}
    return splits, corruption, spec


def _write_data_files(out: Path, splits, corruption, spec: dict) -> None:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    (out / "data.json").write_text(json.dumps(spec, indent=2))
    parts = [pd.DataFrame({"id": s.ids, "split": name}) for name, s in
             [("train", splits.train), ("val", splits.val), ("test", splits.test)]]
    pd.concat(parts, ignore_index=True).to_csv(out / "splits.csv", index=False)
    names = splits.train.class_names
    pd.DataFrame({
        "id": splits.train.ids,
        "label": corruption.labels,
        "noisy_label": corruption.noisy_labels,
        "is_corrupted": corruption.is_corrupted,
        "label_name": [names[i] for i in corruption.labels],
        "noisy_label_name": [names[i] for i in corruption.noisy_labels],
    }).to_csv(out / "corruption.csv", index=False)


def load_run_data(out_dir: str | Path):
    """Rebuild ``(splits, corruption)`` of a ``train`` run from its ``data.json`` and ``corruption.csv``.

    ``splits.train`` carries the *original* labels; train on ``splits.train.with_labels(corruption.noisy_labels)``
    (that is the data the run's checkpoints were trained on).
    """
    import numpy as np
    import pandas as pd

    from .data import Corruption, DataError, load_dataset, split

    out = Path(out_dir)
    if not (out / "data.json").exists():
        raise FileNotFoundError(f"{out} has no data.json: run `python -m gbair_nb train --out {out}` first")
    spec = json.loads((out / "data.json").read_text())
    ds = load_dataset(spec["dataset"], text_col=spec["text_col"], label_col=spec["label_col"])
    splits = split(ds, **spec["sizes"], seed=spec["seed"])
    table = pd.read_csv(out / "corruption.csv")
    if not np.array_equal(table["id"].to_numpy(), splits.train.ids):
        raise DataError(f"the data of {out} has changed since training: the training ids no longer match")
    c = spec["corruption"]
    corruption = Corruption(labels=table["label"].to_numpy(np.int64),
                            noisy_labels=table["noisy_label"].to_numpy(np.int64),
                            is_corrupted=table["is_corrupted"].to_numpy(bool), mode=c["mode"], p=c["p"])
    return splits, corruption


def train_run(args: argparse.Namespace) -> int:
    from .config import quick_mode

    quick = quick_mode(True) if args.quick else quick_mode()
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a directory")
    splits, corruption, spec = build_data(args, quick)  # bad data fails here, before torch is imported

    from .config import setup
    from .train import TrainConfig, evaluate, train

    setup(quiet=True)
    overrides = {"seed": args.seed, "backbone": args.backbone, **method_overrides(args)}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    config = TrainConfig.for_method(args.method, quick=quick, **overrides)
    for old in (out / "checkpoints").glob("ckpt_*.pt") if (out / "checkpoints").is_dir() else []:
        old.unlink()  # a previous run in the same folder
    _write_data_files(out, splits, corruption, spec)
    noisy_train = splits.train.with_labels(corruption.noisy_labels)
    print(f"data: {spec['dataset']} {splits.sizes()}, corrupted {corruption.n_corrupted} of "
          f"{len(noisy_train)} training labels ({corruption.mode}); quick mode {'on' if quick else 'off'}",
          file=sys.stderr)
    run = train(noisy_train, val=splits.val, config=config, out_dir=out, verbose=not args.quiet)
    metrics = evaluate(run, splits.test)
    (out / "test_metrics.json").write_text(json.dumps({
        **metrics.as_dict(), "n_test": len(splits.test),
        "report": {k: {m: float(v) for m, v in row.items()} for k, row in metrics.report.T.to_dict().items()},
    }, indent=2))
    import pandas as pd

    preds = pd.DataFrame({"id": splits.test.ids, "label": splits.test.labels, "pred": metrics.preds})
    for c, name in enumerate(splits.test.class_names):
        preds[f"p_{name}"] = metrics.probs[:, c]
    preds.to_csv(out / "test_predictions.csv", index=False)
    secs = sum(run.timing["epoch_seconds"])
    print(f"test accuracy {metrics.accuracy:.3f}  macro-F1 {metrics.macro_f1:.3f}  "
          f"({len(run.checkpoints)} checkpoints, {secs:.0f} s training) → {out}")
    return 0

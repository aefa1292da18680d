"""``train``: train a PET model on (optionally corrupted) labels and write a run folder.

Writes into ``--out DIR`` (all files together once training has finished; an interrupted or failed run leaves the
folder as it was; a new run replaces the old run's files there and nothing else): ``run.json``, ``timing.json``,
``checkpoints/ckpt_NN.safetensors``, ``data.json``, ``splits.csv``, ``corruption.csv``, ``test_metrics.json``,
``test_predictions.csv`` — the format and its checks are :mod:`gbair_nb.runs`.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .args import (FULL_SIZES, QUICK_SIZES, SIZE_KEYS, add_data_arguments, add_method_arguments, choose_sizes,
                   estimate_note, estimate_seconds, method_overrides, positive_int, rate)

__all__ = ["add_arguments", "run", "build_data"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    g = parser.add_argument_group("label corruption")
    g.add_argument("--corrupt", type=rate, default=0.0, metavar="P",
                   help="fraction of training labels to corrupt, in [0, 1) (default 0)")
    g.add_argument("--mode", default="uniform", choices=["uniform", "class_conditional", "confusable"],
                   help="uniform: to a random other class; class_conditional: SOURCE → TARGET only (binary "
                        "default: class 1 → 0); confusable: to the most likely wrong class of a TF-IDF + "
                        "logistic-regression model (out-of-fold)")
    g.add_argument("--source", default=None, help="class_conditional: the class to corrupt (name or id)")
    g.add_argument("--target", default=None, help="class_conditional: the class it becomes (name or id)")
    g = parser.add_argument_group("training")
    add_method_arguments(g)
    g.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: TrainConfig's)")
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
    from ..data import DataError

    raise DataError(f"--{what} {value!r} is not a class of this dataset; use one of {class_names} "
                    f"or an id in [0, {len(class_names) - 1}]")


def _dataset_spec(dataset: str) -> dict:
    """How ``--dataset`` is recorded: as given, and for a file also its resolved path (so a run folder works from
    any working directory)."""
    from ..data import DATASETS

    spec = {"dataset": str(dataset)}
    if str(dataset) not in DATASETS:
        spec["dataset_path"] = str(Path(dataset).resolve())
    return spec


def build_data(args: argparse.Namespace, quick: bool):
    """Load, split and corrupt as the arguments say: returns ``(splits, corruption, spec)``."""
    from ..data import confuser_probs, corrupt, load_dataset, split

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


def run(args: argparse.Namespace) -> int:
    from ..config import quick_mode
    from ..files import check_writable

    quick = quick_mode(True) if args.quick else quick_mode()
    out: Path = check_writable(args.out)
    splits, corruption, spec = build_data(args, quick)  # bad data fails here, before torch is imported

    from ..config import setup
    from ..files import staged_folder, write_atomic, write_csv
    from ..runs import RUN_FILES, write_data_files
    from ..train import TrainConfig, evaluate, train

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
        write_csv(stage / "test_predictions.csv", preds)
    secs = sum(run.timing["epoch_seconds"])
    print(f"test accuracy {metrics.accuracy:.3f}  macro-F1 {metrics.macro_f1:.3f}  "
          f"({len(run.checkpoints)} checkpoints, {secs:.0f} s training) → {out}")
    return 0

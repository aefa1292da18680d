"""``influence``: TracIn scores of a ``train`` run, written as CSV files.

Reads a folder written by ``python -m gbair_nb train --out DIR`` (``run.json``, ``checkpoints/``, ``data.json``,
``splits.csv``, ``corruption.csv``), rebuilds the data and the model, checks everything the folder claims
(:mod:`gbair_nb.runs`: the splits, the corruption table, each checkpoint's step, learning rate, fingerprint and
digest) and that the checkpoints were trained on exactly these (noisy) training labels, and writes into ``--out``
(the four files together, once all are computed; a failure leaves an older set there untouched):

- ``proponents.csv`` / ``opponents.csv``: the top ``k`` training examples for every validation or test example
  (``--on``), one row per (example, rank). Columns ``test_id, test_text, test_label, test_pred, train_id,
  train_text, train_label`` (the *given*, possibly noisy, label the model learned from), ``train_true_label,
  is_corrupted, score, rank, variant, checkpoint``. Proponents: score > 0, training on the example lowered the
  test example's loss, rank 1 = most positive. Opponents: most negative first. ``checkpoint`` is ``all`` (the sum
  over every checkpoint) or the index of the one checkpoint used (``--checkpoints last``); with ``variant`` it makes
  the table the input :class:`gbair_nb.widgets.InfluenceExplorer` expects.
- ``self_influence.csv``: every training example, most suspect first — ``id, text, noisy_label, label,
  is_corrupted, self_influence, rank`` (rank 1 = highest self-influence = most likely mislabeled). Always the dot
  variant: under ``cosine`` every gradient has unit length and self-influence is the same for every example.
- ``influence.json``: the arguments, sizes, the dataset read, timing and how well self-influence ranks the
  corrupted labels (:func:`gbair_nb.metrics.detection_metrics`; the truth is known because the run corrupted the
  labels itself).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .args import positive_int

__all__ = ["add_arguments", "run", "OUTPUT_FILES", "self_influence_table"]

OUTPUT_FILES = ("proponents.csv", "opponents.csv", "self_influence.csv", "influence.json")
_RUN_FILES = ("run.json", "data.json", "splits.csv", "corruption.csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, type=Path, metavar="DIR",
                        help="a folder written by `python -m gbair_nb train --out DIR`")
    parser.add_argument("--on", default="test", choices=["val", "test"],
                        help="whose proponents/opponents to find: the run's validation or test split (default test)")
    parser.add_argument("--top-k", type=positive_int, default=5, metavar="K",
                        help="proponents and opponents kept per example (default 5)")
    parser.add_argument("--variant", default="dot", choices=["dot", "cosine"],
                        help="dot: raw gradient products (Pruthi et al., default); cosine: gradients normalised "
                             "per checkpoint (proponents/opponents only; self-influence is always dot)")
    parser.add_argument("--checkpoints", default="all", choices=["all", "last"],
                        help="sum over every saved checkpoint (TracInCP, default) or use only the last")
    parser.add_argument("--project", type=positive_int, default=None, metavar="D",
                        help="scores from random projections of the gradients to D dimensions (default: exact)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="examples per gradient batch")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory for the CSV files")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _check_run_dir(run_dir: Path) -> None:
    """Fail before torch is imported when the folder is not a train run."""
    if not run_dir.exists():
        raise FileNotFoundError(f"--run {run_dir} does not exist: train first "
                                f"(python -m gbair_nb train --out {run_dir})")
    if not run_dir.is_dir():
        raise NotADirectoryError(f"--run {run_dir} is not a directory; give the folder `train --out` wrote")
    missing = [f for f in _RUN_FILES if not (run_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"--run {run_dir} is not a train run: it has no {', '.join(missing)} "
                                f"(python -m gbair_nb train --out DIR writes them)")
    from ..runs import checkpoint_path, read_record

    record = read_record(run_dir)
    if not record["checkpoints"]:
        raise ValueError(f"--run {run_dir} saved no checkpoints; TracIn needs at least one")
    absent = [c["file"] for c in record["checkpoints"] if not checkpoint_path(run_dir, c["file"]).is_file()]
    if absent:
        raise FileNotFoundError(f"--run {run_dir}: checkpoint file(s) missing: {absent[:3]} "
                                f"(expected under {run_dir / 'checkpoints'}); train again into an empty folder")


TABLE_COLUMNS = ["test_id", "test_text", "test_label", "test_pred", "train_id", "train_text", "train_label",
                 "train_true_label", "is_corrupted", "score", "rank", "variant", "checkpoint"]


def self_influence_table(train_ds, corruption, scores):
    """Every training example with its self-influence, most suspect (rank 1) first."""
    import numpy as np
    import pandas as pd

    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(scores), dtype=np.int64)
    rank[order] = np.arange(1, len(scores) + 1)
    df = pd.DataFrame({"id": train_ds.ids, "text": train_ds.texts, "noisy_label": corruption.noisy_labels,
                       "label": corruption.labels, "is_corrupted": corruption.is_corrupted,
                       "self_influence": scores, "rank": rank})
    return df.iloc[order].reset_index(drop=True)


def run(args: argparse.Namespace) -> int:
    from ..files import check_writable
    from ..runs import read_run_data

    run_dir: Path = args.run
    _check_run_dir(run_dir)
    out: Path = check_writable(args.out)
    data = read_run_data(run_dir)  # bad or changed data fails here, before torch is imported
    splits, corruption = data.splits, data.corruption
    noisy_train = splits.train.with_labels(corruption.noisy_labels)  # what the checkpoints were trained on
    on_ds = splits.val if args.on == "val" else splits.test
    if len(on_ds) == 0:
        raise ValueError(f"the run's {args.on} split is empty; use --on {'test' if args.on == 'val' else 'val'}")

    from ..config import setup

    setup(quiet=True)
    from ..explain import influence_table
    from ..influence import self_influence
    from ..metrics import detection_metrics
    from ..runs import load_run

    t0 = time.perf_counter()
    r = load_run(run_dir, noisy_train)  # every checkpoint checked; FingerprintError unless these are its labels
    opts = dict(checkpoints_used=args.checkpoints, batch_size=args.batch_size, max_length=r.config.max_length,
                project=args.project, verbose=not args.quiet)
    t1 = time.perf_counter()
    table = influence_table(r.model, r.tokenizer, r.checkpoints, noisy_train, on_ds, k=args.top_k,
                            variants=(args.variant,), is_corrupted=corruption.is_corrupted, **opts)
    t2 = time.perf_counter()
    scores = self_influence(r.model, r.tokenizer, r.checkpoints, noisy_train, variant="dot", **opts)
    t3 = time.perf_counter()

    if args.checkpoints == "last":  # the one checkpoint used, by its position
        table["checkpoint"] = len(r.checkpoints) - 1
    table["train_true_label"] = table["train_id"].map(dict(zip(noisy_train.ids.tolist(), corruption.labels.tolist())))
    prop, opp = (table[table["role"] == role][TABLE_COLUMNS].reset_index(drop=True)
                 for role in ("proponent", "opponent"))
    self_table = self_influence_table(noisy_train, corruption, scores)
    detection = detection_metrics(scores, corruption.is_corrupted)
    summary = {
        "run": str(run_dir), "dataset": data.dataset, "on": args.on, "top_k": args.top_k, "variant": args.variant,
        "checkpoints": args.checkpoints, "n_checkpoints_used": len(r.checkpoints) if args.checkpoints == "all" else 1,
        "project": args.project,
        "n_train": len(noisy_train), f"n_{args.on}": len(on_ds), "fingerprint": r.record["data"]["fingerprint"],
        "class_names": list(noisy_train.class_names),
        "self_influence_detection": {k: (None if isinstance(v, float) and v != v else v)
                                     for k, v in detection.items()},
        "seconds": {"load": round(t1 - t0, 3), "top_influences": round(t2 - t1, 3),
                    "self_influence": round(t3 - t2, 3)},
    }
    from ..files import staged_folder, write_atomic, write_csv

    with staged_folder(out, replaces=OUTPUT_FILES, last="influence.json") as stage:
        for name, table in [("proponents.csv", prop), ("opponents.csv", opp), ("self_influence.csv", self_table)]:
            write_csv(stage / name, table)
        write_atomic(stage / "influence.json", json.dumps(summary, indent=2))
    mistakes = int((prop.drop_duplicates("test_id")["test_label"] != prop.drop_duplicates("test_id")["test_pred"])
                   .sum())
    auroc = detection["auroc"]
    print(f"{len(on_ds)} {args.on} examples ({mistakes} misclassified) × {len(noisy_train)} training examples, "
          f"top {min(args.top_k, len(noisy_train))} each ({args.variant}, {args.checkpoints} checkpoints); "
          f"self-influence AUROC for the corrupted labels "
          f"{'n/a' if auroc != auroc else f'{auroc:.3f}'} → {out}", file=sys.stdout)
    return 0

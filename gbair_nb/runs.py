"""A run folder on disk: its checkpoint files, and reading the whole folder back, checked.

``python -m gbair_nb train --out DIR`` writes one run into ``DIR``:

- ``run.json`` (config, per-epoch metrics, the checkpoint list) and ``timing.json`` — :func:`gbair_nb.train.train`;
- ``checkpoints/ckpt_NN.safetensors``: the trainable tensors, with the learning rates in force, the epoch, the step
  and the data fingerprint as metadata. safetensors holds tensors and strings only, so reading a checkpoint can never
  run code (a pickled ``.pt`` file can). Older runs have ``ckpt_NN.pt``: they are read with
  ``torch.load(weights_only=True)``, which refuses anything but tensors and plain values;
- ``data.json``, ``splits.csv``, ``corruption.csv``: how the data was built, the ids of each split, the training
  labels before and after corruption (:func:`write_data_files`);
- ``test_metrics.json``, ``test_predictions.csv``: the final model on the test split.

Reading back (:func:`read_run_data`, :func:`load_run`) checks every claim the folder makes: the rebuilt splits have
the ids of ``splits.csv`` and the fingerprints of ``data.json``; ``corruption.csv`` has the training ids and labels
and ``is_corrupted == (label != noisy_label)``; each checkpoint lies inside ``checkpoints/``, has the step, epoch,
learning rate and fingerprint ``run.json`` lists and the digest of the tensors that were saved. Anything else is a
:class:`RunFolderError`: one line naming the file and what to do.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .checkpoints import RETRAIN, TRAIN_FILES, RunFolderError, read_checkpoint
from .data import Corruption, DataError, DATASETS, Splits, TextDataset, load_dataset, split
from .files import write_atomic, write_csv

__all__ = ["RunFolderError", "RunData", "RUN_FILES", "checkpoint_path", "read_record", "read_checkpoints",
           "write_data_files", "read_run_data", "load_run"]

log = logging.getLogger(__name__)

# What one run owns in its folder (glob patterns): a new run into the folder replaces exactly these.
RUN_FILES = TRAIN_FILES + ("data.json", "splits.csv", "corruption.csv", "test_metrics.json", "test_predictions.csv")
_FIX = RETRAIN


# ------------------------------------------------------------------------------------------------------ run.json
def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing; {_FIX}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path} is not valid JSON ({e}); {_FIX}") from None
    if not isinstance(obj, dict):
        raise RunFolderError(f"{path} holds a JSON {type(obj).__name__}, not the object gbair_nb writes; {_FIX}")
    return obj


def _require(obj: dict, fields: dict[str, Any], path: Path, where: str = "") -> None:
    """Each field present with the right type (an int is not a bool; a float may be an int)."""
    for key, kind in fields.items():
        if key not in obj:
            raise RunFolderError(f"{path} has no {where}{key!r}; {_FIX}")
        kinds = kind if isinstance(kind, tuple) else (kind,)
        value = obj[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise RunFolderError(f"{path}: {where}{key!r} is {value!r}, not {' or '.join(k.__name__ for k in kinds)}"
                                 f"; {_FIX}")


def read_record(run_dir: str | Path) -> dict:
    """``run.json`` of a run folder, checked for the fields that loading needs (no torch needed)."""
    path = Path(run_dir) / "run.json"
    record = _read_json(path)
    _require(record, {"config": dict, "data": dict, "checkpoints": list}, path)
    _require(record["data"], {"fingerprint": str, "class_names": list}, path, "data.")
    for i, entry in enumerate(record["checkpoints"]):
        if not isinstance(entry, dict):
            raise RunFolderError(f"{path}: checkpoints[{i}] is {entry!r}, not an object; {_FIX}")
        _require(entry, {"file": str, "lr": (int, float), "epoch": int, "step": int}, path, f"checkpoints[{i}].")
    return record


def checkpoint_path(run_dir: str | Path, name: str) -> Path:
    """``run_dir/checkpoints/name``, refusing any name that would lead outside that folder."""
    run_dir = Path(run_dir)
    folder = run_dir / "checkpoints"
    path = folder / name
    inside = Path(name).name == name and name not in ("", ".", "..")
    if inside:
        try:
            path.resolve().relative_to(folder.resolve())
        except ValueError:  # a link that points elsewhere
            inside = False
    if not inside:
        raise RunFolderError(f"{run_dir / 'run.json'} names checkpoint {name!r}, outside {folder}: a run's "
                             f"checkpoints are plain file names in its own checkpoints/ folder; {_FIX}")
    return path


def read_checkpoints(run_dir: str | Path, record: dict | None = None) -> list:
    """Every checkpoint ``run.json`` lists, each checked against its entry: a list of :class:`train.Checkpoint`."""
    from .train import Checkpoint

    run_dir = Path(run_dir)
    record = read_record(run_dir) if record is None else record
    want_fp = record["data"]["fingerprint"]
    out = []
    for entry in record["checkpoints"]:
        path = checkpoint_path(run_dir, entry["file"])
        blob = read_checkpoint(path)
        claims = {"step": entry["step"], "epoch": entry["epoch"], "lr": entry["lr"], "fingerprint": want_fp}
        if "digest" in entry:
            claims["digest"] = entry["digest"]
        wrong = [k for k, v in claims.items() if blob[k] != v]
        if wrong:
            k = wrong[0]
            raise RunFolderError(f"checkpoint {path} is not the one {run_dir / 'run.json'} lists: its {k} is "
                                 f"{blob[k]!r}, run.json says {claims[k]!r} (a file from another run?); {_FIX}")
        out.append(Checkpoint(path, blob["lr"], blob["lrs"], blob["epoch"], blob["step"], blob["state"],
                              blob["fingerprint"]))
    return out


def load_run(run_dir: str | Path, train_ds: TextDataset | None = None, *, load: int | None = -1):
    """Rebuild a :class:`gbair_nb.train.Run` from a folder written by :func:`gbair_nb.train.train`, checked whole.

    The model is rebuilt from the recorded config and checkpoint ``load`` (default: the last; None: none) is loaded
    into it. Pass ``train_ds`` to check it is the data the run was trained on (:class:`train.FingerprintError` if
    not). A damaged or inconsistent folder raises :class:`RunFolderError`.
    """
    from .config import device
    from .pet import trainable_names
    from .models import make_model
    from .train import Run, TrainConfig

    run_dir = Path(run_dir)
    if not (run_dir / "run.json").exists():
        raise FileNotFoundError(f"{run_dir} has no run.json: train first (python -m gbair_nb train --out {run_dir})")
    record = read_record(run_dir)
    try:
        config = TrainConfig.from_record(record["config"])
    except ValueError as e:
        raise RunFolderError(f"{run_dir / 'run.json'}: {e}") from None
    checkpoints = read_checkpoints(run_dir, record)
    class_names = [str(c) for c in record["data"]["class_names"]]
    model, tokenizer = make_model(config.method, num_labels=len(class_names), backbone=config.backbone,
                                  seed=config.seed, **config.method_options)
    names = set(trainable_names(model))
    for ck in checkpoints:
        if set(ck.state) != names:
            raise RunFolderError(f"checkpoint {ck.path} does not fit the model run.json describes (tensors "
                                 f"{sorted(set(ck.state) ^ names)[:3]} differ); {_FIX}")
    model.to(device())
    run = Run(model, tokenizer, config, checkpoints, record, run_dir, class_names)
    if train_ds is not None:
        run.check_data(train_ds)
    if load is not None and checkpoints:
        run.load_checkpoint(load)
    return run


# ----------------------------------------------------------------------------------------------- the data files
def _split_parts(splits: Splits) -> list[tuple[str, TextDataset]]:
    return [("train", splits.train), ("val", splits.val), ("test", splits.test)]


def write_data_files(folder: str | Path, splits: Splits, corruption: Corruption, spec: dict) -> None:
    """``data.json`` (``spec`` + each split's fingerprint), ``splits.csv`` and ``corruption.csv``, each atomically."""
    folder = Path(folder)
    spec = {**spec, "split_fingerprints": {name: part.fingerprint() for name, part in _split_parts(splits)}}
    write_atomic(folder / "data.json", json.dumps(spec, indent=2))
    table = pd.concat([pd.DataFrame({"id": part.ids, "split": name}) for name, part in _split_parts(splits)],
                      ignore_index=True)
    write_csv(folder / "splits.csv", table)
    names = splits.train.class_names
    write_csv(folder / "corruption.csv", pd.DataFrame({
        "id": splits.train.ids,
        "label": corruption.labels,
        "noisy_label": corruption.noisy_labels,
        "is_corrupted": corruption.is_corrupted,
        "label_name": [names[i] for i in corruption.labels],
        "noisy_label_name": [names[i] for i in corruption.noisy_labels],
    }))


@dataclass(frozen=True)
class RunData:
    """The data of a run, rebuilt and checked: clean splits, the corruption, ``data.json``, what was read."""

    splits: Splits
    corruption: Corruption
    spec: dict
    dataset: str  # the built-in name or the path of the file that was read


def _dataset_source(spec: dict, path: Path) -> str:
    """The dataset to read: a built-in name, the path resolved at training time, or the path as given."""
    given = spec["dataset"]
    if given in DATASETS:
        return given
    candidates = [c for c in (spec.get("dataset_path"), given) if isinstance(c, str) and c]
    for c in candidates:
        if Path(c).is_file():
            if c == candidates[0]:
                log.info(f"data: {c} (the path recorded in {path})")
            else:
                log.info(f"data: {c} (from {Path.cwd()}; the path recorded at training, {candidates[0]}, is gone)")
            return c
    shown = " nor ".join(repr(c) for c in dict.fromkeys(candidates))
    raise RunFolderError(f"{path} names the dataset file {shown}, which is not there (from {Path.cwd()}): put the "
                         "file back, or train again")


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing; {_FIX}") from None
    except Exception as e:
        raise RunFolderError(f"{path} is not a readable CSV ({str(e).splitlines()[0]}); {_FIX}") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise RunFolderError(f"{path} has no column {missing[0]!r} (it has {list(table.columns)}); {_FIX}")
    return table


def _ints(table: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    values = table[col]
    if not pd.api.types.is_integer_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise RunFolderError(f"{path}: column {col!r} must hold whole numbers; {_FIX}")
    return values.to_numpy(np.int64)


def read_run_data(run_dir: str | Path) -> RunData:
    """Rebuild the data of a ``train`` run and check it against every file of the folder that describes it.

    Raises :class:`RunFolderError` (one line: the file, what is wrong, what to do) when ``data.json``,
    ``splits.csv`` or ``corruption.csv`` is missing, damaged or edited, or the dataset no longer gives the examples
    the run used (rows no split drew may change freely).
    """
    run_dir = Path(run_dir)
    spec_path = run_dir / "data.json"
    spec = _read_json(spec_path)
    _require(spec, {"dataset": str, "text_col": str, "label_col": str, "sizes": dict, "seed": int,
                    "corruption": dict}, spec_path)
    _require(spec["corruption"], {"mode": str, "p": (int, float)}, spec_path, "corruption.")
    sizes = spec["sizes"]
    if set(sizes) != {"n_train", "n_val", "n_test"}:
        raise RunFolderError(f"{spec_path}: sizes must give n_train, n_val and n_test; got {sizes}; {_FIX}")
    source = _dataset_source(spec, spec_path)
    try:
        ds = load_dataset(source, text_col=spec["text_col"], label_col=spec["label_col"])
        splits = split(ds, **sizes, seed=spec["seed"])
    except DataError as e:
        raise RunFolderError(f"{source} (named in {spec_path}) no longer gives the run's data: {e}") from None

    splits_path = run_dir / "splits.csv"
    table = _read_csv(splits_path, ["id", "split"])
    ids = _ints(table, "id", splits_path)
    for name, part in _split_parts(splits):
        if not np.array_equal(ids[(table["split"] == name).to_numpy()], part.ids):
            raise RunFolderError(f"{splits_path} does not match the {name} split rebuilt from {source}: the "
                                 f"dataset or splits.csv changed since training; {_FIX}")
    for name, part in _split_parts(splits):
        want = spec.get("split_fingerprints", {}).get(name)
        if want is not None and part.fingerprint() != want:
            raise RunFolderError(f"the {name} examples of {source} changed since training (texts or labels: "
                                 f"fingerprint {part.fingerprint()}, {spec_path} says {want}); restore the file "
                                 "or train again")

    corr_path = run_dir / "corruption.csv"
    table = _read_csv(corr_path, ["id", "label", "noisy_label", "is_corrupted"])
    train = splits.train
    if not np.array_equal(_ints(table, "id", corr_path), train.ids):
        raise RunFolderError(f"{corr_path} does not list the training ids of the split; {_FIX}")
    labels, noisy = _ints(table, "label", corr_path), _ints(table, "noisy_label", corr_path)
    if not np.array_equal(labels, train.labels):
        raise RunFolderError(f"{corr_path}: column 'label' is not the dataset's labels of the training split; {_FIX}")
    if noisy.min() < 0 or noisy.max() >= train.num_classes:
        raise RunFolderError(f"{corr_path}: noisy_label outside the class ids 0..{train.num_classes - 1}; {_FIX}")
    flags = table["is_corrupted"]
    if not (pd.api.types.is_bool_dtype(flags) or set(flags.unique()) <= {0, 1}):
        raise RunFolderError(f"{corr_path}: column 'is_corrupted' must hold True/False; {_FIX}")
    is_corrupted = flags.to_numpy(bool)
    if not np.array_equal(is_corrupted, labels != noisy):
        bad = int((is_corrupted != (labels != noisy)).sum())
        raise RunFolderError(f"{corr_path}: is_corrupted disagrees with label != noisy_label in {bad} of "
                             f"{len(labels)} rows; {_FIX}")
    c = spec["corruption"]
    corruption = Corruption(labels=labels, noisy_labels=noisy, is_corrupted=is_corrupted, mode=c["mode"],
                            p=float(c["p"]))
    return RunData(splits, corruption, spec, source)

"""Train a PET model with saved checkpoints, and evaluate it.

:func:`train` is seeded and repeatable: the same data, config and seed on the same machine give the same run record
and the same checkpoints. It saves ``n_checkpoints`` snapshots of the *trainable* tensors only (a few kB each for
prompt tuning), each with the learning rates in force when it was saved — exactly what TracIn needs. Each checkpoint
also carries a fingerprint of the training texts and labels, so influence is never computed against other data.
The files (safetensors, never pickle) and how a run folder is read back and checked are :mod:`gbair_nb.runs`.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch.overrides import TorchFunctionMode
from sklearn.metrics import accuracy_score, classification_report, f1_score
from tqdm.auto import tqdm

from .config import device as default_device
from .config import quick_mode, set_seed
from .data import TextDataset
from .files import staged_folder, write_atomic
from .pet import batches, head_names, load_trainable_state, trainable_names, trainable_state
from .models import make_model
from .checkpoints import TRAIN_FILES, read_checkpoint, save_checkpoint

__all__ = ["TrainConfig", "Checkpoint", "Run", "Metrics", "train", "evaluate", "predict_proba",
           "FingerprintError", "forward_backward", "micro_batches", "micro_gradient", "set_gradients", "MICRO_BATCH"]


class FingerprintError(ValueError):
    """A checkpoint was asked to serve data it was not trained on."""


@dataclass
class TrainConfig:
    """How to train. The defaults are the good choice for a class on a laptop (full mode).

    ``lr`` is the rate of the PET parameters (soft prompt, adapters), ``lr_head`` the classifier head's.
    The schedule warms up over ``warmup`` of the steps, then decays linearly to ``final_lr_ratio`` × peak
    (not to zero: the last checkpoint must keep a weight in TracIn).

    A field added in a later version must default to the behaviour from before it existed (``None`` = off) and be
    listed in :data:`ADDED_FIELDS`, so that :meth:`from_record` can read the run records of older versions.
    """

    method: str = "prompt_tuning"
    backbone: str = "minilm"
    epochs: int = 4
    batch_size: int = 16
    lr: float = 3e-2
    lr_head: float = 1e-2
    weight_decay: float = 0.0
    warmup: float = 0.06
    final_lr_ratio: float = 0.1
    max_length: int = 64
    n_checkpoints: int = 0  # 0 = one per epoch
    seed: int = 0
    method_options: dict = field(default_factory=lambda: {"num_virtual_tokens": 20})
    gmt: dict | None = None  # gradient-mask tuning options (gbair_nb.gmt.GMTConfig); None = off
    class_weight: str | None = None  # "balanced": weight each class's loss by n / (C · count) of the training labels
    dropout: float | None = None  # None: the backbone's own dropout; a number sets every dropout layer's rate

    @classmethod
    def quick(cls, **overrides) -> "TrainConfig":
        """Smaller settings for quick mode (CI, a first look): fewer epochs, shorter inputs."""
        base = dict(epochs=3, max_length=40, lr=5e-2, lr_head=2e-2)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_record(cls, record: dict) -> "TrainConfig":
        """The config of a run record (``run.json``'s ``"config"``), from this version or an older or newer one.

        - a field the record lacks takes the value in :data:`ADDED_FIELDS` (what training did before that field
          existed); lacking any other field, the record is incomplete and refused: a default would be a guess;
        - a key this version does not know is dropped with a warning when its value is ``None`` (a switch that is
          off changes nothing); any other value is refused, since training used something this version cannot do;
        - a value of the wrong type is refused.
        """
        if not isinstance(record, dict):
            raise ValueError(f"the config must be a JSON object of TrainConfig fields; got {type(record).__name__}")
        known = {f.name: f for f in fields(cls)}
        values = {}
        for name, f in known.items():
            if name in record:
                values[name] = record[name]
            elif name in ADDED_FIELDS:
                values[name] = ADDED_FIELDS[name]
            else:
                raise ValueError(f"the config has no {name!r}, which every gbair_nb version records: the record is "
                                 "incomplete; restore it or retrain")
            default = f.default if f.default_factory is MISSING else f.default_factory()
            kind = (int, float) if isinstance(default, float) else type(default)
            value = values[name]
            if default is not None and value is not None and (
                    not isinstance(value, kind) or isinstance(value, bool) != isinstance(default, bool)):
                raise ValueError(f"the config's {name!r} is {value!r}, not {type(default).__name__}; "
                                 "restore the record or retrain")
        for name in sorted(set(record) - set(known)):
            if record[name] is not None:
                raise ValueError(f"the config sets {name!r} = {record[name]!r}, which this version of gbair_nb does "
                                 "not know, so it cannot rebuild that run faithfully: use the gbair_nb version that "
                                 "trained it, or retrain")
            warnings.warn(f"the config's {name!r} is unknown to this version of gbair_nb; it is None (off), so it "
                          "is dropped", UserWarning, stacklevel=2)
        return cls(**values)

    @classmethod
    def default(cls, **overrides) -> "TrainConfig":
        """Full or quick defaults, whichever mode is on."""
        return cls.quick(**overrides) if quick_mode() else cls(**overrides)

    @classmethod
    def for_method(cls, method: str = "prompt_tuning", *, quick: bool | None = None, dataset=None,
                   **overrides) -> "TrainConfig":
        """Defaults for a PET method: its own learning rate and options (see :data:`METHOD_DEFAULTS`).

        A soft prompt wants ~3e-2, adapters ~2e-3, full fine-tuning ~5e-5 (moving all 22.6M weights fast destroys
        what pretraining learned); the head keeps ``lr_head``. Quick mode keeps the method's rate and shrinks the rest.

        A decoder backbone (``backbone="smollm2"``, see :mod:`gbair_nb.llm`) answers with label words: give the
        ``dataset`` (a TextDataset or a built-in name) for its template and verbalizer; it trains with batch 8 and
        prompt rate 3e-2 in both modes.
        """
        from .models import is_decoder

        quick = quick_mode() if quick is None else quick
        base = {"method": method, **METHOD_DEFAULTS.get(method, {})}
        if quick and method == "prompt_tuning":
            base.pop("lr")  # the quick run's few steps use TrainConfig.quick's faster prompt rate
        if is_decoder(overrides.get("backbone", "minilm")):
            from .llm import task_options

            if dataset is None:
                raise ValueError("a decoder backbone answers with the dataset's label words: pass dataset= "
                                 "(a TextDataset or a built-in name)")
            base.update(batch_size=8, lr=3e-2,
                        method_options=task_options(dataset, **overrides.pop("method_options", {})))
        base.update(overrides)
        return cls.quick(**base) if quick else cls(**base)


# Fields added after the first run-record format, with the value that reproduces training from before they existed
ADDED_FIELDS: dict[str, Any] = {
    "gmt": None,  # gradient-mask tuning: off
    "class_weight": None,  # every example's loss weighs the same
    "dropout": None,  # the backbone's own dropout
}

# Learning rate and options per PET method (full mode; the head's rate is TrainConfig.lr_head)
METHOD_DEFAULTS: dict[str, dict] = {
    "prompt_tuning": {"lr": 3e-2, "method_options": {"num_virtual_tokens": 20}},
    "head_only": {"lr": 1e-2, "method_options": {}},
    "lora": {"lr": 2e-3, "method_options": {"r": 8}},
    "gift": {"lr": 2e-3, "method_options": {"r": 8}},
    "full": {"lr": 5e-5, "method_options": {}},
}


@dataclass
class Checkpoint:
    """A saved snapshot of the trainable tensors and the learning rates in force when it was saved."""

    path: Path | None
    lr: float
    lrs: dict[str, float]
    epoch: int
    step: int
    state: Any = None  # OrderedDict name -> tensor (loaded lazily from path when None)
    fingerprint: str = ""

    def load_state(self):
        """The trainable tensors, name → tensor (read from ``path`` the first time; no pickle is ever run)."""
        if self.state is None:
            self.state = read_checkpoint(self.path)["state"]
        return self.state


@dataclass
class Metrics:
    """Evaluation of a model on a labelled dataset."""

    accuracy: float
    macro_f1: float
    report: pd.DataFrame
    probs: np.ndarray
    preds: np.ndarray

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1}


@dataclass
class Run:
    """A trained model with its checkpoints and run record."""

    model: Any
    tokenizer: Any
    config: TrainConfig
    checkpoints: list[Checkpoint]
    record: dict
    out_dir: Path | None = None
    class_names: list[str] = field(default_factory=list)

    def load_checkpoint(self, i: int = -1) -> Checkpoint:
        """Load checkpoint ``i``'s trainable tensors into ``self.model`` (default: the last)."""
        ckpt = self.checkpoints[i]
        load_trainable_state(self.model, ckpt.load_state())
        return ckpt

    def check_data(self, ds: TextDataset) -> None:
        """Raise :class:`FingerprintError` unless ``ds`` is exactly the data this run was trained on."""
        want = self.record["data"]["fingerprint"]
        if ds.fingerprint() != want:
            raise FingerprintError(
                f"these checkpoints were trained on data with fingerprint {want}, but the data given has "
                f"{ds.fingerprint()} (other texts or labels); retrain on this data or pass the training set "
                "with the labels it was trained on")

    def predict_proba(self, texts, *, batch_size: int = 64) -> np.ndarray:
        return predict_proba(self.model, self.tokenizer, texts, batch_size=batch_size,
                             max_length=self.config.max_length)


def _param_groups(model, config: TrainConfig) -> list[dict]:
    heads = set(head_names(model))
    params = dict(model.named_parameters())
    groups = [
        {"name": "pet", "params": [params[n] for n in trainable_names(model) if n not in heads], "lr": config.lr,
         "names": [n for n in trainable_names(model) if n not in heads]},
        {"name": "head", "params": [params[n] for n in trainable_names(model) if n in heads], "lr": config.lr_head,
         "names": [n for n in trainable_names(model) if n in heads]},
    ]
    return [g for g in groups if g["params"]]


def _schedule(total: int, warmup: float, final: float):
    n_warm = max(1, int(round(warmup * total)))

    def factor(step: int) -> float:  # step = number of optimizer steps taken so far
        if step < n_warm:
            return (step + 1) / n_warm
        progress = (step - n_warm) / max(1, total - n_warm)
        return 1.0 - (1.0 - final) * min(1.0, progress)

    return factor


def _checkpoint_steps(steps_per_epoch: int, epochs: int, n_checkpoints: int) -> list[int]:
    total = steps_per_epoch * epochs
    if n_checkpoints <= 0:
        return [steps_per_epoch * (e + 1) for e in range(epochs)]
    return sorted({int(math.ceil(total * (i + 1) / n_checkpoints)) for i in range(n_checkpoints)})


# ------------------------------------------------------------------------------------------- the training step
MICRO_BATCH = 8  # rows per micro-batch: the unit of arithmetic of a training step, whatever the number of processes


def micro_batches(n: int, size: int = MICRO_BATCH) -> list[slice]:
    """The fixed micro-batches of a batch of ``n`` rows: ``[0:size], [size:2·size], …``.

    A training step computes the gradient of each micro-batch separately and adds them in this order. One process
    does them all; N processes each do some and exchange the results; the additions are the same, so the step —
    and the whole run — is the same float for float on 1 or N processes (given the same threads per process).
    """
    return [slice(a, min(a + size, n)) for a in range(0, n, size)]


class _WholeBatchDropout(TorchFunctionMode):
    """While active, dropout on a micro-batch (rows ``rows`` of a batch of ``batch_size``) draws the mask of the
    whole batch and keeps its rows: with the random state restored before each micro-batch, the masks are those of
    one forward pass over the whole batch. Intercepts ``torch.nn.functional.dropout`` through torch's function
    mode (scoped to this thread and this ``with`` block; nothing is patched)."""

    def __init__(self, batch_size: int, rows: slice) -> None:
        super().__init__()
        self.batch_size, self.rows = batch_size, rows
        self.n_local = rows.stop - rows.start

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.dropout:
            names = ("input", "p", "training", "inplace")
            a = {**dict(zip(names, args)), **kwargs}
            x, p, training = a["input"], a.get("p", 0.5), a.get("training", True)
            if training and p > 0 and x.dim() > 0 and x.shape[0] == self.n_local:
                whole = torch.ones((self.batch_size,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
                mask = func(whole, p, True)[self.rows]  # = bernoulli(1 − p) / (1 − p) of the whole batch, our rows
                return x.mul_(mask) if a.get("inplace", False) else x * mask
        return func(*args, **kwargs)


def rng_state(device) -> tuple:
    """The random state dropout draws from on ``device`` (CPU, plus the GPU's own when on CUDA)."""
    device = torch.device(device)
    return (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def set_rng_state(state: tuple, device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], torch.device(device))


def micro_gradient(model, batch: dict, rows: slice, state: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """One micro-batch's share of a training step: ``(flat gradient, loss sum)``.

    The flat gradient (float32, trainable tensors in ``trainable_names`` order) is that of (n_rows / B) × the
    micro-batch's mean loss, so the micro-batches' gradients add up to the gradient of the whole batch's mean loss;
    the loss sum is Σ over the rows (float64). The random state is set to ``state`` (the batch's) first.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    device = params[0].device
    set_rng_state(state, device)
    size = int(batch["input_ids"].shape[0])
    n = rows.stop - rows.start
    with _WholeBatchDropout(size, rows):
        loss = model(**{k: v[rows] for k, v in batch.items()}).loss
    (loss * (n / size)).backward()
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params])
    return flat, loss.detach().double() * n


def set_gradients(model, parts: list[torch.Tensor]) -> None:
    """Add the micro-batches' flat gradients in order (0, 1, 2, …) and put the total in each trainable ``.grad``."""
    total = parts[0].clone()
    for g in parts[1:]:
        total += g
    start = 0
    for p in (p for p in model.parameters() if p.requires_grad):
        p.grad = total[start:start + p.numel()].view_as(p).to(p.dtype).clone()
        start += p.numel()


def forward_backward(model, batch: dict) -> float:
    """The training step's work on one batch: the gradient of the batch's mean loss lands in each trainable
    tensor's ``.grad``; returns that mean loss.

    The batch is done as its fixed :func:`micro_batches`, their gradients added in order — the same arithmetic as
    the distributed job's step (:func:`gbair_nb.distributed.forward_backward`), which :func:`train` takes as
    ``step=`` instead. Dropout masks are those of one pass over the whole batch.
    """
    size = int(batch["input_ids"].shape[0])
    device = next(model.parameters()).device
    state = rng_state(device)
    grads, loss = [], torch.zeros((), dtype=torch.float64)
    for rows in micro_batches(size):
        g, l = micro_gradient(model, batch, rows, state)
        grads.append(g)
        loss = loss + l.cpu()
    set_gradients(model, grads)
    return float(loss) / size


def train(train_ds: TextDataset, *, val: TextDataset | None = None, config: TrainConfig | None = None,
          out_dir: str | Path | None = None, model=None, tokenizer=None, step: Callable = forward_backward,
          verbose: bool = True) -> Run:
    """Train a PET model on ``train_ds`` (with whatever labels it carries) and save checkpoints.

    Args:
        train_ds: the training set; its labels are the ones learned (pass ``ds.with_labels(noisy)`` for noise).
        val: evaluated after every epoch (accuracy and macro-F1 go into the run record).
        config: a :class:`TrainConfig`; default ``TrainConfig.default()`` (quick or full mode).
        out_dir: where to write ``run.json``, ``timing.json`` and ``checkpoints/ckpt_NN.safetensors``, all
            together once training has finished (an interrupted run leaves the folder as it was); None keeps them
            in memory.
        model, tokenizer: continue from this model (warm start) instead of building a new one.
        step: how one batch becomes gradients (:func:`forward_backward`; the distributed job passes its own).

    Returns:
        a :class:`Run`; ``run.model`` holds the final weights.
    """
    config = config or TrainConfig.default()
    set_seed(config.seed)
    dev = default_device()
    if model is None:
        model, tokenizer = make_model(config.method, num_labels=train_ds.num_classes, backbone=config.backbone,
                                      seed=config.seed, **config.method_options)
    set_seed(config.seed)  # same dropout masks and order whether the model was built here or passed in
    if config.dropout is not None:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = float(config.dropout)
    step_fn = step
    if config.class_weight == "balanced":
        counts = np.bincount(train_ds.labels, minlength=train_ds.num_classes).astype(np.float64)
        w = torch.tensor(len(train_ds) / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)

        def step_fn(model, batch, _w=w):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"], weight=_w.to(logits.device))
            loss.backward()
            return loss.item()
    elif config.class_weight is not None:
        raise ValueError(f"class_weight={config.class_weight!r}; use None or 'balanced'")
    model.to(dev)
    groups = _param_groups(model, config)
    opt = torch.optim.AdamW([{"params": g["params"], "lr": g["lr"]} for g in groups],
                            weight_decay=config.weight_decay)
    n = len(train_ds)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    factor = _schedule(total, config.warmup, config.final_lr_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    save_at = _checkpoint_steps(steps_per_epoch, config.epochs, config.n_checkpoints)
    fingerprint = train_ds.fingerprint()
    out = Path(out_dir) if out_dir is not None else None

    masker = None
    if config.gmt is not None:
        from .gmt import GradientMasker

        masker = GradientMasker(model, config.gmt)
    gen = torch.Generator().manual_seed(config.seed)
    record: dict = {
        "config": asdict(config),
        "data": {"name": train_ds.name, "n": n, "fingerprint": fingerprint, "class_names": train_ds.class_names,
                 "class_counts": train_ds.class_counts().tolist()},
        "trainable_params": int(sum(p.numel() for g in groups for p in g["params"])),
        "epochs": [],
        "checkpoints": [],
    }
    timing = {"epoch_seconds": []}
    checkpoints: list[Checkpoint] = []
    step = 0
    bar = tqdm(total=total, desc="training", disable=not verbose, leave=False)
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=gen).numpy()
        texts = [train_ds.texts[i] for i in order]
        labels = train_ds.labels[order]
        losses = []
        for batch in batches(tokenizer, texts, labels, batch_size=config.batch_size,
                             max_length=config.max_length, device=dev):
            opt.zero_grad(set_to_none=True)
            loss = step_fn(model, batch)  # the batch's mean loss; its gradients are in .grad
            if masker is None or masker.before_step(last=step + 1 == total):  # GMT steps every `interval` batches
                opt.step()
                if masker is not None:
                    masker.after_step()
            with warnings.catch_warnings():  # GMT may skip the first opt.step(); the schedule still counts batches
                warnings.simplefilter("ignore", UserWarning)
                sched.step()
            step += 1
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.3f}")
            if step in save_at:
                # the rates in force for the step just taken (TracIn weights the gradient at θ_c by η_c)
                lrs = {name: float(factor(step - 1) * g["lr"]) for g in groups for name in g["names"]}
                ckpt = Checkpoint(path=None, lr=float(factor(step - 1) * config.lr), lrs=lrs, epoch=epoch + 1,
                                  step=step, state=trainable_state(model), fingerprint=fingerprint)
                checkpoints.append(ckpt)
                name = f"ckpt_{len(checkpoints) - 1:02d}.safetensors" if out is not None else None
                record["checkpoints"].append({"file": name, "lr": ckpt.lr, "epoch": ckpt.epoch, "step": ckpt.step})
        model.eval()
        entry = {"epoch": epoch + 1, "train_loss": float(np.mean(losses))}
        if val is not None:
            m = evaluate_model(model, tokenizer, val, batch_size=64, max_length=config.max_length)
            entry.update(val_accuracy=m.accuracy, val_macro_f1=m.macro_f1)
        record["epochs"].append(entry)
        timing["epoch_seconds"].append(time.perf_counter() - t0)
        if verbose and val is not None:
            bar.write(f"epoch {epoch + 1}: loss {entry['train_loss']:.3f}  val acc {entry['val_accuracy']:.3f}  "
                      f"val macro-F1 {entry['val_macro_f1']:.3f}")
    bar.close()
    model.eval()
    run = Run(model, tokenizer, config, checkpoints, record, out, list(train_ds.class_names))
    if out is not None:
        _save_run(out, record, timing, checkpoints)
    run.timing = timing  # wall-clock seconds are kept apart from the (repeatable) record
    return run


def _save_run(out: Path, record: dict, timing: dict, checkpoints: list[Checkpoint]) -> None:
    """Write the run into ``out`` as one set: it replaces a previous run's files there, ``run.json`` last."""
    with staged_folder(out, replaces=TRAIN_FILES, last="run.json") as stage:
        for ckpt, entry in zip(checkpoints, record["checkpoints"]):
            entry["digest"] = save_checkpoint(stage / "checkpoints" / entry["file"], ckpt.state, lr=ckpt.lr,
                                              lrs=ckpt.lrs, epoch=ckpt.epoch, step=ckpt.step,
                                              fingerprint=ckpt.fingerprint)
        write_atomic(stage / "run.json", json.dumps(record, indent=2))
        write_atomic(stage / "timing.json", json.dumps(timing, indent=2))
    for ckpt, entry in zip(checkpoints, record["checkpoints"]):
        ckpt.path = out / "checkpoints" / entry["file"]


@torch.no_grad()
def predict_proba(model, tokenizer, texts, *, batch_size: int = 64, max_length: int = 64) -> np.ndarray:
    """(n, num_classes) predicted class probabilities, in the order of ``texts``."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for batch in batches(tokenizer, texts, batch_size=batch_size, max_length=max_length, device=dev):
        out.append(torch.softmax(model(**batch).logits.float(), dim=-1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


def _metrics(labels: np.ndarray, probs: np.ndarray, class_names: list[str]) -> Metrics:
    preds = probs.argmax(axis=1)
    ids = list(range(len(class_names)))
    report = classification_report(labels, preds, labels=ids, target_names=class_names, output_dict=True,
                                   zero_division=0)
    return Metrics(
        accuracy=float(accuracy_score(labels, preds)),
        macro_f1=float(f1_score(labels, preds, labels=ids, average="macro", zero_division=0)),
        report=pd.DataFrame(report).T,
        probs=probs,
        preds=preds,
    )


def evaluate_model(model, tokenizer, ds: TextDataset, *, batch_size: int = 64, max_length: int = 64) -> Metrics:
    """Accuracy, macro-F1, per-class report and probabilities of ``model`` on ``ds``."""
    probs = predict_proba(model, tokenizer, ds.texts, batch_size=batch_size, max_length=max_length)
    return _metrics(ds.labels, probs, ds.class_names)


def evaluate(run: Run, ds: TextDataset, *, batch_size: int = 64) -> Metrics:
    """Evaluate a trained :class:`Run` on ``ds`` (its labels are the reference)."""
    return evaluate_model(run.model, run.tokenizer, ds, batch_size=batch_size, max_length=run.config.max_length)

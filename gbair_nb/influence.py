"""TracIn: which training examples pushed the model toward a prediction.

TracInCP (Pruthi et al. 2020) follows training through its saved checkpoints. With θ the *trainable* parameters only
(for prompt tuning: the soft prompt and the classifier head),

    TracInCP(z, z') = Σ_c Σ_params lrs_c[name] · ⟨∇_name ℓ(θ_c, z), ∇_name ℓ(θ_c, z')⟩

where ``lrs_c[name]`` is the learning rate each parameter had when checkpoint ``c`` was saved (one rate per checkpoint
gives Pruthi et al.'s Σ_c η_c ∇ℓ(z)·∇ℓ(z'), which is what Captum's ``TracInCP`` computes).

Directions of the scores:

- ``tracin(...)[i, j] > 0``: training example j is a **proponent** of test example i — a gradient step on j lowered
  the loss on i. ``< 0``: an **opponent** (training on j raised the loss on i).
- ``self_influence``: Σ_c Σ lrs ‖∇ℓ(z)‖². **Higher = more likely mislabeled** (or atypical): the model keeps having to
  move a lot to fit it.
- ``aggregated_influence(on=M)``: Σ_{z'∈M} TracInCP(z, z'), one number per training example. On a set M of mistakes
  (scored under their true labels), a **negative** value means z pushed the model toward those mistakes.

``variant="cosine"`` normalises each raw per-example gradient to unit length *per checkpoint* (over all trainable
parameters together) and then applies the learning rates, so Σ_c η_c cos(∇ℓ(z), ∇ℓ(z')) when the rates are shared.
That removes the pull of examples with huge gradients (usually high-loss ones); the dot variant keeps it.

``project=d`` sketches every (lr-weighted) per-example gradient to d numbers with a seeded random projection
(:class:`gbair_nb.projection.Projection`, one independent map per checkpoint, the same for the train and the test
side) and takes the dot products there: E[score] is the exact score, with an error of standard deviation at most
√(2/d)·‖·‖‖·‖ per checkpoint (:func:`gbair_nb.projection.distortion_bound`). It costs *more* than the exact path
for self-influence and aggregated influence (the same gradients, plus the projection); what it saves is memory and
time wherever whole test-side gradients are held or multiplied — :func:`tracin` and :func:`top_influences` keep
n_test × d instead of n_test × P floats per checkpoint. With ``variant="cosine"`` each raw gradient is normalised
*before* it is projected, so the projected score estimates the exact cosine score (normalising afterwards would
estimate something else, and not without bias).

The per-example gradients themselves, where all the cost is, come from :mod:`gbair_nb.gradients`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .gradients import (InfluenceError, fast_path_available, grad_slices, gradient_rows, lr_vector,
                        per_example_grads, preserved, progress, resolve_method)
from .pet import batches, load_trainable_state
from .projection import KINDS as PROJECTION_KINDS
from .projection import Projection

# per_example_grads, fast_path_available, grad_slices and lr_vector live in gbair_nb.gradients; they are named here
# too because TracIn is where a reader looks for them (notebooks 04 and 07 import them from here)
__all__ = ["InfluenceError", "per_example_grads", "fast_path_available", "grad_slices", "lr_vector", "tracin",
           "self_influence", "aggregated_influence", "top_influences", "auto_chunk_size", "resolve_pairs"]

CHUNK_BYTES = 256 * 2**20  # default memory for one streamed chunk of per-example gradients (chunk_size=None)
VARIANTS = ("dot", "cosine")


# ------------------------------------------------------------------------------------------- small helpers
@dataclass(frozen=True)
class _Ckpt:
    state: Mapping[str, torch.Tensor]
    lrs: Mapping[str, float] | float


def _as_checkpoint(obj: Any) -> _Ckpt:
    """Accept anything with ``.state`` (or ``.load_state()`` / ``.path``) and ``.lrs`` (or ``.lr``), or a
    ``(state, lrs)`` pair."""
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        state, lrs = obj
    else:
        state = getattr(obj, "state", None)
        lrs = getattr(obj, "lrs", None) or getattr(obj, "lr", None)
        if state is None and callable(getattr(obj, "load_state", None)):
            state = obj.load_state()
        if state is None and getattr(obj, "path", None) is not None:  # a checkpoint file: tensors only, no pickle
            from .checkpoints import read_state

            state = read_state(obj.path)
        if state is None:
            raise InfluenceError(f"checkpoint {obj!r} has neither a .state (name → tensor) nor a loadable .path")
    if lrs is None:
        raise InfluenceError(f"checkpoint {obj!r} has no learning rates: give .lrs (name → rate) or .lr (float)")
    return _Ckpt(state, lrs if isinstance(lrs, (int, float)) else dict(lrs))


def _select(checkpoints: Sequence[Any], used: str | Sequence[int]) -> tuple[list[_Ckpt], list[int]]:
    """The checkpoints to use and their positions in ``checkpoints`` (a projection's stream is its position)."""
    checkpoints = list(checkpoints) if not hasattr(checkpoints, "state") else [checkpoints]
    if not checkpoints:
        raise InfluenceError("no checkpoints given: TracInCP needs at least one (state, learning rates)")
    if used == "all":
        positions = list(range(len(checkpoints)))
    elif used == "last":
        positions = [len(checkpoints) - 1]
    elif isinstance(used, str):
        raise InfluenceError(f"checkpoints_used={used!r}; use 'all', 'last' or a list of checkpoint positions")
    else:
        bad = [i for i in used if not -len(checkpoints) <= int(i) < len(checkpoints)]
        if bad:
            raise InfluenceError(f"checkpoints_used={list(used)}: no checkpoint at {bad[0]} "
                                 f"(there are {len(checkpoints)})")
        positions = [int(i) % len(checkpoints) for i in used]
    return [_as_checkpoint(checkpoints[i]) for i in positions], positions


def _examples(data: Any, labels: Any, what: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(ids, texts, labels) from a TextDataset-like object (``.ids``, ``.texts``, ``.labels``) or a list of texts;
    ``labels`` overrides the dataset's labels (e.g. noisy ones)."""
    if hasattr(data, "texts"):
        texts = list(data.texts)
        ids = np.asarray(getattr(data, "ids", np.arange(len(texts))), dtype=np.int64)
        labels = getattr(data, "labels", None) if labels is None else labels
    elif isinstance(data, str):
        raise InfluenceError(f"{what} is one string; pass a list of texts or a TextDataset")
    else:
        texts = list(data)
        ids = np.arange(len(texts), dtype=np.int64)
    if labels is None:
        raise InfluenceError(f"{what} has no labels: pass a TextDataset or {what}_labels=")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(texts),):
        raise InfluenceError(f"{what}: {len(texts)} texts but labels of shape {labels.shape}")
    return ids, texts, labels


def resolve_pairs(first: Any, first_labels: Any, second: Any, second_labels: Any) -> tuple[Any, Any, Any, Any]:
    """Both call styles of the TracIn functions, as ``(first, first_labels, second, second_labels)``:
    ``(train_texts, train_labels, test_texts, test_labels)`` or ``(train_ds, test_ds)``."""
    if hasattr(first_labels, "texts") and second is None:  # (train_ds, test_ds): the second dataset came 2nd
        first_labels, second, second_labels = None, first_labels, second_labels
    if second is None:
        raise InfluenceError("no second set given: pass test texts and labels, or a TextDataset")
    return first, first_labels, second, second_labels


def _normalise(g: torch.Tensor) -> torch.Tensor:
    return g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)


# ------------------------------------------------------------------------------------------------------ TracIn
@dataclass
class _Setup:
    """How scores are taken, per used checkpoint c: each gradient g becomes ``features(c, g)`` and a score is
    ``features(c, g_test) * weights[c] @ features(c, g_train)``. Exact: features = g, weights = the (P,) lrs.
    Projected: features = (√lrs ⊙ g) S_c, weights = 1.0 (the rates are already inside)."""
    ckpts: list[_Ckpt]
    weights: list[torch.Tensor | float]
    grad: Callable[[list[str], np.ndarray], torch.Tensor]
    chunk: int  # training examples per streamed chunk
    features: Callable[[int, torch.Tensor], torch.Tensor]
    n_params: int


def auto_chunk_size(n_params: int, budget_bytes: int | None = None, cap: int = 1024) -> int:
    """Examples per chunk so that one chunk of float32 gradients, (chunk, P), fits in ``budget_bytes``.

    Prompt tuning's P ≈ 9k gives the cap (1,024 rows = 36 MB); full fine-tuning's P ≈ 22.7M gives 2 rows (182 MB).
    """
    budget = CHUNK_BYTES if budget_bytes is None else budget_bytes
    return int(max(1, min(cap, budget // (4 * max(1, n_params)))))


def _setup(model, tokenizer, checkpoints, checkpoints_used, variant, method, batch_size, max_length,
           chunk_size: int | None = None, project: int | None = None, project_seed: int = 0,
           project_kind: str = "countsketch") -> _Setup:
    if variant not in VARIANTS:
        raise InfluenceError(f"variant={variant!r}; use 'dot' (Pruthi et al.) or 'cosine' (normalised gradients)")
    if project is not None and (isinstance(project, bool) or not isinstance(project, (int, np.integer))
                                or project < 1):
        raise InfluenceError(f"project={project!r}; use a number of dimensions ≥ 1, or None for exact scores")
    if project is not None and project_kind not in PROJECTION_KINDS:
        raise InfluenceError(f"project_kind={project_kind!r}; use one of {', '.join(PROJECTION_KINDS)}")
    if isinstance(project_seed, bool) or not isinstance(project_seed, (int, np.integer)) or project_seed < 0:
        raise InfluenceError(f"project_seed={project_seed!r}; use an integer ≥ 0")
    ckpts, positions = _select(checkpoints, checkpoints_used)
    slices = grad_slices(model)
    method = resolve_method(model, method)

    def grad(texts: list[str], labels: np.ndarray, pbar=None) -> torch.Tensor:
        g = gradient_rows(model, tokenizer, texts, labels, method=method, batch_size=batch_size,
                          max_length=max_length, sort_by_length=True, pbar=pbar)
        return _normalise(g) if variant == "cosine" else g  # cosine: normalised before any projection

    if chunk_size is not None and chunk_size < 1:
        raise InfluenceError(f"chunk_size={chunk_size}; use a positive number of examples, or None (automatic)")
    n_params = sum(sl.stop - sl.start for sl in slices.values())
    chunk = chunk_size or auto_chunk_size(n_params)
    lrs = [lr_vector(slices, c.lrs) for c in ckpts]
    if project is None:
        return _Setup(ckpts, lrs, grad, chunk, lambda c, g: g, n_params)
    # one independent map per checkpoint (stream = its position in the list given), the same for both sides
    maps = [Projection(n_params, int(project), seed=int(project_seed), stream=p, kind=project_kind)
            for p in positions]
    roots = [w.sqrt() for w in lrs]
    return _Setup(ckpts, [1.0] * len(ckpts), grad, chunk, lambda c, g: maps[c](g, scale=roots[c]), n_params)


def _test_side(model, s: _Setup, texts, labels, *, summed: bool, pbar, unit: bool = False,
               sets: list[np.ndarray] | None = None) -> list[torch.Tensor]:
    """Per checkpoint: weights ⊙ features of the (normalised) test gradients, (n_test, P or d) — or of their sums,
    (n_sets, P or d): one row per set of positions in ``sets`` (default: one set, every example). Streamed in
    chunks: a projection never sees more than a chunk of gradients."""
    out = []
    member = None
    if sets is not None:
        member = np.zeros((len(sets), len(texts)), dtype=bool)
        for j, idx in enumerate(sets):
            member[j, idx] = True
    for c, (ck, w) in enumerate(zip(s.ckpts, s.weights)):
        load_trainable_state(model, ck.state)
        if summed:  # Σ_{z'∈set} ∇ℓ(z'): one vector per set and checkpoint, streamed (features are linear: sum, map)
            acc = torch.zeros(1 if sets is None else len(sets), s.n_params)
            for a in range(0, len(texts), s.chunk):
                g = s.grad(texts[a:a + s.chunk], labels[a:a + s.chunk], pbar)
                g = _normalise(g) if unit else g
                if member is None:
                    acc += g.sum(0, keepdim=True)
                    continue
                for j in range(len(sets)):
                    rows = np.flatnonzero(member[j, a:a + s.chunk])
                    if len(rows):
                        acc[j] += g[torch.as_tensor(rows)].sum(0)
            out.append(s.features(c, acc) * w)
        else:
            parts = [s.features(c, s.grad(texts[a:a + s.chunk], labels[a:a + s.chunk], pbar))
                     for a in range(0, len(texts), s.chunk)]
            out.append(torch.cat(parts or [s.features(c, torch.zeros(0, s.n_params))]) * w)
    return out


def _train_chunks(model, s: _Setup, texts, labels, pbar) -> Iterator[tuple[int, int, int, torch.Tensor]]:
    """Stream the training set: (start, stop, checkpoint index, (chunk, P or d) features), chunks outer,
    checkpoints inner, so scores for a chunk are complete before the next chunk's gradients are computed."""
    for start in range(0, len(texts), s.chunk):
        stop = min(start + s.chunk, len(texts))
        for c, ck in enumerate(s.ckpts):
            load_trainable_state(model, ck.state)
            yield start, stop, c, s.features(c, s.grad(texts[start:stop], labels[start:stop], pbar))


_COMMON = """
    Args:
        model, tokenizer: the PET model (its current trainable tensors are restored afterwards).
        checkpoints: list of checkpoints — objects with ``.state`` (name → tensor) and ``.lrs`` (name → learning
            rate; or ``.lr``), e.g. ``Run.checkpoints``, or ``(state, lrs)`` pairs.
        train, test (or on): TextDataset-like (``.ids``, ``.texts``, ``.labels``) or lists of texts;
            ``train_labels`` / ``test_labels`` give or override the labels (e.g. noisy training labels).
        variant: ``"dot"`` (Pruthi et al.) or ``"cosine"`` (each raw per-example gradient normalised per
            checkpoint, then the learning rates applied).
        checkpoints_used: ``"all"``, ``"last"`` or a list of positions.
        method: per-example gradient method (``"auto"``, ``"fast"``, ``"loop"``).
        chunk_size: training examples per streamed chunk (memory ≈ chunk_size × P floats); None (default) sizes it
            from the number of trainable parameters P with :func:`auto_chunk_size` (256 MB, at most 1,024).
        project: None (default): exact scores. An int d: take the dot products between random projections of
            the (lr-weighted) gradients to d dimensions — unbiased, error sd ≤ √(2/d)·‖·‖‖·‖ per checkpoint
            (:mod:`gbair_nb.projection`); d ≥ P only adds noise and cost.
        project_seed: seed of the projections (one independent map per checkpoint position); fixed seed, same
            scores.
        project_kind: ``"countsketch"`` (default; O(P) per example), ``"rademacher"`` or ``"gaussian"``
            (dense, O(P·d) per example).
        verbose: progress bar.
"""


def tracin(model: nn.Module, tokenizer, checkpoints: Sequence[Any], train: Any,
           train_labels: Sequence[int] | None = None, test: Any = None, test_labels: Sequence[int] | None = None,
           *, variant: str = "dot", checkpoints_used: str | Sequence[int] = "all", per_checkpoint: bool = False,
           method: str = "auto", batch_size: int = 16, max_length: int = 64, chunk_size: int | None = None,
           project: int | None = None, project_seed: int = 0, project_kind: str = "countsketch",
           verbose: bool = True) -> np.ndarray:
    """TracInCP of every (test, train) pair: (n_test, n_train), or (n_checkpoints, n_test, n_train) with
    ``per_checkpoint=True`` (summing over axis 0 gives the default).

    Score > 0: the training example is a proponent of the test example (training on it lowered the test loss);
    < 0: an opponent. The full matrix is materialised — for large sets use :func:`top_influences`.
    Call as ``tracin(model, tok, ckpts, train_texts, train_labels, test_texts, test_labels)`` or
    ``tracin(model, tok, ckpts, train_ds, test_ds)``.
    """
    train, train_labels, test, test_labels = resolve_pairs(train, train_labels, test, test_labels)
    _, tr_texts, tr_labels = _examples(train, train_labels, "train")
    _, te_texts, te_labels = _examples(test, test_labels, "test")
    s = _setup(model, tokenizer, checkpoints, checkpoints_used, variant, method, batch_size, max_length,
               chunk_size, project, project_seed, project_kind)
    out = np.zeros((len(s.ckpts), len(te_texts), len(tr_texts)), dtype=np.float32)
    total = len(s.ckpts) * (len(te_texts) + len(tr_texts))
    with preserved(model), progress(total, "TracIn", verbose) as pbar:
        test_side = _test_side(model, s, te_texts, te_labels, summed=False, pbar=pbar)
        for start, stop, c, g in _train_chunks(model, s, tr_texts, tr_labels, pbar):
            out[c, :, start:stop] = (test_side[c] @ g.T).numpy()
    return out if per_checkpoint else out.sum(0)


tracin.__doc__ += _COMMON


def self_influence(model: nn.Module, tokenizer, checkpoints: Sequence[Any], train: Any,
                   train_labels: Sequence[int] | None = None, *, variant: str = "dot",
                   checkpoints_used: str | Sequence[int] = "all", per_checkpoint: bool = False, method: str = "auto",
                   batch_size: int = 16, max_length: int = 64, chunk_size: int | None = None,
                   project: int | None = None, project_seed: int = 0, project_kind: str = "countsketch",
                   verbose: bool = True) -> np.ndarray:
    """Self-influence TracInCP(z, z) = Σ_c Σ_params lrs_c · ‖∇ℓ(θ_c, z)‖²: (n_train,), or (n_checkpoints, n_train).

    **Higher = more likely mislabeled** (or atypical). Take it under the labels you suspect (``train_labels=`` the
    noisy ones). With ``variant="cosine"`` every gradient has unit norm, so the score is Σ_c η_c for every example
    when the rates are shared — use ``"dot"`` (the default) for ranking.
    """
    _, tr_texts, tr_labels = _examples(train, train_labels, "train")
    s = _setup(model, tokenizer, checkpoints, checkpoints_used, variant, method, batch_size, max_length,
               chunk_size, project, project_seed, project_kind)
    out = np.zeros((len(s.ckpts), len(tr_texts)), dtype=np.float32)
    with preserved(model), progress(len(s.ckpts) * len(tr_texts), "self-influence", verbose) as pbar:
        for start, stop, c, g in _train_chunks(model, s, tr_texts, tr_labels, pbar):
            w, sq = s.weights[c], g.square_()  # the chunk's own tensor, squared in place: no (chunk, P) copies
            # × the rates in place, then torch's own (cascaded) sum: a BLAS dot product over 22.6M float32 terms
            # (full fine-tuning) drifts by ~5e-4 of the score
            out[c, start:stop] = (sq.mul_(w.to(sq.dtype)).sum(1) if torch.is_tensor(w) else sq.sum(1) * w).numpy()
    return out if per_checkpoint else out.sum(0)


self_influence.__doc__ += _COMMON


def aggregated_influence(model: nn.Module, tokenizer, checkpoints: Sequence[Any], train: Any,
                         train_labels: Sequence[int] | None = None, on: Any = None,
                         on_labels: Sequence[int] | None = None, *, variant: str = "dot", normalize: str = "none",
                         checkpoints_used: str | Sequence[int] = "all",
                         sets: Sequence[Sequence[int]] | None = None,
                         per_checkpoint: bool = False, method: str = "auto", batch_size: int = 16,
                         max_length: int = 64, chunk_size: int | None = None, project: int | None = None,
                         project_seed: int = 0, project_kind: str = "countsketch", verbose: bool = True,
                         reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """Σ_{z'∈on} TracInCP(z, z') for every training example z: (n_train,), or (n_checkpoints, n_train).

    ``sets`` (lists of positions in ``on``) gives one sum per set from the same pass over the training set:
    (n_sets, n_train), or (n_checkpoints, n_sets, n_train) — e.g. the validation mistakes and each class.

    Computed as Σ_c ∇ℓ(θ_c, z) · (lrs_c ⊙ Σ_{z'} ∇ℓ(θ_c, z')) — one vector per checkpoint, never an n_train × |on|
    matrix. On a set of validation *mistakes* under their true labels, **negative = z pushed the model toward the
    mistakes** (G-BAIR flags the most negative). Call as ``(…, train_texts, train_labels, on_texts, on_labels)`` or
    ``(…, train_ds, on_ds)``.

    ``normalize="per_mistake"`` scales each gradient of the ``on`` set to unit length (per checkpoint) before the sum,
    so every mistake gets an equal vote and a few very high-loss mistakes cannot dominate; ``"none"`` (default) is
    the plain sum. (``variant="cosine"`` normalises both sides.)

    ``reduce`` is applied to each checkpoint's summed ``on``-side vectors (n_sets, P) before the training set is scored:
    when several processes each hold a slice of ``on``, an all-reduce sum there gives every process the whole set's
    vector (``gbair_nb.distributed`` does this; it is then called even when this process's slice is empty).
    """
    if normalize not in ("none", "per_mistake"):
        raise InfluenceError(f"normalize={normalize!r}; use 'none' or 'per_mistake'")
    train, train_labels, on, on_labels = resolve_pairs(train, train_labels, on, on_labels)
    _, tr_texts, tr_labels = _examples(train, train_labels, "train")
    _, on_texts, on_lab = _examples(on, on_labels, "on")
    set_list = None if sets is None else [np.asarray(x, dtype=np.int64).reshape(-1) for x in sets]
    for x in set_list or []:
        if len(x) and (x.min() < 0 or x.max() >= len(on_texts)):
            raise InfluenceError(f"sets index positions of `on` (0..{len(on_texts) - 1}); got {x.min()}..{x.max()}")
    s = _setup(model, tokenizer, checkpoints, checkpoints_used, variant, method, batch_size, max_length,
               chunk_size, project, project_seed, project_kind)
    n_sets = 1 if set_list is None else len(set_list)
    out = np.zeros((len(s.ckpts), n_sets, len(tr_texts)), dtype=np.float32)
    total = len(s.ckpts) * (len(on_texts) + len(tr_texts))
    with preserved(model), progress(total, "aggregated influence", verbose) as pbar:
        if len(on_texts) or reduce is not None:
            vs = _test_side(model, s, on_texts, on_lab, summed=True, pbar=pbar,
                            unit=normalize == "per_mistake", sets=set_list)
            if reduce is not None:
                vs = [reduce(v) for v in vs]
            for start, stop, c, g in _train_chunks(model, s, tr_texts, tr_labels, pbar):
                if set_list is None:
                    out[c, 0, start:stop] = (g @ vs[c][0]).numpy()
                else:
                    out[c, :, start:stop] = (g @ vs[c].T).T.numpy()
    out = out if set_list is not None else out[:, 0]
    return out if per_checkpoint else out.sum(0)


aggregated_influence.__doc__ += _COMMON


def _predict(model, tokenizer, texts, batch_size, max_length) -> np.ndarray:
    preds = []
    with torch.no_grad():
        device = str(next(model.parameters()).device)
        for b in batches(tokenizer, texts, batch_size=batch_size, max_length=max_length, device=device):
            preds.append(model(**b).logits.argmax(-1).cpu().numpy())
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def top_influences(model: nn.Module, tokenizer, checkpoints: Sequence[Any], train: Any,
                   train_labels: Sequence[int] | None = None, test: Any = None,
                   test_labels: Sequence[int] | None = None, *, k: int = 5, variant: str = "dot",
                   checkpoints_used: str | Sequence[int] = "all", method: str = "auto",
                   batch_size: int = 16, max_length: int = 64, chunk_size: int | None = None,
                   project: int | None = None, project_seed: int = 0, project_kind: str = "countsketch",
                   with_predictions: bool = True,
                   verbose: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The k strongest proponents and opponents in the training set of every test example, streamed: memory is
    n_test × P per checkpoint (n_test × d with ``project=d``) plus chunk_size × (P + n_test), never
    n_test × n_train.

    Returns ``(proponents, opponents)``, DataFrames with one row per (test example, rank) and columns
    ``test_id, test_text, test_label, test_pred, train_id, train_text, train_label, score, rank``. Proponents:
    largest scores first (rank 1 = most positive: helped the test example's label most). Opponents: most negative
    first. ``test_pred`` is the model's prediction with its current (e.g. final) tensors; ids are the datasets'
    ``.ids`` (positions for plain lists). Call as ``(…, train_texts, train_labels, test_texts, test_labels)`` or
    ``(…, train_ds, test_ds)``.
    """
    train, train_labels, test, test_labels = resolve_pairs(train, train_labels, test, test_labels)
    tr_ids, tr_texts, tr_labels = _examples(train, train_labels, "train")
    te_ids, te_texts, te_labels = _examples(test, test_labels, "test")
    if k < 1:
        raise InfluenceError(f"k={k}; ask for at least 1")
    k = min(k, len(tr_texts))
    s = _setup(model, tokenizer, checkpoints, checkpoints_used, variant, method, batch_size, max_length,
               chunk_size, project, project_seed, project_kind)
    n_test = len(te_texts)
    best = {"pro": (torch.full((n_test, 0), -np.inf), torch.zeros(n_test, 0, dtype=torch.long)),
            "opp": (torch.full((n_test, 0), -np.inf), torch.zeros(n_test, 0, dtype=torch.long))}
    preds = _predict(model, tokenizer, te_texts, batch_size, max_length) if with_predictions else None
    total = len(s.ckpts) * (n_test + len(tr_texts))
    with preserved(model), progress(total, "top influences", verbose) as pbar:
        test_side = _test_side(model, s, te_texts, te_labels, summed=False, pbar=pbar)
        scores = None
        for start, stop, c, g in _train_chunks(model, s, tr_texts, tr_labels, pbar):
            part = test_side[c] @ g.T  # (n_test, chunk)
            scores = part if c == 0 else scores + part
            if c < len(s.ckpts) - 1:
                continue
            idx = torch.arange(start, stop).expand(n_test, -1)
            for key, sign in (("pro", 1.0), ("opp", -1.0)):  # opponents: top-k of −score
                vals, ids = best[key]
                vals, ids = torch.cat([vals, sign * scores], 1), torch.cat([ids, idx], 1)
                top = torch.topk(vals, min(k, vals.shape[1]), dim=1)
                best[key] = (top.values, torch.gather(ids, 1, top.indices))
    frames = []
    for key, sign in (("pro", 1.0), ("opp", -1.0)):
        vals, ids = best[key]
        rows = []
        for i in range(n_test):
            for r in range(vals.shape[1]):
                j = int(ids[i, r])
                rows.append({"test_id": te_ids[i], "test_text": te_texts[i], "test_label": te_labels[i],
                             "test_pred": None if preds is None else preds[i], "train_id": tr_ids[j],
                             "train_text": tr_texts[j], "train_label": tr_labels[j],
                             "score": sign * float(vals[i, r]), "rank": r + 1})
        df = pd.DataFrame(rows, columns=["test_id", "test_text", "test_label", "test_pred", "train_id", "train_text",
                                         "train_label", "score", "rank"])
        if preds is None:
            df = df.drop(columns="test_pred")
        frames.append(df)
    return frames[0], frames[1]


top_influences.__doc__ += _COMMON

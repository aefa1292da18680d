"""Influence from another tool, under this toolkit's conventions: kronfluence's EK-FAC influence functions.

TracIn (:mod:`gbair_nb.influence`) follows training through its checkpoints. Influence *functions* ask a
counterfactual instead — how would the loss on z' change if z were up-weighted, at the final parameters θ —

    I(z, z') = ∇ℓ(θ, z')ᵀ (G + λI)⁻¹ ∇ℓ(θ, z)          G ≈ the Gauss–Newton Hessian of the training loss

and kronfluence (Grosse et al. 2023, "Studying large language model generalization with influence functions", the
EK-FAC method at 52B scale; PyPI ``kronfluence``) approximates G⁻¹ layer by layer with eigenvalue-corrected
Kronecker factors (EK-FAC): two covariance matrices per layer (of its inputs and of its output gradients), their
eigenvectors, and a corrected eigenvalue per weight. That takes its own passes over the training data before any
score — **fit** (covariances, eigendecomposition, eigenvalue correction) — and then per-example gradients again to
**score**. Positive I(z, z') = training on z lowered the loss on z' (a proponent), as for TracIn.

What it can see: kronfluence wraps ``nn.Linear`` and ``nn.Conv2d`` modules only (its
``TrackedModule.SUPPORTED_MODULES``) and computes per-example gradients of their weight and bias. So:

- LoRA: every ``lora_A`` / ``lora_B`` is an ``nn.Linear`` — all trainable parameters are covered;
- GIFT: ψ and φ are ``nn.Linear`` (shared by several layers: we tell kronfluence ``has_shared_parameters``);
- the classifier head is an ``nn.Linear``;
- full fine-tuning: the encoder's Linear layers and the head (10.6M of the 22.6M trainable parameters); the word,
  position and token-type embeddings and the LayerNorms are outside its reach (``partial=True`` accepts that);
- **prompt tuning: out of reach.** The soft prompt is the weight of peft's ``PromptEmbedding`` (an
  ``nn.Embedding``), a lookup table added to the input, not a Linear layer: there is no input–output-gradient pair
  to factor into a Kronecker product. Only the head would be scored, so it is refused unless ``partial=True``.

Install (its package metadata asks for torchvision, which would pull a CUDA build of a newer torch; none of its
modules imports it): ``pip install --no-deps kronfluence==1.0.1 einops einconv opt_einsum`` (it also imports
accelerate and safetensors, which transformers and peft already need).
"""
from __future__ import annotations

import logging
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PeerError", "kronfluence_available", "ekfac_modules", "EkfacScores", "ekfac_influence", "score_ekfac"]

INSTALL = "pip install --no-deps kronfluence==1.0.1 einops einconv opt_einsum"


class PeerError(ValueError):
    """A peer method cannot run as asked: the message says what was wrong and what would work."""


def kronfluence_available() -> bool:
    """Whether ``kronfluence`` imports here."""
    try:
        import kronfluence  # noqa: F401
    except ImportError:
        return False
    return True


def _require_kronfluence() -> None:
    if not kronfluence_available():
        raise PeerError(f"EK-FAC influence needs the optional package kronfluence: {INSTALL}")


def ekfac_modules(model: nn.Module) -> tuple[list[str], list[str]]:
    """(names of the ``nn.Linear`` modules kronfluence would score, trainable parameters outside them).

    A module is scored when it is a leaf ``nn.Linear`` with a trainable weight or bias; the second list is what
    EK-FAC cannot see (e.g. the soft prompt of prompt tuning, the embeddings of full fine-tuning)."""
    modules, covered = [], set()
    for name, mod in model.named_modules():
        if type(mod) is nn.Linear and any(p.requires_grad for p in mod.parameters(recurse=False)):
            modules.append(name)
            covered |= {f"{name}.{p}" for p, _ in mod.named_parameters(recurse=False)}
    uncovered = [n for n, p in model.named_parameters() if p.requires_grad and n not in covered]
    return modules, uncovered


def _texts_labels(data: Any, labels: Any, what: str) -> tuple[list[str], np.ndarray]:
    """(texts, labels) from a TextDataset-like object (``.texts``, ``.labels``) or a list of texts plus labels."""
    texts = list(data.texts) if hasattr(data, "texts") else list(data)
    labels = getattr(data, "labels", None) if labels is None else labels
    if labels is None:
        raise PeerError(f"{what} has no labels: pass a TextDataset or {what}_labels=")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(texts),):
        raise PeerError(f"{what}: {len(texts)} texts but labels of shape {labels.shape}")
    return texts, labels


class _Examples(torch.utils.data.Dataset):
    def __init__(self, texts: list[str], labels: np.ndarray) -> None:
        self.texts, self.labels = texts, labels

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.texts[i], int(self.labels[i])


def _task(modules: list[str]):
    from kronfluence.task import Task

    class Classification(Task):
        """Cross-entropy of a sequence classifier; the measurement is the query's own loss (under its label)."""

        def compute_train_loss(self, batch, model, sample=False):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            if not sample:
                return F.cross_entropy(logits, batch["labels"], reduction="sum")
            with torch.no_grad():  # labels drawn from the model: the true Fisher, kronfluence's default
                sampled = torch.multinomial(torch.softmax(logits.detach().float(), -1), 1).flatten()
            return F.cross_entropy(logits, sampled, reduction="sum")

        def compute_measurement(self, batch, model):
            return self.compute_train_loss(batch, model)

        def get_influence_tracked_modules(self):
            return modules

        def get_attention_mask(self, batch):
            return batch["attention_mask"]

    return Classification()


@contextmanager
def _tracked(model: nn.Module, task) -> Iterator[nn.Module]:
    """kronfluence's ``prepare_model`` (Linear layers wrapped, every parameter frozen), undone on exit."""
    from kronfluence.analyzer import prepare_model
    from kronfluence.module import TrackedModule

    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    try:
        yield prepare_model(model, task)
    finally:
        for name, mod in list(model.named_modules()):
            if isinstance(mod, TrackedModule):
                parent_name, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent_name) if parent_name else model, child, mod.original_module)
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
        model.train(was_training)


def _shared(model: nn.Module, modules: list[str], tokenizer, text: str, max_length: int) -> bool:
    """Whether a scored module runs more than once in one forward pass (GIFT's shared pairs do)."""
    calls: dict[str, int] = {m: 0 for m in modules}
    handles = [model.get_submodule(m).register_forward_hook(
        lambda mod, i, o, m=m: calls.__setitem__(m, calls[m] + 1)) for m in modules]
    try:
        enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt").to(_device(model))
        with torch.no_grad():
            model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    finally:
        for h in handles:
            h.remove()
    return max(calls.values()) > 1


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@dataclass
class EkfacScores:
    """What :func:`ekfac_influence` returns: scores with the toolkit's directions, and where the time went."""

    self_influence: np.ndarray | None  # (n_train,) Iᵀ(z, z): higher = more likely mislabeled (or atypical)
    aggregated: np.ndarray | None  # (n_train,) Σ_{z'∈on} I(z, z'): negative = z pushed toward the on-set's loss
    seconds: dict = field(default_factory=dict)  # fit, self_influence, aggregated
    modules: list = field(default_factory=list)  # the Linear modules scored
    uncovered: list = field(default_factory=list)  # trainable parameters EK-FAC could not see


def ekfac_influence(model: nn.Module, tokenizer, train: Any, train_labels: Sequence[int] | None = None,
                    on: Any = None, on_labels: Sequence[int] | None = None, *, self_influence: bool = True,
                    partial: bool = False, damping: float | None = None, strategy: str = "ekfac",
                    batch_size: int = 16, max_length: int = 64, verbose: bool = False) -> EkfacScores:
    """EK-FAC influence (kronfluence) of every training example, at the model's *current* parameters.

    Fits the factors on ``train`` (two passes over it plus an eigendecomposition), then scores: self-influence
    (``self_influence=True``) and, if ``on`` is given, the aggregated influence on that set (its summed gradient,
    kronfluence's ``aggregate_query_gradients``) — the quantities :func:`gbair_nb.influence.self_influence` and
    :func:`~gbair_nb.influence.aggregated_influence` give for TracIn, with the same directions.

    Args:
        model, tokenizer: a sequence classifier (e.g. ``Run.model`` with its final checkpoint loaded). The model is
            wrapped by kronfluence while this runs and restored afterwards.
        train, on: TextDataset-like or lists of texts; ``train_labels`` / ``on_labels`` give or override labels.
        partial: score even though some trainable parameters are outside kronfluence's reach (they are listed in
            the result's ``uncovered``); without it that is an error.
        damping: λ of (G + λI)⁻¹; None (default) is kronfluence's heuristic, 0.1 × the mean eigenvalue.
        strategy: kronfluence's Hessian approximation: ``"ekfac"`` (default), ``"kfac"``, ``"diagonal"``,
            ``"identity"``.
        batch_size, max_length: per-batch examples and token length, as elsewhere in the toolkit.

    Raises:
        PeerError: kronfluence is not installed, the model has nothing it can score, or (without ``partial``) some
            trainable parameters would be left out — prompt tuning's soft prompt is one (see the module docstring).
    """
    _require_kronfluence()
    from kronfluence.analyzer import Analyzer
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.utils.dataset import DataLoaderKwargs

    tr_texts, tr_labels = _texts_labels(train, train_labels, "train")
    modules, uncovered = ekfac_modules(model)
    if not modules:
        raise PeerError("kronfluence scores nn.Linear / nn.Conv2d layers and this model has no trainable one; "
                        "use gbair_nb.influence (TracIn) instead")
    if uncovered and not partial:
        raise PeerError(f"kronfluence cannot see {len(uncovered)} trainable parameter(s), e.g. {uncovered[0]!r} "
                        "(it scores nn.Linear layers only; a soft prompt is an nn.Embedding): use LoRA, GIFT or "
                        "head_only, or pass partial=True to score only the Linear layers")
    shared = _shared(model, modules, tokenizer, tr_texts[0], max_length) if tr_texts else False
    seconds: dict[str, float] = {}

    def collate(items):
        texts, labels = zip(*items)
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "labels": torch.tensor(labels, dtype=torch.long)}

    task = _task(modules)
    # kronfluence 1.0.1, pairwise scores with shared modules: the default backward hook keeps only one call's
    # contribution (it assigns the score, then clears the other calls' hooks) — 2% off on GIFT against TracIn at
    # λ → ∞. Its per-sample-gradient path adds every call's; an identity post-processing routes scores there.
    task.enable_post_process_per_sample_gradient = shared
    factor_args = FactorArguments(strategy=strategy, has_shared_parameters=shared)
    score_args = ScoreArguments(damping_factor=damping)
    train_set = _Examples(tr_texts, tr_labels)
    out = EkfacScores(None, None, seconds, modules, uncovered)
    with tempfile.TemporaryDirectory(prefix="gbair_ekfac_") as tmp, warnings.catch_warnings(), \
            _tracked(model, task) as tracked:
        warnings.simplefilter("ignore")
        analyzer = Analyzer("gbair", tracked, task, cpu=_device(model).type == "cpu", disable_tqdm=not verbose,
                            output_dir=tmp, log_level=logging.WARNING)
        analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=collate))
        t0 = time.perf_counter()
        analyzer.fit_all_factors("factors", train_set, per_device_batch_size=batch_size, factor_args=factor_args)
        seconds["fit"] = time.perf_counter() - t0
        if self_influence:
            t0 = time.perf_counter()
            analyzer.compute_self_scores("self", "factors", train_set, per_device_train_batch_size=batch_size,
                                         score_args=score_args)
            out.self_influence = analyzer.load_self_scores("self")["all_modules"].double().numpy()
            seconds["self_influence"] = time.perf_counter() - t0
        if on is not None:
            on_texts, on_lab = _texts_labels(on, on_labels, "on")
            t0 = time.perf_counter()
            if len(on_texts):
                agg_args = ScoreArguments(damping_factor=damping, aggregate_query_gradients=True)
                analyzer.compute_pairwise_scores("aggregated", "factors", _Examples(on_texts, on_lab), train_set,
                                                 per_device_query_batch_size=batch_size,
                                                 per_device_train_batch_size=batch_size, score_args=agg_args)
                out.aggregated = analyzer.load_pairwise_scores("aggregated")["all_modules"].double().numpy()[0]
            else:
                out.aggregated = np.zeros(len(tr_texts))
            seconds["aggregated"] = time.perf_counter() - t0
    for name, scores in (("self-influence", out.self_influence), ("aggregated influence", out.aggregated)):
        if scores is not None and not np.isfinite(scores).all():
            raise PeerError(f"kronfluence returned non-finite {name}: a scored layer has all-zero gradients (e.g. "
                            "LoRA's A while B is still 0, before training), so the default damping, 0.1 × its mean "
                            f"eigenvalue, is 0 there; pass damping= a positive number (got damping={damping})")
    return out


def score_ekfac(ctx) -> np.ndarray:
    """G-BAIR with EK-FAC instead of TracIn: − Σ_{z'∈M} I(z, z') over the validation mistakes M, at the final
    parameters (higher = more likely behind the mistakes). Full fine-tuning is scored on its Linear layers
    (``partial``); prompt tuning is refused (its soft prompt is out of kronfluence's reach)."""
    _require_kronfluence()
    mistakes = ctx.val_mistakes()
    if len(mistakes) == 0:
        return np.zeros(len(ctx.train))
    scores = ekfac_influence(ctx.run.model, ctx.run.tokenizer, ctx.train.texts, ctx.train.labels,
                             [ctx.val.texts[i] for i in mistakes], ctx.val.labels[mistakes], self_influence=False,
                             partial=ctx.config.method == "full", damping=ctx.options.get("damping"),
                             max_length=ctx.run.config.max_length)
    return -np.asarray(scores.aggregated, dtype=np.float64)

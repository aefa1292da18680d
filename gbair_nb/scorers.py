"""What the G-BAIR loop ranks the training set by: every scorer, one convention — **higher = more likely mislabeled**.

A scorer is ``f(ctx: ScoreContext) -> (n_train,) scores``. It sees the run trained on the current labels, the
training set with those (noisy, partly fixed) labels and the clean validation set — never the truth mask. The
registry :data:`SCORERS` maps names to scorers: add yours there (or pass a callable, or another registry, to
:func:`gbair_nb.recovery.gbair`). TracIn goes through ``ctx.influence`` (the :mod:`gbair_nb.influence` functions, or
their sharded twins in a distributed job), so a scorer is the same code on one process or many.

- G-BAIR variants (:data:`GBAIR_VARIANTS`; docs/theory.md): which validation examples the influence is summed over,
  and how — the validation mistakes (the paper's reading), every validation example, class by class, with unit-norm
  gradients, or ranked together with the loss. ``"gbair"`` is the toolkit's default among them
  (:data:`DEFAULT_GBAIR`, ``gbair_balanced_unit``: chosen by measurement, docs/benchmarks.md "Detectors").
- Baselines: random, loss, margin, EL2N, GraNd, self-influence, cleanlab (confident learning on out-of-sample
  probabilities), and a trusted probe (:mod:`gbair_nb.probe`) fit on the clean validation set only.
- ``"auto"`` (the main job's default): the G-BAIR default when the probe estimates that the wrong labels point one
  way, the probe when they point both ways (:func:`auto_choice`; docs/benchmarks.md measures why).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch

from .data import TextDataset
from .loop import LOCAL, Compute
from .metrics import percentile_ranks
from .peers import score_ekfac
from .train import Run, TrainConfig, train

__all__ = ["ScoreContext", "Scorer", "SCORERS", "OPTIONAL_SCORERS", "GBAIR_VARIANTS", "DEFAULT_GBAIR",
           "ALIASES", "AUTO_ONE_WAY", "AutoOnce", "auto_choice", "class_influence", "rerank", "out_of_sample_probs"]


@dataclass
class ScoreContext:
    """What a scorer may look at: the run trained on the current labels, and the data.

    ``train`` carries the *current* (noisy, partly fixed) labels. ``val`` is clean. ``config`` trains new models
    (cleanlab's cross-validation) with ``compute.step``; TracIn goes through ``influence`` (``compute.influence``:
    the influence module, or its sharded twin in a distributed job). The truth mask is deliberately absent:
    scorers cannot peek. ``cache`` keeps what several scorers or fixers share (the training set's
    predicted probabilities, ...); :meth:`for_subset` gives a context on part of the training set with its own cache.
    """

    run: Run
    train: TextDataset
    val: TextDataset
    config: TrainConfig
    seed: int = 0
    options: dict = field(default_factory=dict)
    round: int = 1  # the round whose retraining uses the examples these scores flag (1 = the first fixes)
    compute: Compute = LOCAL
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def influence(self):
        """The TracIn functions to use (``gbair_nb.influence`` alone)."""
        return self.compute.influence

    def for_subset(self, positions: Sequence[int] | np.ndarray) -> "ScoreContext":
        """The same context on ``train.subset(positions)`` (a slice scored by one process of several)."""
        return replace(self, train=self.train.subset(np.asarray(positions)), cache={})

    def probs(self, checkpoint: int = -1) -> np.ndarray:
        """(n_train, C) predicted probabilities of the training set at a checkpoint (default: the last)."""
        key = ("probs", checkpoint)
        if key not in self.cache:
            n = len(self.run.checkpoints)
            self.run.load_checkpoint(checkpoint)
            self.cache[key] = self.run.predict_proba(self.train.texts)
            if checkpoint % n != n - 1:
                self.run.load_checkpoint(-1)
        return self.cache[key]

    def val_probs(self) -> np.ndarray:
        """(n_val, C) predicted probabilities of the validation set (final model)."""
        if "val_probs" not in self.cache:
            self.cache["val_probs"] = self.run.predict_proba(self.val.texts)
        return self.cache["val_probs"]

    def val_mistakes(self) -> np.ndarray:
        """Positions in ``val`` of the examples the current model gets wrong (the set M)."""
        return np.flatnonzero(self.val_probs().argmax(1) != self.val.labels)

    def influence_options(self) -> dict:
        """The TracIn options scorers pass on: ``variant`` ("dot"|"cosine"), ``checkpoints_used`` ("all"|"last"),
        and random projection (``project`` = d dimensions, ``project_seed``, ``project_kind``; None = exact)."""
        o = self.options
        return dict(variant=o.get("variant", "dot"), checkpoints_used=o.get("checkpoints", "all"),
                    project=o.get("project"), project_seed=o.get("project_seed", 0),
                    project_kind=o.get("project_kind", "countsketch"))


Scorer = Callable[[ScoreContext], np.ndarray]


def _score_random(ctx: ScoreContext) -> np.ndarray:
    return np.random.default_rng(ctx.seed + 7919).random(len(ctx.train))


def _score_loss(ctx: ScoreContext) -> np.ndarray:
    p = ctx.probs()
    return -np.log(np.clip(p[np.arange(len(p)), ctx.train.labels], 1e-12, None))


def _score_margin(ctx: ScoreContext) -> np.ndarray:
    p = ctx.probs()
    idx = np.arange(len(p))
    given = p[idx, ctx.train.labels]
    other = p.copy()
    other[idx, ctx.train.labels] = -np.inf
    return other.max(1) - given  # > 0 when another class beats the given label


def _score_el2n(ctx: ScoreContext) -> np.ndarray:
    p = ctx.probs(0)  # early in training: the first checkpoint ("Deep Learning on a Data Diet")
    onehot = np.eye(p.shape[1])[ctx.train.labels]
    return np.linalg.norm(p - onehot, axis=1)


def _score_grand(ctx: ScoreContext) -> np.ndarray:
    # GraNd (Paul et al. 2021): the per-example gradient norm early in training — here at the first checkpoint
    grads, _ = ctx.influence.per_example_grads(ctx.run.model, ctx.run.tokenizer, ctx.train.texts, ctx.train.labels,
                                           state=ctx.run.checkpoints[0].load_state(),
                                           max_length=ctx.run.config.max_length, verbose=False)
    return torch.linalg.vector_norm(grads.double(), dim=1).numpy()


def _score_self_influence(ctx: ScoreContext) -> np.ndarray:
    return np.asarray(ctx.influence.self_influence(ctx.run.model, ctx.run.tokenizer, ctx.run.checkpoints,
                                               ctx.train.texts, ctx.train.labels,
                                               max_length=ctx.run.config.max_length, verbose=False,
                                               **ctx.influence_options()), dtype=np.float64)


def _score_gbair_mistakes(ctx: ScoreContext) -> np.ndarray:
    """− Σ_{z'∈M} TracInCP(z, z'), z' under its true label: proponents of the validation mistakes M."""
    mistakes = ctx.val_mistakes()
    if len(mistakes) == 0:
        return np.zeros(len(ctx.train))
    agg = ctx.influence.aggregated_influence(
        ctx.run.model, ctx.run.tokenizer, ctx.run.checkpoints, ctx.train.texts, ctx.train.labels,
        [ctx.val.texts[i] for i in mistakes], ctx.val.labels[mistakes], max_length=ctx.run.config.max_length,
        normalize=ctx.options.get("normalize", "none"), verbose=False, **ctx.influence_options())
    return -np.asarray(agg, dtype=np.float64)


def class_influence(ctx: ScoreContext, *, unit: bool = False) -> np.ndarray:
    """(C, n_train): row c = Σ_{z' ∈ val, y' = c} TracInCP(z, z'), every validation example under its true label,
    one pass over the training set for all classes (cached in ``ctx``). ``unit=True``: every per-example gradient
    scaled to unit length (the cosine variant), so no single large-gradient example dominates a sum."""
    key = ("class_influence", unit, ctx.options.get("checkpoints", "all"))
    if key not in ctx.cache:
        opts = ctx.influence_options()
        opts["variant"] = "cosine" if unit else "dot"
        sets = [np.flatnonzero(ctx.val.labels == c) for c in range(ctx.val.num_classes)]
        ctx.cache[key] = np.asarray(ctx.influence.aggregated_influence(
            ctx.run.model, ctx.run.tokenizer, ctx.run.checkpoints, ctx.train.texts, ctx.train.labels,
            ctx.val.texts, ctx.val.labels, sets=sets, max_length=ctx.run.config.max_length, verbose=False,
            **opts), dtype=np.float64)
    return ctx.cache[key]


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def _score_gbair_all(ctx: ScoreContext) -> np.ndarray:
    """− Σ_{z' ∈ val} TracInCP(z, z') over every (clean) validation example: the opponents of the clean set. A
    mislabelled example pulls the model away from correctly labelled points like it, whether or not that already
    caused a validation mistake."""
    return -class_influence(ctx).sum(0)


def _score_gbair_balanced(ctx: ScoreContext) -> np.ndarray:
    """Class-balanced: each validation class's opposition −Σ_{z'∈class} TracInCP(z, z') standardised over the
    training set (mean 0, sd 1), then summed over classes, so no class (no direction) outweighs the others."""
    return sum(_standardise(-row) for row in class_influence(ctx))


def _score_gbair_balanced_unit(ctx: ScoreContext) -> np.ndarray:
    """:func:`_score_gbair_balanced` on unit-length per-example gradients (cosine TracIn): a few large-gradient
    (high-loss) examples can no longer dominate either side."""
    return sum(_standardise(-row) for row in class_influence(ctx, unit=True))


def _score_gbair_rank(ctx: ScoreContext) -> np.ndarray:
    """Mean percentile rank of the class-balanced G-BAIR score and the loss: two views that fail in different
    regimes (influence when the mistakes all point one way, loss when the model collapsed), no weights to tune."""
    return (percentile_ranks(_score_gbair_balanced(ctx)) + percentile_ranks(_score_loss(ctx))) / 2


def _score_probe(ctx: ScoreContext) -> np.ndarray:
    """1 − p(given label) under a logistic regression on frozen embeddings fit on the clean validation set only."""
    from .probe import probe_of

    return probe_of(ctx).p_wrong(ctx.train)


# ``auto``: which scorer to trust depends on the noise. G-BAIR's class-balanced TracIn wins when the wrong labels all
# point one way (class-conditional noise: positives labelled negative); the trusted probe wins when they point both
# ways (uniform or confusable noise). The probe also estimates which of the two the data has, before any scoring.
AUTO_ONE_WAY = 0.9  # "one-directional": at least this share of the estimated flip rate goes one way (class → class)


def auto_choice(ctx: ScoreContext) -> dict:
    """What ``scorer="auto"`` uses on ``ctx``'s labels, and why: ``{"scorer", "one_way_share", "flip_rates",
    "reason"}``.

    The trusted probe (fit on the clean validation set) estimates the noise as flip rates, the fraction of each true
    class that carries each other label (:meth:`gbair_nb.probe.TrustedProbe.flip_rates`). ``one_way_share`` is the
    largest rate over the sum of all of them: 1 when every wrong label points the same way, 1/2 for two classes
    flipped at equal rates. At or above :data:`AUTO_ONE_WAY` the G-BAIR default (:data:`DEFAULT_GBAIR`) scores,
    otherwise the probe. Measured only on two-class data (docs/benchmarks.md, "Which noise is it?"): with
    more classes the share is not a reliable sign (the 3-class tweets' natural neutral/positive confusion spreads it)
    and auto keeps the G-BAIR default.
    """
    from .probe import probe_of

    rates = probe_of(ctx).flip_rates(ctx.train)
    share = float(rates.max() / rates.sum()) if rates.sum() > 0 else 1.0
    i, j = np.unravel_index(int(rates.argmax()), rates.shape)
    way = f"{ctx.train.class_names[i]} → {ctx.train.class_names[j]}"
    if len(rates) > 2:
        scorer, reason = DEFAULT_GBAIR, (f"{len(rates)} classes: the one-way share ({share:.2f}) was measured on two "
                                         "classes only, so the G-BAIR default scores")
    elif rates.sum() == 0:
        scorer, reason = DEFAULT_GBAIR, "the probe agrees with every label (no estimated flips): G-BAIR scores"
    elif share >= AUTO_ONE_WAY:
        scorer, reason = DEFAULT_GBAIR, (f"noise looks one-directional ({share:.2f} of the estimated flip rate is "
                                         f"{way}, ≥ {AUTO_ONE_WAY}): G-BAIR's class-balanced TracIn scores")
    else:
        scorer, reason = "probe", (f"noise looks two-directional (only {share:.2f} of the estimated flip rate is "
                                   f"{way}, < {AUTO_ONE_WAY}): the trusted probe scores")
    return {"scorer": scorer, "one_way_share": share, "flip_rates": rates.tolist(), "reason": reason}


def _score_auto(ctx: ScoreContext) -> np.ndarray:
    """The G-BAIR default when the probe sees one-directional noise, the probe otherwise (:func:`auto_choice`),
    decided on ``ctx`` alone. A loop keeps one :class:`AutoOnce` instead: it decides once and keeps that scorer."""
    return AutoOnce()(ctx)


class AutoOnce:
    """``scorer="auto"`` inside a loop: the first call decides (:func:`auto_choice`, on the labels the loop starts
    from) and every call scores with the scorer chosen then, looked up in ``registry``. Deciding again on partly
    fixed labels could switch scorers halfway. ``chosen`` holds the choice (None before the first call);
    ``on_choice(chosen)`` is called once, when it is made."""

    def __init__(self, registry: dict[str, Scorer] | None = None,
                 on_choice: Callable[[dict], None] | None = None) -> None:
        self.registry, self.on_choice, self.chosen = SCORERS if registry is None else registry, on_choice, None

    def __call__(self, ctx: ScoreContext) -> np.ndarray:
        if self.chosen is None:
            self.chosen = auto_choice(ctx)
            if self.on_choice:
                self.on_choice(self.chosen)
        name = self.chosen["scorer"]
        if name not in self.registry:
            raise ValueError(f"auto chose {name!r}, which this registry lacks; add it, or name a scorer")
        return self.registry[name](ctx)


def rerank(ctx: ScoreContext, scores: np.ndarray, judged: TextDataset, wrong: np.ndarray) -> np.ndarray:
    """Re-rank ``scores`` (higher = more suspect) with what a person said about the examples already reviewed.

    ``judged`` holds the reviewed examples with the labels they had then; ``wrong`` marks those the person found
    wrong (relabeled or removed). A training example whose gradient agrees with the known-wrong labels (a proponent
    of them, Σ TracIn > 0) is likely wrong in the same way; one that agrees with the confirmed-right labels is
    likely right. Both sums come from one TracIn pass; the result is the mean percentile rank of the original score
    and of ``standardised(Σ_wrong TracIn) − standardised(Σ_right TracIn)``: in [0, 1], higher = more suspect.
    """
    wrong = np.asarray(wrong, dtype=bool)
    if len(judged) == 0:
        return np.asarray(scores, dtype=np.float64)
    sets = [np.flatnonzero(wrong), np.flatnonzero(~wrong)]
    agg = np.asarray(ctx.influence.aggregated_influence(
        ctx.run.model, ctx.run.tokenizer, ctx.run.checkpoints, ctx.train.texts, ctx.train.labels, judged.texts,
        judged.labels, sets=sets, max_length=ctx.run.config.max_length, verbose=False, **ctx.influence_options()),
        dtype=np.float64)
    evidence = np.zeros(len(ctx.train))
    if len(sets[0]):
        evidence += _standardise(agg[0])
    if len(sets[1]):
        evidence -= _standardise(agg[1])
    return (percentile_ranks(scores) + percentile_ranks(evidence)) / 2


def out_of_sample_probs(train_ds: TextDataset, config: TrainConfig, *, folds: int = 3, seed: int = 0,
                        compute: Compute = LOCAL, verbose: bool = False) -> np.ndarray:
    """(n, C) probabilities for each training example from a model that never saw it (k-fold CV of the PET model)."""
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(train_ds), train_ds.num_classes))
    min_count = int(train_ds.class_counts().min())
    kf = StratifiedKFold(n_splits=max(2, min(folds, min_count)), shuffle=True, random_state=seed)
    for fit_idx, held_idx in kf.split(np.zeros(len(train_ds)), train_ds.labels):
        run = train(train_ds.subset(fit_idx), config=replace(config, n_checkpoints=1), step=compute.step,
                    verbose=verbose)
        probs[held_idx] = run.predict_proba([train_ds.texts[i] for i in held_idx])
    return probs


def _score_cleanlab(ctx: ScoreContext) -> np.ndarray:
    from cleanlab.rank import get_label_quality_scores

    if "oos_probs" not in ctx.cache:
        ctx.cache["oos_probs"] = out_of_sample_probs(ctx.train, ctx.config, folds=ctx.options.get("folds", 3),
                                                     seed=ctx.seed, compute=ctx.compute)
    quality = get_label_quality_scores(ctx.train.labels, ctx.cache["oos_probs"])
    return 1.0 - quality


# The G-BAIR variants (docs/theory.md): which validation examples the influence is summed over and how. "gbair" is
# the toolkit's default, chosen by benchmarks/bench_detectors.py (docs/benchmarks.md, "Detectors").
GBAIR_VARIANTS: dict[str, Scorer] = {
    "gbair_mistakes": _score_gbair_mistakes,
    "gbair_all": _score_gbair_all,
    "gbair_balanced": _score_gbair_balanced,
    "gbair_balanced_unit": _score_gbair_balanced_unit,
    "gbair_rank": _score_gbair_rank,
}
DEFAULT_GBAIR = "gbair_balanced_unit"

SCORERS: dict[str, Scorer] = {
    "gbair": GBAIR_VARIANTS[DEFAULT_GBAIR],
    **GBAIR_VARIANTS,
    "random": _score_random,
    "loss": _score_loss,
    "margin": _score_margin,
    "el2n": _score_el2n,
    "grand": _score_grand,
    "self_influence": _score_self_influence,
    "cleanlab": _score_cleanlab,
    "probe": _score_probe,
    "auto": _score_auto,  # the G-BAIR default or the probe, whichever the noise calls for (auto_choice)
    "ekfac": score_ekfac,  # EK-FAC influence functions (gbair_nb.peers): needs kronfluence; not for prompt tuning
}
# Scorers that need an optional package or a particular PET method: never part of "all"
OPTIONAL_SCORERS = frozenset({"ekfac"})
# Names that score with another registered scorer ("gbair" is DEFAULT_GBAIR, "auto" it or the probe): not in "all"
ALIASES = frozenset({"gbair", "auto"})

"""G-BAIR — gradient-based automated iterative recovery — with honest baselines and detection metrics.

Our reconstruction of Mozes et al. (2023) (the paper's code is not public; docs/theory.md says which choices are the
paper's and which are this toolkit's):

1. train the PET model on the current training labels, saving checkpoints and their learning rates;
2. M = the validation examples the model gets wrong;
3. score every training example by how much it pushed the model toward those mistakes:
   ``score(z) = − Σ_{z'∈M} TracInCP(z, z')`` with z' under its true label — higher = more likely behind the mistakes;
4. flag the k highest-scoring examples not yet reviewed;
5. fix them (``flip``, ``predict``, ``remove``, or a person through a callback);
6. retrain and record validation/test metrics and how clean the labels now are;
7. stop after ``rounds`` rounds, when M is empty, or when validation macro-F1 stops improving (then the last
   round's changes are rolled back: they did not help on validation, so they are not trusted).

Every other scorer (random, loss, margin, EL2N, GraNd, self-influence, cleanlab) runs through the *same* loop, so the
comparison is at equal budget. All scores follow one convention: **higher = more likely mislabeled**.

The loop's state and steps live in :mod:`gbair_nb.loop` (shared with the human rounds and the distributed job);
this module holds the scorers, the fixers and :func:`gbair`, which only orders the steps. Scorers are looked up by
name in a registry (``SCORERS`` by default; pass ``registry=`` to use another, e.g. the distributed job's sharded
scorers), so nothing here is ever replaced at run time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .data import Corruption, Splits, TextDataset, corrupt, load_dataset, split
from .loop import LOCAL, Compute, LoopState, Recovery, RoundRecord, StoppingRule, round_metrics
from .metrics import detection_metrics, percentile_ranks, recovered_fraction
from .train import Run, TrainConfig, train

__all__ = ["Scenario", "make_scenario", "SCENARIOS", "ScoreContext", "SCORERS", "FIXERS", "RoundRecord",
           "Recovery", "gbair", "detection_metrics", "compare_detectors", "default_k", "recovered_fraction",
           "train_clean_reference", "out_of_sample_probs", "check_fix", "pick", "Scorer", "StoppingRule",
           "GBAIR_VARIANTS", "DEFAULT_GBAIR", "class_influence", "percentile_ranks", "rerank"]


# ------------------------------------------------------------------------------------------------- scenarios
@dataclass
class Scenario:
    """A corrupted-label experiment: clean splits plus noisy training labels beside the truth mask."""

    name: str
    splits: Splits
    corruption: Corruption

    @property
    def train(self) -> TextDataset:
        """The training set with its *noisy* labels (what the model learns from)."""
        return self.splits.train.with_labels(self.corruption.noisy_labels)

    def summary(self) -> dict:
        return {"scenario": self.name, "dataset": self.splits.train.name, **self.splits.sizes(),
                "corruption": self.corruption.summary()}


# Scenarios worth teaching. Class-conditional "missed positives" is the default: it is realistic for moderation
# (harmful content labelled harmless) and it costs the plainly trained model most of its F1. The rate is chosen off
# the knife edge: with half of the SMS spam labelled ham, spam-looking texts carry each label half the time, the model
# learns p(spam) ≈ 0.5 for them and whether it predicts spam at all is a coin flip of the seed (round-0 test F1
# 0.46–0.83); with 70% labelled ham it reliably predicts ham (benchmarks/bench_base_model.py, docs/benchmarks.md).
SCENARIOS = {
    "sms_spam": dict(dataset="sms_spam", mode="class_conditional", p=0.7, n_train=400, n_val=200, n_test=500),
    "sms_spam_uniform": dict(dataset="sms_spam", mode="uniform", p=0.2, n_train=400, n_val=200, n_test=500),
    "tweets_binary": dict(dataset="tweets_binary", mode="class_conditional", p=0.5, n_train=600, n_val=300,
                          n_test=600),
    "tweets": dict(dataset="tweets", mode="class_conditional", p=0.5, n_train=900, n_val=300, n_test=600,
                   source=0, target=1),
}


def make_scenario(dataset: str | TextDataset = "sms_spam", *, mode: str = "class_conditional", p: float = 0.5,
                  n_train: float | int = 400, n_val: float | int = 200, n_test: float | int = 500, seed: int = 0,
                  source: int | None = None, target: int | None = None, probs: np.ndarray | None = None,
                  name: str | None = None) -> Scenario:
    """Split a dataset and corrupt the training labels (the validation and test labels stay clean)."""
    ds = load_dataset(dataset) if not isinstance(dataset, TextDataset) else dataset
    splits = split(ds, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
    c = corrupt(splits.train.labels, p=p, mode=mode, seed=seed, num_classes=ds.num_classes, source=source,
                target=target, probs=probs)
    return Scenario(name or f"{ds.name}:{mode}:{p}", splits, c)


def default_k(n_train: int, fraction: float = 0.04) -> int:
    """Budget per round relative to the training-set size: 4% of it (16 for 400 examples), at least 5."""
    return max(5, int(round(fraction * n_train)))


# --------------------------------------------------------------------------------------------------- scorers
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
        """The TracIn options scorers pass on: ``variant`` ("dot"|"cosine"), ``checkpoints_used`` ("all"|"last")."""
        return dict(variant=self.options.get("variant", "dot"),
                    checkpoints_used=self.options.get("checkpoints", "all"))


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
DEFAULT_GBAIR = "gbair_mistakes"

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
}


# ---------------------------------------------------------------------------------------------------- fixers
def check_fix(fix, ds: TextDataset) -> None:
    """Raise before any training if ``fix`` cannot work on ``ds`` (flipping needs exactly two classes)."""
    if fix == "flip" and ds.num_classes != 2:
        raise ValueError(f"fix='flip' is for binary labels; {ds.name} has {ds.num_classes} classes: "
                         "use fix='predict' (the model's prediction) or 'remove'")


def _fix_flip(ids, labels, ctx: ScoreContext) -> dict:
    check_fix("flip", ctx.train)
    return {int(i): ("relabel", 1 - int(labels[i])) for i in ids}


def _fix_predict(ids, labels, ctx: ScoreContext) -> dict:
    preds = ctx.probs().argmax(1)
    return {int(i): ("relabel", int(preds[i])) for i in ids}


def _fix_remove(ids, labels, ctx: ScoreContext) -> dict:
    return {int(i): ("remove", None) for i in ids}


FIXERS = {"flip": _fix_flip, "predict": _fix_predict, "remove": _fix_remove}


# ------------------------------------------------------------------------------------------------------ loop
def train_clean_reference(scenario: Scenario, config: TrainConfig, *, compute: Compute = LOCAL,
                          verbose: bool = False) -> dict:
    """Metrics of the same model trained on the true labels: the ceiling recovery aims for."""
    run = train(scenario.splits.train, val=scenario.splits.val, config=config, step=compute.step, verbose=verbose)
    return round_metrics(run, scenario.splits.val, scenario.splits.test)


def pick(choice: str | Callable, registry: Mapping[str, Callable], what: str) -> Callable:
    """A registered function by name, or the callable given; a clear error for an unknown name."""
    if not isinstance(choice, str):
        return choice
    if choice not in registry:
        raise ValueError(f"unknown {what} {choice!r}; use one of {', '.join(registry)} or a callback")
    return registry[choice]


def gbair(scenario: Scenario, *, scorer: str | Scorer = "gbair", k: int | None = None, rounds: int = 5,
          fix: str | Callable = "flip", config: TrainConfig | None = None, patience: int = 1,
          min_precision: float | None = None, rerank_with_verdicts: bool = False, warm_start: bool = False, clean: dict | bool = True, seed: int = 0, options: dict | None = None,
          round0: Run | None = None, registry: Mapping[str, Scorer] = SCORERS, compute: Compute = LOCAL,
          verbose: bool = True,
          on_round: Callable[[RoundRecord], None] | None = None) -> Recovery:
    """Run the recovery loop with one scorer and return every round's record.

    Args:
        scenario: clean splits + corrupted training labels (:func:`make_scenario`).
        scorer: a name in ``registry`` or ``f(ScoreContext) -> (n_train,) scores`` (higher = more suspect).
        k: examples flagged per round (default :func:`default_k` of the training-set size).
        rounds: at most this many fix-and-retrain rounds.
        fix: ``"flip"`` (binary), ``"predict"``, ``"remove"``, or ``f(flagged_positions, labels, ctx) ->
            {position: ("relabel", new_label) | ("keep", None) | ("remove", None)}`` — a person plugs in here.
        config: training settings (default ``TrainConfig.default()``), used for every retraining.
        patience: stop after this many rounds without a new best validation macro-F1; the labels of the best
            round are the final ones (changes that did not help on validation are rolled back).
        min_precision: stop before applying a batch whose precision, estimated without the truth by the trusted
            probe (:mod:`gbair_nb.probe`), is below this (None: never; 0.5 is where flips start to add more wrong
            labels than they remove).
        rerank_with_verdicts: from round 2 on, re-rank the scores with what the fixer said about the examples it
            reviewed (:func:`rerank`) — meant for a person or a simulated annotator, whose verdicts are evidence.
        warm_start: continue training the previous round's model instead of retraining from scratch.
        clean: also train on the true labels for the reference (True), pass precomputed metrics, or False.
        options: scorer options: ``variant`` ("dot"|"cosine"), ``checkpoints`` ("all"|"last"),
            ``normalize`` ("none"|"per_mistake") for G-BAIR; ``folds`` for cleanlab.
        round0: a run already trained on the corrupted labels with ``config`` (shared between scorers: the
            first round is the same for all of them).
        registry: where scorer names are looked up (default ``SCORERS``).
        compute: how training steps and TracIn run (:data:`gbair_nb.loop.LOCAL`; a torchrun job passes
            ``job.compute``: its data-parallel step and sharded TracIn).

    Never changes the scenario: labels are copied; the truth mask is used only to *report* precision.
    """
    config = config or TrainConfig.default()
    config = replace(config, seed=seed) if config.seed != seed else config
    options = dict(options or {})
    name = scorer if isinstance(scorer, str) else getattr(scorer, "__name__", "custom")
    score_fn = pick(scorer, registry, "scorer")
    fix_fn = pick(fix, FIXERS, "fix")
    base = scenario.splits.train
    state = LoopState(scenario, default_k(len(base)) if k is None else k)
    rule = StoppingRule(patience=patience, rounds=rounds, min_precision=min_precision)
    check_fix(fix, base)
    clean_ref = train_clean_reference(scenario, config, compute=compute) if clean is True else (clean or None)
    val, test = scenario.splits.val, scenario.splits.test
    bar = tqdm(total=rounds + 1, desc=f"recovery ({name})", disable=not verbose, leave=False)
    run, stopped = None, "rounds"
    while True:
        t0 = time.perf_counter()
        _, current = state.current()
        if state.round == 0 and round0 is not None:
            round0.check_data(current)
            run = round0
        else:
            warm = {"model": run.model, "tokenizer": run.tokenizer} if warm_start and run else {}
            run = train(current, config=config, step=compute.step, verbose=False, **warm)
        rec = state.record(round_metrics(run, val, test))
        bar.update(1)
        bar.set_postfix(round=rec.round, val_f1=f"{rec.val_macro_f1:.3f}", test_f1=f"{rec.test_macro_f1:.3f}")
        stop = rule.decide(state.records)
        if stop is None:  # score the examples still in training, flag the top k not yet reviewed, fix them
            ctx = ScoreContext(run, current, val, config, seed=seed + rec.round, options=options,
                               round=state.round, compute=compute)
            scores = np.asarray(score_fn(ctx), dtype=np.float64)
            if rerank_with_verdicts and state.verdicts:
                scores = rerank(ctx, scores, *state.verdict_examples())
            flagged = state.flag(scores)
            rec.detection = state.detection(scores)
            estimate = state.estimate_precision(flagged, ctx) if flagged and min_precision is not None else None
            if not flagged:
                stop = "nothing left to review"
            elif not rule.accept(estimate):
                stop = f"estimated precision {estimate:.2f} < {min_precision}"
            else:
                state.apply(flagged, fix_fn, ctx, estimated_precision=estimate)
        rec.seconds = time.perf_counter() - t0
        if stop is not None:
            stopped = stop
            break
        if on_round:
            on_round(rec)
    bar.close()
    return state.recovery(name, rule, stopped_because=stopped, clean=clean_ref,
                          options={"k": state.k, "rounds": rounds, "fix": str(fix), "patience": patience,
                                   "min_precision": min_precision, "rerank_with_verdicts": rerank_with_verdicts,
                                   "warm_start": warm_start, **options})


# ------------------------------------------------------------------------------------------ detection metrics
def compare_detectors(scenario: Scenario, *, scorers: Sequence[str] = tuple(SCORERS), config: TrainConfig | None = None,
                      k: int | None = None, seed: int = 0, options: dict | None = None, run: Run | None = None,
                      registry: Mapping[str, Scorer] = SCORERS, compute: Compute = LOCAL,
                      verbose: bool = True) -> pd.DataFrame:
    """Round-1 detection metrics of every scorer on the same corrupted data and the same trained model.

    Returns a DataFrame (one row per scorer) with AUROC, AUPRC, recall at k% inspected, precision@k — and keeps the
    raw scores in ``df.attrs["scores"]`` for plots.
    """
    config = config or TrainConfig.default(seed=seed)
    train_ds = scenario.train
    run = run or train(train_ds, config=config, step=compute.step, verbose=verbose)
    ctx = ScoreContext(run, train_ds, scenario.splits.val, config, seed=seed, options=dict(options or {}),
                       compute=compute)
    rows, raw = [], {}
    for name in tqdm(list(scorers), desc="scorers", disable=not verbose, leave=False):
        t0 = time.perf_counter()
        s = np.asarray(pick(name, registry, "scorer")(ctx), dtype=np.float64)
        raw[name] = s
        rows.append({"scorer": name, **detection_metrics(s, scenario.corruption.is_corrupted, k=k),
                     "seconds": time.perf_counter() - t0})
    df = pd.DataFrame(rows)
    df.attrs["scores"] = raw
    df.attrs["n_val_mistakes"] = int(len(ctx.val_mistakes()))
    return df

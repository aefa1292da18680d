"""G-BAIR — gradient-based automated iterative recovery — with honest baselines and detection metrics.

Our reconstruction of Mozes et al. (2023) (the paper's code is not public; see docs/method notes):

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
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm.auto import tqdm

from .data import Corruption, Splits, TextDataset, corrupt, load_dataset, split
from .peers import score_ekfac
from .train import Run, TrainConfig, evaluate, predict_proba, train

__all__ = ["Scenario", "make_scenario", "SCENARIOS", "ScoreContext", "SCORERS", "FIXERS", "RoundRecord",
           "Recovery", "gbair", "detection_metrics", "compare_detectors", "default_k", "recovered_fraction",
           "train_clean_reference", "out_of_sample_probs", "check_fix"]


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
# (harmful content labelled harmless) and it actually costs performance (method notes §6).
SCENARIOS = {
    "sms_spam": dict(dataset="sms_spam", mode="class_conditional", p=0.5, n_train=400, n_val=200, n_test=500),
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
    (cleanlab's cross-validation). The truth mask is deliberately absent: scorers cannot peek.
    """

    run: Run
    train: TextDataset
    val: TextDataset
    config: TrainConfig
    seed: int = 0
    options: dict = field(default_factory=dict)
    round: int = 1  # the round these scores flag examples for (its retraining uses the fixes)
    _cache: dict = field(default_factory=dict)

    def probs(self, checkpoint: int = -1) -> np.ndarray:
        """(n_train, C) predicted probabilities of the training set at a checkpoint (default: the last)."""
        key = ("probs", checkpoint)
        if key not in self._cache:
            n = len(self.run.checkpoints)
            self.run.load_checkpoint(checkpoint)
            self._cache[key] = self.run.predict_proba(self.train.texts)
            if checkpoint % n != n - 1:
                self.run.load_checkpoint(-1)
        return self._cache[key]

    def val_probs(self) -> np.ndarray:
        if "val_probs" not in self._cache:
            self._cache["val_probs"] = self.run.predict_proba(self.val.texts)
        return self._cache["val_probs"]

    def val_mistakes(self) -> np.ndarray:
        """Positions in ``val`` of the examples the current model gets wrong (the set M)."""
        return np.flatnonzero(self.val_probs().argmax(1) != self.val.labels)


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


def _influence_kwargs(ctx: ScoreContext) -> dict:
    o = ctx.options
    return dict(variant=o.get("variant", "dot"), checkpoints_used=o.get("checkpoints", "all"),
                project=o.get("project"), project_seed=o.get("project_seed", 0),
                project_kind=o.get("project_kind", "countsketch"))


def _score_grand(ctx: ScoreContext) -> np.ndarray:
    from . import influence

    # GraNd (Paul et al. 2021): the per-example gradient norm early in training — here at the first checkpoint
    grads, _ = influence.per_example_grads(ctx.run.model, ctx.run.tokenizer, ctx.train.texts, ctx.train.labels,
                                           state=ctx.run.checkpoints[0].load_state(),
                                           max_length=ctx.run.config.max_length, verbose=False)
    return torch.linalg.vector_norm(grads.double(), dim=1).numpy()


def _score_self_influence(ctx: ScoreContext) -> np.ndarray:
    from . import influence

    return np.asarray(influence.self_influence(ctx.run.model, ctx.run.tokenizer, ctx.run.checkpoints,
                                               ctx.train.texts, ctx.train.labels,
                                               max_length=ctx.run.config.max_length, verbose=False,
                                               **_influence_kwargs(ctx)), dtype=np.float64)


def _score_gbair(ctx: ScoreContext) -> np.ndarray:
    """− Σ_{z'∈M} TracInCP(z, z'), z' under its true label: proponents of the validation mistakes."""
    from . import influence

    mistakes = ctx.val_mistakes()
    if len(mistakes) == 0:
        return np.zeros(len(ctx.train))
    agg = influence.aggregated_influence(
        ctx.run.model, ctx.run.tokenizer, ctx.run.checkpoints, ctx.train.texts, ctx.train.labels,
        [ctx.val.texts[i] for i in mistakes], ctx.val.labels[mistakes], max_length=ctx.run.config.max_length,
        normalize=ctx.options.get("normalize", "none"), verbose=False, **_influence_kwargs(ctx))
    return -np.asarray(agg, dtype=np.float64)


def out_of_sample_probs(train_ds: TextDataset, config: TrainConfig, *, folds: int = 3, seed: int = 0,
                        verbose: bool = False) -> np.ndarray:
    """(n, C) probabilities for each training example from a model that never saw it (k-fold CV of the PET model)."""
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(train_ds), train_ds.num_classes))
    min_count = int(train_ds.class_counts().min())
    kf = StratifiedKFold(n_splits=max(2, min(folds, min_count)), shuffle=True, random_state=seed)
    for fit_idx, held_idx in kf.split(np.zeros(len(train_ds)), train_ds.labels):
        run = train(train_ds.subset(fit_idx), config=replace(config, n_checkpoints=1), verbose=verbose)
        probs[held_idx] = run.predict_proba([train_ds.texts[i] for i in held_idx])
    return probs


def _score_cleanlab(ctx: ScoreContext) -> np.ndarray:
    from cleanlab.rank import get_label_quality_scores

    if "oos_probs" not in ctx._cache:
        ctx._cache["oos_probs"] = out_of_sample_probs(ctx.train, ctx.config, folds=ctx.options.get("folds", 3),
                                                      seed=ctx.seed)
    quality = get_label_quality_scores(ctx.train.labels, ctx._cache["oos_probs"])
    return 1.0 - quality


SCORERS: dict[str, Callable[[ScoreContext], np.ndarray]] = {
    "gbair": _score_gbair,
    "random": _score_random,
    "loss": _score_loss,
    "margin": _score_margin,
    "el2n": _score_el2n,
    "grand": _score_grand,
    "self_influence": _score_self_influence,
    "cleanlab": _score_cleanlab,
    "ekfac": score_ekfac,  # optional: EK-FAC influence functions, needs kronfluence (gbair_nb.peers)
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
@dataclass
class RoundRecord:
    """What happened in one round (round 0 = trained on the corrupted labels, nothing fixed yet)."""

    round: int
    val_accuracy: float
    val_macro_f1: float
    test_accuracy: float
    test_macro_f1: float
    n_val_mistakes: int
    flagged_ids: list = field(default_factory=list)
    flagged_precision: float | None = None  # fraction of flagged examples whose label was wrong
    n_fixed_correctly: int = 0
    wrong_labels_remaining: int = 0
    n_removed: int = 0
    seconds: float = 0.0
    detection: dict | None = None  # how well this round's scores ranked the still-wrong labels (AUROC, …)


@dataclass
class Recovery:
    """The outcome of a recovery loop: per-round records, references and the final labels."""

    scorer: str
    rounds: list[RoundRecord]
    labels: np.ndarray  # final training labels (by position in the training set)
    kept: np.ndarray  # bool mask: not removed
    final_round: int  # the round whose labels were kept (best validation macro-F1)
    stopped_because: str
    clean: dict | None = None  # metrics of the same model trained on the true labels
    options: dict = field(default_factory=dict)
    history: list = field(default_factory=list, repr=False)  # (labels, kept) the model of each round trained on

    def frame(self) -> pd.DataFrame:
        """One row per round."""
        df = pd.DataFrame([asdict(r) for r in self.rounds])
        df.insert(0, "scorer", self.scorer)
        return df

    def final(self) -> RoundRecord:
        return next(r for r in self.rounds if r.round == self.final_round)

    def recovered(self, metric: str = "test_macro_f1") -> float | None:
        """(final − corrupted) / (clean − corrupted) for ``metric``; None without a clean reference."""
        if self.clean is None:
            return None
        return recovered_fraction(getattr(self.final(), metric), getattr(self.rounds[0], metric),
                                  self.clean[metric])

    def summary(self) -> dict:
        out = {"scorer": self.scorer, "final_round": self.final_round, "stopped_because": self.stopped_because,
               "rounds": [asdict(r) for r in self.rounds], "options": self.options}
        if self.clean is not None:
            out["recovered_fraction"] = {m: self.recovered(m) for m in ("test_macro_f1", "test_accuracy")}
        return out


def recovered_fraction(final: float, corrupted: float, clean: float) -> float:
    """(final − corrupted) / (clean − corrupted): 1 = all the lost performance came back, 0 = none, < 0 = worse."""
    gap = clean - corrupted
    return float("nan") if abs(gap) < 1e-12 else float((final - corrupted) / gap)


def _evaluate(run: Run, val: TextDataset, test: TextDataset) -> dict:
    v, t = evaluate(run, val), evaluate(run, test)
    return {"val_accuracy": v.accuracy, "val_macro_f1": v.macro_f1, "test_accuracy": t.accuracy,
            "test_macro_f1": t.macro_f1, "n_val_mistakes": int((v.preds != val.labels).sum())}


def train_clean_reference(scenario: Scenario, config: TrainConfig, *, verbose: bool = False) -> dict:
    """Metrics of the same model trained on the true labels: the ceiling recovery aims for."""
    run = train(scenario.splits.train, val=scenario.splits.val, config=config, verbose=verbose)
    return _evaluate(run, scenario.splits.val, scenario.splits.test)


def _pick(choice: str | Callable, registry: dict, what: str) -> Callable:
    """A registered function by name, or the callable given."""
    if not isinstance(choice, str):
        return choice
    if choice not in registry:
        raise ValueError(f"unknown {what} {choice!r}; use one of {', '.join(registry)} or a callback")
    return registry[choice]


def _apply_fixes(flagged: list[int], fix_fn: Callable, ctx: ScoreContext, positions: np.ndarray,
                 labels: np.ndarray, kept: np.ndarray, reviewed: np.ndarray, truth: np.ndarray,
                 base: TextDataset) -> dict:
    """Ask the fixer about the flagged examples and apply its decisions to ``labels``/``kept`` in place.

    Returns what the next round's record reports: flagged ids, precision against the truth, how many were fixed.
    """
    was_wrong = labels[flagged] != truth[flagged]
    # fixers see positions within the current training set; translate back to positions in the full one
    local = {int(p): i for i, p in enumerate(positions)}
    decisions = fix_fn([local[p] for p in flagged], labels[positions], ctx)
    fixed = 0
    for p, wrong in zip(flagged, was_wrong):
        action, new = decisions.get(local[p], ("keep", None))
        if action == "relabel":
            labels[p] = int(new)
            fixed += int(labels[p] == truth[p] and wrong)
        elif action == "remove":
            kept[p] = False
            fixed += int(wrong)
        elif action != "keep":
            raise ValueError(f"unknown decision {action!r} for example {int(base.ids[p])}")
    reviewed[flagged] = True  # only once the fixer answered: a fixer that raises can be asked again
    return {"ids": [int(base.ids[p]) for p in flagged], "precision": float(was_wrong.mean()), "fixed": fixed}


def gbair(scenario: Scenario, *, scorer: str | Callable = "gbair", k: int | None = None, rounds: int = 5,
          fix: str | Callable = "flip", config: TrainConfig | None = None, patience: int = 1,
          warm_start: bool = False, clean: dict | bool = True, seed: int = 0, options: dict | None = None,
          round0: Run | None = None, verbose: bool = True,
          on_round: Callable[[RoundRecord], None] | None = None) -> Recovery:
    """Run the recovery loop with one scorer and return every round's record.

    Args:
        scenario: clean splits + corrupted training labels (:func:`make_scenario`).
        scorer: a name in ``SCORERS`` or ``f(ScoreContext) -> (n_train,) scores`` (higher = more suspect).
        k: examples flagged per round (default :func:`default_k` of the training-set size).
        rounds: at most this many fix-and-retrain rounds.
        fix: ``"flip"`` (binary), ``"predict"``, ``"remove"``, or ``f(flagged_positions, labels, ctx) ->
            {position: ("relabel", new_label) | ("keep", None) | ("remove", None)}`` — a person plugs in here.
        config: training settings (default ``TrainConfig.default()``), used for every retraining.
        patience: stop after this many rounds without a new best validation macro-F1; the labels of the best
            round are the final ones (changes that did not help on validation are rolled back).
        warm_start: continue training the previous round's model instead of retraining from scratch.
        clean: also train on the true labels for the reference (True), pass precomputed metrics, or False.
        options: scorer options: ``variant`` ("dot"|"cosine"), ``checkpoints`` ("all"|"last"),
            ``normalize`` ("none"|"per_mistake") for G-BAIR; ``folds`` for cleanlab.
        round0: a run already trained on the corrupted labels with ``config`` (shared between scorers: the
            first round is the same for all of them).

    Never changes the scenario: labels are copied; the truth mask is used only to *report* precision.
    """
    config = config or TrainConfig.default()
    config = replace(config, seed=seed) if config.seed != seed else config
    options = dict(options or {})
    name = scorer if isinstance(scorer, str) else getattr(scorer, "__name__", "custom")
    score_fn = _pick(scorer, SCORERS, "scorer")
    fix_fn = _pick(fix, FIXERS, "fix")
    base = scenario.splits.train
    truth = scenario.corruption.labels
    n = len(base)
    k = default_k(n) if k is None else int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the training-set size {n}; got {k}")
    check_fix(fix, base)
    clean_ref = train_clean_reference(scenario, config) if clean is True else (clean or None)

    labels = scenario.corruption.noisy_labels.copy()
    kept = np.ones(n, dtype=bool)
    reviewed = np.zeros(n, dtype=bool)
    history: list[tuple[np.ndarray, np.ndarray]] = []
    records: list[RoundRecord] = []
    bar = tqdm(total=rounds + 1, desc=f"recovery ({name})", disable=not verbose, leave=False)
    run = None
    best_round, best_f1, since_best, stopped = 0, -1.0, 0, "rounds"
    pending: dict | None = None
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        positions = np.flatnonzero(kept)
        current = base.subset(positions).with_labels(labels[positions])
        if r == 0 and round0 is not None:
            round0.check_data(current)
            run = round0
        else:
            run = train(current, val=None, config=config, verbose=False,
                        **({"model": run.model, "tokenizer": run.tokenizer} if warm_start and run else {}))
        m = _evaluate(run, scenario.splits.val, scenario.splits.test)
        rec = RoundRecord(round=r, **m, wrong_labels_remaining=int(((labels != truth) & kept).sum()),
                          n_removed=int((~kept).sum()))
        if pending is not None:
            rec.flagged_ids, rec.flagged_precision, rec.n_fixed_correctly = (
                pending["ids"], pending["precision"], pending["fixed"])
        history.append((labels.copy(), kept.copy()))
        if m["val_macro_f1"] > best_f1 + 1e-9:
            best_round, best_f1, since_best = r, m["val_macro_f1"], 0
        else:
            since_best += 1
        bar.update(1)
        bar.set_postfix(round=r, val_f1=f"{m['val_macro_f1']:.3f}", test_f1=f"{m['test_macro_f1']:.3f}")
        stop = ("no validation gain" if since_best >= patience and r > 0 else
                "rounds" if r == rounds else
                "no validation mistakes" if m["n_val_mistakes"] == 0 else None)
        if stop is None:
            # score the examples still in the training set, flag the top k not yet reviewed
            ctx = ScoreContext(run, current, scenario.splits.val, config, seed=seed + r, options=options,
                               round=r + 1)
            scores = np.full(n, -np.inf)
            scores[positions] = np.asarray(score_fn(ctx), dtype=np.float64)
            wrong_now = (labels != truth)[positions]
            if 0 < wrong_now.sum() < len(positions):
                rec.detection = detection_metrics(scores[positions], wrong_now, k=k)
            scores[reviewed | ~kept] = -np.inf
            order = np.argsort(-scores, kind="stable")
            flagged = [int(p) for p in order[:k] if np.isfinite(scores[p])]
            if flagged:
                pending = _apply_fixes(flagged, fix_fn, ctx, positions, labels, kept, reviewed, truth, base)
            else:
                stop = "nothing left to review"
        rec.seconds = time.perf_counter() - t0
        records.append(rec)
        if stop is not None:
            stopped = stop
            break
        if on_round:
            on_round(rec)
    bar.close()
    final_labels, final_kept = history[best_round]
    return Recovery(scorer=name, rounds=records, labels=final_labels, kept=final_kept, final_round=best_round,
                    stopped_because=stopped, clean=clean_ref, history=history, options={"k": k, "rounds": rounds, "fix": str(fix),
                                                                       "patience": patience,
                                                                       "warm_start": warm_start, **options})


# ------------------------------------------------------------------------------------------ detection metrics
def detection_metrics(scores: np.ndarray, is_corrupted: np.ndarray, *, k: int | None = None,
                      inspect: Sequence[float] = (0.05, 0.1, 0.2)) -> dict:
    """How well ``scores`` (higher = more suspect) rank the corrupted examples first.

    Returns AUROC, AUPRC (average precision), recall at each fraction of the data inspected, and precision of the
    top ``k`` (default: as many as there are corrupted examples).
    """
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_corrupted, dtype=bool)
    if scores.shape != y.shape:
        raise ValueError(f"scores {scores.shape} and is_corrupted {y.shape} must have the same shape")
    n, pos = len(y), int(y.sum())
    order = np.argsort(-scores, kind="stable")
    out = {"n": n, "n_corrupted": pos}
    if 0 < pos < n:
        out["auroc"] = float(roc_auc_score(y, scores))
        out["auprc"] = float(average_precision_score(y, scores))
    else:
        out["auroc"] = out["auprc"] = float("nan")
    for f in inspect:
        m = max(1, int(math.ceil(f * n)))
        out[f"recall@{int(round(f * 100))}%"] = float(y[order[:m]].sum() / pos) if pos else float("nan")
    k = pos if k is None else k
    out["k"] = int(k)
    out["precision@k"] = float(y[order[:k]].mean()) if k else float("nan")
    return out


def compare_detectors(scenario: Scenario, *, scorers: Sequence[str] = tuple(SCORERS), config: TrainConfig | None = None,
                      k: int | None = None, seed: int = 0, options: dict | None = None, run: Run | None = None,
                      verbose: bool = True) -> pd.DataFrame:
    """Round-1 detection metrics of every scorer on the same corrupted data and the same trained model.

    Returns a DataFrame (one row per scorer) with AUROC, AUPRC, recall at k% inspected, precision@k — and keeps the
    raw scores in ``df.attrs["scores"]`` for plots.
    """
    config = config or TrainConfig.default(seed=seed)
    train_ds = scenario.train
    run = run or train(train_ds, config=config, verbose=verbose)
    ctx = ScoreContext(run, train_ds, scenario.splits.val, config, seed=seed, options=dict(options or {}))
    rows, raw = [], {}
    for name in tqdm(list(scorers), desc="scorers", disable=not verbose, leave=False):
        t0 = time.perf_counter()
        s = np.asarray(SCORERS[name](ctx), dtype=np.float64)
        raw[name] = s
        rows.append({"scorer": name, **detection_metrics(s, scenario.corruption.is_corrupted, k=k),
                     "seconds": time.perf_counter() - t0})
    df = pd.DataFrame(rows)
    df.attrs["scores"] = raw
    df.attrs["n_val_mistakes"] = int(len(ctx.val_mistakes()))
    return df

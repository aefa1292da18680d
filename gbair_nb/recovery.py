"""G-BAIR — gradient-based automated iterative recovery — with honest baselines at equal budget.

Our reconstruction of Mozes et al. (2023) (the paper's code is not public; docs/theory.md says which choices are the
paper's and which are this toolkit's):

1. train the PET model on the current training labels, saving checkpoints and their learning rates;
2. score every training example (:mod:`gbair_nb.scorers`; G-BAIR's own score is built from TracIn against the clean
   validation set) — higher = more likely mislabeled;
3. flag the k highest-scoring examples not yet reviewed;
4. fix them (``flip``, ``predict``, ``remove``, or a person through a callback: :mod:`gbair_nb.human`);
5. retrain and record validation/test metrics and how clean the labels now are;
6. stop when the :class:`~gbair_nb.loop.StoppingRule` says so (rounds, no validation gain for ``patience`` rounds,
   no validation mistakes, or a batch whose estimated precision is too low) and keep the labels of the round with
   the best validation macro-F1: every later round is rolled back.

Every scorer runs through the *same* loop, so the comparison is at equal budget. The loop's state and steps live in
:mod:`gbair_nb.loop` (shared with the human rounds and the distributed job); :func:`gbair` only orders the steps.
A new fixer goes into :data:`FIXERS`.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .data import TextDataset
from .loop import LOCAL, Compute, LoopState, Recovery, RoundRecord, StoppingRule, default_k, round_metrics
from .metrics import detection_metrics
from .scenarios import Scenario
from .scorers import ALIASES, OPTIONAL_SCORERS, SCORERS, AutoOnce, Scorer, ScoreContext, rerank
from .train import Run, TrainConfig, train

__all__ = ["FIXERS", "gbair", "loop_options", "compare_detectors", "DetectorScores", "train_clean_reference",
           "check_fix", "pick", "loop_scorer"]


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


def loop_scorer(scorer: str | Scorer, registry: Mapping[str, Scorer] = SCORERS,
                on_choice: Callable[[dict], None] | None = None) -> Scorer:
    """The scorer a loop calls every round: ``"auto"`` becomes an :class:`~gbair_nb.scorers.AutoOnce` (it decides
    at the first round, on the starting labels, and keeps that scorer; ``.chosen`` says what and why), any other
    name or callable is :func:`pick`'s."""
    if scorer == "auto":
        return AutoOnce(registry, on_choice=on_choice)
    return pick(scorer, registry, "scorer")


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
            ``"auto"`` decides once, on the labels the loop starts from, between the G-BAIR default and the probe
            (:func:`gbair_nb.scorers.auto_choice`), keeps that scorer for every round and records the choice in
            ``Recovery.chosen``.
        k: examples flagged per round (default :func:`default_k` of the training-set size).
        rounds: at most this many fix-and-retrain rounds.
        fix: ``"flip"`` (binary), ``"predict"``, ``"remove"``, or ``f(flagged_positions, labels, ctx) ->
            {position: ("relabel", new_label) | ("keep", None) | ("remove", None)}`` — a person plugs in here.
        config: training settings (default ``TrainConfig.default()``), used for every retraining.
        patience: stop after this many rounds without a new best validation macro-F1; the labels of the best
            round are the final ones (changes that did not help on validation are rolled back). 1 is the bare rule;
            one noisy validation dip can end it early, which 2 lets pass (the main job's default).
        min_precision: stop before applying a batch whose precision, estimated without the truth by the trusted
            probe (:mod:`gbair_nb.probe`), is below this (None: never; 0.5, the main job's default, is where flips
            start to add more wrong labels than they remove).
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
    say = (lambda c: tqdm.write(f"auto: {c['reason']}")) if verbose else None
    score_fn = loop_scorer(scorer, registry, on_choice=say)
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
    chosen = score_fn.chosen if isinstance(score_fn, AutoOnce) else None
    return state.recovery(name, rule, stopped_because=stopped, clean=clean_ref, chosen=chosen,
                          options=loop_options(len(base), k=state.k, rounds=rounds, fix=fix, patience=patience,
                                               min_precision=min_precision, options=options,
                                               rerank_with_verdicts=rerank_with_verdicts, warm_start=warm_start))


def loop_options(n_train: int, *, k: int | None, rounds: int, fix, patience: int, min_precision: float | None,
                 options: dict | None = None, rerank_with_verdicts: bool = False, warm_start: bool = False) -> dict:
    """The loop's settings as :func:`gbair` records them in a report (``options``; ``k=None`` is the default
    budget, 4% of ``n_train``): ``recover --resume`` compares a saved seed's with this run's."""
    return {"k": default_k(n_train) if k is None else k, "rounds": rounds, "fix": str(fix), "patience": patience,
            "min_precision": min_precision, "rerank_with_verdicts": rerank_with_verdicts, "warm_start": warm_start,
            **(options or {})}


# ------------------------------------------------------------------------------------------ detection metrics
class DetectorScores(dict):
    """Scorer name → (n,) scores: what ``compare_detectors(...).attrs["scores"]`` holds.

    A dict that compares by identity. pandas carries ``attrs`` through operations and, when it combines frames
    (``pd.concat``), asks whether their ``attrs`` are equal; for two plain dicts of arrays under the same keys that
    question has no single answer ("the truth value of an array ... is ambiguous"), and the concat fails. Two
    different detector runs are simply not equal, so their combination keeps no scores.
    """

    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = None


def compare_detectors(scenario: Scenario, *, scorers: Sequence[str] | None = None, config: TrainConfig | None = None,
                      k: int | None = None, seed: int = 0, options: dict | None = None, run: Run | None = None,
                      registry: Mapping[str, Scorer] = SCORERS, compute: Compute = LOCAL,
                      verbose: bool = True) -> pd.DataFrame:
    """Round-1 detection metrics of every scorer on the same corrupted data and the same trained model.

    Returns a DataFrame (one row per scorer) with AUROC, AUPRC, recall at k% inspected, precision@k — and keeps the
    raw scores in ``df.attrs["scores"]`` (a :class:`DetectorScores`) for plots.
    """
    config = config or TrainConfig.default(seed=seed)
    train_ds = scenario.train
    run = run or train(train_ds, config=config, step=compute.step, verbose=verbose)
    ctx = ScoreContext(run, train_ds, scenario.splits.val, config, seed=seed, options=dict(options or {}),
                       compute=compute)
    rows, raw = [], DetectorScores()
    if scorers is None:  # every registered scorer that needs nothing optional, aliases ("gbair", "auto") left out
        scorers = [s for s in registry if s not in OPTIONAL_SCORERS and s not in ALIASES]
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

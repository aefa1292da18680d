"""The G-BAIR loop's state and its steps: one loop, several drivers.

The automatic loop (:func:`gbair_nb.recovery.gbair`), a person working round by round in a notebook
(:class:`gbair_nb.human.HumanRounds`) and the job spread over processes (:mod:`gbair_nb.distributed`) all drive one
:class:`LoopState` through the same four steps; they differ only in who decides and when::

    state = LoopState(scenario, k=16)
    state.record(metrics)                 # round 0: the model trained on the noisy labels
    flagged = state.flag(scores)          # the k most suspect examples not reviewed yet
    state.apply(flagged, fix, ctx)        # the fixer's decisions change the labels (and who is kept)
    positions, current = state.current()  # ... retrain on `current`, then state.record(metrics) again

A :class:`StoppingRule` reads the records and says when to stop and which round's labels to keep. The truth mask of
the scenario is used only to *report* (flagged precision, wrong labels left): no step decides anything with it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from .data import TextDataset
from .metrics import calibrated_macro_f1, detection_metrics, recovered_fraction

__all__ = ["RoundRecord", "Recovery", "LoopState", "StoppingRule", "Compute", "LOCAL", "round_metrics", "Fix",
           "Decisions", "default_k"]

# fix(flagged_positions, labels, ctx) -> {position: ("relabel", c) | ("keep", None) | ("remove", None) |
# ("unreviewed", None)}; positions index the current training set (ctx.train), labels are its current labels.
# "unreviewed" keeps the label like "keep" but is no verdict (a person skipped it); a missing position is a keep.
Decisions = Mapping[int, tuple]
ACTIONS = ("relabel", "keep", "remove")
Fix = Callable[[list, np.ndarray, object], Decisions]


def default_k(n_train: int, fraction: float = 0.04) -> int:
    """Budget per round relative to the training-set size: 4% of it (16 for 400 examples), at least 5."""
    return max(5, int(round(fraction * n_train)))


@dataclass(frozen=True)
class Compute:
    """How the heavy work of a round runs: the training ``step`` (one batch → gradients, see
    :func:`gbair_nb.train.forward_backward`) and the TracIn functions (``influence``: an object with
    ``self_influence``, ``aggregated_influence``, ``per_example_grads`` and ``top_influences``, default the module
    :mod:`gbair_nb.influence`).

    Alone, :data:`LOCAL`. A torchrun job's :class:`gbair_nb.distributed.Job` hands the loop its data-parallel step
    and sharded TracIn instead, as a value: nothing is patched.
    """

    step: Callable | None = None
    influence: Any = None

    def __post_init__(self) -> None:
        if self.step is None:
            from .train import forward_backward

            object.__setattr__(self, "step", forward_backward)
        if self.influence is None:
            from . import influence

            object.__setattr__(self, "influence", influence)


LOCAL = Compute()


@dataclass
class RoundRecord:
    """What happened in one round (round 0 = trained on the corrupted labels, nothing fixed yet)."""

    round: int
    val_accuracy: float
    val_macro_f1: float
    test_accuracy: float
    test_macro_f1: float
    n_val_mistakes: int
    test_macro_f1_calibrated: float = float("nan")  # with the threshold fit on validation (binary; no relabeling)
    flagged_ids: list = field(default_factory=list)  # the examples whose fixes this round retrained with
    flagged_precision: float | None = None  # fraction of flagged examples whose label was wrong (from the truth)
    estimated_precision: float | None = None  # the same, estimated without the truth (trusted probe), if asked
    n_fixed_correctly: int = 0
    wrong_labels_remaining: int = 0
    n_removed: int = 0
    seconds: float = 0.0
    detection: dict | None = None  # how well this round's scores ranked the still-wrong labels (AUROC, …)


def round_metrics(run, val: TextDataset, test: TextDataset) -> dict:
    """The numbers a round is judged by: validation and test accuracy and macro-F1, validation mistakes."""
    from .train import evaluate

    v, t = evaluate(run, val), evaluate(run, test)
    return {"val_accuracy": v.accuracy, "val_macro_f1": v.macro_f1, "test_accuracy": t.accuracy,
            "test_macro_f1": t.macro_f1, "n_val_mistakes": int((v.preds != val.labels).sum()),
            "test_macro_f1_calibrated": calibrated_macro_f1(v.probs, val.labels, t.probs, test.labels)}


@dataclass
class Recovery:
    """The outcome of a recovery loop: per-round records, references and the final labels."""

    scorer: str
    rounds: list[RoundRecord]
    labels: np.ndarray  # final training labels (by position in the training set)
    kept: np.ndarray  # bool mask: not removed
    final_round: int  # the round whose labels were kept (see StoppingRule.kept_round)
    stopped_because: str
    clean: dict | None = None  # metrics of the same model trained on the true labels
    options: dict = field(default_factory=dict)
    history: list = field(default_factory=list, repr=False)  # (labels, kept) the model of each round trained on
    chosen: dict | None = None  # scorer="auto": which scorer it chose and why (gbair_nb.scorers.auto_choice)

    def frame(self) -> pd.DataFrame:
        """One row per round."""
        df = pd.DataFrame([asdict(r) for r in self.rounds])
        df.insert(0, "scorer", self.scorer)
        return df

    def final(self) -> RoundRecord:
        """The record of the kept round (not necessarily the last one: a round without gain is rolled back)."""
        return next(r for r in self.rounds if r.round == self.final_round)

    def recovered(self, metric: str = "test_macro_f1") -> float | None:
        """(kept − corrupted) / (clean − corrupted) for ``metric``; None without a clean reference."""
        if self.clean is None:
            return None
        return recovered_fraction(getattr(self.final(), metric), getattr(self.rounds[0], metric),
                                  self.clean[metric])

    def summary(self) -> dict:
        out = {"scorer": self.scorer, "final_round": self.final_round, "stopped_because": self.stopped_because,
               "rounds": [asdict(r) for r in self.rounds], "options": self.options}
        if self.chosen is not None:
            out["chosen"] = self.chosen
        if self.clean is not None:
            out["recovered_fraction"] = {m: self.recovered(m) for m in ("test_macro_f1", "test_accuracy")}
        return out


@dataclass(frozen=True)
class StoppingRule:
    """When the loop stops, and which round's labels it keeps — decided without the truth mask.

    The kept round is the one with the best validation macro-F1 (the earliest on a tie): a round that did not
    improve on it is rolled back. The loop stops after ``patience`` rounds without a new best, after ``rounds``
    rounds, or when the model makes no validation mistake (nothing left to learn from). With ``min_precision``,
    it also stops *before* applying a batch whose estimated precision (the trusted probe's, see
    :mod:`gbair_nb.probe`) is below it: flipping a batch with precision under 0.5 adds more wrong labels than it
    removes.
    """

    patience: int = 1
    rounds: int = 5
    metric: str = "val_macro_f1"
    min_precision: float | None = None

    def __post_init__(self) -> None:
        if self.patience < 1 or self.rounds < 0:
            raise ValueError(f"patience must be ≥ 1 and rounds ≥ 0; got patience={self.patience}, "
                             f"rounds={self.rounds}")
        if self.min_precision is not None and not 0 <= self.min_precision <= 1:
            raise ValueError(f"min_precision must be in [0, 1] or None; got {self.min_precision}")

    def accept(self, estimated_precision: float | None) -> bool:
        """Whether to apply a flagged batch with this estimated precision (always, without ``min_precision``)."""
        return (self.min_precision is None or estimated_precision is None
                or estimated_precision >= self.min_precision)

    def kept_round(self, records: list[RoundRecord]) -> int:
        """The round whose labels are kept: the best ``metric`` so far, the earliest of equals."""
        best, best_value = 0, -np.inf
        for r in records:
            value = getattr(r, self.metric)
            if value > best_value + 1e-9:
                best, best_value = r.round, value
        return best

    def decide(self, records: list[RoundRecord]) -> str | None:
        """Why to stop after the last record, or None to go on."""
        last = records[-1]
        if last.round > 0 and last.round - self.kept_round(records) >= self.patience:
            return "no validation gain"
        if last.round >= self.rounds:
            return "rounds"
        if last.n_val_mistakes == 0:
            return "no validation mistakes"
        return None

    def replay(self, records: list[RoundRecord]) -> tuple[int, str] | None:
        """Where this rule would have stopped the loop that produced ``records``: (the last round it trains, why),
        or None if it would go on past the last record.

        The loop is deterministic at a fixed seed, so the records of a run saved under one rule are also the first
        rounds of a run under another: replaying a smaller ``patience`` over them shows what it would have kept
        without training anything. (The precision gate is not replayed: it acts on a batch, not on a record.)
        """
        for r in range(len(records)):
            why = self.decide(records[:r + 1])
            if why is not None:
                return records[r].round, why
        return None


def replayed_round(result: dict, patience: int) -> dict | None:
    """The record one scorer's saved loop (``report.json``'s ``scorers[name]``) would have kept under another
    ``patience``, replayed from its saved rounds (:meth:`StoppingRule.replay`; no training).

    A smaller patience stops at or before the saved run did, so its answer is always in the saved rounds. A larger
    one needs rounds the saved run never trained when it stopped for lack of gain: then None (not known).
    """
    names = {f.name for f in fields(RoundRecord)}
    records = [RoundRecord(**{k: v for k, v in r.items() if k in names}) for r in result["rounds"]]
    options = result.get("options", {})
    rule = StoppingRule(patience=patience, rounds=options.get("rounds", records[-1].round))
    stop = rule.replay(records)
    if stop is None and result["stopped_because"] == "no validation gain":
        return None
    last = len(records) if stop is None else 1 + next(i for i, r in enumerate(records) if r.round == stop[0])
    kept = rule.kept_round(records[:last])
    return next(r for r in result["rounds"] if r["round"] == kept)


@dataclass
class Flagged:
    """The examples flagged in a round and what fixing them did (reported on the next round's record)."""

    ids: list[int]
    precision: float
    fixed: int
    estimated_precision: float | None = None


class LoopState:
    """The labels as the loop changes them, round by round, beside the scenario's untouched original.

    Positions index the full training set (``scenario.splits.train``); ``labels`` are the current labels,
    ``kept`` is False for removed examples, ``reviewed`` is True once a fixer answered for an example (it is never
    flagged again). ``records[r]`` describes round r and ``history[r]`` the (labels, kept) its model trained on.
    """

    def __init__(self, scenario, k: int) -> None:
        base = scenario.splits.train
        if not 1 <= int(k) <= len(base):
            raise ValueError(f"k must be between 1 and the training-set size {len(base)}; got {k}")
        self.scenario = scenario
        self.k = int(k)
        self.labels = scenario.corruption.noisy_labels.copy()
        self.kept = np.ones(len(base), dtype=bool)
        self.reviewed = np.zeros(len(base), dtype=bool)
        self.records: list[RoundRecord] = []
        self.history: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending: Flagged | None = None  # fixes applied since the last record
        # what the fixer said about each example it reviewed: (position, label it had, "wrong" | "right")
        self.verdicts: list[tuple[int, int, str]] = []

    @property
    def round(self) -> int:
        """The round the next record will be (0 before anything was trained)."""
        return len(self.records)

    def current(self) -> tuple[np.ndarray, TextDataset]:
        """(positions of the kept examples, the training set they form with their current labels)."""
        positions = np.flatnonzero(self.kept)
        return positions, self.scenario.splits.train.subset(positions).with_labels(self.labels[positions])

    def wrong_labels(self) -> int:
        """Kept training labels that differ from the truth (reporting only)."""
        return int(((self.labels != self.scenario.corruption.labels) & self.kept).sum())

    def record(self, metrics: Mapping[str, float], *, seconds: float = 0.0) -> RoundRecord:
        """Record the model trained on the current labels: its metrics and the fixes it trained with."""
        rec = RoundRecord(round=self.round, **metrics, wrong_labels_remaining=self.wrong_labels(),
                          n_removed=int((~self.kept).sum()), seconds=seconds)
        if self.pending is not None:
            rec.flagged_ids, rec.flagged_precision, rec.n_fixed_correctly, rec.estimated_precision = (
                self.pending.ids, self.pending.precision, self.pending.fixed, self.pending.estimated_precision)
            self.pending = None
        self.records.append(rec)
        self.history.append((self.labels.copy(), self.kept.copy()))
        return rec

    def flag(self, scores: np.ndarray) -> list[int]:
        """The k highest ``scores`` (one per kept example, higher = more suspect) not reviewed yet, as positions in
        the full training set, most suspect first; ties keep the training-set order."""
        positions = np.flatnonzero(self.kept)
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != positions.shape:
            raise ValueError(f"a scorer returned {scores.shape[0] if scores.ndim else 'no'} scores for "
                             f"{len(positions)} training examples; return one score per example of ctx.train")
        full = np.full(len(self.kept), -np.inf)
        full[positions] = scores
        full[self.reviewed | ~self.kept] = -np.inf
        order = np.argsort(-full, kind="stable")
        return [int(p) for p in order[:self.k] if np.isfinite(full[p])]

    def detection(self, scores: np.ndarray) -> dict | None:
        """How well ``scores`` rank the kept examples whose label is still wrong (None if all or none are)."""
        positions = np.flatnonzero(self.kept)
        wrong = (self.labels != self.scenario.corruption.labels)[positions]
        if 0 < wrong.sum() < len(positions):
            return detection_metrics(scores, wrong, k=self.k)
        return None

    def verdict_examples(self) -> tuple[TextDataset, np.ndarray]:
        """The examples a fixer has judged so far, each with the label it had when judged, and a bool mask: True
        where the fixer said that label was wrong (relabel or remove), False where it kept it."""
        base = self.scenario.splits.train
        positions = np.array([p for p, _, _ in self.verdicts], dtype=np.int64)
        labels = np.array([label for _, label, _ in self.verdicts], dtype=np.int64)
        wrong = np.array([v == "wrong" for _, _, v in self.verdicts], dtype=bool)
        return base.subset(positions).with_labels(labels), wrong

    def estimate_precision(self, flagged: list[int], ctx) -> float:
        """The trusted probe's estimate of the fraction of wrong labels among the flagged positions (no truth)."""
        from .probe import probe_of

        positions = np.flatnonzero(self.kept)
        local = np.searchsorted(positions, flagged)
        return probe_of(ctx).precision(ctx.train, local)

    def apply(self, flagged: list[int], fix: Fix, ctx, *, estimated_precision: float | None = None) -> Flagged:
        """Ask ``fix`` about the flagged positions (translated to positions in ``ctx.train``) and apply its
        decisions to the labels. The examples count as reviewed only once the fixer answered (a fixer that raises
        can be asked again). Returns what the next record reports."""
        truth = self.scenario.corruption.labels
        base = self.scenario.splits.train
        positions = np.flatnonzero(self.kept)
        was_wrong = self.labels[flagged] != truth[flagged]
        local = {int(p): i for i, p in enumerate(positions)}
        decisions = fix([local[p] for p in flagged], self.labels[positions], ctx)
        fixed = 0
        for p, wrong in zip(flagged, was_wrong):
            action, new = decisions.get(local[p], ("keep", None))
            if action in ACTIONS:
                self.verdicts.append((int(p), int(self.labels[p]), "right" if action == "keep" else "wrong"))
            if action == "relabel":
                self.labels[p] = int(new)
                fixed += int(self.labels[p] == truth[p] and wrong)
            elif action == "remove":
                self.kept[p] = False
                fixed += int(wrong)
            elif action not in ("keep", "unreviewed"):
                raise ValueError(f"unknown decision {action!r} for example {int(base.ids[p])}; "
                                 "use 'relabel', 'keep', 'remove' (or 'unreviewed': keep, no verdict)")
        self.reviewed[flagged] = True
        self.pending = Flagged([int(base.ids[p]) for p in flagged], float(was_wrong.mean()), fixed,
                               estimated_precision)
        return self.pending

    def recovery(self, scorer: str, rule: StoppingRule, *, stopped_because: str, clean: dict | None = None,
                 options: dict | None = None, chosen: dict | None = None) -> Recovery:
        """The loop's outcome: every record, and the labels of the round ``rule`` keeps."""
        kept_round = rule.kept_round(self.records)
        labels, kept = self.history[kept_round]
        return Recovery(scorer=scorer, rounds=list(self.records), labels=labels.copy(), kept=kept.copy(),
                        final_round=kept_round, stopped_because=stopped_because, clean=clean,
                        options=dict(options or {}), history=list(self.history), chosen=chosen)

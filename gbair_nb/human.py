"""A person in the G-BAIR loop: the relabel session as the loop's ``fix`` step, one round at a time.

G-BAIR (:func:`gbair_nb.recovery.gbair`) flags the k training examples most behind the validation mistakes and
hands them to a *fixer*: ``fix(flagged_positions, labels, ctx) -> {position: ("relabel", c) | ("keep", None) |
("remove", None)}``. :func:`human_fixer` builds that fixer from a :class:`~gbair_nb.relabel.RelabelSession`, so every
decision is journaled (with its source and round) the moment it is made and survives a restarted kernel:

- with ``annotator=f(text, given_label, pred) -> label`` a simulated annotator answers through the session API
  (source ``"auto"``); the fixer then works inside ``gbair(..., fix=human_fixer(...))`` unattended (quick mode, CI);
- without one, the decisions come from a person clicking a :class:`~gbair_nb.widgets.RelabelWidget`. A kernel that
  waits inside ``gbair()`` cannot receive the clicks, so a person uses :class:`HumanRounds`, the same loop cut into
  cells: ``flag()`` (train, score, open the session) → ``widget()`` (review) → ``apply()`` (read the decisions,
  retrain, record the round).

Rounds are numbered like :class:`~gbair_nb.recovery.RoundRecord`: round 0 trains on the corrupted labels; the
decisions journaled with ``round=r`` are the ones round r retrains with (its ``flagged_ids``). The session is always
opened on the *starting* training set (the noisy labels, every example) and replays the journal on top of it.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .data import TextDataset
from .loop import LOCAL, Compute, LoopState, Recovery, RoundRecord, StoppingRule, round_metrics
from .recovery import loop_scorer
from .scorers import SCORERS, AutoOnce, Scorer, ScoreContext, rerank
from .loop import default_k
from .scenarios import Scenario
from .relabel import RelabelSession
from .train import Run, TrainConfig, train

__all__ = ["human_fixer", "HumanFixer", "HumanRounds", "simulated_annotator", "Annotator"]

# f(text, given_label, pred) -> a class id (relabel, or keep when it is the given label), "keep" or "remove"
Annotator = Callable[[str, int, int], "int | str | None"]


def simulated_annotator(truth: TextDataset, *, accuracy: float = 1.0, seed: int = 0) -> Annotator:
    """A stand-in for a person who knows the true labels of ``truth`` (the clean training set) and is right with
    probability ``accuracy`` (otherwise answers another class at random, seeded). Returns ``f(text, given, pred)``.
    """
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    true_of: dict[str, int] = {}
    for text, label in zip(truth.texts, truth.labels):
        true_of.setdefault(text, int(label))
    rng = np.random.default_rng(seed)
    n_classes = truth.num_classes

    def annotate(text: str, given_label: int, pred: int) -> int:
        answer = true_of.get(text, int(given_label))
        if n_classes > 1 and rng.random() >= accuracy:
            answer = int(rng.choice([c for c in range(n_classes) if c != answer]))
        return answer

    return annotate


class HumanFixer:
    """G-BAIR fixer backed by a journaled :class:`RelabelSession` (build it with :func:`human_fixer`).

    Each call is one round: it opens (or reuses) the session of round ``self.round`` on the starting dataset with the
    flagged examples, lets the simulated annotator answer the ones without a decision (if there is one), reads the
    session's decisions and returns them in the loop's format. ``session`` is the current round's session (give it
    to a :class:`~gbair_nb.widgets.RelabelWidget`); ``round`` is the round the next decisions belong to.
    """

    def __init__(self, journal_path: str | os.PathLike, dataset: TextDataset, *, annotator: Annotator | None = None,
                 annotator_source: str = "auto", unreviewed: str = "error", start_round: int = 1) -> None:
        if unreviewed not in ("error", "keep"):
            raise ValueError(f"unreviewed must be 'error' or 'keep', got {unreviewed!r}")
        self.path = Path(journal_path)
        self.dataset = dataset
        self.annotator = annotator
        self.annotator_source = annotator_source
        self.unreviewed = unreviewed
        self.round = int(start_round)
        self.session: RelabelSession | None = None
        self._pos = {int(i): p for p, i in enumerate(dataset.ids)}

    def __repr__(self) -> str:
        who = "simulated annotator" if self.annotator else "person"
        return f"HumanFixer(round={self.round}, {who}, journal='{self.path}')"

    # -- the session of one round
    def open(self, flagged_ids: Sequence[int], *, round: int | None = None) -> RelabelSession:
        """The session of ``round`` (default: the current one) reviewing ``flagged_ids`` (in review order).

        Reuses the open session when it is the same round and list, so a widget bound to it stays valid.
        """
        round = self.round if round is None else int(round)
        ids = tuple(int(i) for i in flagged_ids)
        s = self.session
        if s is None or s.round != round or s.flagged != ids:
            s = RelabelSession.from_dataset(self.dataset, self.path, flagged=ids, round=round)
            self.session = s
        return s

    def annotate(self, texts: Sequence[str], preds: Sequence[int]) -> int:
        """Let the simulated annotator decide every flagged example of the open session that has no decision this
        round (``texts``/``preds`` aligned with ``session.flagged``); returns how many it decided."""
        s = self._need_session()
        if self.annotator is None:
            raise ValueError("this fixer has no annotator; pass annotator=f(text, given_label, pred) -> label "
                             "to human_fixer, or let a person decide in RelabelWidget(fixer.session, ...)")
        if len(texts) != len(s.flagged) or len(preds) != len(s.flagged):
            raise ValueError(f"texts ({len(texts)}) and preds ({len(preds)}) must align with the "
                             f"{len(s.flagged)} flagged examples")
        n = 0
        for i, text, pred in zip(s.flagged, texts, preds):
            d = s.decision(i)
            if d is not None and d.round == s.round:
                continue  # already decided (a resumed round)
            answer = self.annotator(text, s.label_of(i), int(pred))
            if answer is None or answer == "keep":
                s.keep(i, source=self.annotator_source)
            elif answer == "remove":
                s.remove(i, source=self.annotator_source)
            else:
                s.relabel(i, int(answer), source=self.annotator_source)
            n += 1
        return n

    def decisions(self, given: dict[int, int]) -> dict[int, tuple[str, int | None]]:
        """The open session's decisions about its flagged examples, against ``given`` (id -> the loop's label going
        into this round): id -> ("relabel", c) | ("keep", None) | ("remove", None) | ("unreviewed", None), from the
        session's label state.

        Examples without a decision this round are kept as they are when ``unreviewed='keep'`` (with a warning),
        an error when ``'error'``.
        """
        s = self._need_session()
        removed = set(int(i) for i in s.removed())
        out: dict[int, tuple[str, int | None]] = {}
        missing = []
        for i in s.flagged:
            d = s.decision(i)
            undecided = d is None or d.round != s.round
            if undecided:
                missing.append(i)
            if i in removed:
                out[i] = ("remove", None)
            elif s.label_of(i) != int(given[i]):
                out[i] = ("relabel", s.label_of(i))
            else:
                out[i] = ("unreviewed" if undecided else "keep", None)  # a skipped example is no verdict
        if missing:
            msg = (f"{len(missing)} of {len(s.flagged)} flagged examples have no decision in round {s.round} "
                   f"(ids {missing[:5]}{'...' if len(missing) > 5 else ''})")
            if self.unreviewed == "error":
                raise RuntimeError(msg + ". A kernel waiting inside gbair() cannot receive widget clicks: review "
                                   "them with HumanRounds (flag → widget → apply), or pass annotator= to "
                                   "human_fixer.")
            warnings.warn(msg + "; they keep their labels.", RuntimeWarning, stacklevel=3)
        return out

    # -- the loop's fix callback
    def __call__(self, flagged_positions: Sequence[int], labels: np.ndarray, ctx: ScoreContext) -> dict:
        """``gbair``'s fix step: positions index ``ctx.train`` (the examples still in training, current labels)."""
        current = ctx.train
        positions = [int(p) for p in flagged_positions]
        ids = [int(current.ids[p]) for p in positions]
        s = self.open(ids)
        self._check_in_step(current, np.asarray(labels), set(ids))
        if self.annotator is not None:
            preds = ctx.probs().argmax(1)
            self.annotate([current.texts[p] for p in positions], [int(preds[p]) for p in positions])
        by_id = self.decisions({i: int(labels[p]) for p, i in zip(positions, ids)})
        self.round = s.round + 1
        return {p: by_id[i] for p, i in zip(positions, ids)}

    # -- internals
    def _need_session(self) -> RelabelSession:
        if self.session is None:
            raise ValueError("no session is open yet: call fixer.open(flagged_ids) (or let gbair() call the fixer)")
        return self.session

    def _check_in_step(self, current: TextDataset, labels: np.ndarray, flagged: set[int]) -> None:
        """The journal must agree with the loop about every example not under review this round."""
        s = self._need_session()
        session_labels, kept = s.labels(), s.kept_mask()
        for p, i in enumerate(current.ids):
            i = int(i)
            if i in flagged:
                continue
            q = self._pos.get(i)
            if q is None:
                raise ValueError(f"example id {i} of the loop's training set is not in the fixer's dataset; "
                                 "build human_fixer(...) with the starting training set (scenario.train)")
            if not kept[q] or session_labels[q] != labels[p]:
                raise RuntimeError(
                    f"journal {self.path} disagrees with the loop about example {i} (journal: "
                    f"{'removed' if not kept[q] else f'label {session_labels[q]}'}, loop: label {labels[p]}): it "
                    "holds decisions from another run or made after the loop retrained. Start this run with a new "
                    "journal path (or delete the old journal).")


def human_fixer(journal_path: str | os.PathLike, dataset: TextDataset, *, annotator: Annotator | None = None,
                annotator_source: str = "auto", unreviewed: str = "error", start_round: int = 1) -> HumanFixer:
    """The ``human`` fixer for ``gbair(..., fix=human_fixer(path, scenario.train, annotator=...))``.

    Args:
        journal_path: the JSONL journal (created if missing, resumed if present).
        dataset: the *starting* training set (noisy labels, every example): the session replays the journal on it.
        annotator: ``f(text, given_label, pred) -> class id | "keep" | "remove"``, a simulated person answering
            through the session API (e.g. :func:`simulated_annotator`); None = a person decides in a widget.
        annotator_source: the ``source`` journaled for the annotator's decisions (``"auto"``: not a person).
        unreviewed: flagged examples without a decision: ``"error"`` (default) or ``"keep"`` them.
        start_round: the round of the first call (1: the decisions that round 1 retrains with).

    Returns a :class:`HumanFixer`; one fixer per recovery run (it counts the rounds).
    """
    return HumanFixer(journal_path, dataset, annotator=annotator, annotator_source=annotator_source,
                      unreviewed=unreviewed, start_round=start_round)


class HumanRounds:
    """The G-BAIR loop one round at a time, so a person can decide between two notebook cells.

    ``flag()`` trains on the current labels (round 0: the corrupted ones), scores every training example and opens
    the round's session on the k most suspect; ``widget()`` shows them for review; ``apply()`` reads the session's
    decisions, retrains and records the round. Same training, scorer and bookkeeping as :func:`gbair` (with the same
    ``seed``, round 0 and its flagged examples are the same), but no automatic stop: you decide when to stop.
    ``frame()`` has one row per round, ``recovery()`` the labels of the best round on validation. After ``flag()``,
    ``scores`` holds that round's scores (higher = more suspect), one per example of ``ctx.train`` (the examples
    still in training), the ones the flagged examples are the top k of.
    """

    def __init__(self, scenario: Scenario, journal_path: str | os.PathLike, *, scorer: str | Callable = "gbair",
                 k: int | None = None, config: TrainConfig | None = None, seed: int = 0,
                 options: dict | None = None, annotator: Annotator | None = None, max_influenced: int = 3,
                 registry: Mapping[str, Scorer] = SCORERS, compute: Compute = LOCAL,
                 rerank_with_verdicts: bool = False, verbose: bool = True) -> None:
        config = config or TrainConfig.default()
        self.config = replace(config, seed=seed) if config.seed != seed else config
        self.scorer = scorer
        self.score_fn = loop_scorer(scorer, registry)  # "auto" decides at the first flag() and keeps its pick
        self.scenario, self.seed, self.options, self.compute = scenario, seed, dict(options or {}), compute
        self.verbose, self.max_influenced, self.rerank_with_verdicts = verbose, max_influenced, rerank_with_verdicts
        self.state = LoopState(scenario, default_k(len(scenario.splits.train)) if k is None else k)
        self.fixer = human_fixer(journal_path, scenario.train, annotator=annotator, unreviewed="keep")
        self.run: Run | None = None
        self.ctx: ScoreContext | None = None
        self.scores: np.ndarray | None = None  # the last flag()'s scores, aligned with ctx.train
        self.flagged: list[int] | None = None  # positions in the full training set, awaiting apply()
        self.flagged_frame: pd.DataFrame | None = None
        self.influenced: dict[int, pd.DataFrame] = {}

    # the loop's state, read-only views for the notebook
    k = property(lambda self: self.state.k, doc="Examples flagged per round.")
    labels = property(lambda self: self.state.labels, doc="Current labels, by position in the training set.")
    kept = property(lambda self: self.state.kept, doc="False for removed examples.")
    reviewed = property(lambda self: self.state.reviewed, doc="True once an example was decided.")
    records = property(lambda self: self.state.records, doc="One RoundRecord per trained round.")
    history = property(lambda self: self.state.history, doc="(labels, kept) each round trained on.")

    @property
    def round(self) -> int:
        """The round the next ``apply()`` trains (the current session's round)."""
        return self.state.round

    @property
    def session(self) -> RelabelSession | None:
        return self.fixer.session

    def _train_and_record(self) -> RoundRecord:
        t0 = time.perf_counter()
        _, current = self.state.current()
        self.run = train(current, config=self.config, step=self.compute.step, verbose=self.verbose)
        m = round_metrics(self.run, self.scenario.splits.val, self.scenario.splits.test)
        return self.state.record(m, seconds=time.perf_counter() - t0)

    def flag(self) -> RelabelSession:
        """Train (round 0 only; later rounds were trained by ``apply()``), score, flag the top k not yet reviewed
        and open this round's session. Calling it again before ``apply()`` returns the same session."""
        if self.run is None:
            self._train_and_record()
        if self.flagged is not None:
            return self.fixer.session
        positions, current = self.state.current()
        self.ctx = ctx = ScoreContext(self.run, current, self.scenario.splits.val, self.config,
                                      seed=self.seed + self.round - 1, options=self.options, round=self.round,
                                      compute=self.compute)
        scores = np.asarray(self.score_fn(ctx), dtype=np.float64)
        if self.rerank_with_verdicts and self.state.verdicts:  # what you decided so far sharpens the next batch
            scores = rerank(ctx, scores, *self.state.verdict_examples())
        self.scores = scores
        self.flagged = self.state.flag(scores)
        self.records[-1].detection = self.state.detection(scores)
        if not self.flagged:
            raise RuntimeError("nothing left to review: every training example has been reviewed or removed")
        local = {int(p): j for j, p in enumerate(positions)}
        loc = [local[p] for p in self.flagged]
        probs = ctx.probs()
        base = self.scenario.splits.train
        self.flagged_frame = pd.DataFrame({
            "id": base.ids[self.flagged], "text": [current.texts[j] for j in loc], "label": current.labels[loc],
            "pred": probs[loc].argmax(1), "prob": probs[loc].max(1), "score": scores[loc]})
        self.influenced = self._influenced(ctx, loc) if self.max_influenced else {}
        return self.fixer.open([int(i) for i in base.ids[self.flagged]], round=self.round)

    def _influenced(self, ctx: ScoreContext, loc: list[int]) -> dict[int, pd.DataFrame]:
        """For each flagged example, the validation mistakes it pushed the model toward most (score = −TracIn)."""
        from .influence import tracin

        mistakes = ctx.val_mistakes()
        if len(mistakes) == 0:
            return {}
        val = self.scenario.splits.val
        run = self.run
        m = tracin(run.model, run.tokenizer, run.checkpoints, ctx.train.subset(loc), val.subset(mistakes),
                   max_length=run.config.max_length, verbose=False)  # (n_mistakes, n_flagged)
        preds = ctx.val_probs().argmax(1)[mistakes]
        out = {}
        for j, p in enumerate(loc):
            order = np.argsort(m[:, j], kind="stable")[: self.max_influenced]  # most negative first
            out[int(ctx.train.ids[p])] = pd.DataFrame({
                "text": [val.texts[mistakes[q]] for q in order], "label": val.labels[mistakes[order]],
                "pred": preds[order], "score": -m[order, j]})
        return out

    def widget(self, **kwargs: Any):
        """A :class:`~gbair_nb.widgets.RelabelWidget` on this round's session (call ``flag()`` first)."""
        from .widgets import RelabelWidget

        if self.flagged is None:
            raise RuntimeError("nothing flagged yet: call rounds.flag() first")
        kwargs.setdefault("influenced", self.influenced)
        return RelabelWidget(self.fixer.session, self.flagged_frame, **kwargs)

    def annotate(self) -> int:
        """Let the simulated annotator answer this round's undecided examples (quick mode); returns how many."""
        if self.flagged is None:
            raise RuntimeError("nothing flagged yet: call rounds.flag() first")
        f = self.flagged_frame
        return self.fixer.annotate(list(f["text"]), list(f["pred"]))

    def apply(self) -> RoundRecord:
        """Apply this round's decisions (unreviewed examples keep their labels), retrain, record the round."""
        if self.flagged is None:
            raise RuntimeError("nothing flagged yet: call rounds.flag() first")
        self.state.apply(self.flagged, self.fixer, self.ctx)
        self.flagged, self.ctx = None, None
        return self._train_and_record()

    def frame(self) -> pd.DataFrame:
        """One row per round (columns of :class:`~gbair_nb.recovery.RoundRecord`)."""
        df = pd.DataFrame([asdict(r) for r in self.records])
        df.insert(0, "scorer", f"{self.scorer if isinstance(self.scorer, str) else 'custom'}+human")
        return df

    def recovery(self) -> Recovery:
        """The rounds so far as a :class:`~gbair_nb.recovery.Recovery`; final labels = best validation macro-F1."""
        if not self.records:
            raise RuntimeError("no round yet: call rounds.flag() first")
        name = self.scorer if isinstance(self.scorer, str) else getattr(self.scorer, "__name__", "custom")
        return self.state.recovery(f"{name}+human", StoppingRule(rounds=max(0, self.round - 1)),
                                   stopped_because="by hand", options={"k": self.k, "fix": "human", **self.options},
                                   chosen=self.score_fn.chosen if isinstance(self.score_fn, AutoOnce) else None)

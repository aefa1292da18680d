"""Relabeling session: the decisions a person (or an automatic fixer) makes about flagged examples.

A :class:`RelabelSession` holds a dataset's labels and a ranked list of flagged example ids (from any scorer:
G-BAIR, self-influence, loss, ...). Each decision -- ``relabel``, ``keep``, ``remove``, ``undo`` -- is appended to a
JSONL journal the moment it is made (written, flushed and ``os.fsync``-ed), so a crashed or restarted kernel loses
nothing: opening a session on an existing journal replays it and resumes with the same labels, the same removed
examples and the same position in the flagged list.

Journal format (one JSON object per line)::

    {"type": "header", "version": 1, "fingerprint": "...", "class_names": [...], "n": 1000, "time": "..."}
    {"type": "decision", "time": "...", "id": 17, "old_label": 0, "new_label": 1, "action": "relabel",
     "source": "human", "round": 0}
    {"type": "undo", "time": "...", "id": 17, "old_label": 1, "new_label": 0, "action": "undo",
     "source": "human", "round": 0, "undoes": 2}
    {"type": "cursor", "time": "...", "id": 42, "round": 0}

``old_label``/``new_label`` are the label just before and just after the entry; ``undoes`` is the journal line
(1-based) of the decision it cancelled; ``cursor`` lines record where the reviewer is in the flagged list. Blank
lines are skipped (a hand edit may leave some); class names are compared in Unicode NFC form, so ``"café"`` typed
on one machine and saved decomposed (NFD) by another tool is the same class.

Two sessions on one journal (a re-run cell, a second notebook or kernel) are safe: every read and write of the
journal holds an advisory lock on ``<journal>.lock`` next to it, and an append is refused if the file changed since
this session read it: of two sessions deciding at once, one is saved and the other is refused with "changed by
someone else" (open a new session to reload). Opening replays the file and repairs a line cut off by a crash.
:mod:`gbair_nb.journal` keeps the file and says how (fsync, exclusive creation, the lock file left behind).

The journal is always replayed on top of the dataset it started from (the fingerprint in its header). In round 2 of
G-BAIR, pass the *starting* dataset again, not the relabeled one -- the session applies the journal itself.

How the G-BAIR loop plugs a human (or an automatic fixer) in -- the session is the fixer::

    session = RelabelSession.from_dataset(train_noisy, "relabel.jsonl", flagged=flagged_ids, round=r)
    # a person:  RelabelWidget(session, flagged_frame)  -- clicks call session.relabel/keep/remove/undo
    # a machine: for i in flagged_ids: session.relabel(i, int(pred[i]), source="auto")
    train_next = train_noisy.with_labels(session.labels()).subset(np.flatnonzero(session.kept_mask()))

``labels()`` are the new labels of all examples (same order as ``ids``), ``kept_mask()`` is False for removed
examples, ``removed()`` lists their ids and ``plan()`` shows the pending changes as a table.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .journal import Journal, JournalError, encode_line

__all__ = ["RelabelSession", "Decision", "JournalError", "ACTIONS", "SOURCES"]

JOURNAL_VERSION = 1
ACTIONS = ("relabel", "keep", "remove")
SOURCES = ("human", "auto")


@dataclass(frozen=True)
class Decision:
    """One decision about one example: ``action`` in ``ACTIONS``; labels are class ids before/after it."""

    id: int
    old_label: int
    new_label: int
    action: str
    source: str
    round: int
    time: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class RelabelSession:
    """Decisions about flagged examples, journaled to disk as they are made; replays the journal when it exists.

    Inputs: ``ids`` (n unique ints), ``labels`` (n class ids in ``[0, len(class_names))``), ``class_names``,
    ``journal_path`` (created if missing, resumed if present), ``flagged`` (ids in review order, best first;
    optional), ``fingerprint`` (identifies the dataset; a journal from another dataset is refused) and ``round``
    (the G-BAIR round recorded with each decision). The arrays passed in are copied, never modified.
    Everything is checked before the journal is touched: a refused session leaves no file behind. ``lock_path`` is
    the advisory lock file next to the journal (see :mod:`gbair_nb.journal`).
    """

    def __init__(
        self,
        ids: Sequence[int] | np.ndarray,
        labels: Sequence[int] | np.ndarray,
        class_names: Sequence[str],
        journal_path: str | os.PathLike,
        *,
        flagged: Iterable[int] | None = None,
        fingerprint: str,
        round: int = 0,
    ) -> None:
        self._ids = np.array(ids, dtype=np.int64).reshape(-1)
        self._original = np.array(labels, dtype=np.int64).reshape(-1)
        self.class_names: list[str] = [str(c) for c in class_names]
        if len(self._ids) != len(self._original):
            raise ValueError(f"ids and labels must have the same length, got {len(self._ids)} and {len(self._original)}")
        if len(self.class_names) < 1:
            raise ValueError("class_names must name at least one class, got an empty list")
        self._pos = {int(i): p for p, i in enumerate(self._ids)}
        if len(self._pos) != len(self._ids):
            dup = pd.Series(self._ids).loc[lambda s: s.duplicated()].iloc[0]
            raise ValueError(f"ids must be unique, id {dup} appears more than once")
        bad = (self._original < 0) | (self._original >= len(self.class_names))
        if bad.any():
            p = int(np.flatnonzero(bad)[0])
            raise ValueError(f"label {self._original[p]} of id {self._ids[p]} is out of range; "
                             f"labels must be in [0, {len(self.class_names)}) for classes {self.class_names}")
        self._original.setflags(write=False)
        self.fingerprint = str(fingerprint)
        self.round = int(round)
        self.path = Path(journal_path)
        self._journal = Journal(self.path)
        self.lock_path = self._journal.lock_path
        self._header_line()  # raises ValueError now if the header cannot be written
        flagged_ids = [] if flagged is None else [int(i) for i in flagged]
        for i in flagged_ids:
            self._check_id(i)
        if len(set(flagged_ids)) != len(flagged_ids):
            raise ValueError("flagged ids must be unique (each example reviewed once per round)")
        self.flagged: tuple[int, ...] = tuple(flagged_ids)
        self._flagged_pos = {i: k for k, i in enumerate(self.flagged)}

        # state, rebuilt from the journal
        self._labels = self._original.copy()
        self._removed = np.zeros(len(self._ids), dtype=bool)
        self._effective: dict[int, Decision] = {}
        self._stack: list[tuple[int, Decision, int, bool, Decision | None]] = []  # line, decision, previous state
        self._position: int | None = 0 if self.flagged else None
        self._open()

    @classmethod
    def from_dataset(cls, ds: Any, journal_path: str | os.PathLike, *, flagged: Iterable[int] | None = None,
                     round: int = 0) -> "RelabelSession":
        """Session over a dataset with ``.ids``, ``.labels``, ``.class_names`` and ``.fingerprint()`` (a TextDataset)."""
        return cls(ds.ids, ds.labels, ds.class_names, journal_path, flagged=flagged,
                   fingerprint=ds.fingerprint(), round=round)

    # ------------------------------------------------------------------ accessors (pure, read-only)
    @property
    def ids(self) -> np.ndarray:
        """The example ids, in dataset order (a copy)."""
        return self._ids.copy()

    @property
    def original_labels(self) -> np.ndarray:
        """The labels the session started from, before any decision (read-only view)."""
        return self._original

    @property
    def n(self) -> int:
        return len(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def labels(self) -> np.ndarray:
        """New labels of all examples (int64, shape (n,), same order as ``ids``); removed ones keep their label."""
        return self._labels.copy()

    def label_of(self, id: int) -> int:
        """Current label of one example."""
        return int(self._labels[self._check_id(id)])

    def removed(self) -> np.ndarray:
        """Ids of the removed examples (int64, dataset order)."""
        return self._ids[self._removed].copy()

    def kept_mask(self) -> np.ndarray:
        """Bool mask, shape (n,): True for examples to train on (not removed)."""
        return ~self._removed

    def decision(self, id: int) -> Decision | None:
        """The effective (latest, not undone) decision about one example, or None."""
        self._check_id(id)
        return self._effective.get(int(id))

    def decisions(self) -> pd.DataFrame:
        """Effective decision per id: columns id, action, old_label, new_label, source, round, time (dataset order)."""
        rows = [vars(d) for d in sorted(self._effective.values(), key=lambda d: self._pos[d.id])]
        cols = ["id", "action", "old_label", "new_label", "source", "round", "time"]
        return pd.DataFrame(rows, columns=cols)

    def plan(self) -> pd.DataFrame:
        """Pending changes against the original labels: one row per relabeled or removed example.

        Columns: id, old_label, new_label, action ('relabel' | 'remove'), old_class, new_class, source, round.
        """
        changed = (self._labels != self._original) | self._removed
        rows = []
        for p in np.flatnonzero(changed):
            i, old, new = int(self._ids[p]), int(self._original[p]), int(self._labels[p])
            d = self._effective.get(i)
            rows.append({"id": i, "old_label": old, "new_label": new,
                         "action": "remove" if self._removed[p] else "relabel",
                         "old_class": self.class_names[old], "new_class": self.class_names[new],
                         "source": d.source if d else None, "round": d.round if d else None})
        cols = ["id", "old_label", "new_label", "action", "old_class", "new_class", "source", "round"]
        return pd.DataFrame(rows, columns=cols)

    def under_review(self) -> tuple[int, ...]:
        """The ids this session reviews: the flagged list, or every id when none was given."""
        return self.flagged if self.flagged else tuple(int(i) for i in self._ids)

    def reviewed(self) -> int:
        """How many ids under review have an effective decision made in this session's round."""
        return sum(1 for i in self.under_review()
                   if (d := self._effective.get(i)) is not None and d.round == self.round)

    def progress(self) -> str:
        """Progress text, e.g. ``'12 / 50 reviewed'``."""
        return f"{self.reviewed()} / {len(self.under_review())} reviewed"

    def __repr__(self) -> str:
        n_relabeled = int(((self._labels != self._original) & ~self._removed).sum())
        return (f"RelabelSession(n={self.n}, round={self.round}, {self.progress()}, relabeled={n_relabeled}, "
                f"removed={int(self._removed.sum())}, journal='{self.path}')")

    # ------------------------------------------------------------------ cursor in the flagged list
    @property
    def position(self) -> int | None:
        """Index of the current example in ``flagged`` (None when nothing is flagged)."""
        return self._position

    @property
    def current(self) -> int | None:
        """Id of the current flagged example (None when nothing is flagged)."""
        return None if self._position is None else self.flagged[self._position]

    def goto(self, position: int) -> int:
        """Move the cursor to ``flagged[position]`` (journaled, so a resumed session starts there); returns it."""
        if not self.flagged:
            raise ValueError("this session has no flagged list; create it with flagged=[ids in review order]")
        if not 0 <= int(position) < len(self.flagged):
            raise ValueError(f"position {position} is out of range; must be in [0, {len(self.flagged)})")
        position = int(position)
        if position != self._position:
            self._journal.append({"type": "cursor", "time": _now(), "id": self.flagged[position], "round": self.round})
            self._position = position
        return position

    def next(self) -> int | None:
        """Move to the next flagged example (stays on the last one); returns the new position."""
        if self._position is None:
            return None
        return self.goto(min(self._position + 1, len(self.flagged) - 1))

    def prev(self) -> int | None:
        """Move to the previous flagged example (stays on the first one); returns the new position."""
        if self._position is None:
            return None
        return self.goto(max(self._position - 1, 0))

    # ------------------------------------------------------------------ decisions (journaled)
    def relabel(self, id: int, new_label: int, *, source: str = "human") -> Decision:
        """Give example ``id`` the class ``new_label`` (and keep it); relabeling to its current label is a keep."""
        p = self._check_id(id)
        new_label = self._check_label(new_label)
        action = "keep" if new_label == self._labels[p] else "relabel"
        return self._decide(id, new_label, action, source)

    def keep(self, id: int, *, source: str = "human") -> Decision:
        """Confirm example ``id``'s current label is right (and keep it in training)."""
        p = self._check_id(id)
        return self._decide(id, int(self._labels[p]), "keep", source)

    def remove(self, id: int, *, source: str = "human") -> Decision:
        """Drop example ``id`` from training (its label is left as is; ``kept_mask()`` turns False)."""
        p = self._check_id(id)
        return self._decide(id, int(self._labels[p]), "remove", source)

    def undo(self, *, source: str = "human") -> Decision:
        """Cancel the last decision not yet undone (journaled as an undo entry); returns the decision undone.

        Only a decision of this session's own ``round`` can be undone: the G-BAIR loop has already retrained with
        the decisions of earlier rounds, so taking one back would silently change a finished round. To change an
        earlier round's decision, make a new decision about that example in this round. ``ValueError`` (naming the
        rounds) when the last decision belongs to another round or there is none. (Journals written before this
        rule that hold such an undo still replay.)
        """
        self._check_source(source)
        if not self._stack:
            raise ValueError("nothing to undo: no decision has been made in this journal yet "
                             "(or every decision has already been undone)")
        line, d, label_before, _, _ = self._stack[-1]
        if d.round != self.round:
            raise ValueError(
                f"nothing to undo in round {self.round}: the last decision (id {d.id}, {d.action}, journal line "
                f"{line}) was made in round {d.round}; this session is round {self.round}, and undo only takes back "
                f"decisions of its own round. To change it, make a new decision about id {d.id} in this round.")
        p = self._pos[d.id]
        entry = {"type": "undo", "time": _now(), "id": d.id, "old_label": int(self._labels[p]),
                 "new_label": label_before, "action": "undo", "source": source, "round": self.round, "undoes": line}
        self._journal.append(entry)
        self._apply_undo()
        return d

    # ------------------------------------------------------------------ internals
    def _check_id(self, id: Any) -> int:
        try:
            return self._pos[int(id)]
        except (KeyError, TypeError, ValueError):
            lo, hi = (int(self._ids.min()), int(self._ids.max())) if len(self._ids) else (None, None)
            raise ValueError(f"id {id!r} is not in the dataset; ids are the dataset's example ids "
                             f"({self.n} of them, from {lo} to {hi}), not positions") from None

    def _check_label(self, label: Any) -> int:
        try:
            label = int(label)
        except (TypeError, ValueError):
            label = -1
        if not 0 <= label < len(self.class_names):
            raise ValueError(f"label {label!r} is out of range; must be a class id in [0, {len(self.class_names)}) "
                             f"for classes {self.class_names}")
        return label

    @staticmethod
    def _check_source(source: str) -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")

    def _decide(self, id: int, new_label: int, action: str, source: str) -> Decision:
        self._check_source(source)
        p = self._pos[int(id)]
        entry = {"type": "decision", "time": _now(), "id": int(id), "old_label": int(self._labels[p]),
                 "new_label": int(new_label), "action": action, "source": source, "round": self.round}
        self._journal.append(entry)
        return self._apply_decision(entry, self._journal.lines)

    def _apply_decision(self, e: dict, line: int) -> Decision:
        d = Decision(id=int(e["id"]), old_label=int(e["old_label"]), new_label=int(e["new_label"]),
                     action=e["action"], source=e["source"], round=int(e["round"]), time=str(e["time"]))
        p = self._pos[d.id]
        self._stack.append((line, d, int(self._labels[p]), bool(self._removed[p]), self._effective.get(d.id)))
        self._labels[p] = d.new_label
        self._removed[p] = d.action == "remove"
        self._effective[d.id] = d
        return d

    def _apply_undo(self) -> None:
        _, d, label, removed, previous = self._stack.pop()
        p = self._pos[d.id]
        self._labels[p], self._removed[p] = label, removed
        if previous is None:
            self._effective.pop(d.id, None)
        else:
            self._effective[d.id] = previous

    def _header_line(self) -> bytes:
        header = {"type": "header", "version": JOURNAL_VERSION, "fingerprint": self.fingerprint,
                  "class_names": self.class_names, "n": self.n, "time": _now()}
        for what, value in [("fingerprint", self.fingerprint)] + [
                (f"class name {name!r} (class {c})", name) for c, name in enumerate(self.class_names)]:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as err:
                raise ValueError(f"{what} cannot be written to the journal as UTF-8 ({err.reason}: "
                                 f"{value[err.start:err.end]!r}, e.g. text decoded with errors='surrogateescape'); "
                                 f"fix it before relabeling") from None
        return encode_line(header)

    def _open(self) -> None:
        """Create the journal, or replay it (and repair a line a crash cut off) -- under the journal's lock."""
        self._journal.open(self._header_line(), self._replay, stacklevel=4)

    def _bad(self, line: int, why: str) -> JournalError:
        return JournalError(f"journal {self.path}, line {line}: {why}")

    def _replay(self, entries: list[tuple[int, dict]]) -> None:
        line, h = entries[0]
        if h.get("type") != "header":
            raise self._bad(line, f"the first line must be the header, got type {h.get('type')!r}")
        if h.get("fingerprint") != self.fingerprint:
            raise JournalError(
                f"journal {self.path} belongs to another dataset: its header has fingerprint "
                f"{str(h.get('fingerprint'))[:16]}..., this dataset has {self.fingerprint[:16]}... "
                f"(n={h.get('n')} vs {self.n}). Use a new journal path for this dataset, or open the session on the "
                f"dataset the journal started from (before any relabeling; the session applies the journal itself).")
        theirs = h.get("class_names")
        if not _same_class_names(theirs, self.class_names) or h.get("n") != self.n:
            raise JournalError(f"journal {self.path} was written for classes {theirs} and n={h.get('n')}, "
                               f"but this session has classes {self.class_names} and n={self.n}"
                               f"{_spelled_out(theirs, self.class_names)}")
        cursor: int | None = None
        for line, e in entries[1:]:
            kind = e.get("type")
            try:
                if kind == "decision":
                    p = self._pos.get(e["id"]) if isinstance(e["id"], int) else None
                    if p is None:
                        raise self._bad(line, f"id {e['id']!r} is not in the dataset")
                    if e["action"] not in ACTIONS or e["source"] not in SOURCES:
                        raise self._bad(line, f"unknown action {e['action']!r} or source {e['source']!r}")
                    if not 0 <= int(e["new_label"]) < len(self.class_names):
                        raise self._bad(line, f"label {e['new_label']!r} out of range [0, {len(self.class_names)})")
                    if int(e["old_label"]) != self._labels[p]:
                        raise self._bad(line, f"old_label {e['old_label']} of id {e['id']} does not match the "
                                              f"replayed label {self._labels[p]}; the journal was edited or mixed up")
                    self._apply_decision(e, line)
                elif kind == "undo":
                    if not self._stack or self._stack[-1][1].id != e["id"]:
                        raise self._bad(line, f"undo of id {e['id']} but the last decision to undo is "
                                              f"{self._stack[-1][1].id if self._stack else 'none'}")
                    self._apply_undo()
                elif kind == "cursor":
                    if int(e["round"]) == self.round and e["id"] in self._flagged_pos:
                        cursor = self._flagged_pos[e["id"]]
                elif kind == "header":
                    raise self._bad(line, "a second header; two journals were concatenated?")
                else:
                    raise self._bad(line, f"unknown entry type {kind!r}")
            except (KeyError, TypeError, ValueError) as err:
                raise self._bad(line, f"malformed {kind} entry ({type(err).__name__}: {err})") from None
        if self.flagged:
            if cursor is None:  # resume at the first example not yet reviewed this round
                todo = [k for k, i in enumerate(self.flagged)
                        if (d := self._effective.get(i)) is None or d.round != self.round]
                cursor = todo[0] if todo else 0
            self._position = cursor


def _nfc(name: Any) -> Any:
    return unicodedata.normalize("NFC", name) if isinstance(name, str) else name


def _same_class_names(theirs: Any, ours: list[str]) -> bool:
    """Same classes in the same order, comparing names in Unicode NFC form (composed "é" == "e" + accent)."""
    return isinstance(theirs, list) and len(theirs) == len(ours) and all(
        _nfc(a) == _nfc(b) for a, b in zip(theirs, ours))


def _spelled_out(theirs: Any, ours: list[str]) -> str:
    """The differing non-ASCII class names written with escapes: names can look alike and still differ."""
    if not isinstance(theirs, list) or len(theirs) != len(ours):
        return ""
    diffs = [f"class {c}: {ascii(_nfc(a))} in the journal, {ascii(_nfc(b))} in this session"
             for c, (a, b) in enumerate(zip(theirs, ours))
             if _nfc(a) != _nfc(b) and not (str(a) + b).isascii()]
    return f" ({'; '.join(diffs)})" if diffs else ""

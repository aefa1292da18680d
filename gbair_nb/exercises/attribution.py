"""Checkers for the influence labs: 02 (TracIn by hand) and 03 (choosing what a person reviews, and the journal).

TracIn convention (as in :mod:`gbair_nb.influence`): TracInCP(z, z') = Σ_c Σ_tensor η_c[tensor] ⟨∇ℓ(θ_c, z),
∇ℓ(θ_c, z')⟩; > 0 a proponent, < 0 an opponent. Self-influence = TracInCP(z, z): **higher = more suspect**.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .core import BLANK, as_array, as_int_list, is_blank, judge, rate_weights, report, stack_checkpoints

__all__ = ["check_tracin_pair", "check_self_influence", "check_proponents_opponents", "check_review_pick",
           "check_opposition_pick", "check_journal_replay"]


def _tensors(grads: Any) -> dict[str, np.ndarray]:
    """One checkpoint's gradient as name → flat array (a bare array is one tensor called "θ")."""
    if isinstance(grads, Mapping):
        return {str(n): as_array(g).ravel() for n, g in grads.items()}
    return {"θ": as_array(grads).ravel()}


def _rates(lrs: Any, names: Sequence[str]) -> dict[str, float]:
    """One checkpoint's learning rates as name → rate (a bare number is the rate of every tensor)."""
    if isinstance(lrs, Mapping):
        return {n: float(lrs[n]) for n in names}
    return {n: float(lrs) for n in names}


def check_tracin_pair(value: Any, grads_train: Sequence[Any], grads_test: Sequence[Any], lrs: Sequence[Any]) -> bool:
    """TracInCP of one (training, test) pair from their gradients at every checkpoint.

    ``grads_train[c]`` and ``grads_test[c]``: the gradient at checkpoint c, either one flat array or a dict
    tensor name → array (e.g. ``{"prompt": …, "head": …}``); ``lrs[c]``: the learning rate at checkpoint c, one
    number or a dict tensor name → rate. TracInCP = Σ_c Σ_tensor lrs[c][tensor] · ⟨g_train, g_test⟩ — one number.
    """
    per_ckpt, plain, names = [], [], None
    for gt, gs, lr in zip(grads_train, grads_test, lrs):
        a, b = _tensors(gt), _tensors(gs)
        names = list(a)
        rate = _rates(lr, names)
        dots = {n: float(a[n] @ b[n]) for n in names}
        per_ckpt.append(sum(rate[n] * dots[n] for n in names))
        plain.append(dots)
    right = sum(per_ckpt)
    mistakes = [("did you weight each checkpoint by its learning rate?", sum(sum(d.values()) for d in plain)),
                ("TracIn is the SUM over checkpoints, not the mean", right / len(per_ckpt)),
                ("check the sign: a positive TracIn means training on z lowered the test loss", -right),
                ("use every checkpoint, not only the last one", per_ckpt[-1]),
                ("use every checkpoint, not only the first one", per_ckpt[0])]
    if names and len(names) > 1:  # one rate for every tensor: the prompt's (or the head's) rate everywhere
        for n in names:
            one = sum(_rates(lr, names)[n] * sum(d.values()) for lr, d in zip(lrs, plain))
            mistakes.append(("each tensor has its own learning rate: weight the prompt's and the head's products "
                             "separately", one))
    squared = sum(sum(_rates(lr, names)[n] ** 2 * d[n] for n in d) for lr, d in zip(lrs, plain))
    mistakes.append(("the learning rate enters once, not squared", squared))
    return judge(value, right, mistakes, what="TracIn", shape="one number",
                 otherwise="for every checkpoint: lr × (gradient of z · gradient of z'), then add the checkpoints")


def check_self_influence(self_influence: Any, G: Any, lrs: Any) -> bool:
    """Self-influence of every training example: Σ_c Σ_p lrs[c][p] · G[c][i, p]² — **higher = more suspect**.

    ``G``: per-example gradients, (K, n, P) or a list of K (n, P) matrices (row i = example i's gradient at
    checkpoint c); ``lrs``: K learning rates, or K vectors of P per-parameter rates. Expected: (n,).
    """
    g = stack_checkpoints(G)
    K, _, P = g.shape
    w = rate_weights(lrs, K, P)[:, None, :]
    per_ckpt = (g * g * w).sum(2)  # (K, n)
    right = per_ckpt.sum(0)
    mistakes = [("did you weight each checkpoint by its learning rate?", (g * g).sum((0, 2))),
                ("square the gradient's norm: self-influence is TracIn(z, z) = ⟨g, g⟩, not ‖g‖",
                 np.sqrt(per_ckpt).sum(0)),
                ("square the gradient's norm: self-influence is TracIn(z, z) = ⟨g, g⟩, not ‖g‖",
                 (w[:, 0, 0][:, None] * np.sqrt((g * g).sum(2))).sum(0)),
                ("check the sign: self-influence is a sum of squares, never negative", -right),
                ("use every checkpoint, not only the last one", per_ckpt[-1]),
                ("square each entry, then sum (not the square of the sum)",
                 (w[:, :, 0] * g.sum(2) ** 2).sum(0)),
                ("you summed over the examples: sum over the parameters (the last axis) instead",
                 (g * g * w).sum((0, 1))),
                ("TracIn is the SUM over checkpoints, not the mean", right / K)]
    return judge(self_influence, right, mistakes, what="self_influence", shape="one score per training example",
                 otherwise="for each example: Σ over checkpoints of lr × (sum of its squared gradient entries)")


def check_proponents_opponents(proponents: Any, opponents: Any, scores: Any, i: int, k: int) -> bool:
    """The k strongest proponents and opponents of test example ``i``, strongest first.

    ``scores``: TracIn matrix (n_test, n_train), row = test example. Proponents: the k largest scores of row i,
    largest first; opponents: the k most negative, most negative first. Answers are training positions (ints).
    """
    if is_blank(proponents) or is_blank(opponents):
        return report(False, BLANK)
    S = as_array(scores)
    row = S[i]
    pro, opp = as_int_list(proponents), as_int_list(opponents)
    if pro is None or opp is None:
        return report(False, "answer with lists (or arrays) of training positions: integers")
    if len(pro) != k or len(opp) != k:
        off = {len(pro) - k, len(opp) - k} - {0}
        return report(False, f"off by one: k = {k} positions per list" if off <= {1, -1}
                      else f"return exactly k = {k} positions in each list; yours have {len(pro)} and {len(opp)}")
    col = S[:, i] if i < S.shape[1] else None
    if col is not None and len(col) >= k:
        t_pro, t_opp = list(np.argsort(-col, kind="stable")[:k]), list(np.argsort(col, kind="stable")[:k])
        if (pro, opp) == ([int(x) for x in t_pro], [int(x) for x in t_opp]) and not np.array_equal(S[i], col):
            return report(False, "row i of `scores` is test example i; you read column i (the transposed matrix)")
    if not all(0 <= j < len(row) for j in pro + opp):
        return report(False, f"positions must index the training set: 0 … {len(row) - 1}")
    want_pro = np.sort(row)[::-1][:k]
    want_opp = np.sort(row)[:k]
    got_pro, got_opp = row[pro], row[opp]
    if np.allclose(got_pro, want_opp) and np.allclose(got_opp, want_pro):
        return report(False, "proponents and opponents are swapped: a proponent has a large POSITIVE score")
    if np.allclose(got_pro, want_pro) and np.allclose(got_opp, want_opp):
        return report(True)
    if np.allclose(np.sort(got_pro), np.sort(want_pro)) and np.allclose(np.sort(got_opp), np.sort(want_opp)):
        return report(False, "right examples, wrong order: strongest first (largest score first for proponents, "
                              "most negative first for opponents)")
    if np.allclose(got_pro, want_pro):
        return report(False, "the proponents are right; opponents are the most NEGATIVE scores of the row")
    if np.allclose(got_opp, want_opp):
        return report(False, "the opponents are right; proponents are the largest scores of the row")
    return report(False, "sort row i of the scores: the top k are the proponents, the bottom k the opponents")


def check_review_pick(picked_ids: Any, scores: Any, ids: Any, reviewed_ids: Any, k: int) -> bool:
    """The k examples a person should review next: the highest scores among those not reviewed yet.

    ``scores`` (n,) higher = more suspect; ``ids`` (n,) the examples' ids (not positions); ``reviewed_ids`` ids
    already decided (never flagged again). Expected: k ids, most suspect first.
    """
    if is_blank(picked_ids):
        return report(False, BLANK)
    s, id_arr = as_array(scores), np.asarray(ids)
    done = np.isin(id_arr, np.asarray(list(reviewed_ids)))
    order = [p for p in np.argsort(-s, kind="stable") if not done[p]]
    right = [int(id_arr[p]) for p in order[:k]]
    got = as_int_list(picked_ids)
    if got is None:
        return report(False, "answer with a list (or array) of example ids: integers")
    if got == right:
        return report(True)
    if got == [int(p) for p in order[:k]]:
        return report(False, "those are positions in the training set; a session speaks ids: ids[positions]")
    if any(j in {int(x) for x in id_arr[done]} for j in got):
        return report(False, "skip the examples already reviewed: a reviewed example is never flagged again")
    if len(got) != k:
        return report(False, f"off by one: k = {k}" if abs(len(got) - k) == 1 else f"pick exactly k = {k} ids")
    ascending = [int(id_arr[p]) for p in order[::-1][:k]]
    if got == ascending or sorted(got) == sorted(ascending):
        return report(False, "higher = more suspect: take the LARGEST scores")
    if sorted(got) == sorted(right):
        return report(False, "right examples, wrong order: most suspect first")
    if not set(got) <= {int(x) for x in id_arr}:
        return report(False, "some of these are not ids of this dataset")
    return report(False, "rank the examples not yet reviewed by score, highest first, and keep the first k")


def check_opposition_pick(picked_ids: Any, table: pd.DataFrame, k: int) -> bool:
    """Review the training examples that opposed the model's mistakes the most, summed over the mistakes.

    ``table``: one row per (mistake, training example) pair the influence explorer listed, with columns
    ``train_id`` and ``score`` (TracIn; < 0 = pushed the model toward that mistake). Each example's opposition is
    −Σ of its scores over the rows that name it. Expected: the k train ids with the largest opposition, largest
    first — what notebook 04's G-BAIR score does with every mistake and every example.
    """
    if is_blank(picked_ids):
        return report(False, BLANK)
    got = as_int_list(picked_ids)
    if got is None:
        return report(False, "answer with a list (or array) of train ids: integers")
    g = table.groupby("train_id", sort=True)["score"]

    def top(values: pd.Series) -> list[int]:
        order = np.argsort(-values.to_numpy(), kind="stable")
        return [int(values.index[j]) for j in order[:k]]

    right = top(-g.sum())
    if got == right:
        return report(True)
    if len(got) != len(set(got)):
        return report(False, "an example appears once per mistake: add up its scores (group by train_id) "
                              "before ranking")
    rows = table.sort_values("score", kind="stable")["train_id"].astype(int).tolist()[:k]
    if got == rows:
        return report(False, "rank the examples, not the rows: add up each example's scores over the mistakes")
    if got == top(g.sum()):
        return report(False, "those are the strongest PROPONENTS; the suspects opposed the mistakes: "
                              "most negative total")
    if got == top(table.assign(a=table["score"].abs()).groupby("train_id", sort=True)["a"].sum()):
        return report(False, "keep the sign: a proponent (> 0) is not a suspect, only opposition (< 0) counts")
    if got == top(-g.mean()):
        return report(False, "add the scores over the mistakes (sum), don't average: an example that opposed "
                              "several mistakes should count more")
    if len(got) != k:
        return report(False, f"pick exactly k = {k} train ids")
    if sorted(got) == sorted(right):
        return report(False, "right examples, wrong order: the largest opposition first")
    return report(False, "opposition = −(sum of the example's scores); take the k largest")


# ------------------------------------------------------------------------------------------- the journal
def _simulate(labels0: np.ndarray, ids: list[int], actions: Sequence[tuple], *, undo: str) -> tuple:
    """Replay clicks under one reading of undo: "last" (the toolkit's: cancel the most recent decision still
    standing), "none" (undo ignored) or "first" (cancel the earliest decision still standing)."""
    standing: list[tuple] = []
    for a in actions:
        if a[0] != "undo":
            standing.append(a)
        elif undo != "none" and standing:
            standing.pop(-1 if undo == "last" else 0)
    pos = {i: p for p, i in enumerate(ids)}
    labels, kept = labels0.copy(), np.ones(len(ids), dtype=bool)
    for a in standing:
        p = pos[int(a[1])]
        if a[0] == "relabel":
            labels[p], kept[p] = int(a[2]), True
        elif a[0] == "keep":
            kept[p] = True
        elif a[0] == "remove":
            kept[p] = False
    return labels, kept


def check_journal_replay(labels: Any, kept: Any, *, ids: Sequence[int], labels0: Sequence[int],
                         actions: Sequence[tuple], class_names: Sequence[str] = ("ham", "spam")) -> bool:
    """The labels and kept mask a relabel session ends with after a sequence of clicks.

    ``actions``: tuples ``("relabel", id, new_label)``, ``("keep", id)``, ``("remove", id)``, ``("undo",)``.
    The right answer is computed by replaying them in a real :class:`gbair_nb.relabel.RelabelSession` (in a
    temporary journal): undo cancels the last decision not yet undone; remove keeps the label but drops the example.
    """
    if is_blank(labels) or is_blank(kept):
        return report(False, BLANK)
    from ..relabel import RelabelSession

    ids = [int(i) for i in ids]
    start = np.asarray(labels0, dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        s = RelabelSession(ids, start, class_names, Path(tmp) / "journal.jsonl", fingerprint="exercise")
        for a in actions:
            if a[0] == "relabel":
                s.relabel(a[1], a[2])
            elif a[0] == "keep":
                s.keep(a[1])
            elif a[0] == "remove":
                s.remove(a[1])
            elif a[0] == "undo":
                s.undo()
            else:
                raise ValueError(f"unknown action {a!r}; use relabel, keep, remove or undo")
        right_labels, right_kept = s.labels(), s.kept_mask()
    got_l, got_k = as_int_list(labels), as_array(kept)
    if got_l is None or got_k is None or len(got_l) != len(ids) or got_k.shape != (len(ids),):
        return report(False, f"give one label and one kept flag per example: two lists of length {len(ids)}")
    got_l, got_k = np.asarray(got_l), got_k.astype(bool)
    if np.array_equal(got_l, right_labels) and np.array_equal(got_k, right_kept):
        return report(True)
    for undo, hint in (("none", "undo takes back the last decision not yet undone; it is not ignored"),
                       ("first", "undo cancels the LAST decision not yet undone, not the first")):
        l2, k2 = _simulate(start, ids, actions, undo=undo)
        if np.array_equal(got_l, l2) and np.array_equal(got_k, k2):
            return report(False, hint)
    if np.array_equal(got_l, right_labels):
        if got_k.all() and not right_kept.all():
            return report(False, "remove drops the example from training: its kept flag is False")
        return report(False, "the labels are right; check which examples are still kept after the undos")
    if np.array_equal(got_k, right_kept):
        return report(False, "the kept flags are right; check the labels (remove leaves the label as it was)")
    return report(False, "replay the clicks in order; each undo cancels the most recent decision still standing")

"""Checkers for the G-BAIR and detection labs: 04 (the score, the flags, the recovered fraction) and 05 (how well a
score ranks the wrong labels).

Scores follow the toolkit's one convention: **higher = more likely mislabeled**. The truth mask ``is_corrupted``
(bool, (n,)) is what a lab grades against; no scorer may look at it.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .core import BLANK, as_array, as_int_list, is_blank, judge, rate_weights, report, stack_checkpoints

__all__ = ["check_gbair_score", "check_default_k", "check_flagged", "check_recovered_fraction", "check_recall_at",
           "check_precision_at_k", "check_average_precision", "check_auroc", "check_flip_rates",
           "check_one_way_share"]


def check_gbair_score(score: Any, G_train: Any, G_M: Any, lrs: Any) -> bool:
    """The G-BAIR score of every training example: score(z) = −Σ_{z'∈M} TracInCP(z, z').

    ``G_train``: K per-checkpoint gradient matrices (n_train, P) of the training examples under their given labels;
    ``G_M``: K matrices (|M|, P) of the validation mistakes under their true labels; ``lrs``: K learning rates or K
    (P,) vectors of per-parameter rates. score = −Σ_c G_train[c] @ (lrs[c] ⊙ Σ_rows G_M[c]) — (n_train,),
    **higher = pushed the model harder toward its mistakes**.
    """
    Gt, Gm = stack_checkpoints(G_train), stack_checkpoints(G_M)
    K, _, P = Gt.shape
    w = rate_weights(lrs, K, P)
    per_ckpt = np.einsum("knp,kp->kn", Gt, w * Gm.sum(1))
    right = -per_ckpt.sum(0)

    def pairs():  # (n, |M|): one score per (training example, mistake), before the sum over mistakes
        return -sum((Gt[c] * w[c]) @ Gm[c].T for c in range(K))

    def unit_mistakes():
        unit = Gm / np.clip(np.linalg.norm(Gm, axis=2, keepdims=True), 1e-12, None)
        return -np.einsum("knp,kp->n", Gt, w * unit.sum(1))

    mistakes = [
        ("your scores have the opposite sign of the G-BAIR convention: higher must mean more suspect "
         "(an opponent of the mistakes has a NEGATIVE TracIn)", -right),
        ("did you weight each checkpoint by its learning rate?", lambda: -np.einsum("knp,kp->n", Gt, Gm.sum(1))),
        ("sum over the mistakes, don't average: the ranking is the same but the values are not TracIn's",
         right / Gm.shape[1]),
        ("use every checkpoint: TracInCP sums over all of them, not only the last", -per_ckpt[-1]),
        ("you kept one score per (training example, mistake): sum over the mistakes to get one per example", pairs),
        ("transposed: score the TRAINING examples, one number each (n_train,), not the mistakes",
         lambda: pairs().sum(0)),
        ("that normalises each mistake's gradient (per_mistake); the plain G-BAIR score sums raw gradients",
         unit_mistakes),
    ]
    return judge(score, right, mistakes, what="score", shape="one score per training example",
                 otherwise="per checkpoint: (training gradients) @ (lrs ⊙ summed mistake gradients); add the "
                           "checkpoints; then negate")


def check_default_k(k: Any, n_train: int) -> bool:
    """The toolkit's budget per round: 4% of the training set, rounded, and at least 5."""
    right = max(5, round(0.04 * n_train))
    mistakes = [("at least 5 examples per round, however small the training set", round(0.04 * n_train)),
                ("round to the nearest integer (not down)", max(5, math.floor(0.04 * n_train))),
                ("round to the nearest integer (not up)", max(5, math.ceil(0.04 * n_train))),
                ("4% is 0.04 of the training set", max(5, 4 * n_train)),
                ("4% is 0.04 of the training set, not 0.4", max(5, round(0.4 * n_train)))]
    return judge(k, right, mistakes, what="k", rtol=0, otherwise="4% of the training set, rounded, at least 5")


def check_flagged(flagged: Any, score: Any, reviewed: Any, k: int) -> bool:
    """The positions flagged this round: the k highest scores among examples not reviewed yet, highest first.

    ``score`` (n,) higher = more suspect; ``reviewed`` (n,) bool, True = already reviewed (never flagged again);
    ties keep the training-set order (a stable sort). Expected: k positions (ints).
    """
    if is_blank(flagged):
        return report(False, BLANK)
    s, done = as_array(score), as_array(reviewed).astype(bool)
    order = [int(p) for p in np.argsort(-s, kind="stable") if not done[p]]
    right = order[:k]
    raw = as_array(flagged)
    if raw is not None and raw.shape == s.shape and set(np.unique(raw)) <= {0.0, 1.0} and len(s) != k:
        return report(False, "return the flagged POSITIONS (np.flatnonzero of a mask, or an argsort), not a mask")
    got = as_int_list(flagged)
    if got is None:
        return report(False, "answer with a list (or array) of training positions: integers")
    if got == right:
        return report(True)
    if any(done[p] for p in got if 0 <= p < len(s)):
        return report(False, "skip the examples already reviewed: once answered, an example is never flagged again")
    if len(got) != k:
        return report(False, f"off by one: k = {k}" if abs(len(got) - k) == 1 else f"flag exactly k = {k}")
    if got == order[::-1][:k] or sorted(got) == sorted(order[::-1][:k]):
        return report(False, "higher = more suspect: flag the LARGEST scores")
    if sorted(got) == sorted(right):
        return report(False, "right examples, wrong order: the most suspect first")
    return report(False, "set the reviewed examples aside, sort the rest by score (highest first), keep k")


def _rounds(rounds: Any) -> pd.DataFrame:
    df = pd.DataFrame(rounds)
    missing = {"round", "val_macro_f1", "test_macro_f1"} - set(df.columns)
    if missing:
        raise ValueError(f"rounds need the columns round, val_macro_f1, test_macro_f1; missing {sorted(missing)}")
    return df.sort_values("round").reset_index(drop=True)


def check_recovered_fraction(value: Any, rounds: Any, clean: float) -> bool:
    """The recovered fraction of a finished loop, read on the KEPT round (not the last one run).

    ``rounds``: one row per round (round 0 = trained on the corrupted labels) with ``val_macro_f1`` and
    ``test_macro_f1`` (a DataFrame or a list of dicts); ``clean``: test macro-F1 of the clean-label model. The kept
    round has the best validation macro-F1 (the earliest of equals); later rounds are rolled back.
    recovered = (test F1 of the kept round − test F1 of round 0) / (clean − test F1 of round 0).
    """
    df = _rounds(rounds)
    val, test = df["val_macro_f1"].to_numpy(), df["test_macro_f1"].to_numpy()
    corrupted = test[0]

    def frac(final):
        return (final - corrupted) / (clean - corrupted)

    kept = int(np.argmax(val))  # argmax returns the earliest of equals
    latest_best = len(val) - 1 - int(np.argmax(val[::-1]))
    mistakes = [
        ("the loop rolls back: read the kept round (best validation macro-F1), not the last one run", frac(test[-1])),
        ("choose the kept round by VALIDATION macro-F1; choosing by test F1 peeks at the test set",
         frac(test.max())),
        ("the recovered fraction is measured on the test set; validation only chooses the round",
         (val[kept] - val[0]) / (clean - val[0])),
        ("on a tie the EARLIEST of the best rounds is kept", frac(test[latest_best])),
        ("measure from the corrupted start: (final − corrupted) / (clean − corrupted)", test[kept] / clean),
        ("that is the fraction still missing, (clean − final) / (clean − corrupted); the recovered fraction is the "
         "gain of the kept round over round 0, over the same gap", (clean - test[kept]) / (clean - corrupted)),
    ]
    return judge(value, frac(test[kept]), mistakes, what="the recovered fraction", shape="one number",
                 otherwise="pick the kept round, then (its test F1 − round 0's) / (clean − round 0's)")


def _order(scores: Any) -> np.ndarray:
    return np.argsort(-as_array(scores), kind="stable")


def check_recall_at(value: Any, scores: Any, is_corrupted: Any, fraction: float) -> bool:
    """Recall at ``fraction`` of the data inspected: the share of ALL wrong labels found among the top ⌈fraction·n⌉
    scores (at least one example inspected). A random order finds ``fraction`` of them on average."""
    y = as_array(is_corrupted).astype(bool)
    n, pos = len(y), int(y.sum())
    order = _order(scores)
    m = max(1, math.ceil(fraction * n))
    right = y[order[:m]].sum() / pos
    mistakes = [
        ("you stopped one example short: inspect ⌈fraction × n⌉ examples (round UP)",
         y[order[:max(1, math.floor(fraction * n))]].sum() / pos),
        ("that is the precision of the top (found / inspected); recall divides by ALL wrong labels",
         y[order[:m]].sum() / m),
        ("higher = more suspect: inspect the LARGEST scores first", y[order[::-1][:m]].sum() / pos),
        ("inspect a fraction of the whole DATA set, not of the wrong labels",
         y[order[:max(1, math.ceil(fraction * pos))]].sum() / pos),
        ("give a fraction between 0 and 1, not a percentage", 100 * right),
        ("that is the number found; recall is found / (number of wrong labels)", y[order[:m]].sum()),
    ]
    return judge(value, right, mistakes, what="recall", shape="one number",
                 otherwise="sort by score (highest first), inspect the top ⌈fraction × n⌉, count the wrong labels "
                           "found, divide by all wrong labels")


def check_precision_at_k(value: Any, scores: Any, is_corrupted: Any, k: int) -> bool:
    """Precision@k: the share of wrong labels among the k highest scores (one round's flagged precision)."""
    y = as_array(is_corrupted).astype(bool)
    order = _order(scores)
    right = y[order[:k]].mean()
    mistakes = [("that is the recall (found / all wrong labels); precision divides by k", y[order[:k]].sum() / y.sum()),
                ("off by one: the top k is order[:k]", y[order[:k + 1]].mean()),
                ("off by one: the top k is order[:k]", y[order[:max(1, k - 1)]].mean()),
                ("higher = more suspect: the top k are the LARGEST scores", y[order[::-1][:k]].mean()),
                ("that is the number found; precision is found / k", y[order[:k]].sum())]
    return judge(value, right, mistakes, what="precision@k", shape="one number",
                 otherwise="count the wrong labels among the k highest scores and divide by k")


def check_average_precision(value: Any, scores: Any, is_corrupted: Any) -> bool:
    """Average precision: the mean, over the wrong labels, of the precision of the list cut at each of them.

    With the examples sorted by score (highest first) and the wrong ones at ranks r_1 < r_2 < … (1-based),
    AP = (1/#wrong) Σ_j j / r_j.
    """
    y = as_array(is_corrupted).astype(bool)
    order = _order(scores)
    hits = y[order]
    prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    right = prec[hits].mean()
    asc = y[order[::-1]]
    prec_asc = np.cumsum(asc) / np.arange(1, len(asc) + 1)
    mistakes = [
        ("average over the wrong labels only: the precision at each WRONG label's rank, not at every rank",
         prec.mean()),
        ("divide by the number of wrong labels, not by n", prec[hits].sum() / len(y)),
        ("higher = more suspect: sort the scores from the largest down", prec_asc[asc].mean()),
        ("that is precision@k (k = number of wrong labels); AP averages the precision at every wrong label",
         hits[:int(y.sum())].mean()),
        ("ranks start at 1: the precision at rank r is (wrong labels in the top r) / r",
         (np.cumsum(hits) / np.maximum(np.arange(len(hits)), 1))[hits].mean()),
    ]
    return judge(value, right, mistakes, what="average precision", shape="one number",
                 otherwise="at each wrong label's rank r: (wrong labels in the top r) / r; then average those")


def check_auroc(value: Any, scores: Any, is_corrupted: Any) -> bool:
    """AUROC: the probability that a random wrong label scores above a random correct one; ties count ½."""
    s, y = as_array(scores), as_array(is_corrupted).astype(bool)
    diff = s[y][:, None] - s[~y][None, :]
    pairs = diff.size
    right = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / pairs
    mistakes = [("that is 1 − AUROC: count the pairs where the WRONG label scores higher", 1 - right),
                ("a tie counts ½, not 0", (diff > 0).sum() / pairs),
                ("a tie counts ½, not 1", (diff >= 0).sum() / pairs),
                ("divide by the number of (wrong, correct) pairs", (diff > 0).sum() + 0.5 * (diff == 0).sum())]
    if abs(right - 0.5) < 1e-12:  # then 1 − AUROC is the same number: nothing to tell apart
        mistakes = mistakes[1:]
    return judge(value, right, mistakes, what="AUROC", shape="one number",
                 otherwise="over every (wrong, correct) pair: 1 if the wrong one scores higher, ½ on a tie; "
                           "average")


def _flip_rates(proba: np.ndarray, labels: np.ndarray, *, hard: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(rates, joint): joint[i, j] = Σ_{z labelled j} p(i | z) (true i, given j); rates = joint / row sums, diagonal
    0. ``hard``: the probe's argmax as the truth instead of its probabilities."""
    C = proba.shape[1]
    p = np.eye(C)[proba.argmax(1)] if hard else proba
    joint = np.stack([p[labels == j].sum(0) for j in range(C)], axis=1)
    rates = joint / np.clip(joint.sum(1, keepdims=True), 1e-12, None)
    np.fill_diagonal(rates, 0.0)
    return rates, joint


def check_flip_rates(rates: Any, proba: Any, labels: Any) -> bool:
    """The noise a clean-set probe estimates: ``rates[i, j]`` (i ≠ j) = the fraction of true class i that carries
    label j, with the probe's probabilities as a soft truth — Σ_{z labelled j} p(i | z) over Σ_z p(i | z) — and 0 on
    the diagonal. ``proba``: (n, C) the probe's class probabilities; ``labels``: (n,) the given labels.
    (:meth:`gbair_nb.probe.TrustedProbe.flip_rates`.)"""
    P, y = as_array(proba), as_array(labels).astype(int)
    right, joint = _flip_rates(P, y)
    counts = joint.copy()
    np.fill_diagonal(counts, 0.0)
    by_column = joint / np.clip(joint.sum(0, keepdims=True), 1e-12, None)
    np.fill_diagonal(by_column, 0.0)
    with_diagonal = joint / np.clip(joint.sum(1, keepdims=True), 1e-12, None)
    mistakes = [
        ("row = TRUE class, column = given label: yours is transposed", right.T),
        ("divide by the expected size of the TRUE class (the row sum), not by how many carry the label (the column)",
         by_column),
        ("those are expected counts: divide each row by its sum to get rates", counts),
        ("set the diagonal to 0: keeping your label is not a flip", with_diagonal),
        ("use the probe's probabilities as a soft truth, not its argmax", lambda: _flip_rates(P, y, hard=True)[0]),
    ]
    return judge(rates, right, mistakes, what="the flip rates", shape="a C × C matrix",
                 otherwise="for each given label j, sum the probe's probabilities p(i | z) over the examples labelled "
                           "j (column j); divide each row i by its sum; zero the diagonal")


def check_one_way_share(share: Any, rates: Any) -> bool:
    """The one-way share of a flip-rate matrix: its largest rate over the sum of all of them (1 = every wrong label
    points the same way; ½ = two classes flipped at equal rates). Auto picks G-BAIR at 0.9 or more."""
    if is_blank(share):
        return report(False, BLANK)
    if as_array(rates) is None or as_array(rates).ndim != 2:
        return report(False, "compute the flip rates first (the exercise before): a C × C matrix")
    R = as_array(rates).copy()
    np.fill_diagonal(R, 0.0)
    total = R.sum()
    right = R.max() / total if total > 0 else 1.0
    rest = total - R.max()
    mistakes = [
        ("divide by the sum of ALL the rates, the largest included", (R.max() / rest) if rest > 0 else None),
        ("the share of the LARGEST rate, not the smallest off-diagonal one",
         R[~np.eye(len(R), dtype=bool)].min() / total if total > 0 else None),
        ("a share between 0 and 1, not a percentage", 100 * right),
    ]
    return judge(share, right, mistakes, what="the one-way share", shape="one number",
                 otherwise="the largest flip rate divided by the sum of all the flip rates")


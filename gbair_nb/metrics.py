"""How well a score finds the wrong labels, and how much of the lost performance came back.

Scores follow one convention everywhere in the toolkit: **higher = more likely mislabeled**.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["detection_metrics", "recovered_fraction", "kept_round", "percentile_ranks", "mean_ci",
           "calibrated_macro_f1"]


def detection_metrics(scores: np.ndarray, is_corrupted: np.ndarray, *, k: int | None = None,
                      inspect: Sequence[float] = (0.05, 0.1, 0.2)) -> dict:
    """How well ``scores`` (n,) (higher = more suspect) rank the corrupted examples (``is_corrupted``, (n,) bool)
    first.

    Returns a dict: ``auroc`` (probability that a random wrong label outranks a random correct one), ``auprc``
    (average precision), ``recall@F%`` for each fraction F of the data inspected (highest scores first),
    ``precision@k`` (wrong labels among the top ``k``; default k = the number of wrong labels), ``n``,
    ``n_corrupted`` and ``k``. AUROC and AUPRC are NaN when every label, or none, is wrong.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

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


def recovered_fraction(final: float, corrupted: float, clean: float) -> float:
    """(final − corrupted) / (clean − corrupted): 1 = all the lost performance came back, 0 = none, < 0 = worse.
    NaN when clean and corrupted are equal (nothing was lost)."""
    gap = clean - corrupted
    return float("nan") if abs(gap) < 1e-12 else float((final - corrupted) / gap)


def kept_round(result: dict) -> dict:
    """The kept round's record in one scorer's saved result (``report.json``'s ``scorers[name]``): the round whose
    labels the loop hands back, which is not always the last one (a round without gain is rolled back)."""
    return next(r for r in result["rounds"] if r["round"] == result["final_round"])


def percentile_ranks(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """(n,) scores → their ranks scaled to [0, 1] (ties share their mean rank): 1 = the highest score (most
    suspect), 0 = the lowest. Scores on different scales become comparable (and can be averaged)."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    return np.ones(len(scores)) if len(scores) < 2 else (rankdata(scores) - 1) / (len(scores) - 1)


def mean_ci(values: Sequence[float] | np.ndarray, *, level: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the ``level`` confidence interval of the mean, n) over the finite values.

    The interval is Student's t: mean ± t_{(1+level)/2, n−1} · sd / √n (sd with ddof 1), the right one for a few
    seeds. The half-width is NaN for fewer than two values (one seed says nothing about the spread).
    """
    from scipy.stats import t

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    if len(v) == 1:
        return float(v[0]), float("nan"), 1
    half = float(t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return float(v.mean()), half, len(v)


def calibrated_macro_f1(val_probs: np.ndarray, val_labels: np.ndarray, test_probs: np.ndarray,
                        test_labels: np.ndarray) -> float:
    """Test macro-F1 after moving a binary classifier's decision threshold to the one that maximises validation
    macro-F1 (ties: the threshold closest to 0.5). NaN for more than two classes.

    What a model's predictions are worth once its threshold is fit on the clean validation set — no label fixed,
    nothing retrained. Class-conditional noise (positives labelled negative at random) mostly shifts the model's
    estimate of the class prior, and a moved threshold undoes most of that: this is the honest "no relabeling"
    reference for a recovery curve.
    """
    from sklearn.metrics import f1_score

    val_probs, test_probs = np.asarray(val_probs), np.asarray(test_probs)
    if val_probs.ndim != 2 or val_probs.shape[1] != 2:
        return float("nan")
    candidates = np.unique(np.concatenate([val_probs[:, 1], [0.5]]))
    scores = [f1_score(val_labels, (val_probs[:, 1] >= t).astype(int), average="macro", zero_division=0)
              for t in candidates]
    best = max(range(len(candidates)), key=lambda i: (scores[i], -abs(candidates[i] - 0.5)))
    return float(f1_score(test_labels, (test_probs[:, 1] >= candidates[best]).astype(int), average="macro",
                          zero_division=0))

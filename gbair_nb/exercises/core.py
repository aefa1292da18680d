"""What every checker shares: recognise a blank, compare a value with the right one, name the likely mistake.

A checker computes the right answer itself, from the same inputs the student used, and compares. When the value is
wrong it tries each *known mistake* (the answer a student gets by flipping a sign, forgetting a learning rate,
reading a matrix the wrong way round, …) and, if one matches, prints that mistake's hint. The hint points at the
mistake; it never contains the answer.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["BLANK", "Mistake", "is_blank", "report", "as_array", "as_int_list", "close", "judge", "stack_checkpoints",
           "rate_weights"]

BLANK = "fill in the blank first"

# (hint, candidate): the candidate is what that mistake produces on the student's inputs (or a function of no
# arguments that computes it, for the costly ones: called only when the earlier candidates did not match)
Mistake = tuple[str, Any]


def is_blank(value: Any) -> bool:
    """A blank left as it was in the lab: ``None``, ``...`` or ``NotImplemented`` (also inside a tuple)."""
    if isinstance(value, tuple):
        return any(is_blank(v) for v in value)
    return value is None or value is Ellipsis or value is NotImplemented


def report(ok: bool, hint: str = "") -> bool:
    """Print the one line a student reads — ``✓ correct`` or ``✗ not yet: <hint>`` — and return ``ok``."""
    print("✓ correct" if ok else f"✗ not yet: {hint}")
    return bool(ok)


def as_array(value: Any) -> np.ndarray | None:
    """A float64 NumPy copy of a number, list, NumPy array or torch tensor; None when it is not numeric."""
    if hasattr(value, "detach"):  # a torch tensor (possibly requiring grad, possibly on a GPU)
        value = value.detach().cpu().numpy()
    if isinstance(value, (str, bytes)) or np.asarray(value).dtype.kind in "USV":  # "8450" is text, not a number
        return None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr


def close(value: np.ndarray, right: Any, *, rtol: float = 1e-4) -> bool:
    """Same shape and equal up to float32 rounding (relative ``rtol``, plus a small floor on the right's scale)."""
    right = as_array(right)
    if value is None or right is None or value.shape != right.shape:
        return False
    scale = float(np.abs(right).max()) if right.size else 0.0
    return bool(np.allclose(value, right, rtol=rtol, atol=1e-9 + rtol * 1e-2 * scale))


def judge(value: Any, right: Any, mistakes: Sequence[Mistake] = (), *, what: str, shape: str = "",
          otherwise: str, rtol: float = 1e-4) -> bool:
    """The standard verdict for a numeric answer.

    Order: a blank → "fill in the blank first"; not numbers → say so; equal to ``right`` → ✓; equal to a known
    mistake's candidate → that mistake's hint; a different shape than ``right`` → a shape hint (``shape`` describes
    it in words, e.g. "one score per training example"); anything else → ``otherwise``.
    """
    if is_blank(value):
        return report(False, BLANK)
    arr = as_array(value)
    if arr is None:
        return report(False, f"{what} should be a number or an array of numbers, not a {type(value).__name__}")
    right = as_array(right)
    if close(arr, right, rtol=rtol):
        return report(True)
    for hint, candidate in mistakes:
        cand = candidate() if callable(candidate) else candidate  # a callable is computed only when reached
        if cand is not None and close(arr, cand, rtol=rtol):
            return report(False, hint)
    if arr.shape != right.shape:
        words = f"{shape}, " if shape else ""
        return report(False, f"check the shape: {what} should be {words}{_shape(right)}; yours is {_shape(arr)}")
    return report(False, otherwise)


def _shape(a: np.ndarray) -> str:
    return "a single number" if a.ndim == 0 else str(tuple(a.shape))


def as_int_list(value: Any) -> list[int] | None:
    """Indices or ids as a list of Python ints (from a list, array or tensor); None when they are not integers."""
    arr = as_array(value)
    if arr is None or arr.ndim != 1 or not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
        return None
    return [int(x) for x in arr]


def stack_checkpoints(G: Any) -> np.ndarray:
    """Per-checkpoint matrices as one (K, rows, P) float64 array, from a list of K (rows, P) arrays/tensors or an
    array that is already stacked."""
    return np.stack([as_array(g) for g in G]) if isinstance(G, (list, tuple)) else as_array(G)


def rate_weights(lrs: Any, K: int, P: int) -> np.ndarray:
    """(K, P) learning-rate weights, from K numbers (one rate per checkpoint) or K vectors of P per-parameter
    rates (what :func:`gbair_nb.gradients.lr_vector` gives)."""
    if isinstance(lrs, (list, tuple)):
        w = np.stack([np.broadcast_to(as_array(lr), (P,)) for lr in lrs])
    else:
        w = as_array(lrs)
    return np.broadcast_to(w.reshape(K, -1), (K, P))

"""Checkers for lab 06: which parameters train (LoRA and GIFT counts) and what a gradient mask does under AdamW.

Notation as in docs/theory.md §9: a linear layer y = ω x + b with ω (d_out, d_in); LoRA adds B A (B: d_out × r,
A: r × d_in) in every adapted layer; GIFT adds (ω φ) ψ with one (φ: d_in × r, ψ: r × d_in) pair shared by every
layer of a type.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .core import BLANK, as_array, close, is_blank, judge, report

__all__ = ["check_lora_params", "check_gift_params", "check_masked_adam", "adamw_reference"]


def _head_extras(d: int) -> set[int]:
    return {c * d + c for c in (1, 2, 3)}


def check_lora_params(n: Any, *, r: int, d_in: int, d_out: int, n_layers: int, n_targets: int) -> bool:
    """LoRA's trainable numbers, the classifier head left out: r (d_in + d_out) per adapted layer, in
    ``n_targets`` projection types (e.g. query and value) of each of ``n_layers`` layers."""
    per_layer = r * (d_in + d_out)
    right = per_layer * n_layers * n_targets
    mistakes = [(f"count every adapted projection type: {n_targets} per layer", per_layer * n_layers),
                ("LoRA adds a pair (B, A) in EVERY adapted layer: multiply by the number of layers",
                 per_layer * n_targets),
                ("each adapted layer has two factors, B (d_out × r) and A (r × d_in)",
                 r * d_in * n_layers * n_targets),
                ("each adapted layer has two factors, B (d_out × r) and A (r × d_in)",
                 r * d_out * n_layers * n_targets),
                ("B is d_out × r and A is r × d_in: r enters once per factor, not squared",
                 r * r * (d_in + d_out) * n_layers * n_targets)]
    if n is not None and not is_blank(n) and (a := as_array(n)) is not None and a.ndim == 0 \
            and int(a) - right in _head_extras(d_out):
        return report(False, "leave the classifier head out: count only the adapters (the head trains in every "
                              "method)")
    return judge(n, right, mistakes, what="the LoRA count", rtol=0,
                 otherwise="per adapted layer r·(d_in + d_out); times the layers; times the projection types")


def check_gift_params(n: Any, *, r: int, d_in: int, n_pairs: int, n_layers: int | None = None) -> bool:
    """GIFT's trainable numbers, the head left out: 2 · d_in · r per (φ, ψ) pair, one pair per layer type
    (``n_pairs``, e.g. 2 for query and value), whatever the depth."""
    right = 2 * d_in * r * n_pairs
    mistakes = [(f"one pair per layer type: {n_pairs} pairs", 2 * d_in * r),
                ("a pair has two matrices, φ (d_in × r) and ψ (r × d_in)", d_in * r * n_pairs),
                ("φ and ψ both have d_in × r entries: r enters once per matrix, not squared",
                 2 * d_in * r * r * n_pairs)]
    if n_layers:
        mistakes.insert(0, ("a GIFT pair is SHARED by all layers of a type: the count does not grow with depth",
                            right * n_layers))
    if n is not None and not is_blank(n) and (a := as_array(n)) is not None and a.ndim == 0 \
            and int(a) - right in _head_extras(d_in):
        return report(False, "leave the classifier head out: count only GIFT's pairs")
    return judge(n, right, mistakes, what="the GIFT count", rtol=0,
                 otherwise="2 · d_in · r numbers per pair, one pair per layer type")


def adamw_reference(w: Sequence[float], grads: Sequence[Sequence[float]], *, keep: int, mask: str = "gradient",
                    lr: float = 0.1, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                    weight_decay: float = 0.0, keep_smallest: bool = False, bias_correction: bool = True,
                    sgd: bool = False) -> np.ndarray:
    """AdamW (torch's update rule) over a few steps with a top-``keep`` |gradient| mask per step.

    ``mask="gradient"``: masked gradient entries are zeroed before the step (they still move: momentum, decay);
    ``"update"``: also put the masked entries back after the step (they do not move); ``"none"``: no mask.
    The last three options reproduce common mistakes (for the checker's hints).
    """
    w = np.array(w, dtype=np.float64)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, dtype=np.float64)
        order = np.argsort(np.abs(g) if keep_smallest else -np.abs(g), kind="stable")
        kept = np.zeros(len(g), dtype=bool)
        kept[order[:keep]] = True
        if mask != "none":
            g = g * kept
        before = w.copy()
        if sgd:
            w = w - lr * g
        else:
            w = w * (1 - lr * weight_decay)
            m = betas[0] * m + (1 - betas[0]) * g
            v = betas[1] * v + (1 - betas[1]) * g * g
            m_hat = m / (1 - betas[0] ** t) if bias_correction else m
            v_hat = v / (1 - betas[1] ** t) if bias_correction else v
            w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        if mask == "update":
            w = np.where(kept, w, before)
    return w


def check_masked_adam(fn: Callable[..., Any], *, w: Sequence[float], grads: Sequence[Sequence[float]], keep: int,
                      lr: float = 0.1) -> bool:
    """Your ``fn(w, grads, keep=, mask=, lr=)`` → the weights after AdamW steps with a gradient mask, for both
    ``mask="gradient"`` and ``mask="update"`` (see :func:`adamw_reference`; β = (0.9, 0.999), ε = 1e-8, no decay).
    The checker calls it on the inputs given and compares."""
    if is_blank(fn):
        return report(False, BLANK)
    if not callable(fn):
        return report(False, "pass your function itself (its name, without calling it)")
    results = {}
    for mode in ("gradient", "update"):
        try:
            out = fn(list(w), [list(g) for g in grads], keep=keep, mask=mode, lr=lr)
        except NotImplementedError:
            return report(False, BLANK)
        except Exception as e:  # the student's code raised: say what, without a traceback
            return report(False, f"your function raised {type(e).__name__}: {e}")
        if is_blank(out):
            return report(False, BLANK)
        results[mode] = as_array(out)
        if results[mode] is None:
            return report(False, "your function should return the weights: an array of numbers")
    ref = {mode: adamw_reference(w, grads, keep=keep, mask=mode, lr=lr) for mode in ("gradient", "update")}
    g_ok, u_ok = close(results["gradient"], ref["gradient"]), close(results["update"], ref["update"])
    if g_ok and u_ok:
        return report(True)
    for mode in ("gradient", "update"):
        got, other = results[mode], ref["update" if mode == "gradient" else "gradient"]
        if not close(got, ref[mode]) and close(got, other):
            return report(False, "under mask='gradient' a masked entry still moves: Adam's running mean remembers "
                                 "its earlier gradients" if mode == "gradient" else
                          "mask='update' must put the masked entries back after the step: they do not move at all")
        hints = [("apply the mask: only the `keep` entries with the largest |gradient| keep theirs",
                  dict(mask="none")),
                 ("keep the LARGEST |gradient| entries, not the smallest", dict(mask=mode, keep_smallest=True)),
                 ("Adam divides by the bias corrections 1 − β₁ᵗ and 1 − β₂ᵗ", dict(mask=mode, bias_correction=False)),
                 ("that is a plain SGD step; AdamW steps by m̂ / (√v̂ + ε)", dict(mask=mode, sgd=True))]
        for hint, kw in hints:
            if close(got, adamw_reference(w, grads, keep=keep, lr=lr, **kw)):
                return report(False, hint)
    which = "mask='gradient'" if not g_ok else "mask='update'"
    return report(False, f"the result for {which} is off: zero the masked gradient entries before the step, "
                         "and (update only) restore the masked weights after it")

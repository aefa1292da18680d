"""The data before any model: class counts under several labelings; training curves."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .base import METRIC_LABELS, new_axes

__all__ = ["class_counts", "plot_class_counts", "plot_metric_curve", "training_frame", "plot_training"]


def class_counts(labelings: dict[str, Sequence[int] | np.ndarray], class_names: Sequence[str]) -> pd.DataFrame:
    """Examples per class under several labelings, e.g. ``{"original": labels, "uniform 30%": noisy}``.

    Returns a tidy frame with columns ``labels`` (the labeling's name), ``class`` (class name), ``count``, in the
    order given (labelings) × ``class_names``.
    """
    rows = []
    for name, labels in labelings.items():
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
        rows += [{"labels": name, "class": c, "count": int(k)} for c, k in zip(class_names, counts)]
    return pd.DataFrame(rows, columns=["labels", "class", "count"])


def plot_class_counts(df: pd.DataFrame, *, ax=None, title: str | None = None):
    """Grouped bars: one group per class, one bar per labeling (``df`` from :func:`class_counts`)."""
    import seaborn as sns

    ax = new_axes(ax)
    sns.barplot(data=df, x="class", y="count", hue="labels", ax=ax, errorbar=None)
    ax.set_xlabel("class")
    ax.set_ylabel("training examples")
    if title:
        ax.set_title(title)
    ax.legend(title="labels", fontsize="small")
    return ax


def plot_metric_curve(df: pd.DataFrame, *, x: str = "p", y: Sequence[str] = ("accuracy", "macro_f1"), ax=None,
                      xlabel: str = "corruption rate p (fraction of training labels flipped)",
                      references: dict[str, float] | None = None, title: str | None = None):
    """Lines of metric(s) ``y`` against ``x`` (e.g. test accuracy vs corruption rate), one marker per row.

    ``references`` draws labelled horizontal lines, e.g. ``{"majority class": 0.87}``.
    """
    ax = new_axes(ax)
    df = df.sort_values(x)
    for col in y:
        ax.plot(df[x].to_numpy(), df[col].to_numpy(), marker="o", label=METRIC_LABELS.get(col, col))
    for i, (name, value) in enumerate((references or {}).items()):
        ax.axhline(value, linestyle="--", color=f"C{len(y) + i}", linewidth=1, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test score (0–1)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def training_frame(record: dict) -> pd.DataFrame:
    """Per-epoch rows of a run record (``run.record``): ``epoch``, ``train_loss`` and any ``val_*`` metrics."""
    return pd.DataFrame(record["epochs"])


def plot_training(df: pd.DataFrame, *, ax=None, title: str | None = None):
    """Training loss (left axis) and validation macro-F1 (right axis, if present) per epoch."""
    ax = new_axes(ax)
    ax.plot(df["epoch"], df["train_loss"], marker="o", color="C0", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss (cross-entropy)")
    if "val_macro_f1" in df:
        right = ax.twinx()
        right.plot(df["epoch"], df["val_macro_f1"], marker="s", color="C1", label="val macro-F1")
        right.set_ylabel("validation macro-F1")
        right.set_ylim(0, 1)
        lines = ax.get_lines() + right.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize="small", loc="center right")
    if title:
        ax.set_title(title)
    return ax

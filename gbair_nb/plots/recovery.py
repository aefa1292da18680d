"""The recovery curve: a metric per round for each scorer, with its references — a band over seeds when there are
several."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import mean_ci
from .base import METRIC_LABELS, need_columns, new_axes

__all__ = ["band_frame", "plot_recovery_curves"]


def band_frame(curves: pd.DataFrame) -> pd.DataFrame:
    """Per scorer and round: the mean of the metric over seeds, the half-width of its 95% interval (Student's t; NaN
    for one seed) and the number of seeds — the numbers behind the lines and bands of :func:`plot_recovery_curves`.

    Input: a frame like :func:`gbair_nb.report.curve_frame`'s (columns ``seed``, ``scorer``, ``round`` and the
    metric named in ``curves.attrs["metric"]``).
    """
    metric = curves.attrs.get("metric", "test_macro_f1")
    need_columns(curves, ("seed", "scorer", "round", metric), "curves")
    rows = []
    for (scorer, r), g in curves.groupby(["scorer", "round"], sort=False):
        mean, half, n = mean_ci(g[metric].to_numpy(dtype=float))
        rows.append({"scorer": scorer, "round": int(r), "mean": mean, "ci95": half, "n_seeds": n})
    return pd.DataFrame(rows, columns=["scorer", "round", "mean", "ci95", "n_seeds"])


def plot_recovery_curves(curves: pd.DataFrame, *, ax=None, title: str | None = None):
    """Per-round metric of each scorer (mean over seeds, with its 95% band when there are several), the kept rounds
    circled, and the references: clean labels (the ceiling), round 0 (the corrupted start) and round 0 with its
    decision threshold fit on validation (what recovering the F1 *without fixing a label* gives). Returns the Axes.

    Input: :func:`gbair_nb.report.curve_frame` of a report (``attrs`` hold the metric, references and title).
    """
    metric = curves.attrs.get("metric", "test_macro_f1")
    ax = new_axes(ax, figsize=(6.5, 4))
    bands = band_frame(curves)
    n_seeds = curves["seed"].nunique()
    stopped = curves.attrs.get("stopped_at_round_0", {})
    for i, (name, b) in enumerate(bands.groupby("scorer", sort=False)):
        color = f"C{i}"
        label = name if n_seeds == 1 else f"{name} (mean of {n_seeds} seeds, 95% band)"
        if name in stopped:
            label += f" (stopped at round 0: {stopped[name]})"
        ax.plot(b["round"], b["mean"], marker="o", color=color, linestyle="--" if name == "random" else "-",
                label=label)
        if n_seeds > 1:  # a t-interval over few seeds can pass 0 or 1; the band stops where the metric does
            lo, hi = (b["mean"] - b["ci95"]).to_numpy(), (b["mean"] + b["ci95"]).to_numpy()
            ax.fill_between(b["round"].to_numpy(), np.clip(lo, 0, None),
                            np.clip(hi, None, 1) if metric in METRIC_LABELS else hi,
                            color=color, alpha=0.18, linewidth=0)
        kept = curves[(curves["scorer"] == name) & curves["kept"]]
        ax.scatter(kept["round"], kept[metric], s=90 if n_seeds == 1 else 30, facecolors="none",
                   edgecolors=color if n_seeds > 1 else "k", zorder=5)
    styles = {"clean labels (reference)": ("green", ":"), "corrupted (round 0)": ("red", ":"),
              "round 0, threshold fit on validation (no label fixed)": ("0.45", "-.")}
    for label, value in curves.attrs.get("references", {}).items():
        if value is not None and np.isfinite(value):
            color, style = styles.get(label, ("0.3", ":"))
            ax.axhline(value, color=color, linestyle=style, linewidth=1.2, label=label)
    k = curves.attrs.get("k")
    ax.set_xlabel("round" + (f" (k = {k} relabeled per round)" if k else "") + ("; circles: the kept rounds"))
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(title if title is not None else curves.attrs.get("title", ""), fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return ax

"""How well scores find the wrong labels: distributions, inspection curves, crowd confidence."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..metrics import detection_metrics, percentile_ranks
from .base import new_axes

__all__ = ["score_frame", "plot_score_distributions", "binned_scores", "plot_binned_scores", "inspection_curve",
           "plot_inspection_curve", "plot_detector_matrix"]


def score_frame(scores: dict[str, np.ndarray], is_corrupted: Sequence[bool] | np.ndarray) -> pd.DataFrame:
    """Scores of several detectors on the same examples, as a long frame for distribution plots.

    ``scores``: scorer name → (n,) scores (higher = more suspect), e.g. ``compare_detectors(...).attrs["scores"]``;
    ``is_corrupted``: (n,) truth mask. Columns: ``scorer``, ``example`` (position), ``score`` (raw), ``rank`` (the
    score's percentile within its scorer, 0 = least and 1 = most suspect, so scorers on different scales share an
    axis), ``label`` ("wrong label" / "correct label"). The mean ``rank`` of the wrong labels is close to the AUROC.
    """
    y = np.asarray(is_corrupted, dtype=bool)
    frames = []
    for name, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        if s.shape != y.shape:
            raise ValueError(f"scores of {name!r} have shape {s.shape}; is_corrupted has {y.shape}")
        frames.append(pd.DataFrame({"scorer": name, "example": np.arange(len(s)), "score": s,
                                    "rank": percentile_ranks(s),
                                    "label": np.where(y, "wrong label", "correct label")}))
    cols = ["scorer", "example", "score", "rank", "label"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def plot_score_distributions(df: pd.DataFrame, *, ax=None, title: str | None = None):
    """One row per scorer: every example's percentile rank, wrong labels and correct labels side by side
    (``df`` from :func:`score_frame`). A good detector puts the wrong labels (orange) at the right."""
    import seaborn as sns

    ax = new_axes(ax, figsize=(6.5, 0.55 * max(1, df["scorer"].nunique()) + 1.2))
    sns.stripplot(data=df, x="rank", y="scorer", hue="label", hue_order=["correct label", "wrong label"],
                  palette={"correct label": "0.6", "wrong label": "C1"}, dodge=True, jitter=0.25, size=2.5,
                  alpha=0.7, ax=ax)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("suspicion rank within scorer (percentile; 1 = flagged first)")
    ax.set_ylabel("scorer")
    ax.legend(title="", fontsize="small", loc="lower left", markerscale=2)
    if title:
        ax.set_title(title)
    return ax


def binned_scores(values: Sequence[float] | np.ndarray, scores: dict[str, np.ndarray], *,
                  bins: Sequence[float]) -> pd.DataFrame:
    """Mean percentile rank of each scorer's scores within bins of ``values`` (e.g. the crowd's confidence).

    ``values``: (n,) numbers to bin (NaN rows are dropped); ``scores``: scorer → (n,) scores (higher = more
    suspect), ranked over the rows kept; ``bins``: bin edges for ``pd.cut`` (right-closed). Columns: ``scorer``,
    ``bin`` (label "(a, b]"), ``position`` (0, 1, … in bin order), ``n``, ``mean_rank``, ``sem`` (standard error).
    """
    values = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(values)
    cut = pd.cut(values[keep], bins=list(bins))
    labels = [f"({iv.left:g}, {iv.right:g}]" for iv in cut.categories]
    rows = []
    for name, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        if s.shape != values.shape:
            raise ValueError(f"scores of {name!r} have shape {s.shape}; values have {values.shape}")
        ranks = percentile_ranks(s[keep])
        for pos, (lab, cat) in enumerate(zip(labels, cut.categories)):
            r = ranks[np.asarray(cut == cat)]
            rows.append({"scorer": name, "bin": lab, "position": pos, "n": int(len(r)),
                         "mean_rank": float(r.mean()) if len(r) else float("nan"),
                         "sem": float(r.std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else float("nan")})
    return pd.DataFrame(rows, columns=["scorer", "bin", "position", "n", "mean_rank", "sem"])


def plot_binned_scores(df: pd.DataFrame, *, ax=None, xlabel: str = "crowd confidence in the label",
                       title: str | None = None):
    """Mean suspicion rank per bin, one line per scorer, ± one standard error (``df`` from :func:`binned_scores`).
    The dashed line at 0.5 is what a score unrelated to the binned value gives."""
    ax = new_axes(ax)
    for i, (name, g) in enumerate(df.groupby("scorer", sort=False)):
        g = g.sort_values("position")
        ax.errorbar(g["position"].to_numpy(), g["mean_rank"].to_numpy(), yerr=g["sem"].to_numpy(), marker="o",
                    capsize=3, color=f"C{i}", label=name)
    first = df.drop_duplicates("position").sort_values("position")
    ax.set_xticks(first["position"].to_numpy())
    ax.set_xticklabels([f"{b}\nn={n}" for b, n in zip(first["bin"], first["n"])], fontsize="small")
    ax.axhline(0.5, linestyle="--", color="0.5", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean suspicion rank (percentile)")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def inspection_curve(scores: Sequence[float] | np.ndarray, is_corrupted: Sequence[bool] | np.ndarray, *,
                     percents: Sequence[int] = tuple(range(1, 101))) -> pd.DataFrame:
    """Recall of the wrong labels when a person inspects the top ``f`` of the training set by ``scores`` (higher =
    more suspect), from :func:`gbair_nb.metrics.detection_metrics`. Columns ``fraction`` (0–1, starting at 0),
    ``recall``, ``random`` (expected recall of inspecting at random = fraction), ``perfect`` (every inspection
    finds a wrong label until none are left)."""
    y = np.asarray(is_corrupted, dtype=bool)
    m = detection_metrics(scores, y, inspect=[p / 100 for p in percents])
    fractions = np.array([0.0] + [p / 100 for p in percents])
    recall = np.array([0.0] + [m[f"recall@{p}%"] for p in percents])
    rate = y.mean() if len(y) else float("nan")
    return pd.DataFrame({"fraction": fractions, "recall": recall, "random": fractions,
                         "perfect": np.minimum(1.0, fractions / rate) if rate > 0 else np.nan})


def plot_inspection_curve(df: pd.DataFrame, *, ax=None, label: str = "self-influence", title: str | None = None):
    """Recall of the wrong labels vs fraction of the training set inspected, against inspecting at random (the
    diagonal) and a perfect detector (``df`` from :func:`inspection_curve`)."""
    ax = new_axes(ax, figsize=(4.5, 3.8))
    ax.plot(df["fraction"], df["recall"], color="C1", linewidth=2, label=label)
    ax.plot(df["fraction"], df["perfect"], color="0.3", linestyle=":", linewidth=1, label="perfect detector")
    ax.plot(df["fraction"], df["random"], color="0.5", linestyle="--", linewidth=1, label="random inspection")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("fraction of the training set inspected (highest score first)")
    ax.set_ylabel("recall of the wrong labels")
    ax.legend(fontsize="small", loc="lower right")
    if title:
        ax.set_title(title)
    return ax


def plot_detector_matrix(matrix: pd.DataFrame, *, ax=None, highlight: str | None = None, title: str | None = None):
    """Heatmap of :func:`gbair_nb.report.detector_matrix`: scorers down, cells (dataset/noise) across, colour = the
    mean metric over seeds, each square annotated ``mean ± half-width`` (one seed: the mean alone). ``highlight``
    outlines one scorer's row (the toolkit's default)."""
    import seaborn as sns

    table = matrix.pivot(index="scorer", columns="cell", values="mean")
    table = table.loc[table.mean(axis=1).sort_values(ascending=False).index]
    half = matrix.pivot(index="scorer", columns="cell", values="half").reindex_like(table)
    notes = table.map(lambda v: "" if np.isnan(v) else f"{v:.2f}")
    notes = notes.where(half.isna(), notes + "\n±" + half.map(lambda v: f"{v:.2f}"))
    ax = ax if ax is not None else new_axes(figsize=(1.6 * table.shape[1] + 2.5, 0.45 * table.shape[0] + 1.5))
    sns.heatmap(table, annot=notes, fmt="", cmap="viridis", vmin=0, vmax=1, ax=ax,
                cbar_kws={"label": matrix.attrs.get("metric", "metric")}, annot_kws={"fontsize": 7})
    if highlight is not None and highlight in table.index:
        from matplotlib.patches import Rectangle

        row = list(table.index).index(highlight)
        ax.add_patch(Rectangle((0, row), table.shape[1], 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xlabel("dataset / noise")
    ax.set_ylabel("")
    ax.set_title(title or f"round-1 detection: {matrix.attrs.get('metric', '')} (mean over seeds)")
    return ax

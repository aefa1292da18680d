"""Plots for the notebooks: compute a DataFrame first, draw it second.

Every ``plot_*`` function takes a tidy DataFrame (built by the matching helper here, or by you), draws on ``ax``
(a new figure only when ``ax`` is None) and returns the Axes. Nothing calls ``plt.show()``: the notebook shows the
figure, a test reads the numbers back.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["class_counts", "plot_class_counts", "plot_metric_curve", "plot_training", "training_frame",
           "score_frame", "plot_score_distributions", "binned_scores", "plot_binned_scores"]


_LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1"}


def _axes(ax, figsize=(5.5, 3.5)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


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

    ax = _axes(ax)
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
    ax = _axes(ax)
    df = df.sort_values(x)
    for col in y:
        ax.plot(df[x].to_numpy(), df[col].to_numpy(), marker="o", label=_LABELS.get(col, col))
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
    ax = _axes(ax)
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


def _percentile_ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of each score within its array scaled to [0, 1] (ties share their mean rank): 1 = most suspect."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) < 2:
        return np.ones(len(scores))
    return (rankdata(scores) - 1) / (len(scores) - 1)


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
                                    "rank": _percentile_ranks(s),
                                    "label": np.where(y, "wrong label", "correct label")}))
    cols = ["scorer", "example", "score", "rank", "label"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def plot_score_distributions(df: pd.DataFrame, *, ax=None, title: str | None = None):
    """One row per scorer: every example's percentile rank, wrong labels and correct labels side by side
    (``df`` from :func:`score_frame`). A good detector puts the wrong labels (orange) at the right."""
    import seaborn as sns

    ax = _axes(ax, figsize=(6.5, 0.55 * max(1, df["scorer"].nunique()) + 1.2))
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
        ranks = _percentile_ranks(s[keep])
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
    ax = _axes(ax)
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


# ------------------------------------------------------------------------------------------ TracIn (notebook 02)
__all__ += ["influence_heatmap_frame", "plot_influence_heatmap", "self_influence_frame", "plot_self_influence",
            "inspection_curve", "plot_inspection_curve"]


def influence_heatmap_frame(scores: np.ndarray, test_labels: Sequence[str],
                            train_labels: Sequence[str]) -> pd.DataFrame:
    """A (test × train) influence matrix as a DataFrame with readable row and column names, ready to draw.

    ``scores``: (n_test, n_train) TracIn, e.g. ``tracin(...)`` (> 0: the training example is a proponent of the test
    example); ``test_labels`` / ``train_labels``: one short name per row / column (e.g. ``"#12 spam→ham"``).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(test_labels), len(train_labels)):
        raise ValueError(f"scores have shape {scores.shape}; {len(test_labels)} test and {len(train_labels)} "
                         "train names were given")
    return pd.DataFrame(scores, index=pd.Index(list(test_labels), name="test example"),
                        columns=pd.Index(list(train_labels), name="training example"))


def plot_influence_heatmap(df: pd.DataFrame, *, ax=None, title: str | None = None):
    """Heatmap of TracIn for test (rows) × training (columns) examples, centred at 0: red = proponent, blue =
    opponent (``df`` from :func:`influence_heatmap_frame`, or any numeric frame with named rows/columns)."""
    import seaborn as sns

    ax = _axes(ax, figsize=(0.35 * df.shape[1] + 3, 0.35 * df.shape[0] + 1.8))
    bound = float(np.nanmax(np.abs(df.to_numpy()))) if df.size else 1.0
    sns.heatmap(df, ax=ax, cmap="RdBu_r", center=0.0, vmin=-bound, vmax=bound, linewidths=0.3,
                cbar_kws={"label": "TracIn (> 0 proponent, < 0 opponent)"})
    ax.set_xlabel(df.columns.name or "training example")
    ax.set_ylabel(df.index.name or "test example")
    if title:
        ax.set_title(title)
    return ax


def self_influence_frame(scores: Sequence[float] | np.ndarray,
                         is_corrupted: Sequence[bool] | np.ndarray) -> pd.DataFrame:
    """Self-influence of every training example beside the truth: columns ``example`` (position), ``self_influence``
    (higher = more likely mislabeled), ``label`` ("wrong label" / "correct label")."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_corrupted, dtype=bool)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and is_corrupted {y.shape} must have the same shape")
    return pd.DataFrame({"example": np.arange(len(s)), "self_influence": s,
                         "label": np.where(y, "wrong label", "correct label")})


def plot_self_influence(df: pd.DataFrame, *, ax=None, log: bool = True, title: str | None = None):
    """Distributions of self-influence for wrong and correct labels (``df`` from :func:`self_influence_frame`),
    each normalised to its own area so the small group stays visible; log x axis by default (the scores are skewed)."""
    import seaborn as sns

    ax = _axes(ax)
    positive = df[df["self_influence"] > 0] if log else df
    sns.histplot(data=positive, x="self_influence", hue="label", hue_order=["correct label", "wrong label"],
                 palette={"correct label": "0.55", "wrong label": "C1"}, stat="density", common_norm=False,
                 element="step", log_scale=log, bins=30, ax=ax)
    ax.set_xlabel("self-influence Σ_c η_c ‖∇ℓ(z)‖²" + (" (log scale)" if log else ""))
    ax.set_ylabel("density (each group sums to 1)")
    if title:
        ax.set_title(title)
    return ax


def inspection_curve(scores: Sequence[float] | np.ndarray, is_corrupted: Sequence[bool] | np.ndarray, *,
                     percents: Sequence[int] = tuple(range(1, 101))) -> pd.DataFrame:
    """Recall of the wrong labels when a person inspects the top ``f`` of the training set by ``scores`` (higher =
    more suspect), from :func:`gbair_nb.metrics.detection_metrics`. Columns ``fraction`` (0–1, starting at 0),
    ``recall``, ``random`` (expected recall of inspecting at random = fraction), ``perfect`` (every inspection
    finds a wrong label until none are left)."""
    from .metrics import detection_metrics

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
    ax = _axes(ax, figsize=(4.5, 3.8))
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

"""TracIn as pictures: the test × train heatmap, self-influence, one example's proponents and opponents."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from .base import need_columns, new_axes, plain_text, truncate

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["influence_heatmap_frame", "plot_influence_heatmap", "self_influence_frame", "plot_self_influence",
           "plot_influence_bars"]


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

    ax = new_axes(ax, figsize=(0.35 * df.shape[1] + 3, 0.35 * df.shape[0] + 1.8))
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

    ax = new_axes(ax)
    positive = df[df["self_influence"] > 0] if log else df
    sns.histplot(data=positive, x="self_influence", hue="label", hue_order=["correct label", "wrong label"],
                 palette={"correct label": "0.55", "wrong label": "C1"}, stat="density", common_norm=False,
                 element="step", log_scale=log, bins=30, ax=ax)
    ax.set_xlabel("self-influence Σ_c η_c ‖∇ℓ(z)‖²" + (" (log scale)" if log else ""))
    ax.set_ylabel("density (each group sums to 1)")
    if title:
        ax.set_title(title)
    return ax


def plot_influence_bars(df: pd.DataFrame, *, ax: "Axes | None" = None, class_names: Sequence[str] | None = None,
                        max_chars: int = 50, title: str | None = None) -> "Axes":
    """Horizontal bars of training examples' influence on one test example, highest on top; returns the Axes.

    Input: a frame like :func:`influence_bars_frame`'s (train_text, train_label, score, optional is_corrupted,
    optional checkpoint for stacked per-checkpoint bars). Proponents (> 0) are green, opponents red; corrupted
    training examples are hatched and their label marked with ✗. Never calls ``plt.show()``.
    """
    need_columns(df, ("train_text", "train_label", "score"), "df")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(9, 0.45 * max(len(df), 2) + 1.5))
    from matplotlib.patches import Patch

    def name(c: Any) -> str:
        return class_names[int(c)] if class_names is not None else str(c)

    stacked = "checkpoint" in df.columns and "total" in df.columns
    if stacked:
        examples = df.drop_duplicates("train_id").sort_values("total", ascending=False, kind="stable")
    else:
        examples = df.sort_values("score", ascending=False, kind="stable")
    corrupted = (examples["is_corrupted"].astype(bool).to_numpy() if "is_corrupted" in examples
                 else np.zeros(len(examples), dtype=bool))
    y = np.arange(len(examples))
    hatches = ["//" if c else "" for c in corrupted]
    handles = []
    if stacked:
        import matplotlib

        ckpts = sorted(df["checkpoint"].unique())
        cmap = matplotlib.colormaps["viridis"]
        pos_left, neg_left = np.zeros(len(examples)), np.zeros(len(examples))
        ids = examples["train_id"].to_numpy()
        for j, c in enumerate(ckpts):
            contrib = (df[df["checkpoint"] == c].set_index("train_id")["score"].reindex(ids).fillna(0.0).to_numpy())
            left = np.where(contrib >= 0, pos_left, neg_left)
            color = cmap(j / max(len(ckpts) - 1, 1))
            bars = ax.barh(y, contrib, left=left, color=color, edgecolor="black", linewidth=0.4)
            for b, h in zip(bars, hatches):
                b.set_hatch(h)
            pos_left += np.where(contrib >= 0, contrib, 0)
            neg_left += np.where(contrib < 0, contrib, 0)
            handles.append(Patch(facecolor=color, label=f"checkpoint {c}"))
        ax.scatter(examples["total"], y, color="black", marker="|", s=200, zorder=3, label="total")
    else:
        scores = examples["score"].to_numpy(dtype=float)
        colors = np.where(scores >= 0, "tab:green", "tab:red")
        bars = ax.barh(y, scores, color=colors, edgecolor=["black" if c else "none" for c in corrupted])
        for b, h in zip(bars, hatches):
            b.set_hatch(h)
        handles += [Patch(facecolor="tab:green", label="proponent (lowered its loss)"),
                    Patch(facecolor="tab:red", label="opponent (raised its loss)")]
    if corrupted.any():
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="✗ corrupted label"))
    ax.set_yticks(y)
    ax.set_yticklabels([plain_text(f"{'✗ ' if c else ''}[{name(l)}] {truncate(t, max_chars)}")
                        for c, l, t in zip(corrupted, examples["train_label"], examples["train_text"])])
    ax.invert_yaxis()  # first row (highest influence) on top
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("TracIn influence (> 0: proponent, < 0: opponent)")
    ax.set_ylabel("training example [given label] text")
    if handles:
        ax.legend(handles=handles, loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return ax

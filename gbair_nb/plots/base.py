"""What every plot here shares: an Axes to draw on, short labels, the tidy-frame checks.

Every ``plot_*`` function takes a tidy DataFrame (built by the matching helper, or by you), draws on ``ax`` (a new
figure only when ``ax`` is None) and returns the Axes. Nothing calls ``plt.show()``: the notebook shows the figure,
a test reads the numbers back.
"""
from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

__all__ = ["new_axes", "METRIC_LABELS", "truncate", "need_columns", "plain_text"]

# every metric named here is a fraction in [0, 1] (plot_recovery_curves clips its bands to that range)
METRIC_LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "test_macro_f1": "test macro-F1",
                 "test_accuracy": "test accuracy", "val_macro_f1": "validation macro-F1"}


def new_axes(ax=None, figsize=(5.5, 3.5)):
    """``ax`` itself, or the Axes of a new figure of ``figsize`` inches."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def plain_text(text: Any) -> str:
    """Text from data made safe for a matplotlib label: ``$`` would start mathtext (and can fail to parse)."""
    return str(text).replace("$", r"\$")


def truncate(text: Any, max_chars: int) -> str:
    """One line of at most ``max_chars`` characters (an ellipsis marks the cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def need_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """A clear error unless ``df`` has every column of ``columns``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} is missing columns {missing}; it needs {list(columns)}, got {list(df.columns)}")

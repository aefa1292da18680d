"""Which training examples explain a prediction: the long table the influence explorer and its bar charts read.

:func:`influence_table` computes it (TracIn's top proponents and opponents of each test example, per variant, with
the per-checkpoint contributions if asked); :func:`influence_bars_frame` picks one test example's rows for a bar
chart (:func:`gbair_nb.plots.plot_influence_bars`). The ``influence`` command, notebooks 02 and 03 and
:class:`gbair_nb.widgets.InfluenceExplorer` all use these two.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from .plots.base import need_columns

__all__ = ["TABLE_COLUMNS", "influence_table", "influence_bars_frame"]

TABLE_COLUMNS = ("test_id", "test_text", "test_label", "test_pred", "train_id", "train_text", "train_label",
                 "score", "variant", "checkpoint")


def influence_table(model, tokenizer, checkpoints: Sequence[Any], train, test, *, k: int = 5,
                    variants: Sequence[str] = ("dot",), per_checkpoint: bool = False,
                    is_corrupted: np.ndarray | None = None, verbose: bool = False, **options) -> pd.DataFrame:
    """The top ``k`` proponents and ``k`` opponents of every example of ``test`` in ``train``, for each TracIn
    variant, as one long table.

    Args:
        train, test: TextDatasets; ``train`` with the labels the model learned from (the noisy ones).
        variants: TracIn variants (``"dot"``, ``"cosine"``).
        per_checkpoint: also one row per checkpoint for each (test, train) pair of the top lists, with that
            checkpoint's contribution (the stacked bars of :func:`gbair_nb.plots.plot_influence_bars`).
        is_corrupted: (n_train,) truth mask, when the labels were corrupted on purpose: adds ``is_corrupted``.
        **options: passed to :func:`gbair_nb.influence.top_influences` (``max_length``, ``batch_size``,
            ``checkpoints_used``, ``project``, …).

    Returns columns :data:`TABLE_COLUMNS` + ``role`` ("proponent" | "opponent") + ``rank`` (1 = strongest)
    [+ ``is_corrupted``]. ``score`` > 0: training on the example lowered the test example's loss. ``checkpoint`` is
    ``"all"`` (the sum over checkpoints) or a checkpoint's position.
    """
    from .influence import top_influences, tracin

    frames = []
    for variant in variants:
        pro, opp = top_influences(model, tokenizer, checkpoints, train, test, k=k, variant=variant,
                                  verbose=verbose, **options)
        both = pd.concat([pro.assign(role="proponent"), opp.assign(role="opponent")], ignore_index=True)
        frames.append(both.assign(variant=variant, checkpoint="all"))
        if per_checkpoint and len(both):
            chosen = np.unique(both["train_id"].to_numpy())
            positions = np.flatnonzero(np.isin(train.ids, chosen))
            keep = {k_: v for k_, v in options.items() if k_ in ("max_length", "batch_size", "checkpoints_used",
                                                                 "method", "chunk_size")}
            m = tracin(model, tokenizer, checkpoints, train.subset(positions), test, variant=variant,
                       per_checkpoint=True, verbose=verbose, **keep)  # (checkpoints, n_test, chosen)
            col = {int(i): j for j, i in enumerate(train.ids[positions])}
            row = {int(i): j for j, i in enumerate(test.ids)}
            for c in range(m.shape[0]):
                part = both.copy()
                part["score"] = [float(m[c, row[int(t)], col[int(i)]])
                                 for t, i in zip(part["test_id"], part["train_id"])]
                frames.append(part.assign(variant=variant, checkpoint=c))
    table = pd.concat(frames, ignore_index=True)
    if is_corrupted is not None:
        mask = dict(zip(np.asarray(train.ids).tolist(), np.asarray(is_corrupted, dtype=bool).tolist()))
        table["is_corrupted"] = table["train_id"].map(mask)
    return table


def influence_bars_frame(table: pd.DataFrame, test_id: int, *, variant: str = "dot", k: int = 5,
                         per_checkpoint: bool = False) -> pd.DataFrame:
    """The top ``k`` proponents and ``k`` opponents of one test example, as the numbers behind the bar chart.

    Input: the long influence table (columns ``TABLE_COLUMNS``, optional ``is_corrupted``). The total influence of a
    training example is its ``checkpoint == 'all'`` row, or the sum of its per-checkpoint rows when there is none.
    Output: columns train_id, train_text, train_label, score (total; > 0 proponent: training on it lowered the test
    loss), role, [is_corrupted], sorted by score, highest first. With ``per_checkpoint=True`` one row per
    (train example, checkpoint) with ``score`` that checkpoint's contribution and ``total`` the sum.
    """
    need_columns(table, TABLE_COLUMNS, "table")
    rows = table[(table["test_id"] == test_id) & (table["variant"] == variant)]
    is_all = rows["checkpoint"].astype(str) == "all"
    keys = ["train_id", "train_text", "train_label"] + (["is_corrupted"] if "is_corrupted" in rows else [])
    per_ckpt = rows[~is_all]
    if is_all.any():
        total = rows[is_all].groupby(keys, as_index=False, sort=False)["score"].sum()
    else:
        total = per_ckpt.groupby(keys, as_index=False, sort=False)["score"].sum()
    total = total.sort_values("score", ascending=False, kind="stable")
    top = pd.concat([total[total["score"] > 0].head(k), total[total["score"] < 0].tail(k)])
    top = top.assign(role=np.where(top["score"] > 0, "proponent", "opponent")).reset_index(drop=True)
    if not per_checkpoint:
        return top
    if per_ckpt.empty:
        raise ValueError(f"table has no per-checkpoint rows for test example {test_id} ({variant}); "
                         f"only checkpoint='all' -- use per_checkpoint=False")
    long = per_ckpt[["train_id", "checkpoint", "score"]].merge(
        top.rename(columns={"score": "total"}), on="train_id", how="inner")
    long["checkpoint"] = long["checkpoint"].astype(int)
    order = {t: r for r, t in enumerate(top["train_id"])}
    long = long.sort_values(["train_id", "checkpoint"], key=lambda s: s.map(order) if s.name == "train_id" else s)
    return long.reset_index(drop=True)

"""Notebook views: a relabeling widget and an influence explorer (ipywidgets 8 core controls only).

Everything that comes from data (texts, class names, ids, scores' labels) is passed through ``html.escape`` before
it goes into an ``HTML`` widget, the one control whose value the browser renders as markup: a label such as
``<img src=x onerror=...>`` in a user's CSV is shown, never run. Button descriptions and tooltips, ``Label`` values
and ``Dropdown``/``ToggleButtons`` option labels are set as plain text by ipywidgets 8's front end, so they are
left as they are.

The views hold no decisions. :class:`RelabelWidget` shows the session's current flagged example and forwards clicks
to a :class:`~gbair_nb.relabel.RelabelSession` (which journals them and owns the cursor); everything it shows is read
back from the session. :class:`InfluenceExplorer` draws the numbers of a long influence table with
:func:`plot_influence_bars`, a pure ``plot_x(df, *, ax=None) -> Axes`` function that can be used without widgets.

Both work in JupyterLab, Notebook 7, VS Code and Colab: put the object last in a cell, or ``display(w)``.
"""

from __future__ import annotations

import html
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd
import ipywidgets as W

from gbair_nb.relabel import JournalError, RelabelSession

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["RelabelWidget", "InfluenceExplorer", "plot_influence_bars", "influence_bars_frame"]

FLAGGED_COLUMNS = ("id", "text", "label", "pred", "prob", "score")
INFLUENCED_COLUMNS = ("text", "label", "pred", "score")
TABLE_COLUMNS = ("test_id", "test_text", "test_label", "test_pred", "train_id", "train_text", "train_label",
                 "score", "variant", "checkpoint")


def _truncate(text: Any, max_chars: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def _need_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} is missing columns {missing}; it needs {list(columns)}, got {list(df.columns)}")


class _Displayable:
    """Shows ``self.view`` when the object is displayed (``display(w)`` or last in a cell)."""

    view: W.Widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.view)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.view._repr_mimebundle_(**kwargs)


# ---------------------------------------------------------------------------------------------- relabeling
class RelabelWidget(_Displayable):
    """Review flagged examples one at a time: relabel, keep, remove, undo; decisions go to the session's journal.

    Inputs: ``session`` (a RelabelSession created with ``flagged=`` ids in review order), ``flagged`` (DataFrame with
    columns id, text, label, pred, prob, score: label/pred class ids, prob the model's probability of pred, score
    from the scorer, higher = more suspicious) and ``influenced`` (optional: id -> DataFrame with columns text,
    label, pred, score, the validation mistakes this example influenced most, strongest first).
    Attributes: ``class_buttons[c]``, ``keep_button``, ``remove_button``, ``undo_button``, ``prev_button``,
    ``next_button``, ``progress`` (``.value`` like ``'12 / 50 reviewed'``), ``message`` and ``view`` (the VBox).
    """

    def __init__(self, session: RelabelSession, flagged: pd.DataFrame, *,
                 influenced: dict[int, pd.DataFrame] | None = None, max_influenced: int = 3) -> None:
        _need_columns(flagged, FLAGGED_COLUMNS, "flagged")
        if not session.flagged:
            raise ValueError("the session has no flagged list; create it with "
                             "RelabelSession(..., flagged=flagged['id']) so it can keep your place")
        if flagged["id"].duplicated().any():
            raise ValueError(f"flagged has duplicate ids: {flagged['id'][flagged['id'].duplicated()].tolist()[:5]}")
        rows = flagged.assign(id=flagged["id"].astype("int64")).set_index("id")
        missing = [i for i in session.flagged if i not in rows.index]
        if missing:
            raise ValueError(f"flagged has no row for ids {missing[:5]} of the session's flagged list; pass the "
                             f"same examples the session was created with")
        for i, frame in (influenced or {}).items():
            _need_columns(frame, INFLUENCED_COLUMNS, f"influenced[{i}]")
        self.session = session
        self._rows = rows
        self._influenced = dict(influenced or {})
        self._max_influenced = max_influenced
        names = session.class_names

        self.class_buttons = [W.Button(description=f"→ {n}", tooltip=f"relabel as {n}") for n in names]
        self.keep_button = W.Button(description="keep", tooltip="the current label is right", icon="check")
        self.remove_button = W.Button(description="remove", tooltip="drop this example from training",
                                      icon="trash")
        self.undo_button = W.Button(description="undo", tooltip="undo the last decision", icon="undo")
        self.prev_button = W.Button(description="prev", tooltip="previous flagged example", icon="arrow-left")
        self.next_button = W.Button(description="next", tooltip="next flagged example", icon="arrow-right")
        self.progress = W.Label()
        self.header = W.HTML()
        self.text = W.HTML()
        self.info = W.HTML()
        self.influence = W.HTML()
        self.message = W.HTML()

        for c, b in enumerate(self.class_buttons):
            b.on_click(lambda _b, c=c: self._act(lambda i: self.session.relabel(i, c), advance=True))
        self.keep_button.on_click(lambda _b: self._act(self.session.keep, advance=True))
        self.remove_button.on_click(lambda _b: self._act(self.session.remove, advance=True))
        self.undo_button.on_click(lambda _b: self._undo())
        self.prev_button.on_click(lambda _b: self._move(self.session.prev))
        self.next_button.on_click(lambda _b: self._move(self.session.next))

        self.view = W.VBox([
            self.header, self.text, self.info, self.influence,
            W.HBox(self.class_buttons + [self.keep_button, self.remove_button]),
            W.HBox([self.prev_button, self.next_button, self.undo_button, self.progress]),
            self.message,
        ])
        self.refresh()

    # -- forwarding clicks (errors are shown in the widget: exceptions in callbacks are easy to miss)
    def _act(self, decide: Callable[[int], Any], *, advance: bool) -> None:
        try:
            d = decide(self.session.current)
            self.message.value = f"#{d.id}: {html.escape(self._describe(d))}"
            if advance:
                self.session.next()
        except (ValueError, JournalError) as err:
            self.message.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"
        self.refresh(keep_message=True)

    def _undo(self) -> None:
        try:
            d = self.session.undo()
            if d.id in self.session.flagged:
                self.session.goto(self.session.flagged.index(d.id))
            self.message.value = f"undid #{d.id}: {html.escape(self._describe(d))}"
        except (ValueError, JournalError) as err:
            self.message.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"
        self.refresh(keep_message=True)

    def _move(self, step: Callable[[], Any]) -> None:
        try:
            step()
            self.message.value = ""
        except (ValueError, JournalError) as err:
            self.message.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"
        self.refresh(keep_message=True)

    def _name(self, c: Any) -> str:
        names = self.session.class_names
        return names[int(c)] if 0 <= int(c) < len(names) else str(c)

    def _describe(self, d: Any) -> str:
        if d.action == "relabel":
            return f"relabel {self._name(d.old_label)} → {self._name(d.new_label)} ({d.source}, round {d.round})"
        return f"{d.action} as {self._name(d.new_label)} ({d.source}, round {d.round})"

    # -- drawing: everything read back from the session
    def refresh(self, *, keep_message: bool = False) -> None:
        """Redraw from the session (call it if the session was changed outside the widget)."""
        s = self.session
        i, pos = s.current, s.position
        row = self._rows.loc[i]
        label = s.label_of(i)
        d = s.decision(i)
        self.header.value = (f"<b>Example {pos + 1} of {len(s.flagged)}</b> &nbsp;·&nbsp; id {html.escape(str(i))} "
                             f"&nbsp;·&nbsp; score {float(row['score']):.4g}")
        self.text.value = ("<div style='white-space:pre-wrap; border:1px solid #ccc; padding:6px; "
                           f"max-height:12em; overflow:auto'>{html.escape(str(row['text']))}</div>")
        given = int(row["label"])
        label_txt = f"<b>{html.escape(self._name(label))}</b>"
        if label != given:
            label_txt += f" (given: {html.escape(self._name(given))})"
        status = "not reviewed yet" if d is None or d.round != s.round else html.escape(self._describe(d))
        if d is not None and d.action == "remove":
            status = "<b>removed</b> — " + status
        self.info.value = (f"label: {label_txt} &nbsp;·&nbsp; model: {html.escape(self._name(row['pred']))} "
                           f"(p = {float(row['prob']):.2f}) &nbsp;·&nbsp; decision: {status}")
        self.influence.value = self._influence_html(i)
        for c, b in enumerate(self.class_buttons):
            b.button_style = "info" if c == label else ""
        self.keep_button.button_style = "success" if d is not None and d.action == "keep" else ""
        self.remove_button.button_style = "danger" if d is not None and d.action == "remove" else ""
        self.prev_button.disabled = pos == 0
        self.next_button.disabled = pos == len(s.flagged) - 1
        self.progress.value = s.progress()
        if not keep_message:
            self.message.value = ""

    def _influence_html(self, i: int) -> str:
        frame = self._influenced.get(i)
        if frame is None or len(frame) == 0:
            return ""
        rows = "".join(
            f"<tr><td>{html.escape(_truncate(r.text, 90))}</td><td>{html.escape(self._name(r.label))}</td>"
            f"<td>{html.escape(self._name(r.pred))}</td><td>{float(r.score):.3g}</td></tr>"
            for r in frame.head(self._max_influenced).itertuples())
        return ("<details open><summary>validation mistakes it influenced most</summary><table>"
                "<tr><th>text</th><th>label</th><th>pred</th><th>influence</th></tr>" + rows + "</table></details>")


# ---------------------------------------------------------------------------------------------- influence
def influence_bars_frame(table: pd.DataFrame, test_id: int, *, variant: str = "dot", k: int = 5,
                         per_checkpoint: bool = False) -> pd.DataFrame:
    """The top ``k`` proponents and ``k`` opponents of one test example, as the numbers behind the bar chart.

    Input: the long influence table (columns ``TABLE_COLUMNS``, optional ``is_corrupted``). The total influence of a
    training example is its ``checkpoint == 'all'`` row, or the sum of its per-checkpoint rows when there is none.
    Output: columns train_id, train_text, train_label, score (total; > 0 proponent: training on it lowered the test
    loss), role, [is_corrupted], sorted by score, highest first. With ``per_checkpoint=True`` one row per
    (train example, checkpoint) with ``score`` that checkpoint's contribution and ``total`` the sum.
    """
    _need_columns(table, TABLE_COLUMNS, "table")
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


def plot_influence_bars(df: pd.DataFrame, *, ax: "Axes | None" = None, class_names: Sequence[str] | None = None,
                        max_chars: int = 50, title: str | None = None) -> "Axes":
    """Horizontal bars of training examples' influence on one test example, highest on top; returns the Axes.

    Input: a frame like :func:`influence_bars_frame`'s (train_text, train_label, score, optional is_corrupted,
    optional checkpoint for stacked per-checkpoint bars). Proponents (> 0) are green, opponents red; corrupted
    training examples are hatched and their label marked with ✗. Never calls ``plt.show()``.
    """
    _need_columns(df, ("train_text", "train_label", "score"), "df")
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
    ax.set_yticklabels([f"{'✗ ' if c else ''}[{name(l)}] {_truncate(t, max_chars)}"
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


class InfluenceExplorer(_Displayable):
    """Pick a validation/test example and see its top proponents and opponents as a bar chart.

    Input: a long DataFrame with columns test_id, test_text, test_label, test_pred, train_id, train_text,
    train_label, score, variant ('dot' | 'cosine'), checkpoint ('all' or int), optional is_corrupted.
    Controls: ``scope`` (all examples / mistakes only), ``example`` (Dropdown of test ids), ``variant``
    (dot / cosine), ``mode`` (total / per checkpoint). ``frame`` holds the numbers behind the current picture.
    ``plot_fn(frame, ax=ax)`` draws it (default :func:`plot_influence_bars`); the figure is shown as PNG bytes in
    ``image`` (an ``ipywidgets.Image``), which JupyterLab, Notebook 7, VS Code and Colab all update in place.
    """

    def __init__(self, table: pd.DataFrame, *, plot_fn: Callable[..., Any] | None = None,
                 class_names: Sequence[str] | None = None, k: int = 5, max_chars: int = 60) -> None:
        _need_columns(table, TABLE_COLUMNS, "table")
        if len(table) == 0:
            raise ValueError("table is empty; compute influences first")
        self.table = table
        self.class_names = list(class_names) if class_names is not None else None
        self.k = k
        self.max_chars = max_chars
        self.plot_fn = plot_fn or partial(plot_influence_bars, class_names=self.class_names)
        self.frame: pd.DataFrame | None = None
        self.axes: Any = None
        self.renders = 0
        self._tests = table.drop_duplicates("test_id").set_index("test_id")[["test_text", "test_label", "test_pred"]]
        variants = [v for v in ("dot", "cosine") if v in set(table["variant"])]
        variants += sorted(set(map(str, table["variant"])) - set(variants))
        has_ckpts = (table["checkpoint"].astype(str) != "all").any()

        self.scope = W.ToggleButtons(options=[("all examples", "all"), ("mistakes only", "mistakes")], value="all")
        self.example = W.Dropdown(options=self._options("all"), description="example",
                                  layout=W.Layout(width="60%"))
        self.variant = W.ToggleButtons(options=variants, value=variants[0], tooltips=["raw gradient dot product",
                                       "cosine: gradients normalised, less dominated by large-gradient examples"][:len(variants)])
        self.mode = W.ToggleButtons(options=[("total", "total"), ("per checkpoint", "per_checkpoint")],
                                    value="total", disabled=not has_ckpts)
        self.summary = W.HTML()
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%", height="auto"))
        self._updating = False
        self.scope.observe(self._on_scope, names="value")
        for w in (self.example, self.variant, self.mode):
            w.observe(lambda _change: self.render(), names="value")
        self.view = W.VBox([W.HBox([self.scope, self.example]), W.HBox([self.variant, self.mode]),
                            self.summary, self.image])
        self.render()

    def _name(self, c: Any) -> str:
        return self.class_names[int(c)] if self.class_names is not None else str(c)

    def _options(self, scope: str) -> list[tuple[str, Any]]:
        tests = self._tests
        if scope == "mistakes":
            tests = tests[tests["test_label"] != tests["test_pred"]]
        return [(f"#{t} [{self._name(r.test_label)} → {self._name(r.test_pred)}]"
                 f"{' ✗' if r.test_label != r.test_pred else ''} {_truncate(r.test_text, self.max_chars)}", t)
                for t, r in zip(tests.index, tests.itertuples())]

    def _on_scope(self, change: dict) -> None:
        current = self.example.value
        self._updating = True
        try:
            options = self._options(change["new"])
            self.example.options = options
            values = [v for _, v in options]
            self.example.value = current if current in values else (values[0] if values else None)
        finally:
            self._updating = False
        self.render()

    def render(self) -> None:
        """Redraw the chart for the chosen example, variant and mode (called on every control change).

        The figure is a plain ``matplotlib.figure.Figure`` (no pyplot, no backend, nothing left open) saved as PNG
        into ``image``: the widget's value changes, so every front end redraws it without clearing an output.
        """
        if self._updating:
            return
        from matplotlib.figure import Figure

        from .files import figure_bytes

        t = self.example.value
        if t is None:
            self.frame, self.axes = None, None
            self.summary.value = "<i>no example matches (no mistakes?)</i>"
            self.image.value = b""
            self.renders += 1
            return
        r = self._tests.loc[t]
        mistake = r.test_label != r.test_pred
        self.summary.value = (f"<b>#{html.escape(str(t))}</b> label: {html.escape(self._name(r.test_label))} · "
                              f"prediction: {html.escape(self._name(r.test_pred))}"
                              f"{' <b>(mistake)</b>' if mistake else ''}"
                              f"<div style='white-space:pre-wrap'>{html.escape(str(r.test_text))}</div>")
        per_checkpoint = self.mode.value == "per_checkpoint" and not self.mode.disabled
        frame = influence_bars_frame(self.table, t, variant=self.variant.value, k=self.k,
                                     per_checkpoint=per_checkpoint)
        n_rows = frame["train_id"].nunique() if len(frame) else 1
        fig = Figure(figsize=(9, 0.45 * max(n_rows, 2) + 1.5), dpi=100)
        ax = fig.subplots()
        self.plot_fn(frame, ax=ax)
        ax.set_title(f"influence on #{t} ({self.variant.value}{', per checkpoint' if per_checkpoint else ''})")
        fig.tight_layout()
        self.image.value = figure_bytes(fig)
        self.frame, self.axes = frame, ax
        self.renders += 1

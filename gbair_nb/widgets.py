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
from typing import Any, Callable, Sequence

import pandas as pd
import ipywidgets as W

from .explain import TABLE_COLUMNS, influence_bars_frame
from .plots.base import need_columns, truncate
from .plots.influence import plot_influence_bars
from .relabel import JournalError, RelabelSession

__all__ = ["RelabelWidget", "InfluenceExplorer"]

FLAGGED_COLUMNS = ("id", "text", "label", "pred", "prob", "score")
INFLUENCED_COLUMNS = ("text", "label", "pred", "score")
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
        need_columns(flagged, FLAGGED_COLUMNS, "flagged")
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
            need_columns(frame, INFLUENCED_COLUMNS, f"influenced[{i}]")
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
            f"<tr><td>{html.escape(truncate(r.text, 90))}</td><td>{html.escape(self._name(r.label))}</td>"
            f"<td>{html.escape(self._name(r.pred))}</td><td>{float(r.score):.3g}</td></tr>"
            for r in frame.head(self._max_influenced).itertuples())
        return ("<details open><summary>validation mistakes it influenced most</summary><table>"
                "<tr><th>text</th><th>label</th><th>pred</th><th>influence</th></tr>" + rows + "</table></details>")


# ---------------------------------------------------------------------------------------------- influence
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
        need_columns(table, TABLE_COLUMNS, "table")
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
                 f"{' ✗' if r.test_label != r.test_pred else ''} {truncate(r.test_text, self.max_chars)}", t)
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

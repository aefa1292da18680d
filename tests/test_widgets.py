"""Headless tests for gbair_nb.widgets: drive the widgets with .click() and .value, read the session and the journal."""

from __future__ import annotations

import html
import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from gbair_nb.relabel import RelabelSession  # noqa: E402
from gbair_nb.explain import influence_bars_frame  # noqa: E402
from gbair_nb.plots import plot_influence_bars  # noqa: E402
from gbair_nb.widgets import InfluenceExplorer, RelabelWidget  # noqa: E402

CLASSES = ["ham", "spam"]
IDS = np.arange(20, dtype=np.int64) + 100
LABELS = (np.arange(20) % 2).astype(np.int64)
FLAGGED = [107, 103, 111, 100]


def flagged_frame() -> pd.DataFrame:
    return pd.DataFrame({"id": FLAGGED, "text": [f"text of {i} <b>" for i in FLAGGED],
                         "label": [int(LABELS[i - 100]) for i in FLAGGED], "pred": [0, 0, 0, 1],
                         "prob": [0.9, 0.8, 0.7, 0.6], "score": [4.0, 3.0, 2.0, 1.0]})


def make(tmp_path, **kwargs):
    session = RelabelSession(IDS, LABELS, CLASSES, tmp_path / "j.jsonl", flagged=FLAGGED, fingerprint="fp")
    return session, RelabelWidget(session, flagged_frame(), **kwargs)


def journal(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]


def test_buttons_forward_decisions_and_advance(tmp_path):
    s, w = make(tmp_path)
    assert [b.description for b in w.class_buttons] == ["→ ham", "→ spam"]
    assert w.progress.value == "0 / 4 reviewed" and s.current == 107
    assert "text of 107 &lt;b&gt;" in w.text.value  # escaped, shown
    w.class_buttons[0].click()  # 107: spam -> ham
    assert s.label_of(107) == 0 and s.current == 103 and w.progress.value == "1 / 4 reviewed"
    w.keep_button.click()  # 103 stays spam
    w.remove_button.click()  # 111 removed
    assert s.decision(103).action == "keep" and list(s.removed()) == [111]
    assert s.current == 100 and w.progress.value == "3 / 4 reviewed"
    decisions = [(e["id"], e["action"], e["new_label"]) for e in journal(tmp_path) if e["type"] == "decision"]
    assert decisions == [(107, "relabel", 0), (103, "keep", 1), (111, "remove", 1)]
    w.class_buttons[1].click()  # last one: stays on it
    assert s.current == 100 and s.label_of(100) == 1 and w.progress.value == "4 / 4 reviewed"
    assert w.next_button.disabled and "relabel ham → spam" in w.info.value


def test_prev_next_keep_decisions_and_show_them(tmp_path):
    s, w = make(tmp_path)
    w.class_buttons[0].click()
    w.next_button.click()
    assert s.current == 111
    w.prev_button.click()
    w.prev_button.click()
    assert s.current == 107 and w.prev_button.disabled
    assert s.label_of(107) == 0 and "relabel spam → ham" in w.info.value
    assert w.class_buttons[0].button_style == "info" and w.class_buttons[1].button_style == ""
    assert w.progress.value == "1 / 4 reviewed"
    assert s.plan()["id"].tolist() == [107]


def test_undo_button_reverts_and_returns_to_the_example(tmp_path):
    s, w = make(tmp_path)
    w.class_buttons[0].click()
    w.remove_button.click()
    assert s.current == 111
    w.undo_button.click()
    assert s.current == 103 and s.kept_mask().all() and "undid #103" in w.message.value
    w.undo_button.click()
    assert s.current == 107 and s.label_of(107) == 1 and w.progress.value == "0 / 4 reviewed"
    w.undo_button.click()  # nothing left: shown in the widget, not lost in a callback log
    assert "nothing to undo" in w.message.value
    assert [e["type"] for e in journal(tmp_path)].count("undo") == 2


def test_widget_holds_no_state_a_new_one_resumes(tmp_path):
    s, w = make(tmp_path)
    w.class_buttons[0].click()
    w.keep_button.click()
    # a restarted kernel: new session from the journal, new widget
    s2 = RelabelSession(IDS, LABELS, CLASSES, tmp_path / "j.jsonl", flagged=FLAGGED, fingerprint="fp")
    w2 = RelabelWidget(s2, flagged_frame())
    assert s2.current == 111 and w2.progress.value == "2 / 4 reviewed"
    np.testing.assert_array_equal(s2.labels(), s.labels())
    w2.prev_button.click()
    assert "keep as spam" in w2.info.value
    w.next_button.click()  # the old widget's session is stale: refused, and said so
    assert "changed by someone else" in w.message.value


def test_influenced_table_and_display_delegation(tmp_path):
    influenced = {107: pd.DataFrame({"text": ["val mistake one", "val mistake two"], "label": [1, 0],
                                     "pred": [0, 1], "score": [0.5, 0.25]})}
    s, w = make(tmp_path, influenced=influenced)
    assert "val mistake one" in w.influence.value and "val mistake two" in w.influence.value
    w.next_button.click()
    assert w.influence.value == ""
    bundle = w._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == w.view.model_id
    assert w.view.children[0] is w.header


def test_widget_input_errors(tmp_path):
    s = RelabelSession(IDS, LABELS, CLASSES, tmp_path / "a.jsonl", fingerprint="fp")
    with pytest.raises(ValueError, match="no flagged list"):
        RelabelWidget(s, flagged_frame())
    s = RelabelSession(IDS, LABELS, CLASSES, tmp_path / "b.jsonl", flagged=FLAGGED, fingerprint="fp")
    with pytest.raises(ValueError, match=r"missing columns \['prob'\]"):
        RelabelWidget(s, flagged_frame().drop(columns="prob"))
    with pytest.raises(ValueError, match=r"no row for ids \[100\]"):
        RelabelWidget(s, flagged_frame().iloc[:3])


# ---------------------------------------------------------------------------------------------- influence
def influence_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for t, (label, pred) in enumerate([(0, 0), (1, 0), (0, 1)]):
        for variant in ("dot", "cosine"):
            for tr in range(8):
                contrib = rng.normal(size=3)
                base = dict(test_id=t, test_text=f"test {t}", test_label=label, test_pred=pred, train_id=tr,
                            train_text=f"training text {tr}", train_label=tr % 2, variant=variant,
                            is_corrupted=tr % 3 == 0)
                rows += [dict(base, score=float(c), checkpoint=k) for k, c in enumerate(contrib)]
                rows.append(dict(base, score=float(contrib.sum()), checkpoint="all"))
    return pd.DataFrame(rows)


def test_influence_bars_frame_picks_top_proponents_and_opponents():
    table = influence_table()
    frame = influence_bars_frame(table, 1, variant="cosine", k=2)
    total = table[(table.test_id == 1) & (table.variant == "cosine") & (table.checkpoint == "all")]
    total = total.sort_values("score", ascending=False)
    expected = total.head(2)["train_id"].tolist() + total.tail(2)["train_id"].tolist()
    assert frame["train_id"].tolist() == expected
    assert frame["role"].tolist() == ["proponent", "proponent", "opponent", "opponent"]
    long = influence_bars_frame(table, 1, variant="cosine", k=2, per_checkpoint=True)
    assert long["train_id"].tolist() == [i for i in expected for _ in range(3)]
    sums = long.groupby("train_id", sort=False)["score"].sum()
    np.testing.assert_allclose(sums.to_numpy(), frame["score"].to_numpy())


def test_plot_influence_bars_widths_are_sorted_scores():
    df = pd.DataFrame({"train_id": [1, 2, 3, 4], "train_text": ["a", "b", "c", "d" * 200],
                       "train_label": [0, 1, 1, 0], "score": [0.5, -2.0, 3.0, -0.1],
                       "is_corrupted": [False, True, False, False]})
    ax = plot_influence_bars(df, class_names=CLASSES, max_chars=20)
    try:
        assert [p.get_width() for p in ax.patches] == [3.0, 0.5, -0.1, -2.0]
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels[0] == "[spam] c" and labels[3] == "✗ [spam] b"
        assert labels[2] == "[ham] " + "d" * 19 + "…"
        assert ax.patches[3].get_hatch() == "//" and ax.patches[0].get_hatch() in ("", None)
        assert ax.get_xlabel() and ax.get_ylabel()
    finally:
        plt.close(ax.figure)


PNG = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    assert data[:8] == PNG, "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_explorer_shows_the_figure_as_png_bytes_in_an_image_widget():
    import ipywidgets as W

    e = InfluenceExplorer(influence_table(), class_names=CLASSES, k=3)
    assert isinstance(e.image, W.Image) and e.image.format == "png" and e.image in e.view.children
    assert not any(isinstance(w, W.Output) for w in e.view.children)  # no clear_output + display to flicker
    first = e.image.value
    assert png_size(first) == (900, round(100 * (0.45 * 6 + 1.5)))  # 9 in wide at 100 dpi, 6 bars tall
    e.example.value = 2
    assert e.image.value != first and png_size(e.image.value)[0] == 900
    e.mode.value = "per_checkpoint"
    assert e.image.value[:8] == PNG


def test_explorer_rerenders_on_every_control():
    table = influence_table()
    before = len(plt.get_fignums())
    e = InfluenceExplorer(table, class_names=CLASSES, k=3)
    assert e.renders == 1 and e.example.value == 0 and len(e.example.options) == 3
    assert [p.get_width() for p in e.axes.patches] == pytest.approx(e.frame["score"].tolist())
    e.example.value = 2
    assert e.renders == 2 and "#2" in e.summary.value and "(mistake)" in e.summary.value
    expected = influence_bars_frame(table, 2, variant="dot", k=3)
    assert e.frame.equals(expected)
    e.variant.value = "cosine"
    assert e.renders == 3 and e.frame.equals(influence_bars_frame(table, 2, variant="cosine", k=3))
    e.mode.value = "per_checkpoint"
    assert e.renders == 4 and set(e.frame["checkpoint"]) == {0, 1, 2}
    assert len(e.axes.patches) == 3 * e.frame["train_id"].nunique()  # one stacked segment per checkpoint
    e.scope.value = "mistakes"  # example 2 is a mistake: kept, rendered once
    assert [v for _, v in e.example.options] == [1, 2] and e.example.value == 2 and e.renders == 5
    e.mode.value = "total"
    e.scope.value = "all"
    e.example.value = 0
    e.scope.value = "mistakes"  # example 0 is correct: the first mistake is chosen
    assert e.example.value == 1 and e.frame.equals(influence_bars_frame(table, 1, variant="cosine", k=3))
    assert len(plt.get_fignums()) == before  # every figure closed


def test_explorer_custom_plot_fn_and_no_checkpoints():
    table = influence_table()
    table = table[table.checkpoint == "all"].drop(columns="is_corrupted")
    calls = []
    e = InfluenceExplorer(table, plot_fn=lambda df, *, ax: calls.append(df) or ax, k=2)
    assert e.mode.disabled and len(calls) == 1 and calls[0]["train_id"].nunique() == 4
    e.example.value = 1
    assert len(calls) == 2 and e.frame is calls[-1]


# ---------------------------------------------------------------------------------------------- markup from data
EVIL = ["<img src=x onerror=alert(1)>", "<script>alert(2)</script>"]


def html_values(widget) -> list[str]:
    """The value of every HTML widget under ``widget``: the only controls whose value the browser renders as
    markup (Label, Button descriptions and tooltips, Dropdown and ToggleButtons labels are shown as plain text)."""
    import ipywidgets as W

    values = [widget.value] if isinstance(widget, (W.HTML, W.HTMLMath)) else []
    for child in getattr(widget, "children", ()):
        values += html_values(child)
    return values


def assert_no_markup_from_data(view) -> None:
    values = html_values(view)
    for value in values:
        assert "<img" not in value and "<script" not in value, value
    shown = "".join(values)
    assert "&lt;img src=x onerror=alert(1)&gt;" in shown and "&lt;script&gt;alert(2)&lt;/script&gt;" in shown


def test_relabel_widget_escapes_class_names_and_texts(tmp_path):
    session = RelabelSession(IDS, LABELS, EVIL, tmp_path / "j.jsonl", flagged=FLAGGED, fingerprint="fp")
    flagged = flagged_frame().assign(text=[f"{EVIL[0]} and {EVIL[1]}"] * len(FLAGGED))
    influenced = {i: pd.DataFrame({"text": EVIL, "label": [0, 1], "pred": [1, 0], "score": [0.5, 0.25]})
                  for i in FLAGGED}
    w = RelabelWidget(session, flagged, influenced=influenced)
    assert_no_markup_from_data(w.view)
    w.class_buttons[0].click()  # 107 relabeled: the message names both classes
    assert w.message.value == f"#107: relabel {html.escape(EVIL[1])} → {html.escape(EVIL[0])} (human, round 0)"
    for button in (w.keep_button, w.remove_button, w.undo_button, w.prev_button, w.class_buttons[1]):
        button.click()
        assert_no_markup_from_data(w.view)
    # plain-text controls keep the name as it is (escaping them would show "&lt;" to the reader)
    assert [b.description for b in w.class_buttons] == [f"→ {n}" for n in EVIL]


def test_influence_explorer_escapes_ids_class_names_and_texts():
    table = influence_table()
    table["test_id"] = table["test_id"].map({0: "a<script>alert(2)</script>", 1: EVIL[0], 2: "c"})
    table["test_text"] = f"{EVIL[0]} {EVIL[1]}"
    table["train_text"] = EVIL[1]
    e = InfluenceExplorer(table, class_names=EVIL, k=2)
    assert_no_markup_from_data(e.view)
    for t in ["a<script>alert(2)</script>", EVIL[0], "c"]:
        e.example.value = t
        assert_no_markup_from_data(e.view)
    assert e.example.options[1][0].startswith(f"#{EVIL[0]} [")  # a Dropdown label: plain text, not escaped

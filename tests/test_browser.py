"""End to end in a real browser: notebook 03 in JupyterLab, driven by headless Chromium (Playwright for Python).

Starts JupyterLab on 127.0.0.1 (random port, random token, temporary root holding a copy of the notebook, quick
mode), runs all cells, clicks relabel, undo and next in the rendered RelabelWidget, and checks the journal on disk and
the label state a RelabelSession replayed from it reports. Screenshots of the widget and of the influence explorer
go to the test's temporary directory, and to docs/screenshots/ when GBAIR_UPDATE_SCREENSHOTS=1.

Needs the system chromium (``apt-get install -y chromium``) and ``pip install playwright`` (no browser download);
skipped, with the reason printed, where either is missing. JupyterLab and the browser are stopped whatever happens.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from browser_helpers import LabPage, chromium_page, find_browser, jupyter_lab
from helpers import child_env

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "03_relabel_by_hand.ipynb"
SENTINEL = "All claims hold"



@pytest.fixture(scope="module")
def browser() -> str:
    path, why = find_browser()
    if path is None:
        print(f"\nSKIPPING the browser test: {why}")
        pytest.skip(why)
    return path


def notebook_parameters() -> dict:
    """The notebook's parameters cell, evaluated here (quick mode), so the test rebuilds the same data."""
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    ns: dict = {}
    exec(compile("from pathlib import Path\nfrom gbair_nb.config import quick_mode\n" + cell.source,
                 "parameters", "exec"), ns)
    return ns


def journal(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_until(check, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def test_relabel_widget_in_jupyterlab(browser, tmp_path, monkeypatch):
    monkeypatch.setenv("GBAIR_QUICK", "1")
    params = notebook_parameters()
    assert params["QUICK"] and params["ANNOTATE"]
    root = tmp_path / "lab-root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    env = child_env(GBAIR_QUICK="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                    MPLBACKEND="module://matplotlib_inline.backend_inline")  # conftest's Agg would hide the figures
    path = root / params["JOURNAL"]
    t0 = time.perf_counter()
    with jupyter_lab(root, env=env) as lab, chromium_page(browser) as page:
        lab_page = LabPage(page, lab)
        try:
            lab_page.open_notebook(NOTEBOOK.name)
            lab_page.run_all(sentinel=SENTINEL, timeout=900)  # MiniLM, a few trainings
            ran = time.perf_counter() - t0
            undo = page.locator("button[title='undo the last decision']")
            widget = lab_page.output_with(undo)
            explorer = lab_page.output_with(page.get_by_text("mistakes only", exact=True))
            progress = widget.get_by_text(re.compile(r"^\d+ / \d+ reviewed$"))
            widget.scroll_into_view_if_needed()
            widget.screenshot(path=shots / "relabel_widget.png")
            explorer.scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            explorer.screenshot(path=shots / "influence_explorer.png")

            def current() -> tuple[int, int]:  # (position 1-based, id) as the page shows them
                m = re.search(r"Example (\d+) of \d+.*?id (\d+)", widget.inner_text(), re.S)
                return int(m.group(1)), int(m.group(2))

            pos, x = current()
            assert pos == 1
            decided = [e for e in journal(path) if e["type"] == "decision"]
            flagged = [e["id"] for e in decided if e["round"] == 1]  # the annotator answered in review order
            assert len(flagged) == params["K"] and flagged[0] == x and {e["source"] for e in decided} == {"auto"}
            label_x = decided[0]["new_label"]
            names = json.loads(path.read_text().splitlines()[0])["class_names"]
            other = names[1 - label_x]

            # relabel: the widget journals a human decision and moves on
            widget.locator(f"button[title='relabel as {other}']").click()
            wait_until(lambda: current()[0] == 2, "the widget to move to example 2")
            last = [e for e in journal(path) if e["type"] == "decision"][-1]
            assert (last["id"], last["new_label"], last["action"], last["source"], last["round"]) == (
                x, 1 - label_x, "relabel", "human", 1)
            # undo: back to the example, the annotator's label restored
            undo.click()
            wait_until(lambda: current() == (1, x), "undo to return to the first example")
            assert "undid" in widget.inner_text()
            undos = [e for e in journal(path) if e["type"] == "undo"]
            assert len(undos) == 1 and undos[0]["id"] == x and undos[0]["new_label"] == label_x
            # next: the cursor moves and is journaled
            widget.locator("button[title='next flagged example']").click()
            wait_until(lambda: current() == (2, flagged[1]), "next to show the second example")
            wait_until(lambda: journal(path)[-1]["type"] == "cursor", "the cursor move in the journal")
            shown_progress = progress.inner_text()
        except Exception:
            page.screenshot(path=tmp_path / "failure.png", full_page=True)
            print(f"screenshot of the failure: {tmp_path / 'failure.png'}")
            raise
    total = time.perf_counter() - t0
    print(f"\nJupyterLab + chromium: notebook ran in {ran:.1f} s, whole test {total:.1f} s")

    # the label state a session replayed from the journal reports, in this process
    from gbair_nb.scenarios import make_scenario
    from gbair_nb.relabel import RelabelSession

    scenario = make_scenario(params["DATASET"], mode=params["MODE"], p=params["P"], n_train=params["N_TRAIN"],
                             n_val=params["N_VAL"], n_test=params["N_TEST"], seed=params["SEED"])
    session = RelabelSession.from_dataset(scenario.train, path, flagged=flagged, round=1)
    assert session.label_of(x) == label_x and session.decision(x).source == "auto"
    assert session.current == flagged[1]  # resumed where the browser left it
    assert session.progress() == shown_progress == f"{params['K']} / {params['K']} reviewed"
    truth = dict(zip(scenario.splits.train.ids.tolist(), scenario.splits.train.labels.tolist()))
    assert all(session.label_of(i) == truth[i] for i in flagged)  # the (perfect) simulated annotator's labels
    assert np.array_equal(session.kept_mask(), np.ones(len(scenario.train), dtype=bool))

    for shot in ("relabel_widget.png", "influence_explorer.png"):
        assert (shots / shot).stat().st_size > 5_000
    if os.environ.get("GBAIR_UPDATE_SCREENSHOTS") == "1":
        (REPO / "docs" / "screenshots").mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy(shot, REPO / "docs" / "screenshots" / shot.name)

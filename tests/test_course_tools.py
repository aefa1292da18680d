"""scripts/build_slides.py and scripts/render_notebooks.py: slide types are given on a copy, decks build without
executing anything, and a rendered copy carries its mode, date, machine and measured time (on a trivial notebook,
so no model runs)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import build_slides  # noqa: E402
import check_results  # noqa: E402
import render_notebooks  # noqa: E402

sys.path.pop(0)


@pytest.mark.parametrize("cell_type, source, expected", [
    ("markdown", "# 02 · TracIn", "slide"), ("markdown", "## 3. The real thing", "slide"),
    ("markdown", "### Exercise", "subslide"), ("markdown", "Some prose.", "-"),
    ("code", "import os\nfrom gbair_nb.config import (quick_mode,\n    setup)\nenv = setup()", "skip"),
    ("code", "assert QUICK == (N == 300), 'quick mode'\nprint('ok')", "skip"),
    ("code", "x = 1\ny = x + 1", "-"), ("code", "\n".join(f"x{i} = {i}" for i in range(20)), "subslide"),
    ("code", "%matplotlib inline", "-"), ("code", "", "skip"),
])
def test_auto_slide_type(cell_type, source, expected):
    assert build_slides.auto_slide_type(cell_type, source) == expected


def test_with_slides_tags_a_copy_and_keeps_existing_types():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title"),
                                         nbformat.v4.new_code_cell("import os"),
                                         nbformat.v4.new_markdown_cell("text")])
    nb.cells[2].metadata["slideshow"] = {"slide_type": "fragment"}
    tagged = build_slides.with_slides(nb)
    assert [c.metadata["slideshow"]["slide_type"] for c in tagged.cells] == ["slide", "skip", "fragment"]
    assert "slideshow" not in nb.cells[0].metadata  # the original is untouched


SESSION_NOTEBOOKS = sorted(str(p.relative_to(REPO)) for p in [*REPO.glob("notebooks/[0-9][0-9]_*.ipynb"),
                                                                 *REPO.glob("notebooks/labs/[0-9][0-9]_*.ipynb")])


def test_every_session_has_a_deck_to_build():
    assert len([n for n in SESSION_NOTEBOOKS if "/labs/" not in n]) == 10 and len(SESSION_NOTEBOOKS) == 17


@pytest.mark.parametrize("name", SESSION_NOTEBOOKS)
def test_slides_build_without_executing(tmp_path, name):
    path = REPO / name
    before = path.read_bytes()
    deck = build_slides.build_deck(path, tmp_path)
    html = deck.read_text()
    nb = nbformat.read(path, as_version=4)
    n_slides = sum(c.metadata["slideshow"]["slide_type"] == "slide" for c in build_slides.with_slides(nb).cells)
    assert deck.name == f"{path.stem}.slides.html" and n_slides >= 4
    assert html.count("<section") >= n_slides  # one <section> per slide (sub-slides nest more)
    assert "https://unpkg.com/reveal.js@4.0.2/dist/reveal.js" in html and "Reveal.initialize" in html
    assert path.read_bytes() == before  # the notebook file is never modified


def test_offline_decks_point_at_the_vendor_folder(tmp_path):
    deck = build_slides.build_deck(REPO / "notebooks" / "labs" / "02_tracin_lab.ipynb", tmp_path, offline=True)
    html = deck.read_text()
    assert '"vendor/reveal.js/dist/reveal.js"' in html and 'src="vendor/requirejs/require.js"' in html
    assert 'src="vendor/jquery/dist/jquery.min.js"' in html
    assert "unpkg.com" not in html and "import mermaid" not in html
    assert set(build_slides.VENDOR_FILES) == {"reveal.js@4.0.2", "requirejs@2.1.10", "jquery@2.1.4"}


def test_build_slides_cli_rejects_a_bad_path(tmp_path):
    done = subprocess.run([sys.executable, "scripts/build_slides.py", "--out", str(tmp_path), "nope.ipynb"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: not a notebook file: nope.ipynb")
    assert "Traceback" not in done.stderr and not list(tmp_path.iterdir())


def _trivial(path: Path, code: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A trivial notebook"),
                                         nbformat.v4.new_code_cell(code)])
    nbformat.write(nb, path)
    return path


def test_render_stamps_mode_date_machine_and_time(tmp_path):
    nb_path = _trivial(tmp_path / "00_trivial.ipynb", "import os\nprint(21 * 2, os.environ['GBAIR_QUICK'])")
    before = nb_path.read_bytes()
    out = tmp_path / "rendered"
    quick = render_notebooks.render(nb_path, out, quick=True, timeout=120)
    full = render_notebooks.render(nb_path, out, quick=False, timeout=120)
    html = (out / "00_trivial.html").read_text()
    assert "Rendered copy" in html and "full mode" in html and "42 0" in html  # the last run: full mode
    assert quick["status"] == full["status"] == "ok" and quick["seconds"] > 0
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings["00_trivial"]) == {"quick", "full"}  # a second mode never overwrites the first
    assert timings["00_trivial"]["quick"]["machine"]["cores"] >= 1
    assert nb_path.read_bytes() == before


def test_stamp_banner_says_how_it_ran():
    from datetime import datetime, timezone

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T")])
    when = datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)
    info = {"cores": 2, "platform": "Linux", "python": "3.11", "torch": "2.13.0", "device": "cpu"}
    stamped = render_notebooks.stamp(nb, mode="quick", seconds=1234.4, when=when, info=info)
    banner = stamped.cells[0]
    assert len(stamped.cells) == 2 and len(nb.cells) == 1
    for text in ("quick mode", "GBAIR_QUICK=1", "2026-01-02 03:04 UTC", "1,234 s", "2 cores", "torch 2.13.0"):
        assert text in banner.source, text
    assert banner.metadata["rendered"]["seconds"] == 1234.4
    assert "<blockquote>" in render_notebooks.to_html(stamped)


def test_render_records_a_failing_notebook_and_exits_1(tmp_path):
    nb_path = _trivial(tmp_path / "01_broken.ipynb", "raise ValueError('boom')")
    out = tmp_path / "rendered"
    assert render_notebooks.main([str(nb_path), "--quick", "--out", str(out), "--timeout", "120"]) == 1
    record = json.loads((out / "timings.json").read_text())["01_broken"]["quick"]
    assert record["status"].startswith("error: CellExecutionError") and "boom" in record["status"]
    assert "failed" in (out / "01_broken.html").read_text()


def test_render_set_overrides_a_parameter_after_the_cell_that_assigns_it(tmp_path):
    nb_path = _trivial(tmp_path / "03_params.ipynb", "ANNOTATE = False  # a person clicks\nK = 2")
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("print('annotate', ANNOTATE, K * 21)"))
    nbformat.write(nb, nb_path)
    before = nb_path.read_bytes()
    out = tmp_path / "rendered"
    assert render_notebooks.main([str(nb_path), "--quick", "--out", str(out), "--keep-executed",
                                  "--set", "ANNOTATE=True"]) == 0
    executed = nbformat.read(out / "03_params.quick.ipynb", as_version=4)
    sources = [c.source for c in executed.cells]
    assert sources[3].startswith("ANNOTATE = True") and sources[2].startswith("ANNOTATE = False")  # right after it
    assert "annotate True 42" in executed.cells[-1].outputs[0]["text"]
    assert "`ANNOTATE = True`" in sources[0] and "--set ANNOTATE=True" in sources[0]  # the banner says so
    assert json.loads((out / "timings.json").read_text())["03_params"]["quick"]["set"] == {"ANNOTATE": "True"}
    assert nb_path.read_bytes() == before
    # `==` is a comparison, not an assignment: a name only compared is "not assigned"
    assert render_notebooks.parse_setting("K = 8") == ("K", 8)
    with pytest.raises(ValueError, match="no code cell assigns NOPE"):
        render_notebooks.override(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("NOPE == 1")]),
                                  {"NOPE": 1})


def test_render_cli_rejects_bad_input_before_running(tmp_path):
    trivial = str(_trivial(tmp_path / "00_t.ipynb", "X = 1"))
    out = tmp_path / "out"
    for args, message in [(["missing.ipynb"], "error: not a notebook file: missing.ipynb"),
                          (["--timeout", "0", str(REPO / "notebooks" / "00_welcome.ipynb")], "error: --timeout"),
                          (["--set", "ANNOTATE", trivial], "error: --set 'ANNOTATE': write NAME=VALUE"),
                          (["--set", "X=open('f')", trivial], "error: --set \"X=open('f')\": VALUE must be"),
                          (["--set", "Y=1", trivial], "error: --set: no code cell assigns Y")]:
        done = subprocess.run([sys.executable, "scripts/render_notebooks.py", "--out", str(out), *args],
                              cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 2 and done.stderr.startswith(message), done.stderr
        assert "Traceback" not in done.stderr and not out.exists()


def test_planned_student_times_cover_the_counted_reading_exercises_and_run_time():
    """docs/course.md's planned student time of each session ≥ reading at 150 words/min + 10 min per checked lab
    exercise + 3 min per prediction + the quick run time: a notebook that grows makes its session's plan fail."""
    import re

    rows = {}
    for line in (REPO / "docs" / "course.md").read_text().splitlines():
        m = re.match(r"\| (\d) \| (\d\d) [^|]+\| [^|]+\| ([^|]+) \| (\d+) s \|$", line)
        if m:
            planned = m.group(3).strip()
            hours = re.match(r"(\d+)–\d+ h", planned)
            rows[m.group(2)] = (int(hours.group(1)) * 60 if hours else int(planned.split()[0]), int(m.group(4)))
    notebooks = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert set(rows) == {nb.name[:2] for nb in notebooks}, rows  # one row per session notebook
    for nb in notebooks:
        planned, run_s = rows[nb.name[:2]]
        a, lab = check_results.session_counts(nb)
        b = lab or {"words": 0, "exercises": 0, "predict": 0}
        need = ((a["words"] + b["words"]) / check_results.READING_WPM + 10 * b["exercises"] + 3 * b["predict"]
                + run_s / 60)
        assert planned >= need, f"{nb.stem}: planned {planned} min < {need:.0f} min of reading, exercises and run"

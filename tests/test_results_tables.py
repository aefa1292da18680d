"""scripts/check_results.py: the README's and docs' result tables equal what benchmarks/results/ holds, and a number
edited by hand (or a results file that changed) makes the check fail."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_results.py"


def check(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_readme_and_docs_tables_match_the_results():
    r = check()
    assert r.returncode == 0, r.stdout + r.stderr
    # every marked table is covered: as many "match"es as there are opening markers in each file
    for name, at_least in (("README.md", 2), ("docs/benchmarks.md", 2), ("docs/course.md", 1)):
        n = sum(line.startswith("<!-- results: ") for line in (ROOT / name).read_text().splitlines())
        assert n >= at_least and f"{Path(name).name}: {n} result tables match" in r.stdout, (name, n, r.stdout)


def _edit_one_digit(path: Path, line_start: str, old: str, new: str) -> None:
    lines = path.read_text().split("\n")
    i = next(i for i, line in enumerate(lines) if line.startswith(line_start))
    assert old in lines[i]
    lines[i] = lines[i].replace(old, new, 1)
    path.write_text("\n".join(lines))


@pytest.mark.parametrize("name,line_start,old,new", [
    ("README.md", "| **gbair** | 0.94", "0.94 ± 0.16", "0.95 ± 0.16"),  # SMS: recovered fraction
    ("docs/benchmarks.md", "| lora (q+v, r=8) | 74,498 | 13.9", "| 0.75 |", "| 0.76 |"),  # PET: recovered
    ("docs/benchmarks.md", "| gbair | 0.779", "74.667", "74.677"),  # tweets summary: wrong labels left
    ("docs/course.md", "| 08_exact_vs_approximate | ok", "| 6 min", "| 5 min"),  # a rendered notebook's run time
    ("docs/benchmarks.md", "| proj1024 | 21.3 |", "| 0.998 |", "| 0.989 |"),  # peers: LoRA ρ of projected G-BAIR
])
def test_a_number_edited_by_hand_fails_the_check_and_write_restores_it(tmp_path, name, line_start, old, new):
    original = (ROOT / name).read_text()
    copy = tmp_path / Path(name).name
    copy.write_text(original)
    _edit_one_digit(copy, line_start, old, new)
    r = check(copy)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"-{line_start}" in r.stdout and new in r.stdout  # the diff shows the edited line
    assert "1 of" in r.stdout and "differ" in r.stdout
    r = check("--write", copy)
    assert r.returncode == 0 and copy.read_text() == original
    assert check(copy).returncode == 0


def test_changed_evidence_fails_the_check(tmp_path):
    """The tie goes both ways: a results file that changes makes the unchanged table wrong."""
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    f = next((results / "recovery").glob("sms_spam__*seed1.json"))
    rep = json.loads(f.read_text())
    rep["scorers"]["gbair"]["recovered_fraction"]["test_macro_f1"] += 0.3
    f.write_text(json.dumps(rep))
    r = check(ROOT / "README.md", "--results", results)
    assert r.returncode == 1 and "recovery-table sms_spam" in r.stdout
    assert "recovery-table tweets_binary" not in r.stdout  # only the table built from that file


def test_bad_markers_are_one_line_errors(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("# nothing marked\n")
    r = check(md)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "no '<!-- results" in r.stderr
    md.write_text("<!-- results: recovery-tabel sms_spam -->\n| a |\n<!-- /results -->\n")
    r = check(md)
    assert r.returncode == 2 and "unknown results kind 'recovery-tabel'" in r.stderr
    md.write_text("<!-- results: recovery-table sms_spam -->\n| a |\n")
    r = check(md)
    assert r.returncode == 2 and "no closing" in r.stderr
    md.write_text("<!-- results: recovery-table no_such_scenario -->\n<!-- /results -->\n")
    r = check(md)
    assert r.returncode == 2 and "no results for scenario 'no_such_scenario'" in r.stderr
    md.write_text("<!-- results: peers peers/quick goal -->\n<!-- /results -->\n")
    r = check(md)
    assert r.returncode == 2 and "the only option after the folder is 'goals'" in r.stderr
    assert "Traceback" not in r.stderr
    md.write_text("<!-- results: patience -->\n<!-- /results -->\n")
    r = check(md)
    assert r.returncode == 2 and "name at least one saved loops file" in r.stderr and "Traceback" not in r.stderr


def test_replaying_each_saved_minilm_loop_with_its_own_patience_keeps_the_round_it_kept():
    """The patience table replays saved loops (MiniLM, full sizes) instead of training them again. With the patience
    a loop ran under, the replay must land on the round that loop kept, for every scorer and seed saved."""
    from gbair_nb.loop import replayed_round
    from gbair_nb.metrics import kept_round

    files = sorted((ROOT / "benchmarks" / "results" / "loops").glob("*.json"))
    assert files, "no saved loops in benchmarks/results/loops"
    n = 0
    for path in files:
        rep = json.loads(path.read_text())
        for seed_report in rep.get("per_seed") or [rep]:
            for name, res in seed_report["scorers"].items():
                assert replayed_round(res, res["options"]["patience"]) == kept_round(res), (path.name, name)
                n += 1
    assert n >= 18


def _bench_detectors():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_detectors
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return bench_detectors


def test_the_saved_loops_ran_on_the_matrix_cells_own_scenarios():
    """The auto-loops table reads auto's loops off the saved loops, with auto's pick taken from the matrix cell of
    the same seed. That needs the same noisy labels and the same trusted probe: in every saved loop, the probe's
    round-1 flags are the top k of the probe scores the matrix saved for that cell and seed."""
    import numpy as np

    make_cell = _bench_detectors().make_cell
    n = 0
    for path in sorted((ROOT / "benchmarks" / "results" / "loops").glob("*.json")):
        rep = json.loads(path.read_text())
        for r in rep.get("per_seed") or [rep]:
            mode, seed = rep["corruption"]["mode"], r["seed"]
            saved = ROOT / "benchmarks" / "results" / "detectors" / "scores" / f"{rep['dataset']}__{mode}__seed{seed}.npz"
            probe = r["scorers"]["probe"]
            with np.load(saved) as z:
                scores, truth = z["score:probe"], z["is_corrupted"]
            cell = make_cell(rep["dataset"], mode, seed)
            assert np.array_equal(cell.corruption.is_corrupted, truth), (path.name, seed)
            top = np.argsort(-scores, kind="stable")[:probe["options"]["k"]]
            assert sorted(cell.splits.train.ids[top].tolist()) == sorted(probe["rounds"][1]["flagged_ids"]), \
                (path.name, seed)
            n += 1
    assert n == 18


@pytest.mark.parametrize("mode", ["class_conditional", "uniform"])
def test_auto_s_saved_choice_is_what_auto_choice_computes_on_minilm(mode):
    """benchmarks/results/detectors/auto/choices.json against the code, on one SMS cell per regime at full size."""
    import numpy as np

    from gbair_nb.config import setup

    setup(quiet=True)
    bench = _bench_detectors()
    saved = json.loads((ROOT / "benchmarks" / "results" / "detectors" / "auto" / "choices.json").read_text())
    want = next(c for c in saved if (c["dataset"], c["mode"], c["seed"]) == ("sms_spam", mode, 0))
    got = bench.auto_choices(ROOT / "benchmarks" / "results" / "detectors", ["sms_spam"], [mode], [0], save=False)[0]
    assert got["scorer"] == want["scorer"] == ("gbair_balanced_unit" if mode == "class_conditional" else "probe")
    assert got["one_way_share"] == pytest.approx(want["one_way_share"], abs=1e-6)
    np.testing.assert_allclose(got["flip_rates"], want["flip_rates"], atol=1e-6)

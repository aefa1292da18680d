"""The benchmark and helper scripts cannot rot silently: every name they import from gbair_nb exists, and the
benchmark whose rows run in child processes (bench_peers) runs end to end on the tiny backbone.

(A benchmark is run by hand, for hours; an import that a refactoring broke would otherwise show up only then:
bench_peers' children once imported ``load_run`` from the module it had left, and every row failed.)"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "scripts").glob("*.py"))


def _gbair_imports(path: Path) -> list[tuple[str, str, int]]:
    """(module, name, line) for every ``from gbair_nb[.x] import name`` in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and (node.module == "gbair_nb" or node.module.startswith("gbair_nb.")):
            out += [(node.module, a.name, node.lineno) for a in node.names]
    return out


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_name_a_script_imports_from_the_package_exists(path):
    missing = []
    for module, name, line in _gbair_imports(path):
        mod = importlib.import_module(module)
        if not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")  # a submodule (from gbair_nb import plots)
            except ModuleNotFoundError:
                missing.append(f"{path.name}:{line}: {module} has no {name}")
    assert not missing, missing


def test_the_scripts_import_something_from_the_package():
    # the check above must have something to check
    assert sum(len(_gbair_imports(p)) for p in SCRIPTS) > 20


def test_bench_peers_runs_its_rows_in_child_processes(tmp_path):
    """Two rows at the tiny size: each child loads the run folder the parent trained and writes its JSON."""
    results = tmp_path / "peers"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_peers.py"), "--quick", "--backbone", "tiny",
           "--methods", "lora", "--rows", "exact_last,loss", "--results", str(results)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "FAILED" not in r.stdout
    for row in ("exact_last", "loss"):
        rec = json.loads((results / f"sms_spam__lora__{row}.json").read_text())
        assert rec["row"] == row and len(rec["scores"]["self"]) == rec["n_train"] > 0
    assert "| exact_last |" in r.stdout and "| loss |" in r.stdout  # the table is printed from them


def test_bench_detectors_keeps_each_cells_scores_and_judges_a_rank_mean_from_them(tmp_path):
    """One cell at the tiny size: the per-example scores are saved beside the metrics, a second run finds nothing
    left to do, ``combine`` agrees with a rank mean computed here from the saved scores, and ``budget`` with a
    loop over the top k."""
    import numpy as np
    from scipy.stats import rankdata

    from gbair_nb.metrics import detection_metrics

    spec = importlib.util.spec_from_file_location("bench_detectors", ROOT / "benchmarks" / "bench_detectors.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = tmp_path / "detectors"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_detectors.py"), "--quick", "--backbone", "tiny",
           "--datasets", "sms_spam", "--modes", "uniform", "--seeds", "0", "--scorers", "loss,probe",
           "--results", str(results)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    out = results / "sms_spam__uniform__seed0.json"
    saved = np.load(bench.scores_path(out))
    rec = json.loads(out.read_text())
    truth = saved["is_corrupted"]
    assert truth.sum() == rec["n_corrupted"] > 0
    for name in ("loss", "probe"):  # the saved scores are the ones the metrics were computed from
        m = detection_metrics(saved[f"score:{name}"], truth, k=rec["k"])
        assert m["auprc"] == pytest.approx(rec["scorers"][name]["auprc"])
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert again.returncode == 0 and "…" not in again.stdout  # resumed: no cell rescored

    rows = bench.combine(results, ["loss", "probe"]).set_index("scorer")
    ranks = [(rankdata(saved[f"score:{n}"]) - 1) / (len(truth) - 1) for n in ("loss", "probe")]
    oracle = detection_metrics((ranks[0] + ranks[1]) / 2, truth, k=rec["k"])
    assert rows.loc["loss+probe", "auprc"] == pytest.approx(oracle["auprc"])
    assert rows.loc["loss", "auprc"] == pytest.approx(rec["scorers"]["loss"]["auprc"])
    assert bench.combine(results, ["loss", "cleanlab"]).empty  # cleanlab's scores were never saved

    # --budget: the loss's batch precision at k = f · n̂, n̂ the probe's summed p_wrong (a loop over the top k here)
    grown = bench.budget(results, ["loss"], fractions=(0.5, 1.0)).set_index("fraction")
    n_hat = saved["score:probe"].sum()
    order = sorted(range(len(truth)), key=lambda i: -saved["score:loss"][i])  # sorted() is stable, as argsort's
    for f in (0.5, 1.0):
        k = max(1, int(round(f * n_hat)))
        assert grown.loc[f, "k"] == k and grown.loc[f, "n_hat"] == pytest.approx(n_hat)
        assert grown.loc[f, "precision"] == pytest.approx(sum(truth[i] for i in order[:k]) / k)
    assert "| sms_spam uniform | 0 |" in bench.budget_table(grown.reset_index())


@pytest.mark.parametrize("device, said", [("tpu", "use cpu, cuda or auto"), ("cuda", "torch sees no GPU here")])
def test_bench_influence_refuses_a_device_it_cannot_use_before_any_work(device, said):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_influence.py"), "--quick", "--device", device],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and said in r.stderr.splitlines()[-1], r.stderr[-500:]
    assert "minilm prompt tuning" not in r.stdout  # refused before the model was loaded

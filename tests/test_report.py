"""Tests for gbair_nb.report: the main job's report schema, the curve's data, and the `recover` CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gbair_nb.report import curve_frame, plot_recovery_curves, run_recovery  # noqa: E402
from test_recovery import TINY, toy_scenario  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
    return run_recovery(toy_scenario(), scorers=["loss", "random"], k=4, rounds=2, config=TINY, patience=5,
                        verbose=False)


def test_report_has_every_field(report):
    for key in ["dataset", "sizes", "corruption", "method", "seed", "k", "rounds", "clean", "corrupted", "scorers"]:
        assert key in report
    c = report["corruption"]
    assert c["mode"] == "uniform" and c["n_corrupted"] == 12 and c["rate"] == 0.3
    assert report["sizes"] == {"train": 40, "val": 20, "test": 20}
    for name in ["loss", "random"]:
        res = report["scorers"][name]
        assert [r["round"] for r in res["rounds"]] == [0, 1, 2]
        for r in res["rounds"][1:]:
            assert len(r["flagged_ids"]) == 4 and 0 <= r["flagged_precision"] <= 1
        assert set(res["recovered_fraction"]) == {"test_macro_f1", "test_accuracy"}
    json.dumps(report)  # JSON-ready


def test_round0_is_shared_between_scorers(report):
    r0 = [report["scorers"][s]["rounds"][0] for s in ["loss", "random"]]
    for m in ["val_accuracy", "test_macro_f1", "wrong_labels_remaining"]:
        assert r0[0][m] == r0[1][m]
    assert report["corrupted"]["test_macro_f1"] == r0[0]["test_macro_f1"]


def test_recovered_fraction_matches_rounds(report):
    res = report["scorers"]["loss"]
    final = next(r for r in res["rounds"] if r["round"] == res["final_round"])
    clean, corrupted = report["clean"]["test_macro_f1"], report["corrupted"]["test_macro_f1"]
    if abs(clean - corrupted) > 1e-9:
        expected = (final["test_macro_f1"] - corrupted) / (clean - corrupted)
        assert res["recovered_fraction"]["test_macro_f1"] == pytest.approx(expected)
    else:
        assert res["recovered_fraction"]["test_macro_f1"] is None


def test_curve_frame_and_plot_show_the_numbers(report):
    df = curve_frame(report)
    assert len(df) == 6 and set(df["scorer"]) == {"loss", "random"}
    ax = plot_recovery_curves(report)
    lines = {l.get_label(): l for l in ax.get_lines()}
    np.testing.assert_allclose(lines["loss"].get_ydata(), df[df.scorer == "loss"]["test_macro_f1"])
    assert lines["clean labels (reference)"].get_ydata()[0] == pytest.approx(report["clean"]["test_macro_f1"])
    assert lines["corrupted (round 0)"].get_ydata()[0] == pytest.approx(report["corrupted"]["test_macro_f1"])
    assert ax.get_xlabel().startswith("round") and "F1" in ax.get_ylabel()
    plt.close(ax.figure)


def _cli(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gbair_nb", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


def test_recover_cli_writes_report_and_curve(tmp_path):
    out = tmp_path / "rec"
    p = _cli("recover", "--quick", "--backbone", "tiny", "--n-train", "60", "--n-val", "30", "--n-test", "30",
             "--rounds", "1", "--k", "5", "--scorer", "loss,random", "--quiet", "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["dataset"] == "sms_spam" and rep["corruption"]["mode"] == "class_conditional"
    assert rep["sizes"]["train"] == 60 and set(rep["scorers"]) == {"loss", "random"}
    assert (out / "recovery_curve.png").stat().st_size > 10_000


def test_recover_cli_full_fine_tuning_with_gmt(tmp_path):
    # every parameter trainable, GMT masking the updates: G-BAIR's TracIn streams full-size gradients in small chunks
    out = tmp_path / "full"
    p = _cli("recover", "--quick", "--backbone", "tiny", "--n-train", "60", "--n-val", "30", "--n-test", "30",
             "--rounds", "1", "--k", "5", "--scorer", "gbair", "--method", "full", "--gmt", "0.5", "--quiet",
             "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["method"] == "full" and rep["config"]["gmt"] == {"keep_ratio": 0.5}
    r1 = rep["scorers"]["gbair"]["rounds"][1]
    assert len(set(r1["flagged_ids"])) == 5 and 0 <= r1["flagged_precision"] <= 1


@pytest.mark.parametrize("args, message", [
    (["--gmt", "1.5"], "must be in (0, 1]"),
    (["--method", "magic"], "invalid choice"),
    (["--scorer", "magic"], "unknown scorer"),
    (["--dataset", "nope.csv"], "file not found"),
    (["--dataset", "tweets", "--fix", "flip"], "binary"),
])
def test_recover_cli_bad_input_is_one_line(tmp_path, args, message):
    p = _cli("recover", "--quick", "--backbone", "tiny", *args, "--out", str(tmp_path / "x"), timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    err = [l for l in p.stderr.splitlines() if l.startswith("error")]
    assert len(err) == 1 and message in err[0]


def test_run_recovery_reuses_clean_and_round0():
    from gbair_nb.recovery import _evaluate
    from gbair_nb.train import train

    sc = toy_scenario()
    clean = {"val_accuracy": 0.5, "val_macro_f1": 0.5, "test_accuracy": 0.5, "test_macro_f1": 0.5,
             "n_val_mistakes": 10}
    round0 = train(sc.train, config=TINY, verbose=False)
    expected = _evaluate(round0, sc.splits.val, sc.splits.test)
    rep = run_recovery(sc, scorers=["random"], k=3, rounds=1, config=TINY, clean=clean, round0=round0,
                       verbose=False)
    assert rep["clean"] == clean  # not retrained
    r0 = rep["scorers"]["random"]["rounds"][0]
    for m in ["val_accuracy", "test_macro_f1", "n_val_mistakes"]:
        assert r0[m] == pytest.approx(expected[m])
    with pytest.raises(Exception, match="fingerprint"):  # a round-0 run of other data is refused
        run_recovery(toy_scenario(p=0.1), scorers=["random"], k=3, rounds=1, config=TINY, clean=clean,
                     round0=round0, verbose=False)

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
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from helpers import child_env

from gbair_nb.plots import plot_recovery_curves  # noqa: E402
from gbair_nb.report import curve_frame, run_recovery  # noqa: E402
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
    ax = plot_recovery_curves(curve_frame(report))
    lines = {l.get_label(): l for l in ax.get_lines()}
    np.testing.assert_allclose(lines["loss"].get_ydata(), df[df.scorer == "loss"]["test_macro_f1"])
    assert lines["clean labels (reference)"].get_ydata()[0] == pytest.approx(report["clean"]["test_macro_f1"])
    assert lines["corrupted (round 0)"].get_ydata()[0] == pytest.approx(report["corrupted"]["test_macro_f1"])
    assert ax.get_xlabel().startswith("round") and "F1" in ax.get_ylabel()
    plt.close(ax.figure)


def _cli(*args, timeout=300):
    env = child_env(OMP_NUM_THREADS="1")
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
    # the main job's stopping rule is the one every benchmarked loop ran with, not the library's bare default
    for res in rep["scorers"].values():
        assert res["options"]["patience"] == 2 and res["options"]["min_precision"] == 0.5


def test_recover_cli_default_scorer_is_auto_and_says_what_it_chose(tmp_path):
    """The wiring: the CLI's default scorers, the choice in the report and on stdout. (Which scorer auto picks and
    why is tested in tests/test_scorers.py; on MiniLM, in tests/test_results_tables.py.)"""
    out = tmp_path / "auto"
    p = _cli("recover", "--quick", "--backbone", "tiny", "--n-train", "60", "--n-val", "30", "--n-test", "30",
             "--rounds", "1", "--k", "5", "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["scorers"]) == {"auto", "random"}
    chosen = rep["scorers"]["auto"]["chosen"]
    assert chosen["scorer"] in {"gbair_balanced_unit", "probe"} and 0.5 <= chosen["one_way_share"] <= 1.0
    assert np.shape(chosen["flip_rates"]) == (2, 2) and "chosen" not in rep["scorers"]["random"]
    assert f"auto chose {chosen['scorer']}: {chosen['reason']}" in p.stdout


def test_recover_cli_full_fine_tuning_with_gmt(tmp_path):
    # every parameter trainable, GMT masking the updates: G-BAIR's TracIn streams full-size gradients in small chunks
    out = tmp_path / "full"
    p = _cli("recover", "--quick", "--backbone", "tiny", "--n-train", "60", "--n-val", "30", "--n-test", "30",
             "--rounds", "1", "--k", "5", "--scorer", "gbair", "--method", "full", "--gmt", "0.5", "--quiet",
             "--patience", "1", "--min-precision", "none", "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["method"] == "full" and rep["config"]["gmt"] == {"keep_ratio": 0.5}
    opts = rep["scorers"]["gbair"]["options"]
    assert opts["patience"] == 1 and opts["min_precision"] is None  # 'none' turns the gate off
    r1 = rep["scorers"]["gbair"]["rounds"][1]
    assert len(set(r1["flagged_ids"])) == 5 and 0 <= r1["flagged_precision"] <= 1


@pytest.mark.parametrize("args, message", [
    (["--gmt", "1.5"], "must be in (0, 1]"),
    (["--method", "magic"], "invalid choice"),
    (["--scorer", "magic"], "unknown scorer"),
    (["--dataset", "nope.csv"], "file not found"),
    (["--dataset", "tweets", "--fix", "flip"], "binary"),
    (["--scorer", ","], "--scorer"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**64)], "--seed"),
    (["--min-precision", "1.5"], "must be in [0, 1]"),
    (["--min-precision", "half"], "not a number"),
    (["--patience", "0"], "--patience"),
])
def test_recover_cli_bad_input_is_one_line(tmp_path, args, message):
    p = _cli("recover", "--quick", "--backbone", "tiny", *args, "--out", str(tmp_path / "x"), timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    err = [l for l in p.stderr.splitlines() if l.startswith("error")]
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "x").exists()


def test_run_recovery_reuses_clean_and_round0():
    from gbair_nb.loop import round_metrics
    from gbair_nb.train import train

    sc = toy_scenario()
    clean = {"val_accuracy": 0.5, "val_macro_f1": 0.5, "test_accuracy": 0.5, "test_macro_f1": 0.5,
             "n_val_mistakes": 10}
    round0 = train(sc.train, config=TINY, verbose=False)
    expected = round_metrics(round0, sc.splits.val, sc.splits.test)
    rep = run_recovery(sc, scorers=["random"], k=3, rounds=1, config=TINY, clean=clean, round0=round0,
                       verbose=False)
    assert rep["clean"] == clean  # not retrained
    r0 = rep["scorers"]["random"]["rounds"][0]
    for m in ["val_accuracy", "test_macro_f1", "n_val_mistakes"]:
        assert r0[m] == pytest.approx(expected[m])
    with pytest.raises(Exception, match="fingerprint"):  # a round-0 run of other data is refused
        run_recovery(toy_scenario(p=0.1), scorers=["random"], k=3, rounds=1, config=TINY, clean=clean,
                     round0=round0, verbose=False)


# ------------------------------------------------------------------------------- fail early; your own data
class Stop(Exception):
    """Raised by a stand-in for run_recovery: the scenario was built, nothing was trained."""


def _no_training(monkeypatch):
    """Any training from here on fails the test."""
    from gbair_nb import cache, recovery

    monkeypatch.setattr(recovery, "train_clean_reference", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr(cache, "cached_train", lambda *a, **k: pytest.fail("trained"))


@pytest.fixture
def scenario_of(monkeypatch, capsys):
    """Run `recover` in-process up to the first training; return (scenario, kwargs, stderr)."""
    from gbair_nb import cli, report as report_module

    _no_training(monkeypatch)

    def fake(scenario, **kwargs):
        raise Stop(scenario, kwargs)

    monkeypatch.setattr(report_module, "run_recovery", fake)

    def go(*args):  # the default backbone (MiniLM) is never loaded: nothing trains
        capsys.readouterr()
        with pytest.raises(Stop) as info:
            cli.main(["recover", *map(str, args)])
        return (*info.value.args, capsys.readouterr().err)

    return go


def _user_csv(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    words = [["awful", "terrible", "nasty"], ["great", "lovely", "superb"]]
    texts = [" ".join(rng.choice(words[c], 3)) + f" {i}" for i, c in enumerate(labels)]
    import pandas as pd

    pd.DataFrame({"text": texts, "label": np.where(labels == 1, "pos", "neg")}).to_csv(path, index=False)
    return path


def test_quick_mode_shrinks_a_file_as_it_shrinks_the_built_ins(scenario_of, tmp_path):
    from gbair_nb.scenarios import QUICK_SCENARIO

    f = _user_csv(tmp_path / "big.csv", 9173)
    sc, _, err = scenario_of("--dataset", f, "--quick", "--out", tmp_path / "r")
    builtin, _, _ = scenario_of("--quick", "--out", tmp_path / "r")
    want = {"train": QUICK_SCENARIO["n_train"], "val": QUICK_SCENARIO["n_val"], "test": QUICK_SCENARIO["n_test"]}
    assert sc.splits.sizes() == builtin.splits.sizes() == want
    assert "--n-train" in err and "estimate" in err


def test_full_mode_caps_a_big_file_at_the_default_scenario(scenario_of, tmp_path, monkeypatch):
    from gbair_nb.scenarios import SCENARIOS

    monkeypatch.setenv("GBAIR_QUICK", "0")

    f = _user_csv(tmp_path / "big.csv", 9173)
    sc, _, err = scenario_of("--dataset", f, "--out", tmp_path / "r")
    default = SCENARIOS["sms_spam"]
    assert sc.splits.sizes() == {"train": default["n_train"], "val": default["n_val"], "test": default["n_test"]}
    # stratified: the training split keeps the file's class balance
    share = np.bincount(sc.splits.train.labels) / len(sc.splits.train)
    import pandas as pd

    whole = pd.read_csv(f)["label"].value_counts(normalize=True).sort_index().to_numpy()
    assert np.allclose(share, whole, atol=0.01)
    assert "--n-train" in err and "estimate" in err
    small = _user_csv(tmp_path / "small.csv", 200)
    sc, _, _ = scenario_of("--dataset", small, "--quick", "--out", tmp_path / "r")
    assert sc.splits.sizes() == {"train": 120, "val": 40, "test": 40}  # a small file: 60/20/20 of it


def test_confusable_corruption_uses_the_tfidf_confuser(scenario_of, tmp_path):
    from gbair_nb.data import confuser_probs, corrupt

    sc, _, _ = scenario_of("--mode", "confusable", "--corrupt", "0.2", "--dataset", "tweets", "--fix", "predict",
                           "--quick", "--out", tmp_path / "r")
    train = sc.splits.train
    assert sc.corruption.mode == "confusable" and sc.corruption.n_corrupted == round(0.2 * len(train))
    probs = confuser_probs(train.texts, train.labels, 0)
    want = corrupt(train.labels, p=0.2, mode="confusable", seed=0, probs=probs)
    assert np.array_equal(sc.corruption.noisy_labels, want.noisy_labels)


def test_k_larger_than_the_training_set_is_refused_before_training(tmp_path, monkeypatch, capsys):
    from gbair_nb import cli

    _no_training(monkeypatch)
    code = cli.main(["recover", "--backbone", "tiny", "--quick", "--n-train", "60", "--n-val", "30", "--n-test",
                     "30", "--k", "61", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --k 61") and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_out_that_cannot_be_written_is_refused_before_training(tmp_path, monkeypatch, capsys):
    from gbair_nb import cli

    _no_training(monkeypatch)
    (tmp_path / "file").write_text("in the way")
    code = cli.main(["recover", "--backbone", "tiny", "--quick", "--out", str(tmp_path / "file" / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --out") and err.count("\n") == 1, err


def test_run_recovery_checks_scorers_and_k_before_training(monkeypatch):

    _no_training(monkeypatch)
    for kwargs, message in [({"scorers": []}, "no scorer"), ({"scorers": ["magic"]}, "unknown scorer"),
                            ({"k": 41}, "k must be")]:
        with pytest.raises(ValueError, match=message):
            run_recovery(toy_scenario(), config=TINY, verbose=False, **kwargs)


def test_progress_goes_to_logging_not_print(caplog, capsys):
    import logging

    with caplog.at_level(logging.INFO, logger="gbair_nb"):
        run_recovery(toy_scenario(), scorers=["random"], k=3, rounds=1, config=TINY, verbose=True)
    assert any("recovery with scorer random" in r.getMessage() for r in caplog.records)
    assert "recovery with scorer" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ several seeds
@pytest.fixture(scope="module")
def seeds_report():
    from gbair_nb.report import run_recovery_seeds

    saved = []
    rep = run_recovery_seeds(lambda s: toy_scenario(seed=s), [0, 1, 2], scorers=["gbair", "random"], k=4, rounds=2,
                             config=TINY, verbose=False, on_seed=saved.append)
    return rep, saved


def test_seeds_summary_is_the_t_interval_of_the_per_seed_values(seeds_report):
    from scipy import stats

    rep, saved = seeds_report
    assert rep["seeds"] == [0, 1, 2] and [r["seed"] for r in rep["per_seed"]] == [0, 1, 2]
    assert [r["seed"] for r in saved] == [0, 1, 2]              # each seed handed over as soon as it was done
    for name in ("gbair", "random"):
        res = [r["scorers"][name] for r in rep["per_seed"]]
        kept = [next(x for x in q["rounds"] if x["round"] == q["final_round"])["test_macro_f1"] for q in res]
        v = np.array(kept)
        half = stats.t.ppf(0.975, 2) * v.std(ddof=1) / np.sqrt(3)
        got = rep["summary"]["scorers"][name]["kept_test_macro_f1"]
        assert got["n"] == 3 and got["mean"] == pytest.approx(v.mean()) and got["ci95"] == pytest.approx(half)
        rf = [q["recovered_fraction"]["test_macro_f1"] for q in res]
        assert rep["summary"]["scorers"][name]["recovered_fraction"]["test_macro_f1"]["mean"] == pytest.approx(
            np.mean(rf))
    clean = [r["clean"]["test_macro_f1"] for r in rep["per_seed"]]
    assert rep["summary"]["clean"]["test_macro_f1"]["mean"] == pytest.approx(np.mean(clean))


def test_curves_over_seeds_carry_stopped_loops_and_draw_bands(seeds_report):
    from gbair_nb.plots.recovery import band_frame

    rep, _ = seeds_report
    curves = curve_frame(rep)
    depth = max(len(q["rounds"]) for r in rep["per_seed"] for q in r["scorers"].values())
    assert len(curves) == 3 * 2 * depth                       # every seed has a value at every round
    for r in rep["per_seed"]:                                   # a stopped loop carries its kept round's value
        for name, q in r["scorers"].items():
            kept = next(x for x in q["rounds"] if x["round"] == q["final_round"])["test_macro_f1"]
            c = curves.query("seed == @r['seed'] and scorer == @name and carried")
            assert (c["test_macro_f1"] == kept).all()
    bands = band_frame(curves)
    g = curves.query("scorer == 'gbair' and round == 1")["test_macro_f1"].to_numpy()
    b = bands.query("scorer == 'gbair' and round == 1").iloc[0]
    assert b["n_seeds"] == 3 and b["mean"] == pytest.approx(g.mean())
    assert "3 seeds" in curves.attrs["title"]
    ax = plot_recovery_curves(curves)
    assert len(ax.collections) >= 2                            # a band per scorer
    plt.close(ax.figure)


def test_a_loop_the_gate_stopped_at_round_0_says_why_in_the_legend(report):
    # the main job's precision gate can refuse a baseline's first batch: its curve is then one point under the
    # others, so the legend carries the reason instead of leaving the reader to find the missing line
    gated = json.loads(json.dumps(report))
    res = gated["scorers"]["random"]
    res.update(rounds=res["rounds"][:1], final_round=0, stopped_because="estimated precision 0.17 < 0.5")
    df = curve_frame(gated)
    assert df.attrs["stopped_at_round_0"] == {"random": "estimated precision 0.17 < 0.5"}
    ax = plot_recovery_curves(df)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "random (stopped at round 0: estimated precision 0.17 < 0.5)" in labels and "loss" in labels
    plt.close(ax.figure)
    assert curve_frame(report).attrs["stopped_at_round_0"] == {}  # both loops of the fixture applied batches


def test_a_band_over_two_seeds_stops_at_the_metric_s_bounds():
    # two seeds: Student's t with 1 degree of freedom (12.7) makes the 95% half-width 9x the spread, so 0.95 and 0.99
    # give 0.97 ± 0.25; macro-F1 cannot pass 1 (or fall below 0), and the drawn band must not either
    rows = [{"seed": s, "scorer": "gbair", "round": r, "test_macro_f1": v, "kept": r == 1, "carried": False}
            for s, vals in ((0, (0.02, 0.95)), (1, (0.06, 0.99))) for r, v in enumerate(vals)]
    curves = pd.DataFrame(rows)
    curves.attrs.update(metric="test_macro_f1", references={}, k=4, title="two seeds")
    from gbair_nb.plots.recovery import band_frame

    b = band_frame(curves).set_index("round")
    assert b.loc[1, "mean"] + b.loc[1, "ci95"] > 1 and b.loc[0, "mean"] - b.loc[0, "ci95"] < 0  # the raw interval
    ax = plot_recovery_curves(curves)
    y = np.concatenate([p.vertices[:, 1] for p in ax.collections[0].get_paths()])
    assert y.max() == pytest.approx(1.0) and y.min() == pytest.approx(0.0)   # clipped at both ends, not dropped
    plt.close(ax.figure)


def test_recover_cli_seeds_saves_each_seed_as_it_finishes(tmp_path):
    out = tmp_path / "seeds"
    p = _cli("recover", "--quick", "--backbone", "tiny", "--n-train", "40", "--n-val", "20", "--n-test", "20",
             "--rounds", "1", "--k", "4", "--scorer", "loss,random", "--seeds", "0,1", "--quiet", "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["seeds"] == [0, 1] and len(rep["per_seed"]) == 2 and "summary" in rep
    for r in rep["per_seed"]:
        assert json.loads((out / "seeds" / f"seed{r['seed']}.json").read_text()) == r
    assert (out / "recovery_curve.png").stat().st_size > 10_000

    # --resume: the two saved seeds are taken as they are (their reports, timings included, come back unchanged:
    # a rerun would have its own seconds) and only seed 2 runs
    saved = {s: (out / "seeds" / f"seed{s}.json").read_bytes() for s in (0, 1)}
    p = _cli("recover", "--quick", "--backbone", "tiny", "--n-train", "40", "--n-val", "20", "--n-test", "20",
             "--rounds", "1", "--k", "4", "--scorer", "loss,random", "--seeds", "0,1,2", "--resume", "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stderr.count("finished by an earlier run, taken as it is") == 2 and "seed 2 (3 of 3) …" in p.stderr
    resumed = json.loads((out / "report.json").read_text())
    assert resumed["seeds"] == [0, 1, 2] and resumed["per_seed"][:2] == rep["per_seed"]
    assert resumed["per_seed"][2]["seed"] == 2 and (out / "seeds" / "seed2.json").is_file()
    assert {s: (out / "seeds" / f"seed{s}.json").read_bytes() for s in (0, 1)} == saved

    # other settings: one line naming the setting, before any training; report and seeds untouched
    before = {f.name: f.read_bytes() for f in [out / "report.json", *sorted((out / "seeds").iterdir())]}
    p = _cli("recover", "--quick", "--backbone", "tiny", "--n-train", "40", "--n-val", "20", "--n-test", "20",
             "--rounds", "2", "--k", "4", "--scorer", "loss,random", "--seeds", "0,1,2", "--resume", "--out", str(out))
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "seed0.json was run with other settings" in p.stderr and "rounds=1, this run's has rounds=2" in p.stderr
    assert "training" not in p.stderr.split("error:")[0]
    assert {f.name: f.read_bytes() for f in [out / "report.json", *sorted((out / "seeds").iterdir())]} == before


def test_a_saved_seed_stands_in_only_for_the_same_job(seeds_report):
    from dataclasses import replace

    from gbair_nb.report import saved_seed_mismatch

    _, saved = seeds_report
    same = dict(seed=1, scenario=toy_scenario(seed=1), config=TINY, scorers=["gbair", "random"], k=4, rounds=2,
                fix="flip", patience=1, min_precision=None)
    assert saved_seed_mismatch(saved[1], **same) is None
    assert "seed 0's report, not seed 1's" in saved_seed_mismatch(saved[0], **same)
    assert "lr=" in saved_seed_mismatch(saved[1], **{**same, "config": replace(TINY, lr=TINY.lr * 2)})
    assert "scorers gbair, random" in saved_seed_mismatch(saved[1], **{**same, "scorers": ["random", "gbair"]})
    assert "k=4, this run's has k=5" in saved_seed_mismatch(saved[1], **{**same, "k": 5})
    assert "patience=1" in saved_seed_mismatch(saved[1], **{**same, "patience": 2})
    assert "project=None, this run's has project=64" in saved_seed_mismatch(saved[1], **{**same,
                                                                                         "options": {"project": 64}})
    noisier = toy_scenario(p=0.6, seed=1)      # same name and sizes, more labels corrupted
    assert "its number of corrupted labels is" in saved_seed_mismatch(saved[1], **{**same, "scenario": noisier})
    assert "not one seed's report" in saved_seed_mismatch({"summary": {}}, **same)

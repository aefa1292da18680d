"""python -m gbair_nb: help, a tiny train run end to end, one-line errors with exit code 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import child_env

from gbair_nb import cli
from gbair_nb.cli import args as cli_args

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "tiny", "--quick", "--quiet", "--n-train", "40", "--n-val", "20", "--n-test", "20",
        "--epochs", "2"]


def _read(run_dir):
    """(splits, corruption) of a train run, read back and checked."""
    from gbair_nb.runs import read_run_data

    data = read_run_data(run_dir)
    return data.splits, data.corruption


def gbair(*args, timeout=240):
    env = child_env(OMP_NUM_THREADS="1", GBAIR_QUICK="1")
    return subprocess.run([sys.executable, "-m", "gbair_nb", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


def test_help_lists_subcommands():
    r = gbair("--help")
    assert r.returncode == 0 and "train" in r.stdout
    for name in cli.SUBCOMMANDS:
        assert name in r.stdout


def test_train_writes_run_corruption_and_metrics(tmp_path):
    out = tmp_path / "run"
    r = gbair("train", "--dataset", "sms_spam", "--corrupt", "0.25", "--seed", "1", *TINY, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "test accuracy" in r.stdout
    record = json.loads((out / "run.json").read_text())
    assert record["data"]["n"] == 40 and record["config"]["seed"] == 1 and record["config"]["epochs"] == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["ckpt_00.safetensors", "ckpt_01.safetensors"]
    table = pd.read_csv(out / "corruption.csv")
    assert list(table.columns[:4]) == ["id", "label", "noisy_label", "is_corrupted"] and len(table) == 40
    assert table["is_corrupted"].sum() == 10
    assert (table["is_corrupted"] == (table["label"] != table["noisy_label"])).all()
    splits = pd.read_csv(out / "splits.csv")
    assert splits["split"].value_counts().to_dict() == {"train": 40, "val": 20, "test": 20}
    assert set(table["id"]) == set(splits.loc[splits["split"] == "train", "id"])
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1 and metrics["n_test"] == 20 and "spam" in metrics["report"]
    assert len(pd.read_csv(out / "test_predictions.csv")) == 20
    # the data of a run can be rebuilt from its folder, and it is what the checkpoints were trained on
    from gbair_nb.runs import load_run

    split_back, corruption = _read(out)
    assert corruption.n_corrupted == 10
    load_run(out, split_back.train.with_labels(corruption.noisy_labels), load=None)


def test_train_on_a_user_csv_in_process(tmp_path, capsys):
    f = tmp_path / "mine.csv"
    rows = [("great film, loved it", "pos"), ("dull and far too long", "neg")] * 15
    pd.DataFrame(rows, columns=["review", "sentiment"]).to_csv(f, index=False)
    code = cli.main(["train", "--dataset", str(f), "--text-col", "review", "--label-col", "sentiment",
                     "--corrupt", "0.2", "--mode", "class_conditional", "--source", "pos", "--target", "neg",
                     "--backbone", "tiny", "--quiet", "--epochs", "1", "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    spec = json.loads((tmp_path / "run" / "data.json").read_text())
    assert spec["class_names"] == ["neg", "pos"] and spec["sizes"] == {"n_train": 0.6, "n_val": 0.2, "n_test": 0.2}
    table = pd.read_csv(tmp_path / "run" / "corruption.csv")
    assert (table.loc[table["is_corrupted"], "label_name"] == "pos").all()
    assert (table.loc[table["is_corrupted"], "noisy_label_name"] == "neg").all() and table["is_corrupted"].sum() == 2


def test_train_with_lora_and_gmt_records_both(tmp_path, capsys):
    code = cli.main(["train", "--method", "lora", "--gmt", "0.2", "--backbone", "tiny", "--n-train", "32",
                     "--n-val", "16", "--n-test", "16", "--epochs", "1", "--quiet", "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert config["method"] == "lora" and config["gmt"] == {"keep_ratio": 0.2}


BAD = {
    "unknown dataset": (["--dataset", "imdb"], "unknown dataset 'imdb'"),
    "missing file": (["--dataset", "nope/missing.csv"], "file not found"),
    "missing column": (["--dataset", "{csv}", "--text-col", "body"], "column 'body' not found"),
    "rate out of range": (["--corrupt", "1.0"], "[0, 1)"),
    "rate not a number": (["--corrupt", "lots"], "not a number"),
    "sizes do not fit": (["--n-train", "5000"], "more than the 4862 examples"),
    "bad class": (["--corrupt", "0.1", "--mode", "class_conditional", "--source", "eggs"], "'eggs' is not a class"),
    "bad mode": (["--mode", "sideways"], "invalid choice"),
    "bad GMT ratio": (["--method", "full", "--gmt", "0"], "must be in (0, 1]"),
    "no --out": (None, "required: --out"),
    "negative seed": (["--seed", "-1"], "--seed"),
    "seed too large for numpy": (["--seed", str(2**64)], "--seed"),
    "seed not a number": (["--seed", "x"], "--seed"),
}


def run_main(argv):
    try:
        return cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    extra, expected = BAD[case]
    f = tmp_path / "ok.csv"
    pd.DataFrame({"text": ["a", "b", "c"] * 3, "label": [0, 1, 1] * 3}).to_csv(f, index=False)
    argv = ["train"]
    if extra is not None:
        argv += [a.format(csv=f) for a in extra] + ["--backbone", "tiny", "--out", str(tmp_path / "o")]
    code = run_main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "o" / "run.json").exists()


def test_a_bad_gbair_device_is_one_line_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GBAIR_DEVICE", "gpu")
    code = run_main(["train", "--backbone", "tiny", "--quick", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "GBAIR_DEVICE='gpu': use 'cpu' or 'cuda'" in err, err
    assert not (tmp_path / "o" / "run.json").exists()


def test_bad_input_end_to_end_has_no_traceback(tmp_path):
    r = gbair("train", "--dataset", "tweets", "--n-val", "40000", "--out", tmp_path / "o")
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = gbair("frobnicate")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "invalid choice" in r.stderr


def test_registered_subcommands_load_and_reject_bad_input(tmp_path, capsys):
    for name, spec in cli.SUBCOMMANDS.items():
        add_arguments, run = spec.load()  # every registration point resolves to real functions
        assert callable(add_arguments) and callable(run), name
    if "recover" in cli.SUBCOMMANDS:
        assert run_main(["recover", "--dataset", "imdb", "--backbone", "tiny", "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: unknown dataset 'imdb'") and err.count("\n") == 1


def test_sizes_and_a_time_estimate_are_said_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GBAIR_QUICK", "0")  # full mode: a big file is capped at FULL_SIZES
    f = tmp_path / "mine.csv"
    rows = [(f"great film number {i}", "pos") if i % 2 else (f"dull film number {i}", "neg") for i in range(3000)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(f, index=False)
    code = cli.main(["train", "--dataset", str(f), "--backbone", "tiny", "--epochs", "1", "--out",
                     str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 0, err
    sizes = {k: cli_args.FULL_SIZES[k] for k in ("n_train", "n_val", "n_test")}
    assert json.loads((tmp_path / "run" / "data.json").read_text())["split_sizes"] == {
        "train": sizes["n_train"], "val": sizes["n_val"], "test": sizes["n_test"]}  # capped, not 60/20/20 of 3000
    assert "--n-train" in err and "estimate" in err


def test_choose_sizes_caps_big_files_and_keeps_fractions_for_small_ones():
    caps = {"n_train": 400, "n_val": 200, "n_test": 500}
    none = {"n_train": None, "n_val": None, "n_test": None}
    assert cli_args.choose_sizes(none, 9173, caps)[0] == caps
    assert cli_args.choose_sizes(none, 1000, caps)[0] == {"n_train": 0.6, "n_val": 0.2, "n_test": 0.2}
    assert cli_args.choose_sizes({**none, "n_train": 50}, 9173, caps)[0] == {**caps, "n_train": 50}
    for sizes, note in [cli_args.choose_sizes(none, 9173, caps), cli_args.choose_sizes(none, 100, caps)]:
        assert "--n-train" in note


def test_out_that_cannot_be_written_is_refused_before_training(tmp_path, monkeypatch, capsys):
    import gbair_nb.train as train_module

    monkeypatch.setattr(train_module, "train", lambda *a, **k: pytest.fail("trained before checking --out"))
    (tmp_path / "file").write_text("in the way")
    code = run_main(["train", *TINY, "--out", str(tmp_path / "file" / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --out") and err.count("\n") == 1, err


def _files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_interrupted_train_keeps_the_old_run_whole(tmp_path, monkeypatch, capsys):
    import gbair_nb.train as train_module

    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "--seed", "1", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")  # not a run file: never touched
    before = _files(out)
    real, calls = train_module.set_gradients, []

    def interrupted(model, parts):  # Ctrl-C in the second epoch (one call per step), after a checkpoint was saved
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(model, parts)

    monkeypatch.setattr(train_module, "set_gradients", interrupted)
    assert cli.main(["train", *TINY, "--seed", "2", "--out", str(out)]) == 130
    assert len(calls) == 4
    assert _files(out) == before  # the old run, whole: no new data.json beside the old run.json, no temp files


def test_train_into_an_old_run_replaces_it_whole(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *TINY[:-1], "3", "--seed", "1", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    assert cli.main(["train", *TINY, "--seed", "2", "--out", str(out)]) == 0
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == ["checkpoints/ckpt_00.safetensors", "checkpoints/ckpt_01.safetensors", "corruption.csv",
                     "data.json", "notes.txt", "run.json", "splits.csv", "test_metrics.json",
                     "test_predictions.csv", "timing.json"]
    assert json.loads((out / "data.json").read_text())["seed"] == 2
    from gbair_nb.runs import load_run

    split_back, corruption = _read(out)
    load_run(out, split_back.train.with_labels(corruption.noisy_labels), load=None)  # one run, checked whole


def test_progress_is_logged_to_stderr_unless_quiet(tmp_path, capsys):
    import logging

    assert cli.main(["train", *[a for a in TINY if a != "--quiet"], "--out", str(tmp_path / "a")]) == 0
    assert "sizes" in capsys.readouterr().err
    assert cli.main(["train", *TINY, "--out", str(tmp_path / "b")]) == 0
    assert "sizes" not in capsys.readouterr().err
    assert not [h for h in logging.getLogger("gbair_nb").handlers if not isinstance(h, logging.NullHandler)]


def test_the_time_estimate_says_when_a_gpu_will_make_it_moot():
    from gbair_nb.cli.args import estimate_note, estimate_seconds
    from gbair_nb.cli.recover import _trainings
    from gbair_nb.train import TrainConfig

    assert estimate_note(None, "x") is None
    cpu = estimate_note(600, "x", gpu=False)
    assert "about 10 min for x on a quiet 2-core CPU" in cpu and "GPU" not in cpu
    assert "this run uses a GPU" in estimate_note(600, "x", gpu=True)
    # the note quotes the default full-mode job's CPU estimate ("~18 min"): it must still be that
    config = TrainConfig.for_method("prompt_tuning", quick=False)
    minutes = estimate_seconds(400, config, trainings=_trainings(["gbair", "random"], 5)) / 60
    assert round(minutes) == 18, minutes

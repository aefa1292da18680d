"""python -m gbair_nb: help, a tiny train run end to end, one-line errors with exit code 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from gbair_nb import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "tiny", "--quick", "--quiet", "--n-train", "40", "--n-val", "20", "--n-test", "20",
        "--epochs", "2"]


def gbair(*args, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GBAIR_QUICK": "1", "PYTHONPATH": str(ROOT)}
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
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["ckpt_00.pt", "ckpt_01.pt"]
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
    from gbair_nb.train import load_run

    split_back, corruption = cli.load_run_data(out)
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

"""python -m gbair_nb influence: a tiny train run → proponents/opponents/self-influence CSVs; one-line errors."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import child_env

from gbair_nb import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "tiny", "--quick", "--quiet", "--n-train", "40", "--n-val", "20", "--n-test", "20",
        "--corrupt", "0.2", "--epochs", "2"]
PAIR_COLUMNS = ["test_id", "test_text", "test_label", "test_pred", "train_id", "train_text", "train_label",
                "train_true_label", "is_corrupted", "score", "rank", "variant", "checkpoint"]
SELF_COLUMNS = ["id", "text", "noisy_label", "label", "is_corrupted", "self_influence", "rank"]


def _read(run_dir):
    """(splits, corruption) of a train run, read back and checked."""
    from gbair_nb.runs import read_run_data

    data = read_run_data(run_dir)
    return data.splits, data.corruption


def gbair(*args, timeout=240):
    env = child_env(OMP_NUM_THREADS="1", GBAIR_QUICK="1")
    return subprocess.run([sys.executable, "-m", "gbair_nb", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("influence_cli") / "run"
    r = gbair("train", "--dataset", "sms_spam", *TINY, "--out", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def influence_out(train_run):
    out = train_run.parent / "influence"
    r = gbair("influence", "--run", train_run, "--on", "val", "--top-k", "3", "--quiet", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "self-influence AUROC" in r.stdout
    return out


def test_writes_proponents_opponents_and_self_influence(train_run, influence_out):
    splits, corruption = _read(train_run)
    prop = pd.read_csv(influence_out / "proponents.csv")
    opp = pd.read_csv(influence_out / "opponents.csv")
    for df in (prop, opp):
        assert list(df.columns) == PAIR_COLUMNS
        assert len(df) == 20 * 3 and sorted(set(df["test_id"])) == sorted(splits.val.ids)
        assert all(list(g["rank"]) == [1, 2, 3] for _, g in df.groupby("test_id", sort=False))
        assert set(df["train_id"]) <= set(splits.train.ids) and (df["variant"] == "dot").all()
        assert (df["checkpoint"] == "all").all()
        # the training label shown is the noisy one the model learned from; the truth is beside it
        assert (df["is_corrupted"] == (df["train_label"] != df["train_true_label"])).all()
        val_label = dict(zip(splits.val.ids, splits.val.labels))
        assert (df["test_label"] == df["test_id"].map(val_label)).all() and df["test_pred"].isin([0, 1]).all()
    # proponents: most positive first; opponents: most negative first
    for _, g in prop.groupby("test_id"):
        assert np.all(np.diff(g["score"].to_numpy()) <= 1e-12)
    for _, g in opp.groupby("test_id"):
        assert np.all(np.diff(g["score"].to_numpy()) >= -1e-12)
    assert (prop.groupby("test_id")["score"].max() >= opp.groupby("test_id")["score"].min()).all()

    si = pd.read_csv(influence_out / "self_influence.csv")
    assert list(si.columns) == SELF_COLUMNS and len(si) == 40
    assert list(si["rank"]) == list(range(1, 41)) and np.all(np.diff(si["self_influence"].to_numpy()) <= 0)
    assert sorted(si["id"]) == sorted(splits.train.ids) and si["is_corrupted"].sum() == corruption.n_corrupted
    truth = pd.DataFrame({"id": splits.train.ids, "noisy": corruption.noisy_labels, "true": splits.train.labels})
    both = si.merge(truth, on="id")
    assert (both["noisy_label"] == both["noisy"]).all() and (both["label"] == both["true"]).all()
    summary = json.loads((influence_out / "influence.json").read_text())
    assert summary["n_train"] == 40 and summary["n_val"] == 20 and summary["top_k"] == 3
    assert summary["self_influence_detection"]["n_corrupted"] == corruption.n_corrupted


def test_self_influence_equals_the_library_in_process(train_run, influence_out):
    from gbair_nb.influence import self_influence
    from gbair_nb.runs import load_run

    splits, corruption = _read(train_run)
    noisy = splits.train.with_labels(corruption.noisy_labels)
    run = load_run(train_run, noisy)
    want = self_influence(run.model, run.tokenizer, run.checkpoints, noisy, max_length=run.config.max_length,
                          verbose=False)
    si = pd.read_csv(influence_out / "self_influence.csv").set_index("id").loc[noisy.ids]
    np.testing.assert_allclose(si["self_influence"].to_numpy(), want, rtol=1e-5, atol=1e-9)


def test_last_checkpoint_cosine_on_test_feeds_the_explorer(train_run, tmp_path, capsys):
    out = tmp_path / "inf"
    code = cli.main(["influence", "--run", str(train_run), "--on", "test", "--top-k", "2", "--variant", "cosine",
                     "--checkpoints", "last", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    prop = pd.read_csv(out / "proponents.csv")
    splits, _ = _read(train_run)
    assert sorted(set(prop["test_id"])) == sorted(splits.test.ids) and len(prop) == 2 * 20
    assert (prop["variant"] == "cosine").all() and (prop["checkpoint"] == 1).all()  # the last of 2 checkpoints
    # cosine with one checkpoint: |score| ≤ that checkpoint's largest learning rate (the prompt's, above the head's)
    lr = json.loads((train_run / "run.json").read_text())["checkpoints"][-1]["lr"]
    assert 0 < prop["score"].abs().max() <= lr * (1 + 1e-4)
    from gbair_nb.explain import influence_bars_frame

    table = pd.concat([prop, pd.read_csv(out / "opponents.csv")])
    bars = influence_bars_frame(table, int(prop["test_id"].iloc[0]), variant="cosine", k=2)
    assert 1 <= len(bars) <= 4 and set(bars["role"]) <= {"proponent", "opponent"}


@pytest.mark.parametrize("case", ["missing", "not_a_run", "no_checkpoints", "other_labels"])
def test_bad_run_is_one_line_and_exit_2(case, train_run, tmp_path, capsys):
    bad = tmp_path / "bad"
    if case == "not_a_run":
        bad.mkdir()
        (bad / "notes.txt").write_text("hello")
    elif case in ("no_checkpoints", "other_labels"):
        shutil.copytree(train_run, bad)
        if case == "no_checkpoints":
            shutil.rmtree(bad / "checkpoints")
        else:  # one training label changed after training: not the data the checkpoints learned from
            table = pd.read_csv(bad / "corruption.csv")
            table.loc[0, "noisy_label"] = 1 - table.loc[0, "noisy_label"]
            table["is_corrupted"] = table["label"] != table["noisy_label"]  # consistent: only the fingerprint knows
            table.to_csv(bad / "corruption.csv", index=False)
    code = cli.main(["influence", "--run", str(bad), "--quiet", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert {"missing": "does not exist", "not_a_run": "not a train run", "no_checkpoints": "checkpoint",
            "other_labels": "fingerprint"}[case] in err
    assert not (tmp_path / "o").exists()


def test_bad_run_end_to_end_has_no_traceback(tmp_path):
    r = gbair("influence", "--run", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = gbair("influence", "--run", tmp_path, "--on", "train", "--out", tmp_path / "o")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "invalid choice" in r.stderr


def test_out_that_cannot_be_written_is_refused_before_computing(train_run, tmp_path, monkeypatch, capsys):
    import gbair_nb.influence as influence

    monkeypatch.setattr(influence, "top_influences", lambda *a, **k: pytest.fail("computed before checking --out"))
    (tmp_path / "file").write_text("in the way")
    code = cli.main(["influence", "--run", str(train_run), "--quiet", "--out", str(tmp_path / "file" / "inf")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --out") and err.count("\n") == 1, err


def test_a_failed_write_leaves_the_old_outputs_whole(train_run, influence_out, tmp_path, monkeypatch, capsys):
    out = tmp_path / "inf"
    shutil.copytree(influence_out, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = pd.DataFrame.to_csv

    def disk_full_on_the_third(self, path, *a, **k):  # proponents and opponents written, then the disk fills
        if "self_influence" in str(path):
            raise OSError(28, "No space left on device")
        return real(self, path, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full_on_the_third)
    with pytest.raises(OSError):
        cli.main(["influence", "--run", str(train_run), "--on", "test", "--top-k", "2", "--quiet", "--out", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old set whole, no temp files

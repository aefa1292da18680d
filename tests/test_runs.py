"""gbair_nb.runs: a run folder is read back whole and checked, or refused with one line naming the file.

Every case below once gave exit 0 with wrong numbers, or a traceback. A tiny run is trained once (in-process,
``--backbone tiny``); each test copies it and breaks one thing.
"""
import json
import shutil
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gbair_nb import cli

TINY = ["--backbone", "tiny", "--quick", "--quiet", "--n-train", "40", "--n-val", "20", "--n-test", "20",
        "--corrupt", "0.2", "--epochs", "2"]


def run_main(argv):
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        return e.code


def ckpt_files(run_dir: Path) -> list[Path]:
    record = json.loads((run_dir / "run.json").read_text())
    return [run_dir / "checkpoints" / c["file"] for c in record["checkpoints"]]


@pytest.fixture(scope="module")
def user_csv(tmp_path_factory):
    """200 rows of a user's CSV: enough for 40/20/20 with rows left over."""
    rng = np.random.default_rng(0)
    good, bad = ["great", "lovely", "superb", "nice"], ["awful", "terrible", "nasty", "sad"]
    rows = [(" ".join(rng.choice(good if c else bad, 4)) + f" {i}", "pos" if c else "neg")
            for i, c in enumerate(rng.integers(0, 2, 200))]
    f = tmp_path_factory.mktemp("data") / "mine.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(f, index=False)
    return f


@pytest.fixture(scope="module")
def runs(tmp_path_factory, user_csv):
    """Three runs: A (built-in data), B (A's data, 3 epochs: same fingerprint, other weights), C (a user's CSV)."""
    root = tmp_path_factory.mktemp("runs")
    a, b, c = root / "a", root / "b", root / "c"
    assert run_main(["train", "--dataset", "sms_spam", *TINY, "--out", a]) == 0
    assert run_main(["train", "--dataset", "sms_spam", *TINY[:-1], "3", "--out", b]) == 0
    assert run_main(["train", "--dataset", user_csv, *TINY, "--out", c]) == 0
    return a, b, c


def influence(run_dir, out, capsys, *extra):
    code = run_main(["influence", "--run", run_dir, "--quiet", "--top-k", "2", "--out", out, *extra])
    return code, capsys.readouterr().err


def refused(run_dir, tmp_path, capsys, *expected):
    """influence on the folder: exit 2, one `error:` line containing each of ``expected``, nothing written."""
    code, err = influence(run_dir, tmp_path / "inf", capsys)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for e in expected:
        assert e in err, err
    assert not (tmp_path / "inf").exists()
    return err


def copy_run(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    obj = change(obj) or obj
    path.write_text(json.dumps(obj))


# ----------------------------------------------------------------------------------------------- the good case
def test_an_intact_run_passes_every_check(runs, tmp_path, capsys):
    a, _, _ = runs
    code, err = influence(a, tmp_path / "inf", capsys)
    assert code == 0, err
    files = [p.name for p in ckpt_files(a)]
    assert files == ["ckpt_00.safetensors", "ckpt_01.safetensors"]
    assert not list(a.rglob("*.pt")) and not list(a.rglob("*.tmp")) and not list(a.glob(".*"))


def test_checkpoints_are_safetensors_with_their_metadata(runs):
    from safetensors import safe_open

    a, _, _ = runs
    record = json.loads((a / "run.json").read_text())
    for path, entry in zip(ckpt_files(a), record["checkpoints"]):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            assert f.keys()  # tensors only: nothing in the file can run code
        assert int(meta["step"]) == entry["step"] and int(meta["epoch"]) == entry["epoch"]
        assert float(meta["lr"]) == entry["lr"] and meta["fingerprint"] == record["data"]["fingerprint"]
        assert set(json.loads(meta["lrs"])) == set(json.loads(meta["names"]))


# ------------------------------------------------------------------------------------ exit 0 with wrong numbers
def test_a_checkpoint_from_another_run_is_refused(runs, tmp_path, capsys):
    a, b, _ = runs  # B: the same data (same fingerprint) and the same steps for ckpt_01, other weights
    bad = copy_run(a, tmp_path)
    shutil.copyfile(ckpt_files(b)[1], ckpt_files(bad)[1])
    refused(bad, tmp_path, capsys, "ckpt_01", "run.json")


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_a_checkpoint_path_outside_the_run_is_refused(runs, tmp_path, capsys, where):
    a, _, _ = runs
    bad = copy_run(a, tmp_path)
    outside = tmp_path / "outside.bin"
    shutil.copyfile(ckpt_files(a)[0], outside)  # a perfectly good checkpoint, in the wrong place
    name = "../../outside.bin" if where == "relative" else str(outside)

    def change(rec):
        rec["checkpoints"][0]["file"] = name

    edit_json(bad / "run.json", change)
    refused(bad, tmp_path, capsys, "run.json", "outside")


def test_an_inverted_is_corrupted_column_is_refused(runs, tmp_path, capsys):
    a, _, _ = runs
    bad = copy_run(a, tmp_path)
    table = pd.read_csv(bad / "corruption.csv")
    table["is_corrupted"] = ~table["is_corrupted"]
    table.to_csv(bad / "corruption.csv", index=False)
    refused(bad, tmp_path, capsys, "corruption.csv", "is_corrupted")


def test_an_edited_splits_csv_is_refused(runs, tmp_path, capsys):
    a, _, _ = runs
    bad = copy_run(a, tmp_path)
    table = pd.read_csv(bad / "splits.csv")
    val = table.index[table["split"] == "val"][0]
    test = table.index[table["split"] == "test"][0]
    table.loc[[val, test], "split"] = ["test", "val"]  # one validation and one test example swapped
    table.to_csv(bad / "splits.csv", index=False)
    refused(bad, tmp_path, capsys, "splits.csv")


@pytest.mark.parametrize("part", ["val", "test"])
def test_a_dataset_edited_only_in_validation_or_test_rows_is_refused(runs, tmp_path, capsys, user_csv, part):
    _, _, c = runs
    bad = copy_run(c, tmp_path)
    data = tmp_path / "mine.csv"
    shutil.copyfile(user_csv, data)
    edit_json(bad / "data.json", lambda spec: {**spec, "dataset": str(data), "dataset_path": str(data)})
    splits = pd.read_csv(bad / "splits.csv")
    row = int(splits.loc[splits["split"] == part, "id"].iloc[0])
    df = pd.read_csv(data)
    df.loc[row, "text"] = df.loc[row, "text"] + " (edited)"
    df.to_csv(data, index=False)
    refused(bad, tmp_path, capsys, part, "mine.csv")


def test_rows_no_split_uses_may_change(runs, tmp_path, capsys, user_csv):
    _, _, c = runs
    ok = copy_run(c, tmp_path)
    data = tmp_path / "mine.csv"
    shutil.copyfile(user_csv, data)
    edit_json(ok / "data.json", lambda spec: {**spec, "dataset": str(data), "dataset_path": str(data)})
    used = set(pd.read_csv(ok / "splits.csv")["id"])
    row = next(i for i in range(200) if i not in used)
    df = pd.read_csv(data)
    df.loc[row, "text"] = "not drawn by any split"
    df.to_csv(data, index=False)
    code, err = influence(ok, tmp_path / "inf", capsys)
    assert code == 0, err


# ---------------------------------------------------------------------------------------- tracebacks, before
BROKEN = {
    "run.json without data": ("run.json", lambda d: (d / "run.json", lambda r: {k: v for k, v in r.items()
                                                                                if k != "data"})),
    "run.json as a list": ("run.json", lambda d: (d / "run.json", lambda r: [r])),
    "run.json with an unknown config key": ("frobnicate", lambda d: (d / "run.json", lambda r: {
        **r, "config": {**r["config"], "frobnicate": 3}})),
    "data.json without text_col": ("data.json", lambda d: (d / "data.json", lambda s: {
        k: v for k, v in s.items() if k != "text_col"})),
    "data.json not JSON": ("data.json", None),
    "a checkpoint's step changed in run.json": ("step", lambda d: (d / "run.json", lambda r: {
        **r, "checkpoints": [{**r["checkpoints"][0], "step": 99}, *r["checkpoints"][1:]]})),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_record_is_one_error_line(runs, tmp_path, capsys, case):
    a, _, _ = runs
    bad = copy_run(a, tmp_path)
    expected, make = BROKEN[case]
    if make is None:
        (bad / "data.json").write_text('{"dataset": "sms_spam", ')
    else:
        path, change = make(bad)
        edit_json(path, change)
    refused(bad, tmp_path, capsys, expected)


def test_corruption_csv_without_id_is_one_error_line(runs, tmp_path, capsys):
    a, _, _ = runs
    bad = copy_run(a, tmp_path)
    pd.read_csv(bad / "corruption.csv").drop(columns=["id"]).to_csv(bad / "corruption.csv", index=False)
    refused(bad, tmp_path, capsys, "corruption.csv", "'id'")


def test_a_truncated_checkpoint_is_one_error_line(runs, tmp_path, capsys):
    a, _, _ = runs
    bad = copy_run(a, tmp_path)
    path = ckpt_files(bad)[1]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    refused(bad, tmp_path, capsys, path.name)


def test_an_unknown_config_key_set_to_none_is_dropped_with_a_warning(runs, tmp_path):
    from gbair_nb.runs import load_run

    a, _, _ = runs
    ok = copy_run(a, tmp_path)
    edit_json(ok / "run.json", lambda r: {**r, "config": {**r["config"], "some_future_switch": None}})
    with pytest.warns(UserWarning, match="some_future_switch"):
        run = load_run(ok, load=None)
    assert len(run.checkpoints) == 2


# ----------------------------------------------------------------------------------------- the dataset's path
def test_a_run_trained_on_a_relative_path_works_from_another_directory(tmp_path, user_csv, monkeypatch, capsys):
    home, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (home / "data").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copyfile(user_csv, home / "data" / "mine.csv")
    monkeypatch.chdir(home)
    assert run_main(["train", "--dataset", "data/mine.csv", *TINY, "--out", home / "run"]) == 0
    resolved = str((home / "data" / "mine.csv").resolve())
    spec = json.loads((home / "run" / "data.json").read_text())
    assert spec["dataset"] == "data/mine.csv" and spec["dataset_path"] == resolved
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    code = run_main(["influence", "--run", home / "run", "--top-k", "2", "--out", elsewhere / "inf"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert resolved in captured.err  # says which file it read
    assert json.loads((elsewhere / "inf" / "influence.json").read_text())["dataset"] == resolved


def test_a_missing_dataset_file_names_both_paths(runs, tmp_path, capsys):
    _, _, c = runs
    bad = copy_run(c, tmp_path)
    edit_json(bad / "data.json", lambda s: {**s, "dataset": "gone/mine.csv",
                                            "dataset_path": str(tmp_path / "gone" / "mine.csv")})
    refused(bad, tmp_path, capsys, "gone/mine.csv", str(tmp_path / "gone" / "mine.csv"))


# ------------------------------------------------------------------------------------------ no unpickling, ever
class _Payload:
    """Unpickling this runs ``Path(marker).touch()``: what a hostile checkpoint file could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickled_checkpoint_cannot_run_code(tmp_path):
    from gbair_nb.influence import self_influence
    from gbair_nb.models import make_model

    marker = tmp_path / "ran"
    evil = tmp_path / "ckpt_00.pt"
    torch.save({"state": _Payload(marker), "lr": 0.1}, evil)  # a torch checkpoint whose unpickling runs code
    model, tok = make_model("prompt_tuning", num_labels=2, backbone="tiny", num_virtual_tokens=4)
    with pytest.raises(Exception, match="ckpt_00.pt"):
        self_influence(model, tok, [types.SimpleNamespace(path=evil, lrs=0.1)], ["a text"], [0], verbose=False)
    assert not marker.exists()


def test_an_old_pt_run_still_loads_without_unpickling_code(runs, tmp_path, capsys):
    """A run written before safetensors (``ckpt_NN.pt``, a dict of tensors and numbers) loads with weights_only."""
    from gbair_nb.checkpoints import read_checkpoint
    from gbair_nb.runs import load_run

    a, _, _ = runs
    old = copy_run(a, tmp_path)
    record = json.loads((old / "run.json").read_text())
    for entry in record["checkpoints"]:
        new = old / "checkpoints" / entry["file"]
        blob = read_checkpoint(new)
        entry["file"] = new.with_suffix(".pt").name
        entry.pop("sha256", None)
        torch.save({"state": blob["state"], "lr": blob["lr"], "lrs": blob["lrs"], "epoch": blob["epoch"],
                    "step": blob["step"], "fingerprint": blob["fingerprint"]}, new.with_suffix(".pt"))
        new.unlink()
    (old / "run.json").write_text(json.dumps(record))
    run, want = load_run(old), load_run(a)
    for mine, theirs in zip(run.checkpoints, want.checkpoints):
        assert mine.lrs == theirs.lrs and mine.step == theirs.step
        assert all(torch.equal(mine.state[n], theirs.state[n]) for n in theirs.state)
    code, err = influence(old, tmp_path / "inf", capsys)
    assert code == 0, err

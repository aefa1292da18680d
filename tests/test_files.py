"""gbair_nb.files: whole files or none."""
from pathlib import Path

import pandas as pd
import pytest

from gbair_nb.files import atomic_path, check_writable, staged_folder, write_atomic, write_csv


def test_write_atomic_text_and_bytes(tmp_path):
    assert write_atomic(tmp_path / "a.txt", "héllo").read_text(encoding="utf-8") == "héllo"
    assert write_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"


def test_written_files_get_the_usual_mode_not_the_temp_files_private_one(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        assert write_atomic(tmp_path / "a.txt", "x").stat().st_mode & 0o777 == 0o644
        with staged_folder(tmp_path / "run", replaces=["*.json"]) as stage:
            write_atomic(stage / "sub" / "b.json", "{}")
        assert (tmp_path / "run" / "sub" / "b.json").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "run" / "sub").stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old)


def test_failed_write_keeps_old_content_and_leaves_no_temp_file(tmp_path):
    p = write_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("crash while writing")
    assert p.read_text() == "old"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.txt"]


def test_check_writable(tmp_path):
    assert check_writable(tmp_path / "not" / "yet") == tmp_path / "not" / "yet"
    assert not (tmp_path / "not").exists()  # checking creates nothing
    f = write_atomic(tmp_path / "file", "x")
    with pytest.raises(NotADirectoryError, match="--out"):
        check_writable(f)


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _old_run(folder):
    write_atomic(folder / "run.json", "old")
    write_atomic(folder / "checkpoints" / "ckpt_00.pt", "old 0")
    write_atomic(folder / "checkpoints" / "ckpt_01.pt", "old 1")
    write_atomic(folder / "notes.txt", "the user's own file")


def test_staged_folder_replaces_the_old_set_whole(tmp_path):
    _old_run(tmp_path)
    with staged_folder(tmp_path, replaces=["run.json", "checkpoints/ckpt_*"], last="run.json") as stage:
        assert stage.parent == tmp_path and stage.name.startswith(".")
        write_atomic(stage / "checkpoints" / "ckpt_00.safetensors", "new 0")
        write_atomic(stage / "run.json", "new")
        assert _tree(tmp_path)["run.json"] == "old"  # nothing changes until the block ends
    assert _tree(tmp_path) == {"checkpoints/ckpt_00.safetensors": "new 0", "notes.txt": "the user's own file",
                               "run.json": "new"}


def test_staged_folder_keeps_the_old_set_when_the_work_fails(tmp_path):
    _old_run(tmp_path)
    before = _tree(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(tmp_path, replaces=["run.json", "checkpoints/ckpt_*"], last="run.json") as stage:
            write_atomic(stage / "checkpoints" / "ckpt_00.safetensors", "new 0")
            raise KeyboardInterrupt
    assert _tree(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoints", "notes.txt", "run.json"]


def test_staged_folder_places_the_marker_last(tmp_path, monkeypatch):
    """A commit that fails half-way leaves no run.json: the folder never claims to hold a mix of two runs."""
    import os

    _old_run(tmp_path)
    real = os.replace

    def fail_on_checkpoints(src, dst):
        if "ckpt" in str(dst):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    with pytest.raises(OSError):
        with staged_folder(tmp_path, replaces=["run.json", "checkpoints/ckpt_*"], last="run.json") as stage:
            monkeypatch.setattr(os, "replace", fail_on_checkpoints)
            (stage / "checkpoints").mkdir()
            (stage / "checkpoints" / "ckpt_00.safetensors").write_text("new 0")
            (stage / "run.json").write_text("new")
    assert "run.json" not in _tree(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_write_csv_reads_back_the_same_table_even_with_carriage_returns(tmp_path):
    # 1,564 built-in tweets hold a bare "\r": pandas leaves such a field unquoted, and read_csv splits the row in two
    table = pd.DataFrame({"id": [7, 8, 9], "text": ["one\rtwo", 'a "quoted", line\nbreak', "plain"],
                          "label": ["neg", "pos", "neg"], "is_corrupted": [True, False, True],
                          "p": [0.25, float("nan"), 1.0]})
    path = write_csv(tmp_path / "t.csv", table)
    back = pd.read_csv(path)
    assert len(back) == 3 and back["text"].tolist() == table["text"].tolist()
    assert back["id"].tolist() == [7, 8, 9] and back["is_corrupted"].tolist() == [True, False, True]
    assert back["p"].iloc[0] == 0.25 and back["p"].isna().iloc[1]
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # written atomically: no temporary file left


def test_the_package_writes_every_csv_through_write_csv():
    import gbair_nb

    root = Path(gbair_nb.__file__).parent
    writers = [str(p.relative_to(root)) for p in root.rglob("*.py") if ".to_csv(" in p.read_text()]
    assert writers == ["files.py"], f"use files.write_csv (it quotes texts with a bare \\r): {writers}"

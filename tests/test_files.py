"""gbair_nb.files: whole files or none."""
import pytest

from gbair_nb.files import atomic_path, check_writable, write_atomic


def test_write_atomic_text_and_bytes(tmp_path):
    assert write_atomic(tmp_path / "a.txt", "héllo").read_text(encoding="utf-8") == "héllo"
    assert write_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"


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

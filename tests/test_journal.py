"""gbair_nb.journal on its own: create, append, replay, refuse, repair. (test_relabel.py drives the same file through
RelabelSession: crashes, kills, two sessions at once.)"""
from __future__ import annotations

import json
import os
import warnings

import pytest

from gbair_nb.journal import Journal, JournalError, encode_line

HEADER = encode_line({"type": "header", "n": 3})


def _entries(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_create_then_append_writes_whole_lines_and_counts_them(tmp_path):
    j = Journal(tmp_path / "sub" / "j.jsonl")
    assert j.open(HEADER, replay=lambda e: pytest.fail("a new journal has nothing to replay")) is True
    assert (j.size, j.lines) == (len(HEADER), 1)
    j.append({"type": "decision", "id": 1, "text": "café ☕"})
    j.append({"type": "cursor", "id": 2})
    assert _entries(j.path) == [{"type": "header", "n": 3}, {"type": "decision", "id": 1, "text": "café ☕"},
                                {"type": "cursor", "id": 2}]
    assert j.size == j.path.stat().st_size and j.lines == 3
    assert "café ☕" in j.path.read_text(encoding="utf-8")  # readable, not \u-escaped


def test_replay_gets_every_entry_with_its_file_line_number(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(HEADER + b"\n" + encode_line({"type": "a"}) + b"   \n" + encode_line({"type": "b"}))
    seen = []
    j = Journal(path)
    assert j.open(HEADER, replay=seen.extend) is False
    assert seen == [(1, {"type": "header", "n": 3}), (3, {"type": "a"}), (5, {"type": "b"})]  # blanks skipped
    assert (j.size, j.lines) == (path.stat().st_size, 5)


def test_a_refused_replay_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "j.jsonl"
    before = HEADER + b'{"type": "a"}\n{"type": "torn'
    path.write_bytes(before)

    def refuse(entries):
        raise JournalError("not ours")

    with pytest.raises(JournalError, match="not ours"):
        Journal(path).open(HEADER, replay=refuse)
    assert path.read_bytes() == before  # the torn tail is repaired only once the caller accepted the file


def test_a_torn_last_line_is_dropped_with_a_warning_once_accepted(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(HEADER + b'{"type": "a"}\n{"type": "to')
    seen = []
    with pytest.warns(RuntimeWarning, match="line 3.*cut off") as caught:
        Journal(path).open(HEADER, replay=seen.extend)
    assert caught[0].filename == __file__  # the warning points at the line that opened the journal
    assert [e for _, e in seen] == [{"type": "header", "n": 3}, {"type": "a"}]
    assert path.read_bytes() == HEADER + b'{"type": "a"}\n'


def test_a_complete_last_line_missing_its_newline_is_kept(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(HEADER + b'{"type": "a"}')
    j = Journal(path)
    j.open(HEADER, replay=lambda e: None)
    j.append({"type": "b"})
    assert [e["type"] for e in _entries(path)] == ["header", "a", "b"]


def test_an_empty_file_is_started_again_silently_and_a_torn_header_with_a_warning(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(b"")  # a crash right after creating it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Journal(path).open(HEADER, replay=lambda e: pytest.fail("nothing to replay")) is True
    assert path.read_bytes() == HEADER
    path.write_bytes(b'{"type": "hea')  # a crash while writing the header
    with pytest.warns(RuntimeWarning, match="header"):
        assert Journal(path).open(HEADER, replay=lambda e: pytest.fail("nothing to replay")) is True
    assert path.read_bytes() == HEADER


def test_a_line_that_is_not_json_names_its_line(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(HEADER + b"not json\n")
    with pytest.raises(JournalError, match=r"j\.jsonl, line 2: not valid JSON"):
        Journal(path).open(HEADER, replay=lambda e: None)
    path.write_bytes(HEADER + b"[1, 2]\n")
    with pytest.raises(JournalError, match="line 2: expected a JSON object with a 'type'"):
        Journal(path).open(HEADER, replay=lambda e: None)


def test_an_append_after_someone_else_wrote_is_refused_and_writes_nothing(tmp_path):
    a, b = Journal(tmp_path / "j.jsonl"), Journal(tmp_path / "j.jsonl")
    a.open(HEADER, replay=lambda e: None)
    b.open(HEADER, replay=lambda e: None)
    b.append({"type": "b"})
    size = a.path.stat().st_size
    with pytest.raises(JournalError, match="changed by someone else"):
        a.append({"type": "a"})
    assert a.path.stat().st_size == size and a.lines == 1


def test_a_write_that_fails_half_way_is_cut_off(tmp_path, monkeypatch):
    j = Journal(tmp_path / "j.jsonl")
    j.open(HEADER, replay=lambda e: None)
    real_fsync = os.fsync

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        j.append({"type": "lost"})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert j.path.read_bytes() == HEADER and j.lines == 1
    j.append({"type": "kept"})  # the journal is still usable
    assert [e["type"] for e in _entries(j.path)] == ["header", "kept"]


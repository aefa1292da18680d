"""Tests for gbair_nb.relabel: decisions, journal replay, crash recovery, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from gbair_nb.relabel import JournalError, RelabelSession

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class TinyDataset:
    """Stand-in for data.TextDataset: just what RelabelSession.from_dataset needs."""

    ids: np.ndarray
    labels: np.ndarray
    class_names: list[str] = field(default_factory=lambda: ["ham", "spam", "other"])
    tag: str = "tiny"

    def fingerprint(self) -> str:
        return f"{self.tag}-{self.ids.tolist()}-{self.labels.tolist()}"


def tiny(n: int = 12, tag: str = "tiny") -> TinyDataset:
    return TinyDataset(ids=np.arange(n, dtype=np.int64) * 10 + 1000, labels=np.arange(n, dtype=np.int64) % 3,
                       tag=tag)


def journal_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_decisions_update_labels_removed_and_journal(tmp_path):
    ds = tiny()
    path = tmp_path / "j.jsonl"
    s = RelabelSession.from_dataset(ds, path, flagged=[1000, 1010, 1020])
    header = journal_lines(path)[0]
    assert header["type"] == "header" and header["fingerprint"] == ds.fingerprint()
    assert header["class_names"] == ["ham", "spam", "other"] and header["n"] == 12

    s.relabel(1000, 2)
    s.keep(1010)
    s.remove(1020)
    s.relabel(1030, 1, source="auto")  # any id, not only flagged ones
    expected = ds.labels.copy()
    expected[0], expected[3] = 2, 1
    np.testing.assert_array_equal(s.labels(), expected)
    np.testing.assert_array_equal(s.removed(), [1020])
    np.testing.assert_array_equal(s.kept_mask(), np.arange(12) != 2)
    assert s.reviewed() == 3 and s.progress() == "3 / 3 reviewed"

    entries = journal_lines(path)[1:]
    assert [(e["id"], e["old_label"], e["new_label"], e["action"], e["source"], e["round"]) for e in entries] == [
        (1000, 0, 2, "relabel", "human", 0), (1010, 1, 1, "keep", "human", 0),
        (1020, 2, 2, "remove", "human", 0), (1030, 0, 1, "relabel", "auto", 0)]
    assert all("time" in e for e in entries)

    plan = s.plan()
    assert plan[["id", "old_label", "new_label", "action"]].values.tolist() == [
        [1000, 0, 2, "relabel"], [1020, 2, 2, "remove"], [1030, 0, 1, "relabel"]]
    assert plan["old_class"].tolist() == ["ham", "other", "ham"] and plan["new_class"].tolist()[0] == "other"
    dec = s.decisions()
    assert dec["id"].tolist() == [1000, 1010, 1020, 1030]
    assert dec["action"].tolist() == ["relabel", "keep", "remove", "relabel"]


def test_latest_decision_wins_and_relabel_to_same_label_is_keep(tmp_path):
    s = RelabelSession.from_dataset(tiny(), tmp_path / "j.jsonl")
    s.remove(1000)
    assert not s.kept_mask()[0]
    d = s.relabel(1000, 1)  # relabel brings it back
    assert s.kept_mask()[0] and s.label_of(1000) == 1 and d.action == "relabel"
    d = s.relabel(1000, 1)
    assert d.action == "keep" and s.decision(1000).action == "keep"


def test_undo_restores_previous_state_and_is_journaled(tmp_path):
    ds = tiny()
    path = tmp_path / "j.jsonl"
    s = RelabelSession.from_dataset(ds, path)
    s.relabel(1000, 2)
    s.remove(1000)
    s.relabel(1010, 0)
    assert s.undo().id == 1010
    assert s.label_of(1010) == 1 and s.decision(1010) is None
    assert s.undo().action == "remove"
    assert s.kept_mask()[0] and s.label_of(1000) == 2 and s.decision(1000).action == "relabel"
    s.undo()
    np.testing.assert_array_equal(s.labels(), ds.labels)
    undo_entries = [e for e in journal_lines(path) if e["type"] == "undo"]
    assert [(e["id"], e["undoes"]) for e in undo_entries] == [(1010, 4), (1000, 3), (1000, 2)]
    with pytest.raises(ValueError, match="nothing to undo"):
        s.undo()


def test_replay_reproduces_exact_state_and_cursor(tmp_path):
    ds = tiny(30)
    path = tmp_path / "j.jsonl"
    rng = np.random.default_rng(0)
    flagged = [int(i) for i in rng.permutation(ds.ids)[:10]]
    s = RelabelSession.from_dataset(ds, path, flagged=flagged)
    for _ in range(60):
        i = int(rng.choice(ds.ids))
        r = rng.random()
        if r < 0.5:
            s.relabel(i, int(rng.integers(3)))
        elif r < 0.65:
            s.keep(i)
        elif r < 0.8:
            s.remove(i)
        elif r < 0.9:
            s.next()
        else:
            try:
                s.undo()
            except ValueError:
                pass
    before_last = s.label_of(1000)
    last = s.relabel(1000, (before_last + 1) % 3)
    s.goto(4)
    again = RelabelSession.from_dataset(ds, path, flagged=flagged)
    np.testing.assert_array_equal(again.labels(), s.labels())
    np.testing.assert_array_equal(again.removed(), s.removed())
    assert again.decisions().equals(s.decisions())
    assert again.plan().equals(s.plan())
    assert again.position == 4 and again.current == flagged[4]
    assert again.progress() == s.progress()
    # undo keeps working across the restart, on the same stack (s is now stale: `again` owns the journal)
    assert again.undo() == last
    assert again.label_of(1000) == before_last
    third = RelabelSession.from_dataset(ds, path, flagged=flagged)
    np.testing.assert_array_equal(third.labels(), again.labels())
    assert third.decisions().equals(again.decisions())


def test_original_arrays_are_never_modified(tmp_path):
    ids = np.array([5, 6, 7], dtype=np.int64)
    labels = np.array([0, 1, 0], dtype=np.int64)
    s = RelabelSession(ids, labels, ["a", "b"], tmp_path / "j.jsonl", fingerprint="fp")
    s.relabel(5, 1)
    s.remove(6)
    out = s.labels()
    out[:] = 0  # the returned array is a copy too
    mask = s.kept_mask()
    mask[:] = False
    np.testing.assert_array_equal(labels, [0, 1, 0])
    np.testing.assert_array_equal(ids, [5, 6, 7])
    np.testing.assert_array_equal(s.labels(), [1, 1, 0])
    np.testing.assert_array_equal(s.kept_mask(), [True, False, True])
    np.testing.assert_array_equal(s.original_labels, [0, 1, 0])


def test_bad_input_raises_clear_value_errors(tmp_path):
    s = RelabelSession.from_dataset(tiny(), tmp_path / "j.jsonl", flagged=[1000])
    with pytest.raises(ValueError, match=r"id 3 is not in the dataset.*from 1000 to 1110"):
        s.relabel(3, 1)
    with pytest.raises(ValueError, match=r"label 3 is out of range.*\[0, 3\)"):
        s.relabel(1000, 3)
    with pytest.raises(ValueError, match="source must be one of"):
        s.keep(1000, source="robot")
    with pytest.raises(ValueError, match=r"position 5 is out of range; must be in \[0, 1\)"):
        s.goto(5)
    with pytest.raises(ValueError, match="nothing to undo"):
        s.undo()
    with pytest.raises(ValueError, match="not in the dataset"):
        RelabelSession.from_dataset(tiny(), tmp_path / "k.jsonl", flagged=[1])
    with pytest.raises(ValueError, match="unique"):
        RelabelSession([1, 1], [0, 0], ["a"], tmp_path / "m.jsonl", fingerprint="x")
    assert len(journal_lines(tmp_path / "j.jsonl")) == 1  # nothing bad was written


def test_torn_last_line_warns_and_is_truncated(tmp_path):
    ds = tiny()
    path = tmp_path / "j.jsonl"
    s = RelabelSession.from_dataset(ds, path)
    s.relabel(1000, 2)
    s.remove(1010)
    good = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b'{"type": "decision", "time": "2024-01-01", "id": 10')  # crash mid-write
    with pytest.warns(RuntimeWarning, match="line 4.*cut off"):
        again = RelabelSession.from_dataset(ds, path)
    assert path.read_bytes() == good
    assert again.label_of(1000) == 2 and list(again.removed()) == [1010]
    again.relabel(1020, 0)  # later appends are clean
    assert [e["id"] for e in journal_lines(path)[1:]] == [1000, 1010, 1020]


def test_complete_last_line_without_newline_is_kept(tmp_path):
    ds = tiny()
    path = tmp_path / "j.jsonl"
    RelabelSession.from_dataset(ds, path).relabel(1000, 2)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    again = RelabelSession.from_dataset(ds, path)
    assert again.label_of(1000) == 2
    again.keep(1010)
    assert len(journal_lines(path)) == 3


def test_malformed_middle_line_names_file_and_line(tmp_path):
    ds = tiny()
    path = tmp_path / "j.jsonl"
    s = RelabelSession.from_dataset(ds, path)
    s.relabel(1000, 2)
    s.relabel(1010, 2)
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = '{"type": "decision", "id": 1000, oops\n'
    path.write_text("".join(lines))
    before = path.read_bytes()
    with pytest.raises(JournalError, match=r"j\.jsonl, line 2: not valid JSON"):
        RelabelSession.from_dataset(ds, path)
    assert path.read_bytes() == before  # never "repaired" silently


def test_inconsistent_entry_is_refused(tmp_path):
    ds = tiny()
    path = tmp_path / "j.jsonl"
    RelabelSession.from_dataset(ds, path).relabel(1000, 2)
    lines = journal_lines(path)
    lines[1]["old_label"] = 1  # example 1000 was 0, not 1
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    with pytest.raises(JournalError, match="line 2: old_label 1 of id 1000 does not match"):
        RelabelSession.from_dataset(ds, path)


def test_journal_of_another_dataset_is_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    RelabelSession.from_dataset(tiny(tag="a"), path).relabel(1000, 2)
    before = path.read_bytes()
    with pytest.raises(JournalError, match="belongs to another dataset"):
        RelabelSession.from_dataset(tiny(tag="b"), path)
    assert path.read_bytes() == before


def test_stale_session_cannot_write_after_another_one(tmp_path):
    ds = tiny()
    path = tmp_path / "j.jsonl"
    old = RelabelSession.from_dataset(ds, path)
    new = RelabelSession.from_dataset(ds, path)
    new.relabel(1000, 1)
    with pytest.raises(JournalError, match="changed by someone else"):
        old.relabel(1000, 2)
    assert RelabelSession.from_dataset(ds, path).label_of(1000) == 1


def test_rounds_progress_and_cursor_resume(tmp_path):
    ds = tiny()
    path = tmp_path / "j.jsonl"
    r0 = RelabelSession.from_dataset(ds, path, flagged=[1000, 1010, 1020], round=0)
    assert (r0.position, r0.current) == (0, 1000)
    r0.relabel(1000, 2)
    assert r0.next() == 1 and r0.next() == 2 and r0.next() == 2 and r0.prev() == 1
    r1 = RelabelSession.from_dataset(ds, path, flagged=[1000, 1030], round=1)
    assert r1.label_of(1000) == 2  # earlier rounds are applied
    assert r1.progress() == "0 / 2 reviewed" and r1.position == 0  # round-0 cursor does not leak
    r1.keep(1000)
    assert r1.progress() == "1 / 2 reviewed"
    assert RelabelSession.from_dataset(ds, path, flagged=[1000, 1010, 1020], round=0).position == 1
    assert RelabelSession.from_dataset(ds, path, flagged=[1000, 1030], round=1).position == 1  # first unreviewed


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from gbair_nb.relabel import RelabelSession
    n = 5000
    s = RelabelSession(np.arange(n), np.zeros(n, dtype=np.int64), ["a", "b"], sys.argv[1], fingerprint="fp")
    print("READY", flush=True)
    for i in range(n):
        s.relabel(i, 1) if i % 3 else s.remove(i)
        print("ACK", i, flush=True)
""")


def test_kill_mid_way_keeps_every_acknowledged_decision(tmp_path):
    path = tmp_path / "j.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    acked = []
    try:
        for line in proc.stdout:
            if line.startswith("ACK"):
                acked.append(int(line.split()[1]))
                if len(acked) == 40:
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL and len(acked) == 40
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", RuntimeWarning)  # a torn last line is allowed
        s = RelabelSession(np.arange(5000), np.zeros(5000, dtype=np.int64), ["a", "b"], path, fingerprint="fp")
    removed = set(s.removed().tolist())
    for i in acked:
        assert (i in removed) if i % 3 == 0 else s.label_of(i) == 1, i
    done = len(s.decisions())
    assert 40 <= done < 5000
    assert len(journal_lines(path)) == done + 1  # the file is clean again after recovery

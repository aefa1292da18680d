"""Tests for gbair_nb.relabel: decisions, journal replay, crash recovery, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from helpers import child_env
from filelock import FileLock

import gbair_nb.journal as journal
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


def test_an_undo_is_replayed_when_the_session_is_reopened(tmp_path):
    """The journal's last entries are undos: a reopened session must end where the undoing one did (label, kept,
    effective decision), not where the undone decisions left it."""
    ds = tiny()
    path = tmp_path / "j.jsonl"
    s = RelabelSession.from_dataset(ds, path)
    s.relabel(1000, 2)
    s.remove(1000)
    s.undo()  # takes back the remove: 1000 is kept, relabeled to 2
    again = RelabelSession.from_dataset(ds, path)
    assert again.kept_mask()[0] and again.label_of(1000) == 2 and again.decision(1000).action == "relabel"
    again.undo()  # takes back the relabel: 1000 is as it started
    third = RelabelSession.from_dataset(ds, path)
    np.testing.assert_array_equal(third.labels(), ds.labels)
    assert third.kept_mask().all() and third.decision(1000) is None and len(third.plan()) == 0


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
    env = child_env(OMP_NUM_THREADS="1")
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


# ---------------------------------------------------------------------------------------------- two writers
def lock_path(path: Path) -> Path:
    """The advisory lock file every session takes around its reads and writes of ``path``."""
    return path.with_name(path.name + ".lock")


def test_racing_appends_only_one_is_saved(tmp_path, monkeypatch):
    """A checks the size, B appends in that moment, A appends: before, both were told "saved" and the journal
    could no longer be opened. Now B waits for A's lock, finds the file changed and refuses; A's line is whole."""
    ds = tiny()
    path = tmp_path / "j.jsonl"
    a = RelabelSession.from_dataset(ds, path)
    b = RelabelSession.from_dataset(ds, path)
    b_result: list = []

    def b_decides() -> None:
        try:
            b_result.append(b.relabel(1000, 2))
        except JournalError as err:
            b_result.append(err)

    real_stat = Path.stat
    fired = []

    def stat_then_let_b_in(self, *args, **kwargs):
        st = real_stat(self, *args, **kwargs)
        if self == path and not fired and threading.current_thread() is threading.main_thread():
            fired.append(st.st_size)  # A has just read the size: B tries to append now
            t = threading.Thread(target=b_decides)
            t.start()
            t.join(timeout=1.0)  # B finishes at once when nothing stops it; with the lock it waits for A
            fired.append(t)
        return st

    monkeypatch.setattr(Path, "stat", stat_then_let_b_in)
    a_decision = a.relabel(1000, 1)
    fired[1].join(timeout=30)
    monkeypatch.undo()
    assert fired, "the size check was not reached"
    assert a_decision.new_label == 1
    assert len(b_result) == 1 and isinstance(b_result[0], JournalError), b_result
    assert "changed by someone else" in str(b_result[0])
    again = RelabelSession.from_dataset(ds, path)
    assert again.label_of(1000) == 1
    assert [(e["id"], e["new_label"]) for e in journal_lines(path)[1:]] == [(1000, 1)]


def test_open_waits_for_a_line_being_written(tmp_path):
    """A session opened while another process holds the lock mid-line must wait, not cut the line off as torn."""
    ds = tiny()
    path = tmp_path / "j.jsonl"
    RelabelSession.from_dataset(ds, path).relabel(1000, 2)
    line = (json.dumps({"type": "decision", "time": "2024-01-01T00:00:00.000+00:00", "id": 1010, "old_label": 1,
                        "new_label": 0, "action": "relabel", "source": "human", "round": 0}) + "\n").encode()
    half_written, opened = threading.Event(), threading.Event()

    def writer() -> None:
        with FileLock(str(lock_path(path))):
            with open(path, "ab") as f:
                f.write(line[:20])
                f.flush()
                half_written.set()
                opened.wait(timeout=1.0)  # the opener finishes at once unless the lock holds it back
                f.write(line[20:])
                f.flush()
                os.fsync(f.fileno())

    t = threading.Thread(target=writer)
    t.start()
    assert half_written.wait(timeout=30)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no "cut off" repair may happen
            s = RelabelSession.from_dataset(ds, path)
    finally:
        opened.set()
        t.join(timeout=30)
    assert s.label_of(1000) == 2 and s.label_of(1010) == 0
    assert RelabelSession.from_dataset(ds, path).label_of(1010) == 0


def test_second_creator_replays_the_first_ones_journal(tmp_path, monkeypatch):
    """Two sessions creating one new journal: the one that loses the exclusive create reads the winner's file."""
    ds = tiny()
    winner = tmp_path / "winner.jsonl"
    RelabelSession.from_dataset(ds, winner).relabel(1000, 2)
    real_open = os.open

    def created_first_by_someone_else(path: Path):
        def open_(file, flags, *args, **kwargs):
            if Path(file) == path and flags & os.O_EXCL and not path.exists():
                path.write_bytes(winner.read_bytes())  # the other creator got there in between
            return real_open(file, flags, *args, **kwargs)
        return open_

    path = tmp_path / "j.jsonl"
    monkeypatch.setattr(os, "open", created_first_by_someone_else(path))
    s = RelabelSession.from_dataset(ds, path)
    monkeypatch.undo()
    assert s.label_of(1000) == 2  # the winner's decision survives
    s.relabel(1010, 0)
    assert [e["id"] for e in journal_lines(path)[1:]] == [1000, 1010]
    # a loser whose header differs is refused and leaves the winner's file alone
    other = tmp_path / "k.jsonl"
    monkeypatch.setattr(os, "open", created_first_by_someone_else(other))
    with pytest.raises(JournalError, match="belongs to another dataset"):
        RelabelSession.from_dataset(tiny(tag="b"), other)
    monkeypatch.undo()
    assert other.read_bytes() == winner.read_bytes()


def test_a_lock_held_too_long_is_a_clear_error_and_a_left_lock_file_is_not(tmp_path, monkeypatch):
    ds = tiny()
    path = tmp_path / "j.jsonl"
    RelabelSession.from_dataset(ds, path).relabel(1000, 2)
    assert lock_path(path).exists()  # stays behind, by design: only a held lock stops anyone
    assert RelabelSession.from_dataset(ds, path).label_of(1000) == 2
    monkeypatch.setattr(journal, "LOCK_TIMEOUT_S", 0.2)
    with FileLock(str(lock_path(path))):  # a stuck process holding it
        with pytest.raises(JournalError, match=r"locked by another session for 0.2 s \(lock file .*j\.jsonl\.lock\)"):
            RelabelSession.from_dataset(ds, path)


def test_failed_append_leaves_nothing_behind(tmp_path, monkeypatch):
    """A write that fails half-way (disk full, an interrupt) is cut off again: not saved, session still usable."""
    ds = tiny()
    path = tmp_path / "j.jsonl"
    s = RelabelSession.from_dataset(ds, path)
    s.relabel(1000, 2)
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        s.relabel(1010, 0)
    monkeypatch.undo()
    assert path.read_bytes() == before and s.label_of(1010) == 1
    s.relabel(1010, 2)  # the session is not stale: its failed decision never reached the file
    assert [(e["id"], e["new_label"]) for e in journal_lines(path)[1:]] == [(1000, 2), (1010, 2)]


# ---------------------------------------------------------------------------------------------- smaller cases
@pytest.mark.parametrize("edit", ["trailing", "middle", "spaces"])
def test_blank_lines_are_accepted(tmp_path, edit):
    ds = tiny()
    path = tmp_path / "j.jsonl"
    s = RelabelSession.from_dataset(ds, path)
    s.relabel(1000, 2)
    s.remove(1010)
    lines = path.read_text().splitlines(keepends=True)
    if edit == "trailing":
        lines.append("\n")
    elif edit == "middle":
        lines.insert(2, "\n")
    else:
        lines.insert(1, "   \n")
        lines.append(" \n\n")
    path.write_text("".join(lines))
    again = RelabelSession.from_dataset(ds, path)
    assert again.label_of(1000) == 2 and list(again.removed()) == [1010]
    again.relabel(1020, 0)
    again.undo()  # the undo names the right (physical) line
    again.relabel(1030, 2)
    third = RelabelSession.from_dataset(ds, path)
    assert third.label_of(1020) == 2 and third.label_of(1030) == 2
    undo = [e for e in journal_lines_nonblank(path) if e["type"] == "undo"][0]
    decided = path.read_text().splitlines()[undo["undoes"] - 1]
    assert json.loads(decided)["id"] == 1020


def journal_lines_nonblank(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_class_names_differing_only_in_unicode_normalisation_are_the_same(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    ids, labels = np.arange(4), np.array([0, 1, 0, 1])
    path = tmp_path / "j.jsonl"
    RelabelSession(ids, labels, ["tea", nfd], path, fingerprint="fp").relabel(0, 1)
    s = RelabelSession(ids, labels, ["tea", nfc], path, fingerprint="fp")  # the same CSV, saved by another tool
    assert s.label_of(0) == 1
    s.relabel(1, 0)
    assert RelabelSession(ids, labels, ["tea", nfd], path, fingerprint="fp").label_of(1) == 0
    # names that only look alike (Cyrillic "а" for Latin "a") are still refused, and the message spells them out
    with pytest.raises(JournalError, match=r"class 0: 'tea' in the journal, 'te\\u0430' in this session"):
        RelabelSession(ids, labels, ["te\u0430", nfc], path, fingerprint="fp")
    with pytest.raises(JournalError) as err:
        RelabelSession(ids, labels, ["tea", "cafe"], path, fingerprint="fp")
    message = unicodedata.normalize("NFC", str(err.value))
    assert "classes ['tea', 'café'] and n=4, but this session has classes ['tea', 'cafe']" in message
    assert "class 1: 'caf\\xe9' in the journal, 'cafe' in this session" in message


def test_unwritable_class_name_leaves_no_file(tmp_path):
    path = tmp_path / "new" / "j.jsonl"
    with pytest.raises(ValueError, match=r"class name '\\ud800' \(class 1\) cannot be written"):
        RelabelSession(np.arange(3), np.zeros(3, dtype=np.int64), ["ok", "\ud800"], path, fingerprint="fp")
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="fingerprint"):
        RelabelSession(np.arange(3), np.zeros(3, dtype=np.int64), ["ok"], tmp_path / "k.jsonl",
                       fingerprint="\udcff")
    assert list(tmp_path.iterdir()) == []


def test_undo_only_undoes_decisions_of_the_sessions_own_round(tmp_path):
    ds = tiny()
    path = tmp_path / "j.jsonl"
    r0 = RelabelSession.from_dataset(ds, path, round=0)
    r0.relabel(1000, 2)
    r1 = RelabelSession.from_dataset(ds, path, round=1)
    with pytest.raises(ValueError, match=r"round 0.*this session is round 1.*id 1000"):
        r1.undo()
    assert r1.label_of(1000) == 2 and len(journal_lines(path)) == 2  # nothing written
    r1.relabel(1000, 0)  # changing an earlier round's decision: a new decision in this round
    assert r1.undo().round == 1 and r1.label_of(1000) == 2
    with pytest.raises(ValueError, match="round 0"):
        r1.undo()
    r0_again = RelabelSession.from_dataset(ds, path, round=0)
    assert r0_again.undo().id == 1000 and r0_again.label_of(1000) == 0  # its own round: allowed

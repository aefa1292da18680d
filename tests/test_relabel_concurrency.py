"""Many processes on one relabel journal at once, killed at random moments: no acknowledged decision is lost and the
journal always opens. Plain-Python workers (numpy, pandas, filelock; no torch), bounded by a deadline (~20 s)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from helpers import child_env

from gbair_nb.relabel import RelabelSession

ROOT = Path(__file__).resolve().parents[1]
N_IDS = 24  # few examples, decided by every worker: their appends collide all the time
WORKERS = 4  # alive at once
DECISIONS = 80  # per worker, at most
TARGET = 400  # acknowledged decisions in all; the test stops at this or at the deadline
DEADLINE_S = 20.0

# One worker: opens the journal as round `slot` (so its decisions can be told apart), decides about random shared
# examples, and after each call returns appends the decision to its own ack file. A decision refused because another
# worker wrote first is retried on a freshly opened session (that is what a person does: reload and decide again).
WORKER = textwrap.dedent(f"""
    import random, sys, warnings
    import numpy as np
    from gbair_nb.relabel import JournalError, RelabelSession

    path, slot, ack_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    warnings.simplefilter("ignore", RuntimeWarning)  # a line torn by a killed worker is repaired with a warning
    rng = random.Random(slot)

    # Widen the windows a busy machine opens only now and then, so that a missing lock shows in every run: a pause
    # right after the journal's size is read, and each append written in two pieces with a pause between them.
    import builtins, pathlib, time
    _stat, _open = pathlib.Path.stat, builtins.open

    def paused_stat(self, *args, **kwargs):
        st = _stat(self, *args, **kwargs)
        if str(self) == path:
            time.sleep(rng.random() * 0.003)
        return st

    class TwoPieces:
        def __init__(self, f):
            self.f = f
        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            time.sleep(rng.random() * 0.003)
            self.f.write(data[len(data) // 2:])
            return len(data)
        def __getattr__(self, name):
            return getattr(self.f, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    def two_piece_open(file, mode="r", *args, **kwargs):
        f = _open(file, mode, *args, **kwargs)
        return TwoPieces(f) if str(file) == path and "a" in mode else f

    pathlib.Path.stat, builtins.open = paused_stat, two_piece_open

    def open_session():
        return RelabelSession(np.arange({N_IDS}), np.zeros({N_IDS}, dtype=np.int64), ["a", "b", "c"], path,
                              fingerprint="fp", round=slot)

    s = open_session()
    with open(ack_path, "a") as ack:
        for _ in range({DECISIONS}):
            i = rng.randrange({N_IDS})
            while True:
                try:
                    r = rng.random()
                    if r < 0.6:
                        d = s.relabel(i, (s.label_of(i) + 1) % 3)
                    elif r < 0.8:
                        d = s.keep(i)
                    else:
                        d = s.remove(i)
                    break
                except JournalError as err:
                    if "changed by someone else" not in str(err):
                        raise
                    s = open_session()
            ack.write(f"{{d.id}} {{d.old_label}} {{d.new_label}} {{d.action}}\\n")
            ack.flush()
            if rng.random() < 0.2:
                s = open_session()  # opening while others write (and repair what killed ones left)
""")


def complete_lines(path: Path) -> list[str]:
    """The lines of a file that were written whole (a worker killed mid-line leaves a partial last one)."""
    if not path.exists():
        return []
    return path.read_text().split("\n")[:-1]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_concurrent_writers_and_random_kills_lose_no_acknowledged_decision(tmp_path):
    path = tmp_path / "j.jsonl"
    env = child_env(OMP_NUM_THREADS="1")
    rng = random.Random(0)
    procs: dict[int, tuple[subprocess.Popen, Path]] = {}
    kill_after: dict[int, int] = {}  # each worker is killed once it has acknowledged this many decisions
    killed: set[int] = set()
    slot = 0

    def spawn() -> None:
        nonlocal slot
        slot += 1
        ack = tmp_path / f"ack{slot}.txt"
        with open(tmp_path / f"err{slot}.txt", "w") as err:
            p = subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(slot), str(ack)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=err)
        procs[slot] = (p, ack)
        kill_after[slot] = rng.randint(1, DECISIONS)

    def n_acked() -> int:
        return sum(len(complete_lines(ack)) for _, ack in procs.values())

    start = time.monotonic()
    try:
        while time.monotonic() - start < DEADLINE_S and n_acked() < TARGET:
            alive = [w for w, (p, _) in procs.items() if p.poll() is None]
            for _ in range(WORKERS - len(alive)):
                spawn()
            time.sleep(rng.uniform(0.01, 0.1))  # the worker goes on meanwhile: the kill lands anywhere in its loop
            for w in alive:
                if len(complete_lines(procs[w][1])) >= kill_after[w] and procs[w][0].poll() is None:
                    procs[w][0].kill()
                    killed.add(w)
    finally:
        for w, (p, _) in procs.items():
            if p.poll() is None:
                p.kill()
                killed.add(w)
            p.wait(timeout=30)
    elapsed = time.monotonic() - start

    for w, (p, _) in procs.items():  # every open and every append worked (or the worker was killed)
        assert p.returncode == 0 or (w in killed and p.returncode == -signal.SIGKILL), \
            f"worker {w} exited with {p.returncode}:\n{(tmp_path / f'err{w}.txt').read_text()}"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the last kill may have torn the last line
        RelabelSession(np.arange(N_IDS), np.zeros(N_IDS, dtype=np.int64), ["a", "b", "c"], path,
                       fingerprint="fp")  # the journal opens (the replay checks every old_label)
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert [e["type"] for e in entries].count("header") == 1
    acked_total = 0
    for w, (p, ack) in procs.items():
        acked = [tuple(line.split()) for line in complete_lines(ack)]
        journaled = [(str(e["id"]), str(e["old_label"]), str(e["new_label"]), e["action"])
                     for e in entries if e["type"] == "decision" and e["round"] == w]
        # every acknowledged decision is there, in order; at most one more (saved, then killed before the ack)
        assert journaled[: len(acked)] == acked, f"worker {w} lost an acknowledged decision"
        assert len(journaled) - len(acked) in ((0, 1) if w in killed else (0,)), f"worker {w}"
        acked_total += len(acked)
    assert acked_total >= 40, (acked_total, elapsed)  # hundreds on 2 shared cores; 40 is a floor, not a goal
    print(f"{acked_total} acknowledged decisions by {len(procs)} workers ({len(killed)} killed) in {elapsed:.1f} s")

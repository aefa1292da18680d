"""gbair_nb.cache: a training is reused only when data, labels, settings and code are the same, and a reused run
gives the main job the same report as a fresh one."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_recovery import TINY, toy_scenario  # noqa: E402

from gbair_nb import cache  # noqa: E402
from gbair_nb.pet import trainable_state  # noqa: E402


def _state(run):
    return {k: v.detach().numpy().copy() for k, v in trainable_state(run.model).items()}


def test_second_call_reuses_the_training_and_a_changed_input_retrains(tmp_path):
    sc = toy_scenario()
    first, hit1 = cache.cached_train(sc.train, TINY, cache=tmp_path)
    again, hit2 = cache.cached_train(sc.train, TINY, cache=tmp_path)
    assert (hit1, hit2) == (False, True)
    a, b = _state(first), _state(again)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)  # the same tensors, bit for bit
    assert len(list(tmp_path.iterdir())) == 1

    labels = sc.train.labels.copy()
    labels[0] = 1 - labels[0]                                  # one label changed
    _, hit_labels = cache.cached_train(sc.train.with_labels(labels), TINY, cache=tmp_path)
    _, hit_config = cache.cached_train(sc.train, replace(TINY, lr=2e-2), cache=tmp_path)  # one setting changed
    _, hit_judged = cache.cached_train(sc.train, TINY, judged_on=[sc.splits.test], cache=tmp_path)
    assert (hit_labels, hit_config, hit_judged) == (False, False, False)
    assert len(list(tmp_path.iterdir())) == 4


def test_changed_code_changes_the_key(monkeypatch):
    sc = toy_scenario()
    key = cache.run_fingerprint(sc.train, TINY)
    monkeypatch.setattr(cache, "code_version", lambda: "another version")
    assert cache.run_fingerprint(sc.train, TINY) != key


def test_a_damaged_entry_is_trained_again_never_trusted(tmp_path, caplog):
    sc = toy_scenario()
    cache.cached_train(sc.train, TINY, cache=tmp_path)
    (folder,) = tmp_path.iterdir()
    ckpt = next((folder / "checkpoints").glob("*.safetensors"))
    ckpt.write_bytes(ckpt.read_bytes()[:100])                # truncated
    with caplog.at_level("WARNING", logger="gbair_nb.cache"):
        run, hit = cache.cached_train(sc.train, TINY, cache=tmp_path)
    assert hit is False and "cannot be used" in caplog.text
    assert cache.cached_train(sc.train, TINY, cache=tmp_path)[1] is True   # the retrained entry is whole again


def test_a_cached_main_job_writes_the_same_report(tmp_path):
    from gbair_nb.report import run_recovery

    sc = toy_scenario()
    kw = dict(scorers=["gbair", "random"], k=4, rounds=1, config=TINY, seed=0, verbose=False, cache=tmp_path)
    fresh = run_recovery(sc, **kw)
    reused = run_recovery(sc, **kw)

    def numbers(rep):
        drop = {"seconds", "cached"}
        return json.loads(json.dumps(rep, default=str), object_hook=lambda d: {k: v for k, v in d.items()
                                                                             if k not in drop})

    assert fresh["cached"] == {"clean": False, "round0": False} and reused["cached"] == {"clean": True, "round0": True}
    assert numbers(fresh) == numbers(reused)
    assert len(list(tmp_path.iterdir())) == 2  # the clean reference and round 0, nothing else


def _entry(root: Path, name: str, *, code: str | None, complete: bool = True, age_s: float = 3600) -> Path:
    """A fake cache entry of 1,000 bytes whose files last changed ``age_s`` seconds ago."""
    import os
    import time

    folder = root / name
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "ckpt_00.safetensors").write_bytes(b"x" * 1000)
    if complete:
        (folder / "run.json").write_text("{}")
    if code is not None:
        (folder / cache.MARK).write_text(json.dumps({"code": code}))
    then = time.time() - age_s
    for f in [folder, *folder.rglob("*")]:
        os.utime(f, (then, then))
    return folder


def test_prune_removes_only_what_this_code_can_never_reuse(tmp_path):
    sc = toy_scenario()
    cache.cached_train(sc.train, TINY, cache=tmp_path)   # a real entry: it records the code version that wrote it
    (real,) = tmp_path.iterdir()
    assert json.loads((real / cache.MARK).read_text())["code"] == cache.code_version()
    old = _entry(tmp_path, "a" * 24, code="0" * 16)                  # another code version
    legacy = _entry(tmp_path, "b" * 24, code=None)                   # written before entries recorded their code
    broken = _entry(tmp_path, "c" * 24, code=cache.code_version(), complete=False)  # no run.json
    busy = _entry(tmp_path, "d" * 24, code="0" * 16, age_s=5)       # stale, but changed seconds ago
    mine = _entry(tmp_path, "notes", code=None)                      # not a cache entry's name: never touched
    entries = {e.path.name: e for e in cache.cache_entries(tmp_path)}
    assert set(entries) == {real.name, old.name, legacy.name, broken.name, busy.name}
    assert [n for n, e in entries.items() if e.reusable()] == [real.name]
    assert entries[old.name].bytes == 1000 + len("{}") + len(json.dumps({"code": "0" * 16}))  # every file counted

    removed, recent = cache.prune_cache(root=tmp_path, dry_run=True)
    assert {e.path for e in removed} == {old, legacy, broken} and [e.path for e in recent] == [busy]
    assert all(p.exists() for p in (old, legacy, broken))            # a dry run removes nothing
    cache.prune_cache(root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([real.name, busy.name, mine.name])
    assert cache.cached_train(sc.train, TINY, cache=tmp_path)[1] is True  # the reusable entry still loads
    removed, recent = cache.prune_cache(root=tmp_path, everything=True)  # the real entry was written seconds ago
    assert removed == [] and {e.path for e in recent} == {real, busy}
    import os

    for f in [real, *real.rglob("*")]:
        os.utime(f, (0, 0))  # long ago
    removed, recent = cache.prune_cache(root=tmp_path, everything=True)
    assert [e.path for e in removed] == [real] and [e.path for e in recent] == [busy] and mine.exists()


def test_cache_command_reports_and_prunes(tmp_path, monkeypatch, capsys):
    from gbair_nb.cli import main

    monkeypatch.setenv("GBAIR_CACHE_DIR", str(tmp_path))
    _entry(tmp_path / "runs", "a" * 24, code="0" * 16)
    _entry(tmp_path / "runs", "b" * 24, code=cache.code_version())
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "2 cached trainings" in out and "1 reusable by this gbair_nb" in out and "1 from other code" in out
    assert main(["cache", "--prune"]) == 0
    assert "removed 1 entries" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["b" * 24]
    assert main(["cache", "--dry-run"]) == 2                            # one clear error, nothing changed
    assert "error: --dry-run goes with --prune or --clear" in capsys.readouterr().err
    assert main(["cache", "--clear"]) == 0 and not list((tmp_path / "runs").iterdir())


def test_cache_prune_walks_the_folder_once_and_removes_what_it_listed(tmp_path, monkeypatch, capsys):
    from gbair_nb.cli import main

    monkeypatch.setenv("GBAIR_CACHE_DIR", str(tmp_path))
    _entry(tmp_path / "runs", "a" * 24, code="0" * 16)
    walks = []
    real = cache.cache_entries
    monkeypatch.setattr(cache, "cache_entries", lambda *a, **k: walks.append(a) or real(*a, **k))
    assert main(["cache", "--prune"]) == 0
    assert len(walks) == 1 and "removed 1 entries" in capsys.readouterr().out
    assert not list((tmp_path / "runs").iterdir())

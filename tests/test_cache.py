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

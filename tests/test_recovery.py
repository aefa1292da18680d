"""Tests for gbair_nb.recovery: loop invariants, scorers on planted cases, detection metrics by hand."""
from __future__ import annotations

import numpy as np
import pytest

from gbair_nb.data import TextDataset, corrupt, split
from gbair_nb.recovery import gbair
from gbair_nb.metrics import detection_metrics, recovered_fraction
from gbair_nb.scorers import SCORERS, ScoreContext
from gbair_nb.loop import Recovery, default_k
from gbair_nb.scenarios import Scenario, make_scenario
from gbair_nb.train import TrainConfig

TINY = TrainConfig(backbone="tiny", epochs=1, batch_size=16, max_length=16, lr=1e-2, lr_head=1e-2,
                   method_options={"num_virtual_tokens": 4, "init_text": None})


def toy_dataset(n_per_class: int = 40, seed: int = 0) -> TextDataset:
    rng = np.random.default_rng(seed)
    good = ["great", "lovely", "superb", "nice", "happy"]
    bad = ["awful", "terrible", "horrid", "nasty", "sad"]
    texts, labels = [], []
    for c, words in enumerate([good, bad]):
        for i in range(n_per_class):
            texts.append(" ".join(rng.choice(words, size=4)) + f" {i}")
            labels.append(c)
    return TextDataset(np.arange(len(texts)), texts, labels, ["pos", "neg"], "toy")


def toy_scenario(p: float = 0.3, seed: int = 0) -> Scenario:
    ds = toy_dataset()
    s = split(ds, n_train=40, n_val=20, n_test=20, seed=seed)
    c = corrupt(s.train.labels, p=p, mode="uniform", seed=seed)
    return Scenario("toy", s, c)


# ------------------------------------------------------------------------------------------- detection metrics
def test_detection_metrics_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    truth = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1], dtype=bool)
    m = detection_metrics(scores, truth, k=2, inspect=(0.1, 0.3))
    # ranks of positives: 1, 3, 10 of 10 → AUROC = pairs (pos above neg) / (3 * 7)
    # pos at 0.9 beats 7 negs, pos at 0.7 beats 6, pos at 0.0 beats 0 → 13/21
    assert m["auroc"] == pytest.approx(13 / 21)
    # average precision: precision at each positive = 1/1, 2/3, 3/10 → mean
    assert m["auprc"] == pytest.approx((1 + 2 / 3 + 3 / 10) / 3)
    assert m["recall@10%"] == pytest.approx(1 / 3)  # top 1 of 10
    assert m["recall@30%"] == pytest.approx(2 / 3)  # top 3
    assert m["precision@k"] == pytest.approx(0.5)  # top 2: one corrupted
    assert m["n_corrupted"] == 3


def test_detection_metrics_default_k_is_number_corrupted():
    truth = np.array([0, 1, 1, 0], dtype=bool)
    m = detection_metrics(np.array([0.1, 0.9, 0.8, 0.2]), truth)
    assert m["k"] == 2 and m["precision@k"] == 1.0 and m["auroc"] == 1.0


def test_detection_metrics_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="same shape"):
        detection_metrics(np.zeros(3), np.zeros(4, dtype=bool))


def test_recovered_fraction_closed_form():
    assert recovered_fraction(0.9, 0.5, 1.0) == pytest.approx(0.8)
    assert recovered_fraction(0.4, 0.5, 1.0) == pytest.approx(-0.2)
    assert np.isnan(recovered_fraction(0.5, 0.5, 0.5))


def test_default_k_scales_with_training_set():
    assert default_k(400) == 16 and default_k(50) == 5 and default_k(2000) == 80


# --------------------------------------------------------------------------- probability scorers, planted
class FakeRun:
    """Stands in for a Run: fixed probabilities per checkpoint, so the right answer is known."""

    def __init__(self, probs_by_ckpt):
        self.probs_by_ckpt = probs_by_ckpt
        self.checkpoints = list(range(len(probs_by_ckpt)))
        self.current = len(probs_by_ckpt) - 1

    def load_checkpoint(self, i=-1):
        self.current = self.checkpoints[i]

    def predict_proba(self, texts):
        return self.probs_by_ckpt[self.current]


def planted_context(first, last, labels):
    ds = TextDataset(np.arange(len(labels)), [f"t{i}" for i in range(len(labels))], labels, ["a", "b"], "p")
    return ScoreContext(FakeRun([np.array(first), np.array(last)]), ds, ds, TINY)


def test_loss_margin_el2n_on_planted_probabilities():
    labels = np.array([0, 0, 1, 1])
    last = [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]]  # examples 1 and 3 disagree with their label
    first = [[0.6, 0.4], [0.5, 0.5], [0.1, 0.9], [0.5, 0.5]]
    ctx = planted_context(first, last, labels)
    loss = SCORERS["loss"](ctx)
    np.testing.assert_allclose(loss, -np.log([0.9, 0.2, 0.7, 0.4]))
    margin = SCORERS["margin"](ctx)
    np.testing.assert_allclose(margin, [0.1 - 0.9, 0.8 - 0.2, 0.3 - 0.7, 0.6 - 0.4])
    assert set(np.argsort(-margin)[:2]) == {1, 3}
    el2n = SCORERS["el2n"](ctx)  # uses the FIRST checkpoint
    expected = np.linalg.norm(np.array(first) - np.eye(2)[labels], axis=1)
    np.testing.assert_allclose(el2n, expected)


def test_random_scorer_is_seeded_and_uniformish():
    ctx = planted_context([[0.5, 0.5]] * 200, [[0.5, 0.5]] * 200, np.zeros(200, dtype=int) + np.arange(200) % 2)
    a, b = SCORERS["random"](ctx), SCORERS["random"](ctx)
    np.testing.assert_array_equal(a, b)
    assert 0.4 < a.mean() < 0.6


# ----------------------------------------------------------------------------------------- loop invariants
def _count_flag_occurrences(rec: Recovery) -> dict:
    seen: dict = {}
    for r in rec.rounds:
        for i in r.flagged_ids:
            seen[i] = seen.get(i, 0) + 1
    return seen


def test_loop_invariants_flip():
    sc = toy_scenario()
    truth, noisy = sc.corruption.labels, sc.corruption.noisy_labels
    noisy_before = noisy.copy()
    rec = gbair(sc, scorer="margin", k=5, rounds=3, fix="flip", config=TINY, patience=10, clean=False,
                verbose=False)
    # the scenario is never changed
    np.testing.assert_array_equal(sc.corruption.noisy_labels, noisy_before)
    # a flagged id is never flagged twice
    assert all(v == 1 for v in _count_flag_occurrences(rec).values())
    # per round at most k flagged; precision is the fraction of flagged that were wrong
    flagged_all = [i for r in rec.rounds for i in r.flagged_ids]
    assert len(flagged_all) == sum(len(r.flagged_ids) for r in rec.rounds) <= 5 * 3
    pos = sc.splits.train.positions(flagged_all)
    assert len(rec.history) == len(rec.rounds)
    # flip on a known-corrupted (binary) example restores its true label; on a clean one corrupts it
    last_labels, _ = rec.history[-1]
    np.testing.assert_array_equal(last_labels[pos], 1 - noisy[pos])
    corrupted_flagged = pos[noisy[pos] != truth[pos]]
    np.testing.assert_array_equal(last_labels[corrupted_flagged], truth[corrupted_flagged])
    # labels of unflagged examples never change, in any round
    untouched = np.setdiff1d(np.arange(len(noisy)), pos)
    for labels, kept in rec.history:
        np.testing.assert_array_equal(labels[untouched], noisy[untouched])
        assert kept.all()
    # the final labels are those of the best-validation round
    np.testing.assert_array_equal(rec.labels, rec.history[[r.round for r in rec.rounds].index(rec.final_round)][0])
    for r in rec.rounds[1:]:
        p = sc.splits.train.positions(r.flagged_ids)
        assert r.flagged_precision == pytest.approx(np.mean(noisy[p] != truth[p]))


def test_remove_drops_exactly_the_flagged():
    sc = toy_scenario()
    rec = gbair(sc, scorer="loss", k=4, rounds=1, fix="remove", config=TINY, patience=10, clean=False,
                verbose=False)
    flagged = rec.rounds[1].flagged_ids
    assert len(flagged) == 4
    pos = sc.splits.train.positions(flagged)
    labels1, kept1 = rec.history[1]
    assert set(np.flatnonzero(~kept1)) == set(pos.tolist())
    assert rec.rounds[1].n_removed == 4
    np.testing.assert_array_equal(rec.labels, sc.corruption.noisy_labels)  # remove never relabels


def test_callback_fixer_sees_flagged_and_can_keep():
    sc = toy_scenario()
    seen = []

    def person(positions, labels, ctx):
        seen.append(list(positions))
        return {p: ("keep", None) for p in positions}

    rec = gbair(sc, scorer="random", k=3, rounds=2, fix=person, config=TINY, patience=10, clean=False,
                verbose=False)
    assert [len(s) for s in seen] == [3, 3]
    np.testing.assert_array_equal(rec.labels, sc.corruption.noisy_labels)
    assert rec.rounds[-1].wrong_labels_remaining == sc.corruption.n_corrupted


def test_bad_arguments_are_clear():
    sc = toy_scenario()
    with pytest.raises(ValueError, match="unknown scorer"):
        gbair(sc, scorer="nope", config=TINY, clean=False, verbose=False)
    with pytest.raises(ValueError, match="k must be"):
        gbair(sc, k=0, config=TINY, clean=False, verbose=False)
    with pytest.raises(ValueError, match="unknown fix"):
        gbair(sc, fix="burn", config=TINY, clean=False, verbose=False)


def test_make_scenario_class_conditional_default():
    sc = make_scenario("sms_spam", n_train=400, n_val=200, n_test=500, seed=0)
    assert sc.corruption.n_corrupted == 26  # half of the 53 spam in 400
    assert (sc.corruption.noisy_labels[sc.corruption.is_corrupted] == 0).all()
    assert (sc.train.labels == sc.corruption.noisy_labels).all()
    assert (sc.splits.train.labels == sc.corruption.labels).all()
    from gbair_nb.scenarios import SCENARIOS

    default = make_scenario(**SCENARIOS["sms_spam"], seed=0)  # the main job's: 70% of the spam labelled ham
    assert default.corruption.n_corrupted == round(0.7 * 53) == 37


def test_two_detector_tables_with_the_same_scorers_can_be_combined():
    """Notebook 05 (full mode) puts two scenarios' tables side by side with ``pd.concat``. With the raw scores kept
    in ``attrs`` as a plain dict of arrays under the same keys, pandas' attrs check raised "truth value of an array
    ... is ambiguous"; quick mode never saw it because its two tables had different scorers."""
    import pandas as pd

    from gbair_nb.recovery import DetectorScores, compare_detectors

    with pytest.raises(ValueError, match="ambiguous"):  # what a plain dict does: the bug this guards against
        a, b = pd.DataFrame({"x": [1]}), pd.DataFrame({"x": [2]})
        a.attrs["scores"], b.attrs["scores"] = {"loss": np.zeros(3)}, {"loss": np.ones(3)}
        pd.concat({"a": a, "b": b}, axis=1)
    scorers = ["loss", "random"]
    tables = [compare_detectors(toy_scenario(seed=s), scorers=scorers, config=TINY, seed=s, verbose=False)
              for s in (0, 1)]
    assert all(isinstance(t.attrs["scores"], DetectorScores) for t in tables)
    both = pd.concat({f"seed {s}": t.set_index("scorer")[["auroc", "precision@k"]] for s, t in enumerate(tables)},
                     axis=1)
    assert both.shape == (2, 4) and list(both.index) == scorers
    assert both[("seed 1", "auroc")].tolist() == tables[1]["auroc"].tolist()
    assert "scores" not in both.attrs  # two runs' scores are not one table's
    s0 = tables[0].attrs["scores"]  # still a mapping of arrays the plots can read
    assert set(s0) == set(scorers) and all(len(v) == len(toy_scenario().train) for v in s0.values())
    assert s0 == s0 and s0 != DetectorScores(s0)  # identity, not content

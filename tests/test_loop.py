"""gbair_nb.loop: the loop's state and its stopping rule, on planted inputs (no training: milliseconds)."""
from __future__ import annotations

import numpy as np
import pytest

from gbair_nb.data import Corruption, TextDataset, corrupt, split
from gbair_nb.loop import LoopState, RoundRecord, StoppingRule
import sys
from pathlib import Path

from gbair_nb.scenarios import Scenario

sys.path.insert(0, str(Path(__file__).resolve().parent))


def records(val_f1, mistakes=None):
    mistakes = mistakes or [5] * len(val_f1)
    return [RoundRecord(round=r, val_accuracy=0.0, val_macro_f1=f, test_accuracy=0.0, test_macro_f1=0.0,
                        n_val_mistakes=m) for r, (f, m) in enumerate(zip(val_f1, mistakes))]


def run_rule(rule, val_f1, mistakes=None):
    """Feed the records one round at a time, as the loop does: (rounds trained, why it stopped, kept round)."""
    recs = records(val_f1, mistakes)
    for r in range(len(recs)):
        why = rule.decide(recs[:r + 1])
        if why is not None:
            return r, why, rule.kept_round(recs[:r + 1])
    return len(recs) - 1, None, rule.kept_round(recs)


@pytest.mark.parametrize("patience, expected", [
    (1, (2, "no validation gain", 1)),  # round 2 is no better than round 1: stop, roll back to 1
    (2, (3, "no validation gain", 1)),  # two rounds without gain (2, 3): stop at 3, keep 1
    (3, (5, "rounds", 5)),  # never three rounds without gain; round 5 is the new best, and the last
])
def test_patience_bound_is_reached_and_the_best_round_is_kept(patience, expected):
    val_f1 = [0.50, 0.70, 0.69, 0.68, 0.71, 0.72]
    assert run_rule(StoppingRule(patience=patience, rounds=5), val_f1) == expected


@pytest.mark.parametrize("patience", [1, 2, 3])
@pytest.mark.parametrize("val_f1", [[0.50, 0.70, 0.69, 0.68, 0.71, 0.72], [0.5, 0.6, 0.7, 0.8], [0.5, 0.4]])
def test_replay_stops_where_the_loop_fed_one_round_at_a_time_stops(patience, val_f1):
    rule = StoppingRule(patience=patience, rounds=10)  # 10 rounds: the records end before the bound
    stop, why, kept = run_rule(rule, val_f1)
    assert rule.replay(records(val_f1)) == ((stop, why) if why is not None else None)


def test_kept_round_is_by_validation_never_by_test():
    recs = records([0.5, 0.8, 0.7])
    for r, test in zip(recs, [0.4, 0.6, 0.9]):  # test F1 best in round 2: must not matter
        r.test_macro_f1 = test
    assert StoppingRule(patience=5).kept_round(recs) == 1


def test_ties_keep_the_earliest_round():
    assert StoppingRule().kept_round(records([0.5, 0.7, 0.7 + 1e-12, 0.7])) == 1
    assert run_rule(StoppingRule(patience=1, rounds=5), [0.5, 0.7, 0.7]) == (2, "no validation gain", 1)


def test_round_zero_never_stops_for_gain_and_no_mistakes_stops():
    assert StoppingRule(patience=1).decide(records([0.9])) is None
    assert run_rule(StoppingRule(patience=1, rounds=5), [0.5, 0.6, 0.7], mistakes=[9, 4, 0]) == (
        2, "no validation mistakes", 2)
    assert StoppingRule(rounds=0).decide(records([0.5])) == "rounds"


def test_rule_refuses_nonsense():
    with pytest.raises(ValueError, match="patience"):
        StoppingRule(patience=0)


# ------------------------------------------------------------------------------------------------- LoopState
def scenario(n=12):
    texts = [f"text {i}" for i in range(n)]
    ds = TextDataset(np.arange(100, 100 + n), texts, np.arange(n) % 2, ["a", "b"], "planted")
    s = split(ds, n_train=n - 4, n_val=2, n_test=2, seed=0)
    return Scenario("planted", s, corrupt(s.train.labels, p=0.25, mode="uniform", seed=1))


def metrics(f1=0.5):
    return {"val_accuracy": f1, "val_macro_f1": f1, "test_accuracy": f1, "test_macro_f1": f1, "n_val_mistakes": 1}


def flip(positions, labels, ctx):
    return {p: ("relabel", 1 - int(labels[p])) for p in positions}


def test_flag_apply_record_on_planted_scores():
    sc = scenario()
    wrong = np.flatnonzero(sc.corruption.is_corrupted)
    assert len(wrong) == 2
    state = LoopState(sc, k=3)
    state.record(metrics())
    scores = np.zeros(len(sc.splits.train))
    scores[wrong] = [5.0, 4.0]
    clean_one = np.flatnonzero(~sc.corruption.is_corrupted)[0]
    scores[clean_one] = 3.0
    flagged = state.flag(scores)
    assert flagged == [int(wrong[0]), int(wrong[1]), int(clean_one)]
    out = state.apply(flagged, flip, ctx=None)
    assert out.precision == pytest.approx(2 / 3) and out.fixed == 2
    assert out.ids == [int(i) for i in sc.splits.train.ids[flagged]]
    rec = state.record(metrics(0.6))
    assert (rec.round, rec.flagged_ids, rec.n_fixed_correctly, rec.wrong_labels_remaining) == (1, out.ids, 2, 1)
    assert rec.flagged_precision == pytest.approx(np.mean(sc.corruption.is_corrupted[flagged]))
    # reviewed examples are never flagged again, whatever their score
    again = state.flag(scores)
    assert not set(again) & set(flagged) and len(again) == 3
    # the scenario is untouched; history holds what each round trained on
    np.testing.assert_array_equal(state.history[0][0], sc.corruption.noisy_labels)
    assert (state.history[1][0] != sc.corruption.noisy_labels).sum() == 3


def test_fixed_counts_only_labels_that_become_right():
    """Three classes: a wrong label relabeled to the truth is fixed; a wrong label relabeled to another wrong class
    is not, nor is a right label relabeled away (which makes it wrong)."""
    n = 15
    ds = TextDataset(np.arange(100, 100 + n), [f"text {i}" for i in range(n)], np.arange(n) % 3, ["a", "b", "c"],
                     "planted, 3 classes")
    s = split(ds, n_train=9, n_val=3, n_test=3, seed=0)
    truth = s.train.labels.copy()
    noisy = truth.copy()
    noisy[[0, 1]] = (truth[[0, 1]] + 1) % 3
    sc = Scenario("planted, 3 classes", s, Corruption(truth, noisy, noisy != truth, "planted", 2 / 9))
    state = LoopState(sc, k=3)
    state.record(metrics())
    new = {0: truth[0], 1: (truth[1] + 2) % 3, 2: (truth[2] + 1) % 3}  # fixed, wrong → other wrong, right → wrong
    out = state.apply([0, 1, 2], lambda pos, labels, ctx: {p: ("relabel", int(new[p])) for p in pos}, ctx=None)
    assert (out.fixed, out.precision) == (1, pytest.approx(2 / 3))
    rec = state.record(metrics(0.6))
    assert (rec.n_fixed_correctly, rec.wrong_labels_remaining) == (1, 2)  # position 1 still wrong, 2 made wrong


def test_remove_and_positions_of_the_current_training_set():
    sc = scenario()
    state = LoopState(sc, k=2)
    state.record(metrics())
    state.apply([0, 3], lambda pos, labels, ctx: {p: ("remove", None) for p in pos}, ctx=None)
    positions, current = state.current()
    assert 0 not in positions and 3 not in positions and len(current) == len(sc.splits.train) - 2
    # scores are one per *kept* example; fixers get positions in the current (kept) set
    seen = {}

    def spy(pos, labels, ctx):
        seen["pos"], seen["labels"] = list(pos), labels.copy()
        return {}

    flagged = state.flag(np.arange(len(positions), dtype=float))
    state.apply(flagged, spy, ctx=None)
    assert [int(positions[p]) for p in seen["pos"]] == flagged
    np.testing.assert_array_equal(seen["labels"], state.labels[positions])
    with pytest.raises(ValueError, match="one score per example"):
        state.flag(np.zeros(len(sc.splits.train)))


def test_recovery_keeps_the_rule_s_round_and_its_labels():
    sc = scenario()
    state = LoopState(sc, k=2)
    for r, f1 in enumerate([0.5, 0.8, 0.6]):
        if r:
            state.apply(state.flag(np.arange(len(sc.splits.train), dtype=float)), flip, ctx=None)
        state.record(metrics(f1))
    rec = state.recovery("planted", StoppingRule(patience=1), stopped_because="no validation gain",
                         clean={"test_macro_f1": 0.9, "test_accuracy": 0.9})
    assert rec.final_round == 1
    np.testing.assert_array_equal(rec.labels, state.history[1][0])
    assert not np.array_equal(rec.labels, state.history[2][0])
    # recovered fraction from the KEPT round (0.8), not the last (0.6): (0.8 − 0.5) / (0.9 − 0.5)
    assert rec.recovered() == pytest.approx(0.75)


def test_bad_k_is_clear():
    with pytest.raises(ValueError, match="k must be between 1 and the training-set size 8"):
        LoopState(scenario(), k=9)


def test_precision_gate():
    rule = StoppingRule(min_precision=0.5)
    assert rule.accept(0.5) and rule.accept(0.9) and not rule.accept(0.49) and rule.accept(None)
    assert StoppingRule().accept(0.0)  # no gate by default
    with pytest.raises(ValueError, match="min_precision"):
        StoppingRule(min_precision=1.5)


def test_gbair_stops_before_a_batch_the_probe_distrusts():
    from gbair_nb.recovery import gbair
    from test_recovery import TINY, toy_scenario

    sc = toy_scenario()
    gated = gbair(sc, scorer="loss", k=4, rounds=2, config=TINY, clean=False, min_precision=1.0, verbose=False)
    assert [r.round for r in gated.rounds] == [0] and gated.stopped_because.startswith("estimated precision")
    np.testing.assert_array_equal(gated.labels, sc.corruption.noisy_labels)  # nothing was applied
    free = gbair(sc, scorer="loss", k=4, rounds=1, config=TINY, clean=False, min_precision=0.0, verbose=False)
    est = free.rounds[1].estimated_precision
    assert est is not None and 0.0 <= est <= 1.0 and free.options["min_precision"] == 0.0


def test_a_smaller_patience_replayed_over_a_saved_loop_keeps_what_that_loop_keeps(monkeypatch):
    """The premise of replaying a saved run: at a fixed seed the patience-1 loop trains exactly the first rounds of
    the patience-3 loop, so ``replayed_round`` over the saved patience-3 result finds patience 1's kept round."""
    # the dip below is a trajectory of the CPU's arithmetic: on an H200 no later round gained, both loops kept round 0
    monkeypatch.setenv("GBAIR_DEVICE", "cpu")
    from gbair_nb.loop import replayed_round
    from gbair_nb.metrics import kept_round
    from gbair_nb.recovery import gbair
    from test_recovery import TINY, toy_scenario

    sc = toy_scenario()
    runs = {p: gbair(sc, scorer="random", k=4, rounds=3, config=TINY, clean=False, patience=p, verbose=False)
            for p in (1, 3)}
    short, long = runs[1].summary(), runs[3].summary()
    assert len(long["rounds"]) == 4, "the patience-3 loop should train every round"
    prefix = [(r["val_macro_f1"], r["wrong_labels_remaining"]) for r in long["rounds"][:len(short["rounds"])]]
    assert prefix == [(r["val_macro_f1"], r["wrong_labels_remaining"]) for r in short["rounds"]]

    def what(r):  # a round's outcome (its seconds differ between the two runs)
        return r["round"], r["val_macro_f1"], r["test_macro_f1"], r["wrong_labels_remaining"]

    assert what(replayed_round(long, 1)) == what(kept_round(short))
    assert replayed_round(long, 3) == kept_round(long)
    # on this toy the dip is real: round 1 gains nothing, round 2 does; patience 1 stops and keeps round 0
    assert short["stopped_because"] == "no validation gain" and short["final_round"] < long["final_round"]
    assert replayed_round(short, 3) is None  # what patience 3 does after round 1 was never trained

"""gbair_nb.human: the relabel session as G-BAIR's fixer — journaled decisions (source, round), labels forwarded to
the retrain, the step-by-step loop a person uses in a notebook. Tiny backbone, a few seconds per training."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from gbair_nb.human import HumanRounds, human_fixer, simulated_annotator
from gbair_nb.recovery import gbair
from gbair_nb.scorers import SCORERS
from gbair_nb.scenarios import make_scenario
from gbair_nb.relabel import RelabelSession
from gbair_nb.train import TrainConfig

CONFIG = TrainConfig.quick(backbone="tiny", epochs=1, max_length=24)


@pytest.fixture(scope="module")
def scenario():
    return make_scenario("sms_spam", mode="uniform", p=0.3, n_train=48, n_val=24, n_test=24, seed=0)


def entries(path, kind="decision"):
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["type"] == kind]


def test_gbair_with_simulated_annotator_journals_and_forwards_labels(scenario, tmp_path):
    path = tmp_path / "j.jsonl"
    seen = []  # the training labels each round's scorer saw (= what that round trained on)

    def recording_loss(ctx):
        seen.append(dict(zip(ctx.train.ids.tolist(), ctx.train.labels.tolist())))
        return SCORERS["loss"](ctx)

    fixer = human_fixer(path, scenario.train, annotator=simulated_annotator(scenario.splits.train))
    rec = gbair(scenario, scorer=recording_loss, k=5, rounds=2, fix=fixer, config=CONFIG, clean=False,
                patience=99, verbose=False)
    assert [r.round for r in rec.rounds] == [0, 1, 2] and fixer.round == 3
    decisions = entries(path)
    assert {e["source"] for e in decisions} == {"auto"}
    for r in (1, 2):  # round r's journaled decisions are exactly the examples round r retrained with
        assert [e["id"] for e in decisions if e["round"] == r] == rec.rounds[r].flagged_ids
    # the annotator knows the truth: every wrong flagged label was fixed
    truth = dict(zip(scenario.splits.train.ids.tolist(), scenario.splits.train.labels.tolist()))
    for e in decisions:
        assert e["new_label"] == truth[e["id"]]
    for r in (1, 2):
        assert rec.rounds[r].n_fixed_correctly == round(rec.rounds[r].flagged_precision * 5)
    # labels forwarded: round 2 trained on the journal's labels after round 1
    after_round1 = RelabelSession.from_dataset(scenario.train, tmp_path / "copy.jsonl")
    for e in decisions:
        if e["round"] == 1:
            after_round1.relabel(e["id"], e["new_label"], source="auto")
    assert seen[1] == dict(zip(scenario.train.ids.tolist(), after_round1.labels().tolist()))
    # and the journal on disk replays to the loop's final labels
    replay = RelabelSession.from_dataset(scenario.train, path)
    np.testing.assert_array_equal(replay.labels(), _labels_after(scenario, decisions))


def _labels_after(scenario, decisions):
    labels = scenario.corruption.noisy_labels.copy()
    pos = {int(i): p for p, i in enumerate(scenario.splits.train.ids)}
    for e in decisions:
        labels[pos[e["id"]]] = e["new_label"]
    return labels


def test_human_rounds_widget_clicks_reach_the_retrain(scenario, tmp_path):
    path = tmp_path / "j.jsonl"
    rounds = HumanRounds(scenario, path, scorer="loss", k=4, config=CONFIG, max_influenced=2, verbose=False)
    session = rounds.flag()
    assert rounds.round == 1 and session.round == 1 and len(session.flagged) == 4
    assert rounds.flag() is session  # re-running the cell keeps the session (and the widget bound to it)
    assert list(rounds.flagged_frame["id"]) == list(session.flagged)
    assert set(rounds.influenced) <= set(session.flagged)
    w = rounds.widget()
    a, b, c, d = session.flagged
    la = session.label_of(a)
    w.class_buttons[1 - la].click()  # a: relabel
    w.remove_button.click()  # b: remove
    w.keep_button.click()  # c: keep
    w.keep_button.click()  # d: keep ...
    w.undo_button.click()  # ... undone: d stays unreviewed
    assert w.progress.value == "3 / 4 reviewed"
    with pytest.warns(RuntimeWarning, match="1 of 4 flagged examples have no decision"):
        rec = rounds.apply()
    assert rec.round == 1 and rec.flagged_ids == [a, b, c, d] and rec.n_removed == 1
    base = scenario.splits.train
    p = base.positions([a, b])
    assert rounds.labels[p[0]] == 1 - la and not rounds.kept[p[1]]
    # the retrain used exactly these labels and examples
    kept = np.flatnonzero(rounds.kept)
    assert rounds.run.record["data"]["fingerprint"] == base.subset(kept).with_labels(rounds.labels[kept]).fingerprint()
    assert [(e["id"], e["action"], e["source"], e["round"]) for e in entries(path)] == [
        (a, "relabel", "human", 1), (b, "remove", "human", 1), (c, "keep", "human", 1), (d, "keep", "human", 1)]
    assert len(entries(path, "undo")) == 1
    # round 2 reopens the journal on the starting data and does not flag reviewed examples again
    s2 = rounds.flag()
    assert s2.round == 2 and not set(s2.flagged) & {a, b, c, d}
    assert s2.label_of(a) == 1 - la and b in s2.removed()
    assert list(rounds.frame()["round"]) == [0, 1]


def test_human_rounds_match_gbair(scenario, tmp_path):
    """Same seed and scorer: the step-by-step loop and gbair() train, flag and fix the same."""
    ann = simulated_annotator(scenario.splits.train)
    rec = gbair(scenario, scorer="loss", k=5, rounds=1, fix=human_fixer(tmp_path / "a.jsonl", scenario.train,
                                                                       annotator=ann),
                config=CONFIG, clean=False, verbose=False)
    rounds = HumanRounds(scenario, tmp_path / "b.jsonl", scorer="loss", k=5, config=CONFIG, annotator=ann,
                         max_influenced=0, verbose=False)
    rounds.flag()
    assert rounds.annotate() == 5 and rounds.annotate() == 0  # answers once, through the session
    rounds.apply()
    for r_gbair, r_steps in zip(rec.rounds, rounds.records):
        assert r_gbair.flagged_ids == r_steps.flagged_ids
        assert r_gbair.val_macro_f1 == pytest.approx(r_steps.val_macro_f1)
        assert r_gbair.wrong_labels_remaining == r_steps.wrong_labels_remaining
    assert entries(tmp_path / "a.jsonl") and [
        (e["id"], e["new_label"]) for e in entries(tmp_path / "a.jsonl")] == [
        (e["id"], e["new_label"]) for e in entries(tmp_path / "b.jsonl")]


def test_person_cannot_answer_inside_gbair(scenario, tmp_path):
    with pytest.raises(RuntimeError, match="HumanRounds"):
        gbair(scenario, scorer="loss", k=3, rounds=1, fix=human_fixer(tmp_path / "j.jsonl", scenario.train),
              config=CONFIG, clean=False, verbose=False)


def test_journal_of_another_run_is_refused(scenario, tmp_path):
    path = tmp_path / "j.jsonl"
    old = RelabelSession.from_dataset(scenario.train, path)
    other = int(scenario.train.ids[-1])  # the scorer below flags the first examples, not this one
    old.relabel(other, 1 - old.label_of(other))  # a decision the new loop knows nothing about
    fixer = human_fixer(path, scenario.train, annotator=simulated_annotator(scenario.splits.train))
    with pytest.raises(RuntimeError, match="disagrees with the loop"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gbair(scenario, scorer=lambda ctx: -np.arange(len(ctx.train), dtype=float), k=3, rounds=1, fix=fixer,
              config=CONFIG, clean=False, verbose=False)


def test_simulated_annotator_accuracy(scenario):
    perfect = simulated_annotator(scenario.splits.train)
    sloppy = simulated_annotator(scenario.splits.train, accuracy=0.0, seed=1)
    for text, label in zip(scenario.splits.train.texts[:10], scenario.splits.train.labels[:10]):
        assert perfect(text, 0, 0) == label and sloppy(text, 0, 0) == 1 - label
    with pytest.raises(ValueError, match="accuracy"):
        simulated_annotator(scenario.splits.train, accuracy=1.5)


def test_human_rounds_keep_the_scores_they_flagged_by(scenario, tmp_path):
    """flag() keeps this round's scores, one per example still in training, aligned with ctx.train: the flagged
    examples are the top k of exactly these scores, so a notebook need not score the training set twice."""
    rounds = HumanRounds(scenario, tmp_path / "j.jsonl", scorer="loss", k=4, config=CONFIG, max_influenced=0,
                         verbose=False)
    rounds.flag()
    assert rounds.scores.shape == (len(rounds.ctx.train),)
    np.testing.assert_allclose(rounds.scores, SCORERS["loss"](rounds.ctx))
    top = rounds.ctx.train.ids[np.argsort(-rounds.scores, kind="stable")[:4]]
    assert list(rounds.flagged_frame["id"]) == list(top)
    np.testing.assert_allclose(rounds.flagged_frame["score"], np.sort(rounds.scores)[::-1][:4])


def test_human_rounds_with_auto_decide_once_and_record_it(scenario, tmp_path, monkeypatch):
    """scorer="auto" in the step-by-step loop: the choice is made at the first flag(), kept for the next round (not
    made again on the partly fixed labels), and recorded in recovery()."""
    import gbair_nb.scorers as scorers

    calls = []
    real = scorers.auto_choice
    monkeypatch.setattr(scorers, "auto_choice", lambda ctx: calls.append(ctx.round) or real(ctx))
    rounds = HumanRounds(scenario, tmp_path / "j.jsonl", scorer="auto", k=4, config=CONFIG, max_influenced=0,
                         annotator=simulated_annotator(scenario.splits.train), verbose=False)
    rounds.flag()
    rounds.annotate()
    rounds.apply()
    rounds.flag()  # round 2, on the labels round 1 fixed
    chosen = rounds.score_fn.chosen
    assert calls == [1] and chosen["scorer"] in {"gbair_balanced_unit", "probe"}
    np.testing.assert_allclose(rounds.scores, SCORERS[chosen["scorer"]](rounds.ctx))  # scored by the first pick
    assert rounds.recovery().chosen == chosen and rounds.recovery().summary()["chosen"] == chosen

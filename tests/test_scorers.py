"""The G-BAIR scorer variants against the full TracIn matrix (tiny backbone): same numbers, sign and all."""
from __future__ import annotations

import numpy as np
import pytest

from gbair_nb.influence import aggregated_influence, tracin
from gbair_nb.scorers import SCORERS, ScoreContext
from gbair_nb.scenarios import make_scenario
from gbair_nb.train import TrainConfig, train
from helpers import FixedProbe

TINY = TrainConfig.quick(backbone="tiny", epochs=2, max_length=16, n_checkpoints=2, lr=2e-2, lr_head=5e-3,
                         method_options={"num_virtual_tokens": 4, "init_text": None})


@pytest.fixture(scope="module")
def ctx():
    sc = make_scenario("sms_spam", mode="uniform", p=0.25, n_train=32, n_val=16, n_test=8, seed=0)
    run = train(sc.train, config=TINY, verbose=False)
    return ScoreContext(run, sc.train, sc.splits.val, TINY)


@pytest.fixture(scope="module")
def full(ctx):
    """(n_val, n_train) TracInCP, every validation example under its true label; and its cosine twin."""
    kw = dict(max_length=16, verbose=False)
    dot = tracin(ctx.run.model, ctx.run.tokenizer, ctx.run.checkpoints, ctx.train, ctx.val, **kw)
    cos = tracin(ctx.run.model, ctx.run.tokenizer, ctx.run.checkpoints, ctx.train, ctx.val, variant="cosine", **kw)
    return dot.astype(np.float64), cos.astype(np.float64)


def z(x):
    return (x - x.mean()) / x.std()


def test_sets_give_one_sum_per_set_in_one_pass(ctx, full):
    sets = [[0, 3, 5], [1], list(range(16))]
    agg = aggregated_influence(ctx.run.model, ctx.run.tokenizer, ctx.run.checkpoints, ctx.train, ctx.val,
                               sets=sets, max_length=16, verbose=False)
    assert agg.shape == (3, len(ctx.train))
    for row, s in zip(agg, sets):
        np.testing.assert_allclose(row, full[0][s].sum(0), rtol=1e-4, atol=1e-6 * np.abs(full[0]).max())


def test_variants_equal_their_definition_on_the_tracin_matrix(ctx, full):
    dot, cos = full
    y = ctx.val.labels
    by_class = np.stack([dot[y == c].sum(0) for c in (0, 1)])
    by_class_unit = np.stack([cos[y == c].sum(0) for c in (0, 1)])
    tol = dict(rtol=1e-4, atol=1e-5 * np.abs(by_class).max())
    np.testing.assert_allclose(SCORERS["gbair_all"](ctx), -dot.sum(0), **tol)
    np.testing.assert_allclose(SCORERS["gbair_balanced"](ctx), z(-by_class[0]) + z(-by_class[1]), rtol=1e-3,
                               atol=1e-4)
    np.testing.assert_allclose(SCORERS["gbair_balanced_unit"](ctx), z(-by_class_unit[0]) + z(-by_class_unit[1]),
                               rtol=1e-3, atol=1e-4)
    mistakes = ctx.val_mistakes()
    if len(mistakes):
        np.testing.assert_allclose(SCORERS["gbair_mistakes"](ctx), -dot[mistakes].sum(0), **tol)


def test_rank_combination_is_the_mean_percentile(ctx):
    from scipy.stats import rankdata

    combo = SCORERS["gbair_rank"](ctx)
    a, b = SCORERS["gbair_balanced"](ctx), SCORERS["loss"](ctx)
    n = len(a)
    np.testing.assert_allclose(combo, ((rankdata(a) - 1) / (n - 1) + (rankdata(b) - 1) / (n - 1)) / 2)
    assert 0 <= combo.min() and combo.max() <= 1


def test_a_planted_opponent_of_its_class_ranks_first():
    """Two copies of one validation text: a training example with the same text and the *other* label is the
    strongest opponent of its class, so every class-based variant must flag it first."""
    from gbair_nb.data import TextDataset

    rng = np.random.default_rng(0)
    good, bad = ["great", "lovely", "superb", "nice"], ["awful", "terrible", "nasty", "sad"]
    texts, labels = [], []
    for c, words in enumerate([good, bad]):
        for i in range(20):
            texts.append(" ".join(rng.choice(words, size=3)))
            labels.append(c)
    train_ds = TextDataset(np.arange(40), texts, labels, ["pos", "neg"], "toy")
    val = TextDataset(np.arange(100, 110), texts[:5] + texts[20:25], [0] * 5 + [1] * 5, ["pos", "neg"], "toy")
    noisy = train_ds.labels.copy()
    noisy[2] = 1  # a "pos" text labelled "neg": its own text is in the validation set, labelled pos
    config = TrainConfig.quick(backbone="tiny", epochs=4, max_length=12, lr=5e-2, lr_head=5e-2,
                               method_options={"num_virtual_tokens": 2, "init_text": None})
    run = train(train_ds.with_labels(noisy), config=config, verbose=False)
    ctx = ScoreContext(run, train_ds.with_labels(noisy), val, config)
    for name in ("gbair_all", "gbair_balanced", "gbair_balanced_unit"):
        assert int(np.argmax(SCORERS[name](ctx))) == 2, name


def test_rerank_moves_the_twin_of_a_confirmed_wrong_label_up():
    """A person confirmed example 2 ("pos" text labelled "neg") wrong: its twin 3 (same text, same wrong label)
    must rise to the top of the remaining ranking, whatever the base score said."""
    from gbair_nb.data import TextDataset
    from gbair_nb.scorers import rerank

    rng = np.random.default_rng(1)
    good, bad = ["great", "lovely", "superb", "nice"], ["awful", "terrible", "nasty", "sad"]
    texts = [" ".join(rng.choice(good if i < 20 else bad, size=3)) for i in range(40)]
    texts[3] = texts[2]
    labels = np.array([0] * 20 + [1] * 20)
    noisy = labels.copy()
    noisy[[2, 3]] = 1
    train_ds = TextDataset(np.arange(40), texts, labels, ["pos", "neg"], "toy").with_labels(noisy)
    val = TextDataset(np.arange(100, 110), texts[5:10] + texts[25:30], [0] * 5 + [1] * 5, ["pos", "neg"], "toy")
    config = TrainConfig.quick(backbone="tiny", epochs=4, max_length=12, lr=5e-2, lr_head=5e-2,
                               method_options={"num_virtual_tokens": 2, "init_text": None})
    run = train(train_ds, config=config, verbose=False)
    ctx = ScoreContext(run, train_ds, val, config)
    flat = np.zeros(len(train_ds))  # the base scorer knows nothing: every example equally suspect
    judged = train_ds.subset([2, 30])  # 2: confirmed wrong; 30: a "neg" example confirmed right
    out = rerank(ctx, flat, judged, np.array([True, False]))
    others = np.setdiff1d(np.arange(40), [2, 30])
    assert others[np.argmax(out[others])] == 3
    assert np.all((0 <= out) & (out <= 1))
    np.testing.assert_array_equal(rerank(ctx, flat, judged.subset([]), np.zeros(0, bool)), flat)


# ------------------------------------------------------------------------------------- auto: which noise is it?
def _labelled(labels, names=("ham", "spam", "other")):
    from gbair_nb.data import TextDataset

    labels = np.asarray(labels)
    k = int(labels.max()) + 1 if len(labels) else 2
    return TextDataset(np.arange(len(labels)), [f"t{i}" for i in range(len(labels))], labels, list(names[:max(k, 2)]))


def test_flip_rates_are_the_noise_matrix_when_the_probe_knows_the_truth():
    # closed form: 10 true spam, 3 of them labelled ham; 20 true ham, 2 labelled spam; a probe certain of the truth
    truth = np.array([1] * 10 + [0] * 20)
    given = truth.copy()
    given[:3] = 0
    given[10:12] = 1
    probe = FixedProbe(np.eye(2)[truth])
    np.testing.assert_allclose(probe.flip_rates(_labelled(given)), [[0.0, 2 / 20], [3 / 10, 0.0]])


def test_flip_rates_with_soft_probabilities_equal_a_loop_over_examples():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=25)
    given = rng.integers(0, 3, size=25)
    joint = np.zeros((3, 3))  # [true, given], by the definition, one example at a time
    for z in range(25):
        for i in range(3):
            joint[i, given[z]] += p[z, i]
    want = joint / joint.sum(1, keepdims=True)
    np.fill_diagonal(want, 0.0)
    np.testing.assert_allclose(FixedProbe(p).flip_rates(_labelled(given)), want)


def _auto_ctx(proba, labels):
    ds = _labelled(labels)
    return ScoreContext(run=None, train=ds, val=ds, config=None, cache={"probe": FixedProbe(proba)})


def test_auto_picks_gbair_for_one_way_noise_and_the_probe_for_two_way_noise():
    from gbair_nb.scorers import AUTO_ONE_WAY, DEFAULT_GBAIR, auto_choice

    truth = np.array([1] * 10 + [0] * 30)
    one_way = truth.copy()
    one_way[:5] = 0  # half the spam labelled ham, no ham labelled spam
    c = auto_choice(_auto_ctx(np.eye(2)[truth], one_way))
    assert c["scorer"] == DEFAULT_GBAIR and c["one_way_share"] == 1.0 and "spam → ham" in c["reason"]
    both = one_way.copy()
    both[10:25] = 1  # and half the ham labelled spam: equal rates both ways
    c = auto_choice(_auto_ctx(np.eye(2)[truth], both))
    assert c["scorer"] == "probe" and c["one_way_share"] == pytest.approx(0.5)
    # either side of the threshold: spam → ham at 1/2, and 1 (then 4) of the 30 ham labelled spam
    edge = one_way.copy()
    edge[10] = 1  # share (1/2) / (1/2 + 1/30) = 15/16
    c = auto_choice(_auto_ctx(np.eye(2)[truth], edge))
    assert c["one_way_share"] == pytest.approx(15 / 16) and c["scorer"] == DEFAULT_GBAIR
    edge[10:14] = 1  # share (1/2) / (1/2 + 4/30) = 15/19
    c = auto_choice(_auto_ctx(np.eye(2)[truth], edge))
    assert c["one_way_share"] == pytest.approx(15 / 19) and 15 / 19 < AUTO_ONE_WAY and c["scorer"] == "probe"


def test_auto_with_no_estimated_flips_keeps_gbair_and_says_why():
    from gbair_nb.scorers import DEFAULT_GBAIR, auto_choice

    labels = np.array([0] * 6 + [1] * 4)
    c = auto_choice(_auto_ctx(np.eye(2)[labels], labels))
    assert c["scorer"] == DEFAULT_GBAIR and c["one_way_share"] == 1.0 and "no estimated flips" in c["reason"]


def test_auto_keeps_gbair_with_more_than_two_classes_and_says_why():
    from gbair_nb.scorers import DEFAULT_GBAIR, auto_choice

    truth = np.array([0] * 10 + [1] * 10 + [2] * 10)
    given = truth.copy()
    given[:2], given[10:12], given[20:22] = 1, 2, 0  # two-way (all ways) noise, three classes
    c = auto_choice(_auto_ctx(np.eye(3)[truth], given))
    assert c["scorer"] == DEFAULT_GBAIR and "3 classes" in c["reason"] and c["one_way_share"] < 0.5


def test_auto_in_the_loop_decides_once_and_is_the_loop_of_what_it_chose(monkeypatch):
    import gbair_nb.recovery as recovery
    import gbair_nb.scorers as scorers
    from gbair_nb.scorers import DEFAULT_GBAIR
    from test_recovery import TINY, toy_scenario

    calls = []
    real = scorers.auto_choice

    def counted(ctx):
        calls.append(ctx.round)
        return real(ctx)

    monkeypatch.setattr(scorers, "auto_choice", counted)
    sc = toy_scenario()
    kw = dict(k=4, rounds=2, config=TINY, clean=False, patience=3, verbose=False)
    auto = recovery.gbair(sc, scorer="auto", **kw)
    assert calls == [1], "auto decides on the starting labels and keeps its scorer for every round"
    assert auto.chosen["scorer"] in {DEFAULT_GBAIR, "probe"} and auto.summary()["chosen"] == auto.chosen
    same = recovery.gbair(sc, scorer=auto.chosen["scorer"], **kw)

    def what(rec):
        return [(r.round, r.flagged_ids, r.val_macro_f1, r.wrong_labels_remaining) for r in rec.rounds]

    assert len(auto.rounds) == 3 and what(auto) == what(same)
    np.testing.assert_array_equal(auto.labels, same.labels)
    assert auto.scorer == "auto" and same.chosen is None and "chosen" not in same.summary()
    # a registry without "auto" still runs it, as long as it has the scorer auto picks
    calls.clear()
    lean = recovery.gbair(sc, scorer="auto", registry={auto.chosen["scorer"]: scorers.SCORERS[auto.chosen["scorer"]]},
                          **kw)
    assert calls == [1] and what(lean) == what(auto)
    other = {"random": scorers.SCORERS["random"]}
    with pytest.raises(ValueError, match="this registry lacks"):
        recovery.gbair(sc, scorer="auto", registry=other, **kw)

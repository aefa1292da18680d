"""The G-BAIR score, the flagged-precision bookkeeping and the recovered fraction against hand computations.

The score is checked on a model whose per-example gradients are known in closed form: only the classifier head (a
Linear layer over the frozen tiny backbone's pooled features x) trains, so for cross-entropy

    ∇_W ℓ(z) = (softmax(W x + b) − onehot(y)) xᵀ,    ∇_b ℓ(z) = softmax(W x + b) − onehot(y).

With planted checkpoint states and *different* learning rates per parameter and per checkpoint, the G-BAIR score

    score(z) = − Σ_c Σ_params lr_c[param] · ⟨∇ℓ(θ_c, z), Σ_{z'∈M} ∇ℓ(θ_c, z')⟩,   z' under its TRUE label,

is computed with numpy and compared with ``SCORERS["gbair_mistakes"]`` — sign, mistake set, labels and learning rates
included.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch

from gbair_nb.data import Splits, TextDataset, corrupt, split
from gbair_nb.models import make_model
from gbair_nb.recovery import gbair
from gbair_nb.scorers import SCORERS, ScoreContext
from gbair_nb.scenarios import Scenario
from gbair_nb.train import Checkpoint, Run, TrainConfig

torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=UserWarning)

MAX_LENGTH = 16
CONFIG = TrainConfig(method="head_only", backbone="tiny", max_length=MAX_LENGTH, method_options={})
TRAIN_TEXTS = ["free prize call now", "see you at lunch", "win cash today", "ok thanks", "urgent reply yes",
               "meeting moved to nine", "claim your reward", "call me later", "good night", "free cash prize now"]
VAL_TEXTS = ["free cash prize now", "lunch at noon?", "reply win urgent", "thanks see you", "claim prize today",
             "running late sorry", "text yes to win", "dinner tonight?"]
# learning rates per checkpoint and per parameter: unequal across checkpoints AND across W / b, so applying the
# rates to the wrong checkpoint, the wrong parameter or not at all changes the score
LRS = [{"classifier.weight": 0.5, "classifier.bias": 0.02},
       {"classifier.weight": 0.05, "classifier.bias": 0.9},
       {"classifier.weight": 0.2, "classifier.bias": 0.3}]


def _features(model, tok, texts) -> np.ndarray:
    """(n, 32) what the head sees: the frozen backbone's pooled features (eval mode: no dropout)."""
    seen = []
    hook = model.classifier.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    try:
        model.eval()
        with torch.no_grad():
            enc = tok(list(texts), padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    finally:
        hook.remove()
    return torch.cat(seen).double().numpy()


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _head_grads(x: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form per-example head gradients: (n, 2, 32) for W and (n, 2) for b."""
    err = _softmax(x @ W.T + b) - np.eye(2)[y]
    return err[:, :, None] * x[:, None, :], err


@pytest.fixture(scope="module")
def planted():
    """A head-only tiny model, 3 planted checkpoints, a training set with one mislabeled example, a clean val set.

    Labels are planted from what the last checkpoint predicts: every training label agrees with it except the
    culprit's, which is the class the model wrongly predicts on the validation mistakes M (the culprit is the
    training example the model finds most clearly of the other class) — the example that pushes toward M.
    """
    model, tok = make_model("head_only", backbone="tiny", num_labels=2, seed=0)
    x_train, x_val = _features(model, tok, TRAIN_TEXTS), _features(model, tok, VAL_TEXTS)
    # a training-like path: the last state plus a perturbation that shrinks toward the end; every W is orthogonal
    # to the features' common direction, so the logits follow what differs between texts
    mean = np.concatenate([x_train, x_val]).mean(0)
    rng = np.random.default_rng(3)
    W_end, b_end = rng.normal(0.0, 2.0, size=(2, len(mean))), rng.normal(0.0, 0.1, size=2)
    states = []
    for c, scale in enumerate([0.3, 0.15, 0.0]):
        W = W_end + scale * rng.normal(0.0, 2.0, size=W_end.shape)
        states.append((W - np.outer(W @ mean, mean) / (mean @ mean), b_end + scale * rng.normal(0.0, 0.1, size=2)))
    W, b = states[-1]
    p_train, p_val = _softmax(x_train @ W.T + b), _softmax(x_val @ W.T + b)
    wrong = int(np.bincount(p_val.argmax(1), minlength=2).argmax())  # the class M is wrongly predicted as
    mistakes = np.flatnonzero(p_val.argmax(1) == wrong)[:3]
    y_val = p_val.argmax(1)
    y_val[mistakes] = 1 - wrong
    y_train = p_train.argmax(1)
    culprit = int(np.argmax(p_train[:, 1 - wrong]))
    y_train[culprit] = wrong
    train_ds = TextDataset(np.arange(100, 100 + len(TRAIN_TEXTS)), TRAIN_TEXTS, y_train, ["ham", "spam"], "planted")
    val_ds = TextDataset(np.arange(200, 200 + len(VAL_TEXTS)), VAL_TEXTS, y_val, ["ham", "spam"], "planted-val")
    ckpts = [Checkpoint(path=None, lr=lrs["classifier.weight"], lrs=dict(lrs), epoch=c + 1, step=c + 1,
                        state=OrderedDict([("classifier.weight", torch.tensor(W, dtype=torch.float32)),
                                           ("classifier.bias", torch.tensor(b, dtype=torch.float32))]))
             for c, ((W, b), lrs) in enumerate(zip(states, LRS))]
    run = Run(model, tok, CONFIG, ckpts, record={})
    run.load_checkpoint(-1)  # as train() leaves it: the model holds the last checkpoint
    # the states as the model holds them (float32), for the hand computation
    states32 = [(c.state["classifier.weight"].double().numpy(), c.state["classifier.bias"].double().numpy())
                for c in ckpts]
    return dict(run=run, train=train_ds, val=val_ds, mistakes=mistakes, culprit=culprit, states=states32,
                x_train=x_train, x_val=x_val)


def hand_gbair_score(p: dict, *, lrs: list[dict] = LRS, mistake_labels: str = "true") -> np.ndarray:
    """−Σ_c [lr_W ⟨∇_W ℓ(z), Σ_M ∇_W ℓ(z')⟩ + lr_b ⟨∇_b ℓ(z), Σ_M ∇_b ℓ(z')⟩], M under its true labels (or, to
    show what a wrong scorer would give, under the predicted ones)."""
    M = p["mistakes"]
    y_M = p["val"].labels[M] if mistake_labels == "true" else 1 - p["val"].labels[M]  # binary: predicted = other
    score = np.zeros(len(p["train"]))
    for (W, b), rates in zip(p["states"], lrs):
        gW, gb = _head_grads(p["x_train"], p["train"].labels, W, b)
        mW, mb = _head_grads(p["x_val"][M], y_M, W, b)
        score -= rates["classifier.weight"] * np.einsum("noi,oi->n", gW, mW.sum(0))
        score -= rates["classifier.bias"] * gb @ mb.sum(0)
    return score


def test_planted_setup_is_what_the_hand_computation_assumes(planted):
    ctx = ScoreContext(planted["run"], planted["train"], planted["val"], CONFIG)
    np.testing.assert_array_equal(ctx.val_mistakes(), planted["mistakes"])  # M: exactly the planted mistakes
    hand = hand_gbair_score(planted)
    assert int(np.argmax(hand)) == planted["culprit"]
    # each plausible mistake gives scores far outside the tolerance used below, so the comparison can tell them apart
    ones = [{k: 1.0 for k in r} for r in LRS]
    swapped = [{"classifier.weight": r["classifier.bias"], "classifier.bias": r["classifier.weight"]} for r in LRS]
    wrong = {"no minus": -hand, "M under predicted labels": hand_gbair_score(planted, mistake_labels="predicted"),
             "rates ignored": hand_gbair_score(planted, lrs=ones),
             "rates of the checkpoints reversed": hand_gbair_score(planted, lrs=LRS[::-1]),
             "rates of W and b swapped": hand_gbair_score(planted, lrs=swapped)}
    for what, other in wrong.items():
        assert np.abs(other - hand).max() > 1e-2 * np.abs(hand).max(), what


def test_gbair_score_equals_the_hand_computation(planted):
    ctx = ScoreContext(planted["run"], planted["train"], planted["val"], CONFIG)
    scores = np.asarray(SCORERS["gbair_mistakes"](ctx), dtype=np.float64)
    hand = hand_gbair_score(planted)
    scale = np.abs(hand).max()
    assert scores.shape == hand.shape
    np.testing.assert_allclose(scores, hand, rtol=0, atol=1e-6 * scale,
                               err_msg="G-BAIR score differs from −Σ_c Σ lr·g(z)·Σ_M g(z') (M under true labels)")
    assert int(np.argmax(scores)) == planted["culprit"], "the planted culprit must rank first"


# ------------------------------------------------------------------ the loop's bookkeeping against the truth mask
# a model that learns the toy task in 3 epochs (used for the rollback), and one that barely moves in 1 (it makes
# validation mistakes in every round, so a bookkeeping test runs all its rounds whatever is flagged)
LEARNS = TrainConfig(method="head_only", backbone="tiny", epochs=3, batch_size=8, max_length=16, lr=1e-1,
                     lr_head=1e-1, method_options={})
STILL = TrainConfig(method="head_only", backbone="tiny", epochs=1, batch_size=8, max_length=16, lr=1e-2,
                    lr_head=1e-2, method_options={})


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    """40 toy training texts (two word families), 12 of the 20 class-1 labels flipped to 0; clean val and test."""
    rng = np.random.default_rng(0)
    words = [["great", "lovely", "superb", "nice", "happy"], ["awful", "terrible", "horrid", "nasty", "sad"]]
    texts = [" ".join(rng.choice(words[c], size=4)) + f" {i}" for c in (0, 1) for i in range(40)]
    ds = TextDataset(np.arange(len(texts)), texts, [0] * 40 + [1] * 40, ["pos", "neg"], "toy")
    s = split(ds, n_train=40, n_val=20, n_test=20, seed=0)
    sc = Scenario("toy", s, corrupt(s.train.labels, p=0.6, mode="class_conditional", seed=0))
    assert sc.corruption.n_corrupted == 12
    return sc


def ranking_scorer(order_ids):
    """A scorer that ranks training examples by a fixed list of ids (first = most suspect), the rest last."""
    rank = {int(i): len(order_ids) - j for j, i in enumerate(order_ids)}

    def fixed_ranking(ctx: ScoreContext) -> np.ndarray:
        return np.array([rank.get(int(i), -1.0) for i in ctx.train.ids], dtype=np.float64)

    return fixed_ranking


@pytest.mark.parametrize("fix", ["flip", "remove"])
def test_flagged_precision_fixed_and_remaining_equal_the_truth_mask(scenario, fix):
    ids, wrong = scenario.splits.train.ids, scenario.corruption.is_corrupted
    bad, good = ids[wrong], ids[~wrong]
    # rounds of k = 5 flags: 3 wrong + 2 right, 1 wrong + 4 right, 5 wrong
    plan = [[*bad[:3], *good[:2]], [bad[3], *good[2:6]], [*bad[4:9]]]
    rec = gbair(scenario, scorer=ranking_scorer([i for r in plan for i in r]), k=5, rounds=3, fix=fix, config=STILL,
                patience=10, clean=False, seed=0, verbose=False)
    assert [r.round for r in rec.rounds] == [0, 1, 2, 3]
    r0 = rec.rounds[0]
    assert r0.flagged_ids == [] and r0.flagged_precision is None and r0.n_fixed_correctly == 0
    assert r0.wrong_labels_remaining == 12
    remaining = 12
    for r, flagged in zip(rec.rounds[1:], plan):
        is_wrong = np.isin(flagged, bad)
        assert sorted(r.flagged_ids) == sorted(int(i) for i in flagged)
        assert r.flagged_precision == float(is_wrong.mean())  # exactly the mask's mean over the flagged ids
        assert r.n_fixed_correctly == int(is_wrong.sum())  # flip restores a wrong binary label; remove drops it
        # flipping a right label makes it wrong; removing one takes it out of the count
        remaining += -int(is_wrong.sum()) + (int((~is_wrong).sum()) if fix == "flip" else 0)
        assert r.wrong_labels_remaining == remaining
    assert [r.flagged_precision for r in rec.rounds[1:]] == [0.6, 0.2, 1.0]


def test_recovered_fraction_uses_the_kept_round_after_a_rollback(scenario):
    """Round 1 relabels the 12 wrong labels to the truth; round 2 relabels 12 class-0 examples to 1, which costs
    validation F1, so it is rolled back: the kept round is 1, the last is 2, and every reported figure must come
    from round 1. Two validation labels contradict their words, so no model reaches zero validation mistakes (which
    would end the loop before round 2)."""
    val = scenario.splits.val
    contradicted = val.labels.copy()
    first = [int(np.flatnonzero(val.labels == c)[0]) for c in (0, 1)]
    contradicted[first] = 1 - contradicted[first]
    sc = Scenario("toy, 2 contradicted val labels",
                  Splits(scenario.splits.train, val.with_labels(contradicted), scenario.splits.test),
                  scenario.corruption)
    ids, wrong, truth = sc.splits.train.ids, sc.corruption.is_corrupted, sc.corruption.labels
    plan = {1: ids[wrong], 2: ids[truth == 0][:12]}

    def scorer(ctx):
        return ranking_scorer(plan[ctx.round])(ctx)

    def person(positions, labels, ctx):  # round 1: the truth (class 1 for all 12 wrong); round 2: harmful
        return {p: ("relabel", 1) for p in positions}

    rec = gbair(sc, scorer=scorer, k=12, rounds=3, fix=person, config=LEARNS, patience=1, clean=True, seed=0,
                verbose=False)
    r0, r1, r2 = rec.rounds
    assert r1.val_macro_f1 > r0.val_macro_f1 and r2.val_macro_f1 < r1.val_macro_f1  # what the plan is for
    assert (rec.final_round, rec.stopped_because) == (1, "no validation gain")
    np.testing.assert_array_equal(rec.labels, truth)  # round 1's labels, not round 2's
    assert rec.kept.all()
    for metric in ("test_macro_f1", "test_accuracy"):
        clean, corrupted = rec.clean[metric], getattr(r0, metric)
        kept = (getattr(r1, metric) - corrupted) / (clean - corrupted)
        last = (getattr(r2, metric) - corrupted) / (clean - corrupted)
        assert abs(kept - last) > 0.1, (metric, kept, last)  # the scenario tells the two apart
        assert rec.recovered(metric) == pytest.approx(kept, abs=1e-12)
        assert rec.summary()["recovered_fraction"][metric] == pytest.approx(kept, abs=1e-12)

"""gbair_nb.exercises: every checker passes on the right answer (computed here independently), fails on a blank, and
fails on each common mistake it hints about, with that hint; the labs and solutions are up to date with their
sources, every lab runs with its blanks and every check there says "✗ not yet"."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gbair_nb import exercises as ex

REPO = Path(__file__).resolve().parent.parent
LABS = sorted((REPO / "notebooks" / "labs").glob("*_lab.ipynb"))
SOLUTIONS = sorted((REPO / "notebooks" / "solutions").glob("*_solutions.ipynb"))


def verdict(capsys, check, *args, **kwargs) -> tuple[bool, str]:
    """Call a checker; return what it returned and the ONE line it printed."""
    ok = check(*args, **kwargs)
    out = capsys.readouterr().out.strip()
    assert "\n" not in out, f"a checker prints exactly one line, got {out!r}"
    assert out.startswith("✓ correct" if ok else "✗ not yet: "), out
    assert isinstance(ok, bool)
    return ok, out


def passes(capsys, check, *args, **kwargs) -> None:
    ok, out = verdict(capsys, check, *args, **kwargs)
    assert ok and out == "✓ correct", out


def fails_with(capsys, hint: str, check, *args, **kwargs) -> None:
    ok, out = verdict(capsys, check, *args, **kwargs)
    assert not ok and hint in out, f"expected a hint containing {hint!r}, got {out!r}"


# ----------------------------------------------------------------------------------------------- 01 prompt tuning
def test_prompt_tuning_params(capsys):
    kw = dict(num_virtual_tokens=20, width=384, num_classes=2)
    passes(capsys, ex.check_prompt_tuning_params, 8450, **kw)
    passes(capsys, ex.check_prompt_tuning_params, 8835, num_virtual_tokens=20, width=384, num_classes=3)
    for value, hint in [(7680, "only the soft prompt"), (8448, "bias"), (770, "only the head"),
                        (20 + 770, "whole vector"), (7680 + 385, "one output per class"),
                        (7680 + 2 + 384 + 2, "multiply, don't add"), (9000, "add the soft prompt"),
                        ("8450", "should be a number")]:
        fails_with(capsys, hint, ex.check_prompt_tuning_params, value, **kw)


def test_prompt_tuning_count_matches_the_real_model(capsys):
    from gbair_nb.pet import count_trainable
    from gbair_nb.models import make_model

    model, _ = make_model("prompt_tuning", backbone="tiny", seed=0)  # width 32
    passes(capsys, ex.check_prompt_tuning_params, count_trainable(model), num_virtual_tokens=20, width=32,
           num_classes=2)


@pytest.fixture
def prompt_inputs():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 6, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    prompt = torch.randn(4, 8, generator=g)
    right_x = torch.cat([prompt.expand(2, 4, 8), tokens], dim=1)
    right_m = torch.cat([torch.ones(2, 4, dtype=torch.long), mask], dim=1)
    return dict(soft_prompt=prompt, tokens=tokens, attention_mask=mask), right_x, right_m


def test_soft_prompt_inputs(capsys, prompt_inputs):
    kw, x, m = prompt_inputs
    passes(capsys, ex.check_soft_prompt_inputs, x, m, **kw)
    passes(capsys, ex.check_soft_prompt_inputs, x.numpy(), m.tolist(), **kw)
    tokens, mask, prompt = kw["tokens"], kw["attention_mask"], kw["soft_prompt"]
    cases = [
        (torch.cat([tokens, prompt.expand(2, 4, 8)], dim=1), m, "BEFORE the text"),
        (torch.cat([prompt, tokens[0]], dim=0), m, "expand the prompt"),
        (x + 1, m, "each example's rows"),
        (x[:, :9], m, "check the shape"),
        (x, mask, "the mask must grow"),
        (x, torch.cat([torch.zeros(2, 4, dtype=torch.long), mask], dim=1), "1, not 0"),
        (x, torch.cat([mask, torch.ones(2, 4, dtype=torch.long)], dim=1), "in front"),
        (x, torch.ones(2, 10), "padding"),
        (x, m[:, :9], "check the shape: the mask"),
    ]
    for xv, mv, hint in cases:
        fails_with(capsys, hint, ex.check_soft_prompt_inputs, xv, mv, **kw)
    fails_with(capsys, "fill in the blank", ex.check_soft_prompt_inputs, x, None, **kw)
    fails_with(capsys, "arrays", ex.check_soft_prompt_inputs, "x", m, **kw)


def test_soft_prompt_inputs_feature_axis(capsys):
    tokens, prompt, mask = torch.randn(2, 6, 8), torch.randn(6, 8), torch.ones(2, 6, dtype=torch.long)
    wrong = torch.cat([prompt.expand(2, 6, 8), tokens], dim=2)  # (2, 6, 16)
    fails_with(capsys, "sequence axis", ex.check_soft_prompt_inputs, wrong, torch.ones(2, 12),
               soft_prompt=prompt, tokens=tokens, attention_mask=mask)


def test_mean_pooling(capsys):
    g = torch.Generator().manual_seed(1)
    h, mask = torch.randn(3, 5, 4, generator=g), torch.tensor([[1] * 5, [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    right = torch.stack([h[b, :int(mask[b].sum())].mean(0) for b in range(3)])  # each row alone, no padding
    passes(capsys, ex.check_mean_pooling, right, h, mask)
    w = mask[..., None].float()
    for value, hint in [(h.mean(1), "padding positions"), ((h * w).sum(1) / 5, "not by T"),
                        ((h * w).sum(1), "you summed"), (h[:, 0], "first-token"),
                        ((h * w).sum(2) / mask.sum(1, keepdim=True), "sequence axis"),
                        (right[:2], "check the shape"), (right + 1, "sum the hidden states")]:
        fails_with(capsys, hint, ex.check_mean_pooling, value, h, mask)


# ----------------------------------------------------------------------------------------------------- 02 TracIn
@pytest.fixture
def pair():
    rng = np.random.default_rng(2)
    gt = [{"prompt": rng.normal(size=(3, 4)), "head": rng.normal(size=5)} for _ in range(3)]
    gs = [{"prompt": rng.normal(size=(3, 4)), "head": rng.normal(size=5)} for _ in range(3)]
    lrs = [{"prompt": 0.03 * f, "head": 0.01 * f} for f in (0.8, 0.5, 0.2)]
    per = [sum(lr[n] * float(np.vdot(a[n], b[n])) for n in a) for a, b, lr in zip(gt, gs, lrs)]
    return gt, gs, lrs, per


def test_tracin_pair(capsys, pair):
    gt, gs, lrs, per = pair
    right = sum(per)
    passes(capsys, ex.check_tracin_pair, right, gt, gs, lrs)
    passes(capsys, ex.check_tracin_pair, torch.tensor(right, dtype=torch.float32), gt, gs, lrs)
    dots = [{n: float(np.vdot(a[n], b[n])) for n in a} for a, b in zip(gt, gs)]
    one_rate = sum(lr["prompt"] * sum(d.values()) for lr, d in zip(lrs, dots))
    squared = sum(lr[n] ** 2 * d[n] for lr, d in zip(lrs, dots) for n in d)
    for value, hint in [(sum(sum(d.values()) for d in dots), "learning rate?"), (right / 3, "SUM over checkpoints"),
                        (-right, "check the sign"), (per[-1], "not only the last"), (per[0], "not only the first"),
                        (one_rate, "its own learning rate"), (squared, "not squared"),
                        ([right, right], "check the shape"),
                        (right + 1, "for every checkpoint")]:
        fails_with(capsys, hint, ex.check_tracin_pair, value, gt, gs, lrs)


def test_tracin_pair_flat_arrays_and_one_rate(capsys):
    a, b = [np.arange(3.0), np.ones(3)], [np.ones(3), np.arange(3.0)]
    passes(capsys, ex.check_tracin_pair, 0.5 * 3 + 0.1 * 3, a, b, [0.5, 0.1])


@pytest.fixture
def grads():
    rng = np.random.default_rng(3)
    G = rng.normal(size=(3, 10, 5))
    w = np.array([0.5, 0.3, 0.1])
    per = np.array([[w[c] * sum(G[c, i] ** 2) for i in range(10)] for c in range(3)])  # by the definition
    return G, w, per


def test_self_influence(capsys, grads):
    G, w, per = grads
    right = per.sum(0)
    passes(capsys, ex.check_self_influence, right, G, w)
    passes(capsys, ex.check_self_influence, torch.tensor(right), list(torch.tensor(G)), list(w))
    passes(capsys, ex.check_self_influence, right, G, [np.full(5, r) for r in w])  # per-parameter rates
    norms = np.sqrt((G ** 2).sum(2))
    for value, hint in [((G ** 2).sum((0, 2)), "learning rate?"), ((w[:, None] * norms).sum(0), "not ‖g‖"),
                        (np.sqrt(per).sum(0), "not ‖g‖"), (-right, "never negative"), (per[-1], "not only the last"),
                        ((w[:, None] * G.sum(2) ** 2).sum(0), "square each entry"),
                        ((G ** 2 * w[:, None, None]).sum((0, 1)), "summed over the examples"),
                        (right / 3, "SUM over checkpoints"), (right.sum(), "check the shape"),
                        (right * 2, "for each example")]:
        fails_with(capsys, hint, ex.check_self_influence, value, G, w)


def test_proponents_opponents(capsys):
    scores = np.array([[0.5, -0.2, 0.9, -1.0, 0.1, -0.4, 0.3],
                       [0.2, 0.8, -0.5, 0.0, -0.9, 0.6, -0.1],
                       [-0.3, 0.4, 0.7, 0.2, 0.05, -0.6, 0.9]])
    passes(capsys, ex.check_proponents_opponents, [2, 0, 6], [3, 5, 1], scores, 0, 3)
    passes(capsys, ex.check_proponents_opponents, np.array([2, 0, 6]), torch.tensor([3, 5, 1]), scores, 0, 3)
    col_pro, col_opp = list(np.argsort(-scores[:, 1])[:2]), list(np.argsort(scores[:, 1])[:2])
    for pro, opp, hint in [([3, 5, 1], [2, 0, 6], "swapped"), ([0, 2, 6], [3, 5, 1], "strongest first"),
                           ([2, 0, 6], [3, 1, 5], "strongest first"), ([2, 0, 6], [3, 5, 4], "opponents are the most"),
                           ([2, 0, 4], [3, 5, 1], "proponents are the largest"), ([2, 0], [3, 5], "off by one"),
                           ([2, 0, 6, 4, 1], [3, 5, 1, 4, 6], "exactly k"), ([2, 0, 9], [3, 5, 1], "0 … 6"),
                           ([2.5, 0, 6], [3, 5, 1], "integers"), ([4, 1, 6], [0, 2, 3], "sort row i")]:
        fails_with(capsys, hint, ex.check_proponents_opponents, pro, opp, scores, 0, 3)
    fails_with(capsys, "transposed", ex.check_proponents_opponents, col_pro, col_opp, scores, 1, 2)
    fails_with(capsys, "fill in the blank", ex.check_proponents_opponents, None, [3], scores, 0, 3)


# --------------------------------------------------------------------------------------------- 03 relabel by hand
def test_review_pick(capsys):
    ids = np.array([10, 20, 30, 40, 50, 60])
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3, 0.8])
    reviewed = {20}
    passes(capsys, ex.check_review_pick, [60, 40, 30], scores, ids, reviewed, 3)
    for value, hint in [([5, 3, 2], "positions"), ([20, 60, 40], "already reviewed"), ([10, 50, 30], "LARGEST"),
                        ([60, 40], "off by one"), ([40, 60, 30], "wrong order"), ([60, 40, 99], "not ids"),
                        ([60, 40, 10], "rank the examples"), ([60.5, 40, 30], "integers"),
                        ([60, 40, 30, 50, 10], "exactly k")]:
        fails_with(capsys, hint, ex.check_review_pick, value, scores, ids, reviewed, 3)


@pytest.fixture
def explorer_table():
    # mistake 1 and 2; example 7 opposes both a little, 8 opposes one a lot, 9 is a proponent
    return pd.DataFrame({"test_id": [1, 1, 1, 2, 2, 2, 2],
                         "train_id": [7, 8, 9, 7, 9, 5, 6],
                         "score": [-0.5, -0.9, 0.8, -0.5, 0.7, -0.3, 0.2]})


def test_opposition_pick(capsys, explorer_table):
    t = explorer_table  # totals: 7 → −1.0, 8 → −0.9, 5 → −0.3, 6 → 0.2, 9 → 1.5
    passes(capsys, ex.check_opposition_pick, [7, 8], t, 2)
    for value, hint in [([8, 7, 7], "group by train_id"), ([9, 6], "PROPONENTS"),
                        ([9, 7], "keep the sign"), ([7, 8, 5], "exactly k"), ([7, 5], "opposition = ")]:
        fails_with(capsys, hint, ex.check_opposition_pick, value, t, 2)
    fails_with(capsys, "not the rows", ex.check_opposition_pick, [8, 7], t, 2)  # the two most negative rows
    order_table = pd.DataFrame({"test_id": [1, 2, 1, 1, 2], "train_id": [1, 1, 2, 3, 3],
                                "score": [-0.6, -0.6, -1.0, -0.7, -0.4]})  # totals: 1 → −1.2, 3 → −1.1, 2 → −1.0
    passes(capsys, ex.check_opposition_pick, [1, 3, 2], order_table, 3)
    fails_with(capsys, "wrong order", ex.check_opposition_pick, [3, 1, 2], order_table, 3)
    mean_table = pd.DataFrame({"test_id": [1, 2, 3, 1, 2, 3, 1], "train_id": [4, 4, 4, 5, 5, 6, 7],
                               "score": [-0.4, -0.4, -0.4, -0.55, -0.45, -0.52, 0.8]})  # means: 4 −0.4, 6 −0.52
    passes(capsys, ex.check_opposition_pick, [4], mean_table, 1)
    fails_with(capsys, "don't average", ex.check_opposition_pick, [6], mean_table, 1)


CLICKS = [("relabel", 101, 1), ("remove", 103), ("keep", 102), ("undo",), ("relabel", 103, 0), ("undo",),
          ("relabel", 104, 1), ("remove", 105), ("undo",)]


def test_journal_replay(capsys):
    kw = dict(ids=[101, 102, 103, 104, 105], labels0=[0, 1, 1, 0, 0], actions=CLICKS)
    passes(capsys, ex.check_journal_replay, [1, 1, 1, 1, 0], [True, True, False, True, True], **kw)
    for labels, kept, hint in [([1, 1, 0, 1, 0], [True, True, True, True, False], "not ignored"),
                               ([0, 1, 0, 1, 0], [True, True, True, True, False], "LAST decision"),
                               ([1, 1, 1, 1, 0], [True] * 5, "kept flag is False"),
                               ([1, 1, 1, 1, 0], [True, False, False, True, True], "still kept"),
                               ([1, 1, 0, 1, 0], [True, True, False, True, True], "remove leaves the label"),
                               ([1, 1, 1], [True, True, False], "length 5"),
                               ([0, 0, 0, 0, 0], [False] * 5, "replay the clicks")]:
        fails_with(capsys, hint, ex.check_journal_replay, labels, kept, **kw)
    fails_with(capsys, "fill in the blank", ex.check_journal_replay, None, None, **kw)


def test_journal_replay_agrees_with_the_session_on_random_clicks(capsys, tmp_path):
    # the checker's truth is a real RelabelSession; its hints come from a replay of the standing decisions —
    # on random click sequences the right answer (from the session) must never be mistaken for a misreading
    from gbair_nb.relabel import RelabelSession

    rng = np.random.default_rng(0)
    ids, start = [1, 2, 3, 4], [0, 1, 0, 1]
    for trial in range(30):
        clicks, made = [], 0
        for _ in range(8):
            if made and rng.random() < 0.3:
                clicks.append(("undo",))
                made -= 1
            else:
                i = int(rng.choice(ids))
                clicks.append([("relabel", i, int(rng.integers(2))), ("keep", i), ("remove", i)][rng.integers(3)])
                made += 1
        s = RelabelSession(ids, start, ["a", "b"], tmp_path / f"journal_{trial}.jsonl", fingerprint="t")
        for a in clicks:
            getattr(s, a[0])(*a[1:])
        passes(capsys, ex.check_journal_replay, s.labels().tolist(), s.kept_mask().tolist(), ids=ids,
               labels0=start, actions=clicks)


# ----------------------------------------------------------------------------------------------------- 04 G-BAIR
@pytest.fixture
def gbair_inputs():
    rng = np.random.default_rng(4)
    K, n, m, P = 3, 12, 4, 7
    Gt = [rng.normal(size=(n, P)).astype(np.float32) for _ in range(K)]
    Gm = [rng.normal(size=(m, P)).astype(np.float32) for _ in range(K)]
    lrs = [np.r_[np.full(5, 0.03 * f), np.full(2, 0.01 * f)].astype(np.float32) for f in (0.8, 0.5, 0.2)]
    # by the definition: −Σ_{z'} Σ_c Σ_p lr · g(z) g(z'), one pair at a time
    pairs = -np.array([[sum(float((Gt[c][i] * lrs[c] * Gm[c][j]).sum()) for c in range(K)) for j in range(m)]
                       for i in range(n)])
    return Gt, Gm, lrs, pairs


def test_gbair_score(capsys, gbair_inputs):
    Gt, Gm, lrs, pairs = gbair_inputs
    right = pairs.sum(1)
    passes(capsys, ex.check_gbair_score, right, Gt, Gm, lrs)
    passes(capsys, ex.check_gbair_score, torch.tensor(right), np.stack(Gt), np.stack(Gm), np.stack(lrs))
    no_lr = -sum(g @ m.sum(0) for g, m in zip(Gt, Gm))
    last = -(Gt[-1] @ (lrs[-1] * Gm[-1].sum(0)))
    unit = [m / np.linalg.norm(m, axis=1, keepdims=True) for m in Gm]
    per_mistake = -sum(g @ (w * u.sum(0)) for g, u, w in zip(Gt, unit, lrs))
    for value, hint in [(-right, "opposite sign"), (no_lr, "learning rate?"), (right / 4, "don't average"),
                        (last, "every checkpoint"), (pairs, "one score per (training example, mistake)"),
                        (pairs.sum(0), "transposed"), (per_mistake, "per_mistake"), (right[:-1], "check the shape"),
                        (right + 1, "then negate"), (list("abc"), "should be a number")]:
        fails_with(capsys, hint, ex.check_gbair_score, value, Gt, Gm, lrs)


def test_default_k(capsys):
    passes(capsys, ex.check_default_k, 5, 100)
    passes(capsys, ex.check_default_k, 13, 337)
    passes(capsys, ex.check_default_k, 16, 388)
    fails_with(capsys, "at least 5", ex.check_default_k, 4, 100)
    fails_with(capsys, "not up", ex.check_default_k, 14, 337)
    fails_with(capsys, "not down", ex.check_default_k, 15, 388)
    fails_with(capsys, "0.04 of the training set", ex.check_default_k, 4 * 388, 388)
    fails_with(capsys, "not 0.4", ex.check_default_k, 155, 388)
    fails_with(capsys, "4% of the training set", ex.check_default_k, 20, 388)


def test_flagged(capsys):
    score = np.array([0.3, 0.9, 0.1, 0.9, 0.5, 0.7, 0.2, 0.8])
    reviewed = np.array([False, False, False, False, False, False, False, True])
    passes(capsys, ex.check_flagged, [1, 3, 5], score, reviewed, 3)  # tie 1/3: training-set order
    passes(capsys, ex.check_flagged, np.array([1, 3, 5]), score, reviewed, 3)
    mask = np.zeros(8, dtype=int)
    mask[[1, 3, 5]] = 1
    for value, hint in [(mask, "not a mask"), ([1, 3, 7], "already reviewed"), ([2, 6, 0], "LARGEST"),
                        ([1, 3], "off by one"), ([5, 3, 1], "wrong order"), ([1, 3, 4], "set the reviewed"),
                        ([1, 3, 5, 4, 0], "exactly k"), ([1.5, 3, 5], "integers")]:
        fails_with(capsys, hint, ex.check_flagged, value, score, reviewed, 3)


ROUNDS = pd.DataFrame({"round": [0, 1, 2, 3, 4, 5],
                       "val_macro_f1": [0.70, 0.86, 0.91, 0.89, 0.91, 0.90],
                       "test_macro_f1": [0.72, 0.85, 0.88, 0.90, 0.86, 0.87]})


def test_recovered_fraction(capsys):
    clean = 0.93
    right = (0.88 - 0.72) / (0.93 - 0.72)  # kept: round 2, the earliest of the two best validation rounds
    passes(capsys, ex.check_recovered_fraction, right, ROUNDS, clean)
    passes(capsys, ex.check_recovered_fraction, right, ROUNDS.to_dict("records")[::-1], clean)
    for value, hint in [((0.87 - 0.72) / 0.21, "rolls back"), ((0.90 - 0.72) / 0.21, "VALIDATION macro-F1"),
                        ((0.91 - 0.70) / (0.93 - 0.70), "measured on the test set"),
                        ((0.86 - 0.72) / 0.21, "EARLIEST"), (0.88 / 0.93, "corrupted start"),
                        ((0.93 - 0.88) / 0.21, "still missing"), (1 - right + 1e-3, "kept round, then"),
                        ([right], "check the shape")]:
        fails_with(capsys, hint, ex.check_recovered_fraction, value, ROUNDS, clean)
    with pytest.raises(ValueError, match="val_macro_f1"):
        ex.check_recovered_fraction(0.5, ROUNDS.drop(columns="val_macro_f1"), clean)


# -------------------------------------------------------------------------------------------------- 05 detectors
@pytest.fixture
def ranked():
    # 45 examples sorted by score; wrong labels at ranks 1, 2, 5, 9, 20, 40 (1-based)
    n = 45
    scores = np.linspace(1.0, 0.0, n)
    wrong = np.isin(np.arange(1, n + 1), [1, 2, 5, 9, 20, 40])
    perm = np.random.default_rng(0).permutation(n)  # the checkers must sort; shuffle the input
    return scores[perm], wrong[perm]


def test_recall_at(capsys, ranked):
    s, y = ranked
    # 10% of 45 = 4.5 → inspect 5: ranks 1, 2, 5 found of 6
    passes(capsys, ex.check_recall_at, 3 / 6, s, y, 0.1)
    for value, hint in [(2 / 6, "one example short"), (3 / 5, "precision of the top"),
                        (0 / 6, "LARGEST scores first"), (1 / 6, "whole DATA set"), (50.0, "not a percentage"),
                        (3, "number found"), (4 / 6, "sort by score")]:
        fails_with(capsys, hint, ex.check_recall_at, value, s, y, 0.1)


def test_precision_at_k(capsys, ranked):
    s, y = ranked
    passes(capsys, ex.check_precision_at_k, 3 / 5, s, y, 5)  # top 5: ranks 1, 2, 5
    for value, hint in [(3 / 6, "that is the recall"), (3, "number found"), (0.0, "LARGEST"),
                        (0.9, "count the wrong labels")]:
        fails_with(capsys, hint, ex.check_precision_at_k, value, s, y, 5)
    passes(capsys, ex.check_precision_at_k, 4 / 9, s, y, 9)
    fails_with(capsys, "off by one", ex.check_precision_at_k, 4 / 10, s, y, 9)  # order[:k + 1]
    fails_with(capsys, "off by one", ex.check_precision_at_k, 3 / 8, s, y, 9)   # order[:k − 1]


def test_average_precision(capsys):
    scores = np.linspace(0.9, 0.0, 10)  # docs/theory.md §6: wrong at ranks 1, 3, 10
    wrong = np.isin(np.arange(1, 11), [1, 3, 10])
    right = (1 + 2 / 3 + 3 / 10) / 3
    passes(capsys, ex.check_average_precision, right, scores, wrong)
    from sklearn.metrics import average_precision_score
    passes(capsys, ex.check_average_precision, average_precision_score(wrong, scores), scores, wrong)
    prec = np.cumsum(wrong) / np.arange(1, 11)
    asc = wrong[::-1]
    for value, hint in [(prec.mean(), "WRONG label's rank"), (prec[wrong].sum() / 10, "not by n"),
                        ((np.cumsum(asc) / np.arange(1, 11))[asc].mean(), "from the largest down"),
                        (2 / 3, "that is precision@k"), ((1 / 1 + 2 / 2 + 3 / 9) / 3, "ranks start at 1"),
                        (0.5, "at each wrong label's rank")]:
        fails_with(capsys, hint, ex.check_average_precision, value, scores, wrong)


def test_auroc(capsys):
    s = np.array([0.9, 0.7, 0.7, 0.5, 0.5, 0.3, 0.2])
    y = np.array([True, False, True, True, False, False, False])
    right = (4 + 3.5 + 2.5) / 12  # by hand: 0.9 beats all 4; 0.7 beats 3, ties 1; 0.5 beats 2, ties 1
    passes(capsys, ex.check_auroc, right, s, y)
    from sklearn.metrics import roc_auc_score
    passes(capsys, ex.check_auroc, roc_auc_score(y, s), s, y)
    for value, hint in [(1 - right, "1 − AUROC"), (9 / 12, "not 0"), (11 / 12, "not 1"), (10.0, "pairs"),
                        (0.5, "over every")]:
        fails_with(capsys, hint, ex.check_auroc, value, s, y)


def test_flip_rates(capsys):
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.full(2, 2.0), size=30)
    labels = rng.integers(0, 2, size=30)
    joint = np.zeros((2, 2))  # [true, given], one example at a time
    for z in range(30):
        for i in range(2):
            joint[i, labels[z]] += proba[z, i]
    right = joint / joint.sum(1, keepdims=True)
    np.fill_diagonal(right, 0.0)
    passes(capsys, ex.check_flip_rates, right, proba, labels)

    from gbair_nb.data import TextDataset
    from helpers import FixedProbe  # the toolkit's own estimate, with these probabilities in place of a fitted probe's
    ds = TextDataset(np.arange(30), [str(i) for i in range(30)], labels, ["ham", "spam"])
    passes(capsys, ex.check_flip_rates, FixedProbe(proba).flip_rates(ds), proba, labels)
    counts = joint * (1 - np.eye(2))
    by_column = joint / joint.sum(0, keepdims=True) * (1 - np.eye(2))
    hard = np.eye(2)[proba.argmax(1)]
    hard_joint = np.stack([hard[labels == j].sum(0) for j in range(2)], axis=1)
    for value, hint in [(right.T, "transposed"), (by_column, "not by how many carry the label"),
                        (counts, "expected counts"), (joint / joint.sum(1, keepdims=True), "diagonal to 0"),
                        (hard_joint / hard_joint.sum(1, keepdims=True) * (1 - np.eye(2)), "not its argmax"),
                        (right[0], "check the shape"), (right + 0.05, "for each given label j")]:
        fails_with(capsys, hint, ex.check_flip_rates, value, proba, labels)
    fails_with(capsys, "fill in the blank", ex.check_flip_rates, None, proba, labels)


def test_one_way_share(capsys):
    rates = np.array([[0.0, 0.1], [0.5, 0.0]])
    passes(capsys, ex.check_one_way_share, 0.5 / 0.6, rates)
    for value, hint in [(5.0, "ALL the rates"), (0.1 / 0.6, "LARGEST"), (500 / 6, "percentage"),
                        (0.5, "largest flip rate divided by")]:
        fails_with(capsys, hint, ex.check_one_way_share, value, rates)


# ----------------------------------------------------------------------------------------------- 06 parameters
def test_lora_params(capsys):
    kw = dict(r=8, d_in=384, d_out=384, n_layers=6, n_targets=2)
    passes(capsys, ex.check_lora_params, 73_728, **kw)
    for value, hint in [(36_864, "projection type"), (12_288, "EVERY adapted layer"),
                        (64 * 768 * 12, "not squared"), (74_498, "head out"),
                        (70_000, "per adapted layer")]:
        fails_with(capsys, hint, ex.check_lora_params, value, **kw)
    fails_with(capsys, "two factors", ex.check_lora_params, 8 * 16 * 12, r=8, d_in=16, d_out=32, n_layers=6,
               n_targets=2)
    fails_with(capsys, "two factors", ex.check_lora_params, 8 * 32 * 12, r=8, d_in=16, d_out=32, n_layers=6,
               n_targets=2)


def test_gift_params(capsys):
    kw = dict(r=8, d_in=384, n_pairs=2, n_layers=6)
    passes(capsys, ex.check_gift_params, 12_288, **kw)
    for value, hint in [(73_728, "SHARED"), (6_144, "one pair per layer type"),
                        (64 * 768 * 2, "not squared"), (13_058, "head out"), (10_000, "2 · d_in · r")]:
        fails_with(capsys, hint, ex.check_gift_params, value, **kw)
    fails_with(capsys, "two matrices", ex.check_gift_params, 384 * 8 * 3, r=8, d_in=384, n_pairs=3)


def test_parameter_counts_match_the_real_models(capsys):
    from gbair_nb.pet import count_trainable
    from gbair_nb.models import make_model

    head = 2 * 32 + 2  # tiny backbone: width 32, 2 layers
    lora = count_trainable(make_model("lora", backbone="tiny", seed=0, r=8)[0]) - head
    gift = count_trainable(make_model("gift", backbone="tiny", seed=0, r=8)[0]) - head
    passes(capsys, ex.check_lora_params, lora, r=8, d_in=32, d_out=32, n_layers=2, n_targets=2)
    passes(capsys, ex.check_gift_params, gift, r=8, d_in=32, n_pairs=2, n_layers=2)


TOY_W = [1.0, 1.0, 1.0]
TOY_G = [[1.0, 0.1, -0.5], [0.1, 1.0, 0.2], [0.3, -0.2, 1.0]]


@pytest.mark.parametrize("mask", ["gradient", "update"])
def test_adamw_reference_is_torch_adamw_with_the_toolkit_masker(mask):
    from gbair_nb.gmt import GradientMasker

    holder = torch.nn.Module()
    holder.w = torch.nn.Parameter(torch.tensor(TOY_W, dtype=torch.float64))
    opt = torch.optim.AdamW([holder.w], lr=0.1, weight_decay=0.0)
    masker = GradientMasker(holder, keep_ratio=1 / 3, mask=mask, exclude=())
    for g in TOY_G:
        holder.w.grad = torch.tensor(g, dtype=torch.float64)
        assert masker.before_step()
        opt.step()
        masker.after_step()
    ref = ex.adamw_reference(TOY_W, TOY_G, keep=1, mask=mask)
    np.testing.assert_allclose(ref, holder.w.detach().numpy(), rtol=1e-12, atol=1e-12)
    if mask == "gradient":
        assert ref[0] < 0.9 - 0.05  # entry 0, masked in steps 2 and 3, kept moving
    else:
        assert ref[0] == pytest.approx(0.9)


def _student(kw):
    def fn(w, grads, *, keep, mask, lr=0.1):
        return ex.adamw_reference(w, grads, keep=keep, lr=lr, **{"mask": mask, **kw(mask)})
    return fn


def test_masked_adam(capsys):
    kw = dict(w=TOY_W, grads=TOY_G, keep=1)
    passes(capsys, ex.check_masked_adam, _student(lambda m: {}), **kw)

    def blank(w, grads, *, keep, mask, lr=0.1):
        raise NotImplementedError("YOUR CODE HERE")

    def raises(w, grads, *, keep, mask, lr=0.1):
        return w / 2  # a list divided by 2

    cases = [
        (_student(lambda m: {"mask": "update"}), "still moves"),            # always restores
        (_student(lambda m: {"mask": "gradient"}), "put the masked entries back"),  # never restores
        (_student(lambda m: {"mask": "none"}), "apply the mask"),
        (_student(lambda m: {"keep_smallest": True}), "LARGEST"),
        (_student(lambda m: {"bias_correction": False}), "bias corrections"),
        (_student(lambda m: {"sgd": True}), "plain SGD"),
        (_student(lambda m: {"betas": (0.5, 0.9)}), "is off"),
        (blank, "fill in the blank"), (raises, "raised TypeError"),
        (lambda w, grads, **_: None, "fill in the blank"), (lambda w, grads, **_: "w", "return the weights"),
        (None, "fill in the blank"), (3.0, "pass your function"),
    ]
    for fn, hint in cases:
        fails_with(capsys, hint, ex.check_masked_adam, fn, **kw)


# ------------------------------------------------------------------------------------------------ 07 verbalizer
@pytest.fixture
def lm_out():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(3, 7, 50, generator=g)
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
    ids = [11, 29]
    right = torch.stack([logits[0, 6, ids], logits[1, 4, ids], logits[2, 2, ids]])  # by hand
    return logits, mask, ids, right


def test_verbalizer_logits(capsys, lm_out):
    logits, mask, ids, right = lm_out
    passes(capsys, ex.check_verbalizer_logits, right, logits, mask, ids)
    rows = torch.arange(3)
    for value, hint in [(logits[:, -1, ids], "LAST REAL token"), (logits[rows, mask.sum(1).clamp(max=6)][:, ids],
                                                                   "one position too far"),
                        (logits[:, 0, ids], "first position"), (right[:, [1, 0]], "wrong order"),
                        (torch.softmax(logits[rows, mask.sum(1) - 1], -1)[:, ids], "probabilities over the whole"),
                        (torch.log_softmax(logits[rows, mask.sum(1) - 1], -1)[:, ids], "log-probabilities"),
                        (logits[:, :, ids], "check the shape"), (right + 1, "for each row b")]:
        fails_with(capsys, hint, ex.check_verbalizer_logits, value, logits, mask, ids)


def test_verbalizer_probs(capsys, lm_out):
    logits, mask, ids, right = lm_out
    passes(capsys, ex.check_verbalizer_probs, torch.softmax(right, dim=1), logits, mask, ids)
    rows = torch.arange(3)
    one_hot = torch.nn.functional.one_hot(right.argmax(1), 2).float()
    for value, hint in [(torch.softmax(logits[rows, mask.sum(1) - 1], -1)[:, ids], "whole vocabulary"),
                        (torch.softmax(right, dim=0), "over the batch"), (torch.sigmoid(right), "sigmoid"),
                        (right, "still logits"), (one_hot, "one-hot"), (torch.softmax(right, 1)[:2], "check the shape"),
                        (torch.full((3, 2), 0.5), "softmax over the classes")]:
        fails_with(capsys, hint, ex.check_verbalizer_probs, value, logits, mask, ids)


# ------------------------------------------------------------------------------------------------ every blank
BLANK_CALLS = [
    lambda v: ex.check_prompt_tuning_params(v),
    lambda v: ex.check_mean_pooling(v, np.ones((1, 2, 2)), np.ones((1, 2))),
    lambda v: ex.check_tracin_pair(v, [np.ones(2)], [np.ones(2)], [0.1]),
    lambda v: ex.check_self_influence(v, np.ones((1, 2, 2)), [0.1]),
    lambda v: ex.check_proponents_opponents(v, v, np.ones((1, 3)), 0, 1),
    lambda v: ex.check_review_pick(v, np.ones(3), [1, 2, 3], set(), 1),
    lambda v: ex.check_opposition_pick(v, pd.DataFrame({"train_id": [1], "score": [-1.0]}), 1),
    lambda v: ex.check_journal_replay(v, v, ids=[1], labels0=[0], actions=[]),
    lambda v: ex.check_gbair_score(v, [np.ones((2, 2))], [np.ones((1, 2))], [0.1]),
    lambda v: ex.check_default_k(v, 100),
    lambda v: ex.check_flagged(v, np.ones(3), np.zeros(3, dtype=bool), 1),
    lambda v: ex.check_recovered_fraction(v, ROUNDS, 0.93),
    lambda v: ex.check_recall_at(v, np.arange(3.0), np.array([1, 0, 0], bool), 0.5),
    lambda v: ex.check_precision_at_k(v, np.arange(3.0), np.array([1, 0, 0], bool), 1),
    lambda v: ex.check_average_precision(v, np.arange(3.0), np.array([1, 0, 0], bool)),
    lambda v: ex.check_auroc(v, np.arange(3.0), np.array([1, 0, 0], bool)),
    lambda v: ex.check_flip_rates(v, np.full((2, 2), 0.5), np.array([0, 1])),
    lambda v: ex.check_one_way_share(v, np.array([[0.0, 0.1], [0.5, 0.0]])),
    lambda v: ex.check_lora_params(v, r=8, d_in=4, d_out=4, n_layers=1, n_targets=1),
    lambda v: ex.check_gift_params(v, r=8, d_in=4, n_pairs=1),
    lambda v: ex.check_masked_adam(v, w=[1.0], grads=[[1.0]], keep=1),
    lambda v: ex.check_verbalizer_logits(v, np.ones((1, 2, 3)), np.ones((1, 2)), [0, 1]),
    lambda v: ex.check_verbalizer_probs(v, np.ones((1, 2, 3)), np.ones((1, 2)), [0, 1]),
]


@pytest.mark.parametrize("blank", [None, ..., NotImplemented], ids=["None", "Ellipsis", "NotImplemented"])
def test_every_checker_says_fill_in_the_blank(capsys, blank):
    assert len(BLANK_CALLS) == len([n for n in ex.__all__ if n.startswith("check_")]) - 1  # soft_prompt: below
    for call in BLANK_CALLS:
        assert call(blank) is False
        assert capsys.readouterr().out.strip() == "✗ not yet: fill in the blank first"
    assert ex.check_soft_prompt_inputs(blank, blank, soft_prompt=np.ones((1, 2)), tokens=np.ones((1, 1, 2)),
                                       attention_mask=np.ones((1, 1))) is False
    assert capsys.readouterr().out.strip() == "✗ not yet: fill in the blank first"


# ------------------------------------------------------------------------------------------- labs and solutions
def test_build_labs_check_finds_the_committed_notebooks_up_to_date():
    done = subprocess.run([sys.executable, "scripts/build_labs.py", "--check"], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "up to date" in done.stdout


def test_build_labs_check_fails_on_a_stale_notebook(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import build_labs
    finally:
        sys.path.pop(0)
    src = tmp_path / "src"
    src.mkdir()
    (src / "09_demo.py").write_text((REPO / "notebooks" / "labs" / "src" / "05_which_detector.py").read_text())
    monkeypatch.setattr(build_labs, "SRC", src)
    monkeypatch.setattr(build_labs, "LABS", tmp_path / "labs")
    monkeypatch.setattr(build_labs, "SOLUTIONS", tmp_path / "solutions")
    monkeypatch.setattr(build_labs, "REPO", tmp_path)
    assert build_labs.main(["--check"]) == 1  # nothing built yet
    assert build_labs.main([]) == 0
    assert build_labs.main(["--check"]) == 0
    lab = tmp_path / "labs" / "09_demo_lab.ipynb"
    lab.write_text(lab.read_text().replace("YOUR CODE HERE (1)", "YOUR CODE HERE (one)"))
    assert build_labs.main(["--check"]) == 1
    (src / "09_demo.py").write_text("# %% [markdown] sldie\n# # title\n")
    assert build_labs.main(["--check"]) == 2  # malformed source: error, nothing written


def test_labs_hide_the_solutions_and_solutions_assert_their_checks():
    assert [p.name.replace("_lab", "") for p in LABS] == [p.name.replace("_solutions", "") for p in SOLUTIONS]
    assert len(LABS) == 7
    for lab, sol in zip(LABS, SOLUTIONS):
        lab_cells, sol_cells = (json.loads(p.read_text())["cells"] for p in (lab, sol))
        lab_code = "\n".join("".join(c["source"]) for c in lab_cells if c["cell_type"] == "code")
        sol_code = "\n".join("".join(c["source"]) for c in sol_cells if c["cell_type"] == "code")
        assert "YOUR CODE HERE" in lab_code and "YOUR CODE HERE" not in sol_code, lab.name
        assert "SOLUTION" not in lab_code + sol_code, lab.name
        checks = [c for c in lab_cells if "check" in c["metadata"].get("tags", [])]
        assert len(checks) >= 2, lab.name
        sol_checks = [c for c in sol_cells if "check" in c["metadata"].get("tags", [])]
        assert all("".join(c["source"]).startswith("assert check_") for c in sol_checks), sol.name
        assert all(not c.get("outputs") for c in lab_cells + sol_cells if c["cell_type"] == "code")
        predict = [c for c in lab_cells
                   if c["cell_type"] == "markdown" and "Predict before you run" in "".join(c["source"])]
        assert len(predict) >= 2, lab.name
        assert all(c["metadata"]["slideshow"]["slide_type"] in ("slide", "subslide", "fragment", "skip", "notes", "-")
                   for c in lab_cells + sol_cells)


def _run_in_process(path: Path) -> list[tuple[list[str], str]]:
    """Execute a notebook's code cells in one namespace (no kernel); return (tags, stdout) per code cell."""
    ns: dict = {"__name__": "__lab__"}
    out = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] != "code":
            continue
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile("".join(cell["source"]), f"{path.name}[{i}]", "exec"), ns)  # an exception fails the test
        out.append((cell["metadata"].get("tags", []), buf.getvalue()))
    return out


@pytest.mark.parametrize("lab", LABS, ids=[p.stem for p in LABS])
def test_every_lab_runs_with_its_blanks_and_every_check_says_not_yet(lab):
    cells = _run_in_process(lab)
    checks = [text for tags, text in cells if "check" in tags]
    assert len(checks) >= 2
    for text in checks:
        lines = text.strip().splitlines()
        assert lines and all(line == "✗ not yet: fill in the blank first" for line in lines), text


def test_one_lab_end_to_end_in_a_kernel():
    # the same as above, through a real Jupyter kernel (what a student runs): lab 05 is NumPy only, a few seconds
    import nbformat
    from nbclient import NotebookClient

    lab = REPO / "notebooks" / "labs" / "05_which_detector_lab.ipynb"
    nb = nbformat.read(lab, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(lab.parent)}}).execute()
    checks = [c for c in nb.cells if "check" in c.metadata.get("tags", [])]
    texts = ["".join(o.get("text", "") for o in c.outputs if o.output_type == "stream") for c in checks]
    assert len(texts) == 6 and all(t.strip() and set(t.strip().splitlines()) == {"✗ not yet: fill in the blank first"}
                                   for t in texts), texts
    assert not any(o.output_type == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_pytest_collects_the_solutions_but_not_the_labs():
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "--nbval-lax", "-p",
                           "no:cacheprovider", "notebooks/labs", "notebooks/solutions"], cwd=REPO,
                          capture_output=True, text=True)
    collected = done.stdout
    assert "solutions/02_tracin_solutions.ipynb" in collected, collected[-2000:]
    assert "_lab.ipynb" not in collected and "labs/src" not in collected, collected[-2000:]



def _solution_namespace(name: str) -> dict:
    ns: dict = {"__name__": "__solutions__"}
    for cell in json.loads((REPO / "notebooks" / "solutions" / f"{name}_solutions.ipynb").read_text())["cells"]:
        if cell["cell_type"] == "code":
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile("".join(cell["source"]), name, "exec"), ns)
    return ns


def test_the_hints_tell_the_mistakes_apart_on_the_labs_own_inputs(capsys):
    # a student makes the mistake on the lab's data, not on the tests' data: the hint must still name it
    ns = _solution_namespace("02_tracin")
    gt, gs, lrs, G, w = ns["g_train"], ns["g_test"], ns["lrs"], ns["G"], ns["w"]
    no_lr = sum(float((a[n] * b[n]).sum()) for a, b in zip(gt, gs) for n in a)
    one_rate = sum(lr["W"] * float((a[n] * b[n]).sum()) for a, b, lr in zip(gt, gs, lrs) for n in a)
    fails_with(capsys, "learning rate?", ex.check_tracin_pair, no_lr, gt, gs, lrs)
    fails_with(capsys, "its own learning rate", ex.check_tracin_pair, one_rate, gt, gs, lrs)
    fails_with(capsys, "learning rate?", ex.check_self_influence, (G ** 2).sum((0, 2)), G, w)
    fails_with(capsys, "not ‖g‖", ex.check_self_influence, np.sqrt((G ** 2 * w[:, None]).sum(2)).sum(0), G, w)
    fails_with(capsys, "swapped", ex.check_proponents_opponents, ns["opponents"], ns["proponents"], ns["scores"], 0, 4)

    ns = _solution_namespace("04_gbair")
    Gt, Gm, lrs, score = ns["G_train"], ns["G_M"], ns["lrs"], ns["score"]
    fails_with(capsys, "opposite sign", ex.check_gbair_score, -score, Gt, Gm, lrs)
    fails_with(capsys, "learning rate?", ex.check_gbair_score, -sum(g @ m.sum(0) for g, m in zip(Gt, Gm)), Gt, Gm, lrs)
    fails_with(capsys, "every checkpoint", ex.check_gbair_score, -(Gt[-1] @ (lrs[-1] * Gm[-1].sum(0))), Gt, Gm, lrs)
    fails_with(capsys, "rolls back", ex.check_recovered_fraction, (0.87 - 0.72) / 0.21, ns["rounds"], ns["clean"])
    flagged_with_reviewed = np.argsort(-ns["score_round2"], kind="stable")[:12]
    fails_with(capsys, "already reviewed", ex.check_flagged, flagged_with_reviewed, ns["score_round2"], ns["reviewed"],
               12)

    ns = _solution_namespace("05_which_detector")
    s, y, n = ns["gbair_like"], ns["is_corrupted"], ns["n"]
    order = np.argsort(-s, kind="stable")
    fails_with(capsys, "one example short", ex.check_recall_at, y[order[:11]].sum() / y.sum(), s, y, 0.04)
    fails_with(capsys, "precision of the top", ex.check_recall_at, y[order[:12]].sum() / 12, s, y, 0.04)
    assert n == 290

    logits, mask, ids = (torch.randn(3, 7, 50, generator=torch.Generator().manual_seed(7)),
                         torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4]), [11, 29])  # lab 07's inputs
    fails_with(capsys, "LAST REAL token", ex.check_verbalizer_logits, logits[:, -1, ids], logits, mask, ids)


def test_the_flip_rate_hints_tell_the_mistakes_apart_on_lab_05s_own_inputs(capsys):
    ns = _solution_namespace("05_which_detector")
    proba, given, rates, joint = ns["proba"], ns["given"], ns["rates"], ns["joint"]
    passes(capsys, ex.check_flip_rates, rates, proba, given)
    off = 1 - np.eye(2)
    hard = np.eye(2)[proba.argmax(1)]
    hard_joint = np.stack([hard[given == j].sum(0) for j in range(2)], axis=1)
    for value, hint in [(rates.T, "transposed"), (joint / joint.sum(0, keepdims=True) * off, "not by how many"),
                        (joint * off, "expected counts"), (joint / joint.sum(1, keepdims=True), "diagonal to 0"),
                        (hard_joint / hard_joint.sum(1, keepdims=True) * off, "not its argmax")]:
        fails_with(capsys, hint, ex.check_flip_rates, value, proba, given)
    passes(capsys, ex.check_one_way_share, ns["share"], rates)
    fails_with(capsys, "ALL the rates", ex.check_one_way_share, rates.max() / (rates.sum() - rates.max()), rates)


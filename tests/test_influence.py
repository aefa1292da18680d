"""TracIn against two oracles: sums of per-example loop gradients, and Captum's TracInCP.

The per-example gradients themselves are tested in test_gradients.py."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from gbair_nb.data import TextDataset
from gbair_nb.influence import (InfluenceError, aggregated_influence, grad_slices,
                                per_example_grads, self_influence, top_influences, tracin)
from gbair_nb.pet import trainable_state
from gbair_nb.models import make_model

torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=UserWarning)

TRAIN = ["hello there friend", "WIN a free prize now!! call 0800 123", "ok", "see you at the station at nine",
         "URGENT your account has a reward, text YES", "lunch?", "free entry in a weekly draw, txt WIN",
         "i'll be late, sorry", "claim your cash prize today", "can you pick up milk on the way home",
         "congratulations you have been selected", "thanks, talk tomorrow"]
TRAIN_LABELS = np.array([0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0])
TEST = ["free prize, call now", "see you at home", "win cash", "ok thanks"]
TEST_LABELS = np.array([1, 0, 1, 0])


def _sensitive(model: nn.Module) -> nn.Module:
    """A random tiny BERT barely depends on its input; larger frozen weights make examples differ."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.requires_grad and p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def _perturbed_checkpoints(model, lrs_list, seed=0, scale=0.3):
    """(state, lrs) pairs: the model's trainable tensors plus noise, as if saved at different points of training."""
    base = trainable_state(model)
    g = torch.Generator().manual_seed(seed)
    return [({k: v + scale * torch.randn(v.shape, generator=g) for k, v in base.items()}, lrs) for lrs in lrs_list]


@pytest.fixture(scope="module")
def pt():
    model, tok = make_model(backbone="tiny", num_virtual_tokens=4)
    return _sensitive(model), tok


@pytest.fixture(scope="module")
def ckpts(pt):
    model, _ = pt
    names = list(trainable_state(model))
    # per-parameter rates that differ across parameters (prompt vs head) and across checkpoints
    lrs = [{n: (0.05 if "prompt" in n else 0.01) * f for n in names} for f in (1.0, 0.55, 0.1)]
    return _perturbed_checkpoints(model, lrs)


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _row_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=1) / b.norm(dim=1)).max())


def _loop_tracin(model, tok, ckpts, tr, trl, te, tel, cosine=False, unit_test_side=False):
    """Hand computation: Σ_c Σ_name lrs_c[name] ⟨g_name(z), g_name(z')⟩ from per-example loop gradients."""
    total = np.zeros((len(te), len(tr)))
    for state, lrs in ckpts:
        g_tr, sl = per_example_grads(model, tok, tr, trl, state=state, method="loop", verbose=False)
        g_te, _ = per_example_grads(model, tok, te, tel, state=state, method="loop", verbose=False)
        if cosine:
            g_tr, g_te = g_tr / g_tr.norm(dim=1, keepdim=True), g_te / g_te.norm(dim=1, keepdim=True)
        if unit_test_side:
            g_te = g_te / g_te.norm(dim=1, keepdim=True)
        for name, s in sl.items():
            total += lrs[name] * (g_te[:, s].double() @ g_tr[:, s].double().T).numpy()
    return total


# ---------------------------------------------------------------------------------------------------- TracIn
def test_equals_captum_tracincp(pt, tmp_path):
    from captum.influence import TracInCP
    from torch.utils.data import TensorDataset

    from gbair_nb.pet import load_trainable_state

    model, tok = pt
    rates = [0.05, 0.02, 0.005]  # Captum takes one rate per checkpoint: equal within, different across
    ckpts = _perturbed_checkpoints(model, rates, seed=3)
    paths = []
    for i, (state, _) in enumerate(ckpts):
        paths.append(str(tmp_path / f"ckpt{i}.pt"))
        torch.save(state, paths[-1])

    class Logits(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).logits

    def load(wrapper, path):
        load_trainable_state(wrapper.m, torch.load(path))
        return rates[paths.index(path)]

    def encode(texts):
        return tok(texts, padding="max_length", max_length=32, truncation=True, return_tensors="pt")

    enc = encode(TRAIN)
    before = trainable_state(model)
    captum = TracInCP(Logits(model), TensorDataset(enc["input_ids"], enc["attention_mask"],
                                                   torch.as_tensor(TRAIN_LABELS)),
                      paths, checkpoints_load_func=load,
                      layers=["m.prompt_encoder.default.embedding", "m.base_model.classifier.modules_to_save.default"],
                      loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=4,
                      sample_wise_grads_per_batch=False)
    te = encode(TEST)
    expected = captum.influence((te["input_ids"], te["attention_mask"], torch.as_tensor(TEST_LABELS))).numpy()
    load_trainable_state(model, before)
    ours = tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS,
                  batch_size=5, verbose=False)
    assert ours.shape == (4, 12)
    assert (ours > 0).any() and (ours < 0).any() and ours.std() > 0.1 * np.abs(ours).max()
    assert _rel(ours, expected) <= 1e-5


def test_per_parameter_lrs_and_per_checkpoint(pt, ckpts):
    model, tok = pt
    expected = _loop_tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS)
    per = tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS,
                 per_checkpoint=True, chunk_size=5, verbose=False)
    assert per.shape == (3, 4, 12)
    assert _rel(per.sum(0), expected) <= 1e-5
    # one shared rate per checkpoint is not the same thing when the groups' rates differ
    shared = [(s, 0.05 * f) for (s, _), f in zip(ckpts, (1.0, 0.55, 0.1))]
    assert _rel(tracin(model, tok, shared, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS,
                       verbose=False), expected) > 1e-2
    # last only = the last checkpoint's contribution = a one-checkpoint TracIn
    last = tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS,
                  checkpoints_used="last", verbose=False)
    assert _rel(last, per[-1]) <= 1e-6
    assert _rel(last, tracin(model, tok, ckpts[-1:], TRAIN, TRAIN_LABELS,
                             TEST, TEST_LABELS, verbose=False)) <= 1e-6
    assert _rel(last, per.sum(0)) > 1e-2


def test_cosine_equals_normalised_dot(pt, ckpts):
    model, tok = pt
    ours = tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS,
                  variant="cosine", verbose=False)
    expected = _loop_tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, cosine=True)
    assert _rel(ours, expected) <= 1e-5
    # with one shared rate per checkpoint, cosine TracIn is Σ_c η_c cos and bounded by Σ_c η_c
    shared = [(s, 0.1) for s, _ in ckpts]
    cos = tracin(model, tok, shared, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS,
                 variant="cosine", verbose=False)
    assert np.abs(cos).max() <= 0.3 + 1e-5 and np.abs(cos).max() > 0.1


@dataclass
class FakeCheckpoint:  # what train.Checkpoint looks like to influence: duck typing
    state: dict
    lrs: dict
    lr: float = 0.0


def test_self_influence_is_the_diagonal(pt, ckpts):
    model, tok = pt
    objs = [FakeCheckpoint(dict(s), lrs) for s, lrs in ckpts]
    full = tracin(model, tok, objs, TRAIN, TRAIN_LABELS, TRAIN, TRAIN_LABELS,
                  verbose=False)
    si = self_influence(model, tok, objs, TRAIN, TRAIN_LABELS, chunk_size=5, verbose=False)
    assert si.shape == (12,) and (si > 0).all()
    assert _rel(si, np.diag(full)) <= 1e-5
    assert np.allclose(full, full.T, rtol=1e-4, atol=1e-6 * np.abs(full).max())
    per = self_influence(model, tok, objs, TRAIN, TRAIN_LABELS, per_checkpoint=True, verbose=False)
    assert per.shape == (3, 12) and _rel(per.sum(0), si) <= 1e-6
    # flipping a label changes its self-influence
    flipped = TRAIN_LABELS.copy()
    flipped[0] = 1
    assert not np.isclose(self_influence(model, tok, objs, TRAIN, flipped, verbose=False)[0], si[0])


@pytest.mark.parametrize("variant", ["dot", "cosine"])
def test_aggregated_is_the_sum_of_rows(pt, ckpts, variant):
    model, tok = pt
    full = tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS,
                  variant=variant, verbose=False)
    agg = aggregated_influence(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS,
                               variant=variant, chunk_size=3, verbose=False)
    assert agg.shape == (12,)
    assert _rel(agg, full.sum(0)) <= 1e-5
    per = aggregated_influence(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS,
                               variant=variant, per_checkpoint=True, verbose=False)
    assert per.shape == (3, 12) and _rel(per.sum(0), agg) <= 1e-5


def test_automatic_chunk_size_streams_the_same_scores(pt, ckpts, monkeypatch):
    import gbair_nb.influence as inf

    # closed form: floor(budget / (4 bytes x P)), at least 1, at most the cap
    assert inf.auto_chunk_size(8_835) == 1024
    assert inf.auto_chunk_size(22_700_000) == 2  # full fine-tuning of MiniLM: 2 rows of 90.8 MB in 256 MB
    assert inf.auto_chunk_size(10**12) == 1
    assert inf.auto_chunk_size(1000, budget_bytes=4 * 1000 * 7) == 7
    model, tok = pt
    one_chunk = aggregated_influence(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, verbose=False)
    P = sum(sl.stop - sl.start for sl in grad_slices(model).values())
    monkeypatch.setattr(inf, "CHUNK_BYTES", 4 * P * 5)  # a budget of 5 rows: 12 examples stream in 3 chunks
    calls = []
    real = inf._train_chunks
    monkeypatch.setattr(inf, "_train_chunks", lambda *a: calls.append(a[1].chunk) or real(*a))
    streamed = aggregated_influence(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, verbose=False)
    assert calls == [5] and _rel(streamed, one_chunk) <= 1e-6
    with pytest.raises(InfluenceError, match="chunk_size"):
        aggregated_influence(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, chunk_size=0, verbose=False)


def test_aggregated_per_mistake_normalisation(pt, ckpts):
    model, tok = pt
    agg = aggregated_influence(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, normalize="per_mistake",
                               verbose=False)
    expected = _loop_tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, unit_test_side=True).sum(0)
    assert _rel(agg, expected) <= 1e-5
    plain = aggregated_influence(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, verbose=False)
    assert _rel(agg, plain) > 1e-2


class LazyCheckpoint:  # like train.Checkpoint before its tensors are read from disk
    def __init__(self, state, lrs):
        self._state, self.lrs, self.state, self.path = state, lrs, None, None

    def load_state(self):
        self.state = self._state
        return self.state


def test_call_styles_and_lazy_checkpoints(pt, ckpts):
    model, tok = pt
    train = TextDataset(ids=np.arange(12), texts=TRAIN, labels=TRAIN_LABELS, class_names=["ham", "spam"])
    test = TextDataset(ids=np.arange(4), texts=TEST, labels=TEST_LABELS, class_names=["ham", "spam"])
    by_lists = tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, verbose=False)
    lazy = [LazyCheckpoint(s, l) for s, l in ckpts]
    assert np.array_equal(tracin(model, tok, lazy, train, test, verbose=False), by_lists)
    assert np.array_equal(tracin(model, tok, ckpts, train, test=test, verbose=False), by_lists)
    agg = aggregated_influence(model, tok, ckpts, train, test, verbose=False)
    assert _rel(agg, by_lists.sum(0)) <= 1e-5


def test_streaming_top_k_equals_argsort(pt, ckpts):
    model, tok = pt
    train = TextDataset(ids=np.arange(100, 112), texts=TRAIN, labels=TRAIN_LABELS, class_names=["ham", "spam"])
    test = TextDataset(ids=np.arange(900, 904), texts=TEST, labels=TEST_LABELS, class_names=["ham", "spam"])
    noisy = TRAIN_LABELS.copy()
    noisy[[1, 3]] = 1 - noisy[[1, 3]]
    full = tracin(model, tok, ckpts, train, noisy, test, verbose=False)
    pro, opp = top_influences(model, tok, ckpts, train, noisy, test, k=3, chunk_size=5,
                              verbose=False)
    assert list(pro.columns) == ["test_id", "test_text", "test_label", "test_pred", "train_id", "train_text",
                                 "train_label", "score", "rank"]
    assert len(pro) == len(opp) == 4 * 3
    for i, test_id in enumerate(test.ids):
        p, o = pro[pro.test_id == test_id], opp[opp.test_id == test_id]
        assert list(p["rank"]) == [1, 2, 3]
        assert list(p.train_id) == list(train.ids[np.argsort(-full[i])[:3]])
        assert list(o.train_id) == list(train.ids[np.argsort(full[i])[:3]])
        assert np.allclose(p.score, np.sort(full[i])[::-1][:3], rtol=1e-5)
        assert np.allclose(o.score, np.sort(full[i])[:3], rtol=1e-5)
    # noisy labels are the ones reported and used
    row = pro.iloc[0]
    assert row.train_label == noisy[list(train.ids).index(row.train_id)]
    assert set(pro.test_pred) <= {0, 1}


def test_bad_arguments(pt, ckpts):
    model, tok = pt
    with pytest.raises(InfluenceError, match="variant"):
        tracin(model, tok, ckpts, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS,
               variant="cos", verbose=False)
    with pytest.raises(InfluenceError, match="no labels"):
        tracin(model, tok, ckpts, TRAIN, test=TEST, test_labels=TEST_LABELS, verbose=False)
    with pytest.raises(InfluenceError, match="no rate"):
        tracin(model, tok, [(ckpts[0][0], {"x": 1.0})], TRAIN, TRAIN_LABELS,
               TEST, TEST_LABELS, verbose=False)
    assert len(grad_slices(model)) == 3

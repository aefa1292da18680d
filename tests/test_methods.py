"""Every PET method builds with a trainable head, has exact per-example gradients (fast path vs loop), and runs a
round of G-BAIR."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from gbair_nb.influence import fast_path_available, per_example_grads
from gbair_nb.pet import METHODS, count_trainable, head_names, trainable_names
from gbair_nb.models import make_model
from gbair_nb.recovery import gbair
from gbair_nb.scorers import SCORERS, ScoreContext
from gbair_nb.scenarios import make_scenario
from gbair_nb.train import TrainConfig, train
from gbair_reference import assert_top_k, loop_gbair_scores

torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

TEXTS = ["hello there friend", "WIN a free prize now!! call 0800 123", "ok", "see you at the station at nine",
         "URGENT your account has a reward, text YES", "lunch?", "claim your cash prize today",
         "thanks, talk tomorrow"]
LABELS = np.array([0, 1, 0, 0, 1, 0, 1, 0])


def _sensitive(model):
    """Larger random frozen weights and nonzero adapters, so every trainable tensor gets a real gradient."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if (not p.requires_grad and p.dim() == 2) or "lora_B" in n or "psi" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_builds_with_a_trainable_head(method):
    model, _ = make_model(method, backbone="tiny")
    params = dict(model.named_parameters())
    heads = head_names(model)
    assert heads and all(params[n].requires_grad for n in heads)
    assert count_trainable(model) > sum(params[n].numel() for n in heads) or method == "head_only"


def test_lora_head_is_peft_modules_to_save_copy():
    model, _ = make_model("lora", backbone="tiny", r=4)
    names = trainable_names(model)
    assert all("modules_to_save" in n for n in head_names(model))
    assert sum("lora_A" in n for n in names) == sum("lora_B" in n for n in names) == 4  # 2 layers × q, v
    assert count_trainable(model) == 4 * (4 * 32 + 32 * 4) + 66


def test_full_trains_everything():
    model, _ = make_model("full", backbone="tiny")
    assert all(p.requires_grad for p in model.parameters())


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("method", ["lora", "gift"])
def test_fast_per_example_grads_equal_the_loop(method):
    model, tok = make_model(method, backbone="tiny", r=4)
    model = _sensitive(model)
    assert fast_path_available(model)  # LoRA's A/B and GIFT's ψ/φ are nn.Linear: the batched hooks cover them
    fast, sl = per_example_grads(model, tok, TEXTS, LABELS, method="fast", batch_size=3, verbose=False)
    loop, _ = per_example_grads(model, tok, TEXTS, LABELS, method="loop", verbose=False)
    for name, s in sl.items():  # each parameter, every shared GIFT pair included, on its own scale
        assert loop[:, s].abs().max() > 0, name
        assert _rel(fast[:, s], loop[:, s]) <= 1e-5, (name, _rel(fast[:, s], loop[:, s]))


def test_gift_shared_pair_gradient_sums_over_layers():
    """The per-example gradient of a shared ψ is the sum of what each layer contributes (chain rule)."""
    model, tok = make_model("gift", backbone="tiny", r=2, share="all")
    model = _sensitive(model)
    fast, sl = per_example_grads(model, tok, TEXTS[:2], LABELS[:2], method="fast", verbose=False)
    assert set(n for n in sl if n.startswith("gift")) == {"gift.all.psi.weight", "gift.all.phi.weight"}
    loop, _ = per_example_grads(model, tok, TEXTS[:2], LABELS[:2], method="loop", verbose=False)
    assert _rel(fast, loop) <= 1e-5


def test_full_fine_tuning_falls_back_to_the_loop():
    model, tok = make_model("full", backbone="tiny")
    assert not fast_path_available(model)  # embeddings and LayerNorms are not nn.Linear
    g, sl = per_example_grads(model, tok, TEXTS[:2], LABELS[:2], verbose=False)
    assert g.shape == (2, count_trainable(model))


@pytest.fixture(scope="module")
def toy_scenario():
    return make_scenario("sms_spam", n_train=48, n_val=24, n_test=24, p=0.5)


@pytest.mark.parametrize("method,options,gmt", [
    ("prompt_tuning", {"num_virtual_tokens": 4}, None),
    ("head_only", {}, None),
    ("lora", {"r": 4}, None),
    ("gift", {"r": 4}, None),
    ("full", {}, None),
    ("gift", {"r": 4}, {"keep_ratio": 0.5, "interval": 2}),
])
def test_one_round_of_gbair_with_each_method_flags_the_loop_gradient_ranking(toy_scenario, method, options, gmt):
    """G-BAIR's scores and flagged ids against an independent ranking: loop per-example gradients at each
    checkpoint, each parameter weighted by its own learning rate, summed over the validation mistakes under their
    true labels, negated. Two checkpoints; the PET parameters' rate differs from the head's."""
    config = TrainConfig(method=method, backbone="tiny", epochs=2, batch_size=16, lr=1e-2, lr_head=3e-3,
                         max_length=24, method_options=options, gmt=gmt)
    sc = toy_scenario
    run0 = train(sc.train, config=config, verbose=False)
    assert len(run0.checkpoints) == 2 and run0.checkpoints[0].lrs != run0.checkpoints[1].lrs
    assert len(set(run0.checkpoints[0].lrs.values())) == (1 if method == "head_only" else 2)
    scores, M = loop_gbair_scores(run0, sc.train, sc.splits.val)
    assert 0 < len(M) < len(sc.splits.val)  # so G-BAIR had mistakes to trace
    ours = SCORERS["gbair_mistakes"](ScoreContext(run0, sc.train, sc.splits.val, config))
    np.testing.assert_allclose(ours, scores, rtol=0, atol=1e-5 * np.abs(scores).max())
    rec = gbair(sc, scorer="gbair_mistakes", rounds=1, k=5, config=config, round0=run0, clean=False, patience=5,
                verbose=False)
    assert rec.rounds[0].n_val_mistakes == len(M) and len(rec.rounds) == 2
    assert_top_k(rec.rounds[1].flagged_ids, scores, sc.splits.train.ids, 5)

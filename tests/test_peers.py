"""kronfluence's EK-FAC as a peer: an oracle (λ → ∞ makes it TracIn at the final parameters, up to a factor λ),
what it can and cannot see, the model left as it was, and the optional G-BAIR scorer."""
from __future__ import annotations

import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from gbair_nb import peers
from gbair_nb.influence import aggregated_influence, per_example_grads, self_influence
from gbair_nb.peers import PeerError, ekfac_influence, ekfac_modules
from gbair_nb.pet import load_trainable_state, trainable_state
from gbair_nb.models import make_model
from test_influence import TEST, TEST_LABELS, TRAIN, TRAIN_LABELS, _perturbed_checkpoints, _sensitive

torch.set_num_threads(1)
warnings.filterwarnings("ignore")
needs_kronfluence = pytest.mark.skipif(not peers.kronfluence_available(), reason=f"needs {peers.INSTALL}")


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.fixture(scope="module", params=["lora", "gift", "head_only"])
def linear_model(request):
    model, tok = make_model(request.param, backbone="tiny")
    return request.param, _sensitive(model), tok


@needs_kronfluence
def test_large_damping_is_tracin_at_the_final_parameters(linear_model):
    """(G + λI)⁻¹ → I/λ: EK-FAC self-influence and aggregated influence become TracIn with one checkpoint (the
    current parameters) at learning rate 1/λ. GIFT's pairs run in two layers each (shared parameters): without the
    workaround in gbair_nb.peers, kronfluence 1.0.1's pairwise path was 2.5% off here."""
    method, model, tok = linear_model
    lam = 1e5
    got = ekfac_influence(model, tok, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, damping=lam, batch_size=5)
    assert got.uncovered == [] and len(got.modules) >= 1
    ckpt = [(trainable_state(model), 1.0 / lam)]
    si = self_influence(model, tok, ckpt, TRAIN, TRAIN_LABELS, verbose=False)
    agg = aggregated_influence(model, tok, ckpt, TRAIN, TRAIN_LABELS, TEST, TEST_LABELS, verbose=False)
    assert _rel(got.self_influence, si) <= 1e-3, method
    assert _rel(got.aggregated, agg) <= 1e-3, method
    assert set(got.seconds) == {"fit", "self_influence", "aggregated"} and min(got.seconds.values()) > 0


@needs_kronfluence
def test_default_damping_gives_positive_self_influence(linear_model):
    method, model, tok = linear_model
    if method != "head_only":  # LoRA's B and GIFT's ψ start at 0: A's and φ's gradients are 0, so is the damping
        with pytest.raises(PeerError, match="all-zero gradients"):
            ekfac_influence(model, tok, TRAIN, TRAIN_LABELS)
    moved = _perturbed_checkpoints(model, [None], scale=0.1)[0][0]  # as if trained a little
    saved = trainable_state(model)
    load_trainable_state(model, moved)
    try:
        got = ekfac_influence(model, tok, TRAIN, TRAIN_LABELS)
    finally:
        load_trainable_state(model, saved)
    # gᵀ (G + λI)⁻¹ g > 0: the damped inverse is positive definite
    assert got.aggregated is None and np.isfinite(got.self_influence).all() and (got.self_influence > 0).all()


@needs_kronfluence
def test_model_is_left_as_it_was():
    model, tok = make_model("lora", backbone="tiny")
    model.train()
    modules = dict(model.named_modules())
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    ekfac_influence(model, tok, TRAIN[:6], TRAIN_LABELS[:6], TEST, TEST_LABELS, damping=1.0)
    assert model.training
    assert {n: id(m) for n, m in model.named_modules()} == {n: id(m) for n, m in modules.items()}
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(torch.equal(state[n], p) for n, p in model.named_parameters())


def test_what_kronfluence_can_see():
    lora, _ = make_model("lora", backbone="tiny")
    mods, uncovered = ekfac_modules(lora)
    assert uncovered == [] and all("lora_" in m or "classifier" in m for m in mods)
    pt, _ = make_model("prompt_tuning", backbone="tiny", num_virtual_tokens=4)
    mods, uncovered = ekfac_modules(pt)
    assert uncovered == ["prompt_encoder.default.embedding.weight"]  # an nn.Embedding, not a Linear
    assert len(mods) == 1 and "classifier" in mods[0]
    full, _ = make_model("full", backbone="tiny")
    mods, uncovered = ekfac_modules(full)
    assert any("embeddings" in n for n in uncovered) and any("LayerNorm" in n for n in uncovered)


@needs_kronfluence
def test_prompt_tuning_is_refused_unless_partial():
    model, tok = make_model("prompt_tuning", backbone="tiny", num_virtual_tokens=4)
    with pytest.raises(PeerError, match="nn.Embedding"):
        ekfac_influence(model, tok, TRAIN, TRAIN_LABELS)
    got = ekfac_influence(model, tok, TRAIN, TRAIN_LABELS, partial=True)
    assert got.uncovered == ["prompt_encoder.default.embedding.weight"] and got.self_influence.shape == (12,)


@needs_kronfluence
def test_partial_full_fine_tuning_scores_the_linear_layers_only():
    """Full fine-tuning with partial=True is TracIn restricted to the Linear layers' weights and biases."""
    model, tok = make_model("full", backbone="tiny")
    model = _sensitive(model)
    lam = 1e5
    got = ekfac_influence(model, tok, TRAIN[:8], TRAIN_LABELS[:8], damping=lam, partial=True)
    grads, slices = per_example_grads(model, tok, TRAIN[:8], TRAIN_LABELS[:8], verbose=False)
    cols = torch.cat([torch.arange(sl.start, sl.stop) for name, sl in slices.items()
                      if name.rpartition(".")[0] in got.modules])
    want = (grads[:, cols].double() ** 2).sum(1).numpy() / lam
    assert _rel(got.self_influence, want) <= 1e-3
    assert len(cols) < grads.shape[1]  # the embeddings and LayerNorms are left out


def test_missing_kronfluence_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "kronfluence", None)  # import kronfluence now raises ImportError
    assert not peers.kronfluence_available()
    model, tok = make_model("lora", backbone="tiny")
    with pytest.raises(PeerError, match="pip install --no-deps kronfluence==1.0.1"):
        ekfac_influence(model, tok, TRAIN, TRAIN_LABELS)
    from gbair_nb.scorers import SCORERS

    with pytest.raises(PeerError, match="optional package kronfluence"):
        SCORERS["ekfac"](None)


@needs_kronfluence
def test_ekfac_scorer_runs_in_the_recovery_loop():
    from gbair_nb.recovery import gbair
    from test_recovery import TINY, toy_scenario

    config = replace(TINY, method="lora", method_options={"r": 2}, epochs=2)
    rec = gbair(toy_scenario(), scorer="ekfac", k=3, rounds=1, config=config, clean=False, verbose=False)
    r0 = rec.rounds[0]
    assert rec.scorer == "ekfac" and r0.n_val_mistakes > 0
    # flagged by EK-FAC's G-BAIR score, its detection measured like every scorer's
    assert len(rec.rounds) == 2 and len(rec.rounds[1].flagged_ids) == 3 and 0 <= r0.detection["auroc"] <= 1

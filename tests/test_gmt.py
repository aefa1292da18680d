"""Gradient-mask tuning: exact masks, interval averaging, and what AdamW does to a "masked" weight."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from gbair_nb.gmt import GMTConfig, GMTError, GradientMasker, top_fraction_mask
from gbair_nb.models import make_model
from gbair_nb.train import TrainConfig, train

torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=UserWarning)


def test_top_fraction_per_tensor_is_exact():
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.rand(10, 10, generator=g), "b": torch.rand(7, generator=g)}
    masks = top_fraction_mask(scores, 0.3, granularity="tensor")
    assert int(masks["a"].sum()) == 30 and int(masks["b"].sum()) == 2  # round(0.3 · 7) = 2
    for n, s in scores.items():
        kept, dropped = s[masks[n]], s[~masks[n]]
        assert kept.min() > dropped.max()  # the kept entries are the largest ones
        assert set(torch.topk(s.reshape(-1), int(masks[n].sum())).indices.tolist()) == \
            set(masks[n].reshape(-1).nonzero().reshape(-1).tolist())


def test_top_fraction_global_uses_one_threshold():
    scores = {"small": torch.full((20,), 0.1) + torch.arange(20) * 1e-3, "large": 1.0 + torch.arange(20.0)}
    masks = top_fraction_mask(scores, 0.25, granularity="global")
    assert sum(int(m.sum()) for m in masks.values()) == 10  # 25% of 40
    assert int(masks["small"].sum()) == 0 and int(masks["large"].sum()) == 10  # all from the larger tensor
    assert torch.equal(masks["large"], torch.arange(20) >= 10)


def test_random_control_keeps_the_same_number():
    scores = {"a": torch.arange(100.0).reshape(10, 10)}
    top = top_fraction_mask(scores, 0.2)
    r1 = top_fraction_mask(scores, 0.2, random=True, generator=torch.Generator().manual_seed(0))
    r2 = top_fraction_mask(scores, 0.2, random=True, generator=torch.Generator().manual_seed(0))
    assert int(r1["a"].sum()) == int(top["a"].sum()) == 20
    assert torch.equal(r1["a"], r2["a"]) and not torch.equal(r1["a"], top["a"])


def _toy(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 2))


def test_interval_averaging_equals_a_hand_average():
    model = _toy()
    masker = GradientMasker(model, keep_ratio=0.5, interval=3, exclude=())
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1))
    grads = []
    for i in range(3):
        model.zero_grad(set_to_none=True)
        model(x[i]).pow(2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        stepped = masker.before_step()
        assert stepped == (i == 2)  # one step per window of 3 mini-batches
    for n, p in model.named_parameters():
        hand = (grads[0][n] + grads[1][n] + grads[2][n]) / 3
        assert torch.allclose(masker.last_average[n], hand, atol=1e-7)
        assert torch.allclose(p.grad, hand * masker.masks[n], atol=1e-7)  # the masked average is in .grad
        expect = top_fraction_mask({n: hand.abs()}, 0.5)[n]
        assert torch.equal(masker.masks[n], expect)
        assert int(masker.masks[n].sum()) == round(0.5 * p.numel())
    assert masker.kept_fraction == pytest.approx(0.5, abs=0.02) and masker.n_steps == 1


def test_last_flushes_a_partial_window():
    model = _toy()
    masker = GradientMasker(model, keep_ratio=1.0, interval=4, exclude=())
    model(torch.ones(1, 4)).sum().backward()
    assert masker.before_step(last=True)  # a window of 1, at the end of training
    assert torch.equal(masker.last_average["0.weight"], model[0].weight.grad)


def _two_steps(mask: str, *, weight_decay: float):
    """Entry 0 is kept in step 1 (large grad) and masked in step 2 (small grad): does it move in step 2?"""
    w = nn.Parameter(torch.tensor([1.0, 1.0]))
    holder = nn.Module()
    holder.w = w
    opt = torch.optim.AdamW([w], lr=0.1, weight_decay=weight_decay)
    masker = GradientMasker(holder, keep_ratio=0.5, mask=mask, exclude=())
    values = []
    for g in ([1.0, 0.1], [0.1, 1.0]):
        w.grad = torch.tensor(g)
        assert masker.before_step()
        opt.step()
        masker.after_step()
        values.append(w.detach().clone())
    return values, masker


def test_masked_gradient_still_moves_under_adamw_momentum():
    (after1, after2), masker = _two_steps("gradient", weight_decay=0.0)
    assert masker.masks["w"].tolist() == [False, True]  # step 2 masks entry 0 ...
    assert after2[0] != after1[0]  # ... but AdamW's momentum moves it anyway


def test_masked_gradient_still_moves_under_weight_decay():
    w = nn.Parameter(torch.tensor([1.0, 1.0]))
    holder = nn.Module()
    holder.w = w
    opt = torch.optim.AdamW([w], lr=0.1, weight_decay=0.5)
    masker = GradientMasker(holder, keep_ratio=0.5, exclude=())
    w.grad = torch.tensor([0.0, 1.0])
    masker.before_step()
    opt.step()  # entry 0 never had a gradient: only weight decay moves it
    assert masker.masks["w"].tolist() == [False, True]
    assert w[0].item() == pytest.approx(1.0 - 0.1 * 0.5)


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_masking_the_update_truly_freezes(weight_decay):
    (after1, after2), masker = _two_steps("update", weight_decay=weight_decay)
    assert masker.masks["w"].tolist() == [False, True]
    assert after2[0] == after1[0]  # masked in step 2: exactly where it was
    assert after2[1] != after1[1]


def test_options_are_checked():
    with pytest.raises(GMTError, match="keep_ratio"):
        GMTConfig(keep_ratio=0.0)
    with pytest.raises(GMTError, match="granularity"):
        GMTConfig(granularity="row")
    with pytest.raises(GMTError, match="unknown GMT options"):
        GMTConfig.of({"ratio": 0.2})
    model, _ = make_model("head_only", backbone="tiny")
    with pytest.raises(GMTError, match="only the head"):
        GradientMasker(model)  # the head is excluded by default: nothing left


def _changed_fraction(before, after):
    changed = sum(int((before[n] != after[n]).sum()) for n in before)
    return changed / sum(t.numel() for t in before.values())


@pytest.mark.parametrize("mask", ["gradient", "update"])
def test_train_full_fine_tuning_with_gmt(small_sms, mask):
    """One masked step over the whole (tiny) training run, keep 10% per tensor, weight decay on: with
    mask='update' at most 10% of the backbone moves; with mask='gradient' weight decay moves nearly all of it."""
    model, tok = make_model("full", backbone="tiny")
    body = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("classifier")}
    config = TrainConfig(method="full", backbone="tiny", epochs=1, batch_size=16, lr=1e-3, lr_head=1e-3,
                         weight_decay=0.1, max_length=24, warmup=0.0,
                         gmt={"keep_ratio": 0.1, "interval": 4, "mask": mask})  # 64 examples = 4 batches
    run = train(small_sms, config=config, model=model, tokenizer=tok, verbose=False)
    after = {n: p.detach().cpu() for n, p in run.model.named_parameters() if n in body}  # train() may use a GPU
    frac = _changed_fraction(body, after)
    if mask == "update":
        assert 0.05 < frac <= 0.1 + 0.01
    else:
        assert frac > 0.9

"""Per-example gradients: the fast path (one batched backward) against the oracle, one autograd call per example."""
from __future__ import annotations

import warnings
from itertools import accumulate

import pytest
import torch

from gbair_nb.gradients import InfluenceError, fast_path_available, grad_slices, lr_vector, per_example_grads
from gbair_nb.models import make_model
from gbair_nb.pet import load_backbone, trainable_state
from test_influence import TRAIN, TRAIN_LABELS, _perturbed_checkpoints, _rel, _row_rel, _sensitive

torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=UserWarning)


@pytest.fixture(scope="module")
def pt():
    """The tiny prompt-tuning model with weights that make examples differ, and its tokenizer."""
    model, tok = make_model(backbone="tiny", num_virtual_tokens=4)
    return _sensitive(model), tok


@pytest.fixture(scope="module")
def state(pt):
    """Trainable tensors away from the initial ones, as a checkpoint would hold them."""
    return _perturbed_checkpoints(pt[0], [None])[0][0]


# ------------------------------------------------------------------------------------- per-example gradients
def test_fast_path_equals_loop_prompt_tuning(pt, state):
    model, tok = pt
    assert fast_path_available(model)
    before = trainable_state(model)
    fast, sl = per_example_grads(model, tok, TRAIN, TRAIN_LABELS, state=state, method="fast",
                                 batch_size=5, verbose=False)
    loop, _ = per_example_grads(model, tok, TRAIN, TRAIN_LABELS, state=state, method="loop", verbose=False)
    assert fast.shape == (len(TRAIN), sum(p.numel() for p in model.parameters() if p.requires_grad))
    assert list(sl) == [n for n, p in model.named_parameters() if p.requires_grad]
    assert fast.abs().max() > 1e-3
    # float32: relative to the largest entry. Per example the error can reach ~1e-5 on a confidently right example
    # (tiny gradient, ∂ℓ/∂logits = p − onehot cancels) — in both paths alike, see the float64 test below.
    assert _rel(fast, loop) <= 1e-6
    assert _row_rel(fast, loop) <= 2e-5
    # the model's own tensors are back
    assert all(torch.equal(before[n], t) for n, t in trainable_state(model).items())


def test_fast_path_is_exact_in_float64(state):
    model, tok = make_model(backbone="tiny", num_virtual_tokens=4)
    model = _sensitive(model).double()
    state = {k: v.double() for k, v in state.items()}
    fast, _ = per_example_grads(model, tok, TRAIN, TRAIN_LABELS, state=state, method="fast", batch_size=5,
                                verbose=False)
    loop, _ = per_example_grads(model, tok, TRAIN, TRAIN_LABELS, state=state, method="loop", verbose=False)
    assert fast.dtype == torch.float64
    assert _row_rel(fast, loop) <= 1e-12


def test_fast_path_linear_layers_head_only_and_lora():
    from peft import LoraConfig, TaskType, get_peft_model

    head, tok = make_model("head_only", backbone="tiny")
    base, _ = load_backbone("tiny")
    lora = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, r=2, target_modules=["query", "value"]))
    with torch.no_grad():  # lora_B starts at zero, which would make lora_A's gradient zero
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    for model in (_sensitive(head), _sensitive(lora)):
        assert fast_path_available(model)
        fast, sl = per_example_grads(model, tok, TRAIN, TRAIN_LABELS, method="fast", batch_size=4, verbose=False)
        loop, _ = per_example_grads(model, tok, TRAIN, TRAIN_LABELS, method="loop", verbose=False)
        assert _rel(fast, loop) <= 1e-6 and _row_rel(fast, loop) <= 2e-5
        for name, s in sl.items():  # every parameter, LoRA A and B included, gets a real gradient
            assert fast[:, s].abs().max() > 0, name


def test_auto_falls_back_to_loop_for_other_parameters(pt):
    model, tok = make_model(backbone="tiny", num_virtual_tokens=4)
    ln = model.get_base_model().bert.embeddings.LayerNorm
    ln.weight.requires_grad_(True)
    assert not fast_path_available(model)
    with pytest.raises(InfluenceError, match="no fast path"):
        per_example_grads(model, tok, TRAIN[:2], TRAIN_LABELS[:2], method="fast", verbose=False)
    auto, sl = per_example_grads(model, tok, TRAIN[:3], TRAIN_LABELS[:3], method="auto", verbose=False)
    loop, _ = per_example_grads(model, tok, TRAIN[:3], TRAIN_LABELS[:3], method="loop", verbose=False)
    assert torch.equal(auto, loop) and any("LayerNorm" in n for n in sl)


def test_fast_path_equals_loop_on_minilm():
    model, tok = make_model(backbone="minilm")
    texts, labels = TRAIN[:4], TRAIN_LABELS[:4]
    fast, sl = per_example_grads(model, tok, texts, labels, method="fast", verbose=False)
    loop, _ = per_example_grads(model, tok, texts, labels, method="loop", verbose=False)
    assert fast.shape == (4, 8450)
    assert _rel(fast, loop) <= 1e-6 and _row_rel(fast, loop) <= 2e-5


def test_slices_and_learning_rates_tile_a_gradient_row(pt):
    model, _ = pt
    sl = grad_slices(model)
    sizes = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert list(sl) == list(sizes)  # trainable_names order
    assert [s.start for s in sl.values()] == [0] + list(accumulate(sizes.values()))[:-1]
    rates = {n: float(i + 1) for i, n in enumerate(sl)}
    w = lr_vector(sl, rates)
    assert w.shape == (sum(sizes.values()),)
    for n, s in sl.items():  # every column carries its own parameter's rate, and nothing else does
        assert torch.all(w[s] == rates[n])
    assert torch.all(lr_vector(sl, 0.25) == 0.25)
    with pytest.raises(InfluenceError, match="no rate"):
        lr_vector(sl, {next(iter(sl)): 1.0})

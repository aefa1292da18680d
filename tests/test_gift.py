"""GIFT: ΔW = (ωφ)ψ with one (φ, ψ) pair per layer type — identity at init, equal to LoRA with B = ωφ, A = ψ,
a parameter count that follows the formula and not the depth, save/load through checkpoints."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from gbair_nb.gift import (GiftError, GiftLinear, add_gift, direction_responses, generated_B, gift_layers,
                           gift_param_count)
from gbair_nb.pet import count_trainable, head_names, load_backbone, trainable_state
from gbair_nb.models import make_model
from gbair_nb.train import TrainConfig, predict_proba, train
from gbair_nb.runs import load_run

torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=UserWarning)

TEXTS = ["free prize, call now to claim", "see you at home later", "win cash today!!", "ok thanks, talk soon"]


def _logits(model, tok, texts=TEXTS):
    enc = tok(texts, padding=True, return_tensors="pt")
    model.eval()  # no dropout
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits


def _randomise_pairs(model, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pair in model.gift.values():
            pair.psi.weight.copy_(torch.randn(pair.psi.weight.shape, generator=g) * scale)
            pair.phi.weight.copy_(torch.randn(pair.phi.weight.shape, generator=g) * scale)


def test_at_init_the_model_is_the_frozen_backbone():
    frozen, tok = load_backbone("tiny", seed=0)
    gift, _ = make_model("gift", backbone="tiny", seed=0, r=4)
    assert len(gift_layers(gift)) == 4  # 2 layers × (query, value)
    assert all(torch.equal(p.psi.weight, torch.zeros_like(p.psi.weight)) for p in gift.gift.values())
    assert all(p.phi.weight.abs().sum() > 0 for p in gift.gift.values())  # φ is not zero: only ψ is
    assert torch.equal(_logits(frozen, tok), _logits(gift, tok))


@pytest.mark.parametrize("share", ["type", "all"])
def test_gift_equals_lora_with_B_from_the_frozen_weight(share):
    from peft import LoraConfig, TaskType, get_peft_model

    r = 3
    gift, tok = make_model("gift", backbone="tiny", seed=0, r=r, share=share)
    _randomise_pairs(gift)
    base, _ = load_backbone("tiny", seed=0)
    lora = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=r,  # scaling α/r = 1
                                           target_modules=["query", "value"]))
    lora_layers = {n.removeprefix("base_model.model."): m for n, m in lora.named_modules()
                   if hasattr(m, "lora_A") and "default" in m.lora_A}
    assert set(lora_layers) == set(gift_layers(gift))
    with torch.no_grad():
        for name, layer in gift_layers(gift).items():
            lora_layers[name].lora_A["default"].weight.copy_(layer.pair.psi.weight)  # A = ψ
            lora_layers[name].lora_B["default"].weight.copy_(generated_B(layer))     # B = ωφ
    lora.eval()
    a, b = _logits(gift, tok), _logits(lora, tok)
    assert (a - _logits(load_backbone("tiny", seed=0)[0], tok)).abs().max() > 1e-4  # the update does something
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a - b).abs().max()


def test_one_pair_per_type_listed_once_and_trainable():
    model, _ = make_model("gift", backbone="tiny", r=4)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(names) == sorted(["classifier.weight", "classifier.bias", "gift.query.psi.weight",
                                    "gift.query.phi.weight", "gift.value.psi.weight", "gift.value.phi.weight"])
    assert head_names(model) == ["classifier.weight", "classifier.bias"]
    layers = gift_layers(model)
    queries = [m for n, m in layers.items() if n.endswith("query")]
    assert all(m.pair is model.gift["query"] for m in queries)
    assert model.gift["query"].psi.weight.shape == (4, 32) and model.gift["query"].phi.weight.shape == (32, 4)


def _tiny_with_layers(n_layers, seed=0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=n_layers,
                                                    num_attention_heads=2, intermediate_size=64,
                                                    attn_implementation="eager"))


def test_param_count_follows_the_formula_not_the_depth():
    counts = []
    for depth in (2, 4):
        model = _tiny_with_layers(depth)
        pairs = add_gift(model, r=8, share="type")
        counts.append(sum(p.numel() for p in pairs.parameters()))
        assert len(gift_layers(model)) == 2 * depth
    assert counts[0] == counts[1] == gift_param_count([32, 32], 8) == 2 * 2 * 32 * 8
    model = _tiny_with_layers(2)
    assert sum(p.numel() for p in add_gift(model, r=8, share="all").parameters()) == 2 * 32 * 8
    tiny, _ = make_model("gift", backbone="tiny", r=8)
    assert count_trainable(tiny) == 2 * 2 * 32 * 8 + (32 * 2 + 2)  # + the head


def test_minilm_count_matches_the_method_notes():
    model, _ = make_model("gift", backbone="minilm", r=8)
    assert count_trainable(model) == 12_288 + 384 * 2 + 2
    lora, _ = make_model("lora", backbone="minilm", r=8)
    assert count_trainable(lora) == 73_728 + 384 * 2 + 2


def test_bad_options_fail_early():
    model = _tiny_with_layers(2)
    with pytest.raises(GiftError, match="share"):
        add_gift(model, share="layer")
    with pytest.raises(GiftError, match="no nn.Linear matches"):
        add_gift(model, targets=("qkv",))
    with pytest.raises(GiftError, match="different input widths"):
        add_gift(model, targets=("query", "output.dense"), share="all")  # 32 and 64 wide
    add_gift(model)
    with pytest.raises(GiftError, match="already"):
        add_gift(model)


def test_save_and_load_through_checkpoints(small_sms, tmp_path):
    config = TrainConfig(method="gift", backbone="tiny", epochs=1, batch_size=16, lr=1e-2, max_length=24,
                         method_options={"r": 4})
    run = train(small_sms, config=config, out_dir=tmp_path, verbose=False)
    state = run.checkpoints[-1].state
    assert "gift.query.psi.weight" in state and state["gift.query.psi.weight"].abs().max() > 0  # ψ moved
    loaded = load_run(tmp_path, small_sms)
    assert all(torch.equal(state[n], t) for n, t in trainable_state(loaded.model).items())
    np.testing.assert_allclose(predict_proba(loaded.model, loaded.tokenizer, TEXTS, max_length=24),
                               run.predict_proba(TEXTS), atol=1e-6)


def test_direction_responses_table():
    model, tok = make_model("gift", backbone="tiny", r=4)
    _randomise_pairs(model)
    df = direction_responses(model, tok, TEXTS[:2], kind="value")
    assert list(df.columns[:3]) == ["sentence", "position", "token"]
    assert [c for c in df.columns if c.startswith("d")] == ["d0", "d1", "d2", "d3"]
    n_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in TEXTS[:2])
    assert len(df) == n_tokens and "[CLS]" not in set(df.token)
    vals = df[["d0", "d1", "d2", "d3"]].to_numpy()
    assert np.all(np.abs(vals) <= 1 + 1e-6)
    assert (df.cluster.to_numpy() == vals.argmax(1)).all()
    layer = list(gift_layers(model).values())[-1]
    assert isinstance(layer, GiftLinear) and layer.kind == "value"

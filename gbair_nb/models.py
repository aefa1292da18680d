"""One place that knows which kind of model a backbone is, above both kinds.

- an **encoder** with a classifier head (all-MiniLM-L6-v2, or any local BERT-like folder), made parameter-efficient
  by one of :data:`gbair_nb.pet.METHODS` — :mod:`gbair_nb.pet`;
- a **decoder LLM** that answers with a label word (SmolLM2, or any local causal-LM folder), prompt-tuned —
  :mod:`gbair_nb.llm`.

Both give ``(model, tokenizer)`` with the same contract (``model(input_ids, attention_mask, labels)`` returns
``.logits`` (B, C) and ``.loss``; the trainable tensors are exactly those with ``requires_grad``), so training,
TracIn and G-BAIR use either unchanged. A new PET method goes into ``pet.METHODS``; a new kind of backbone, here.
"""
from __future__ import annotations

from .llm import LLM_BACKBONES, is_causal_lm, make_llm_model
from .pet import BACKBONES as ENCODER_BACKBONES
from .pet import make_encoder_model

__all__ = ["BACKBONES", "make_model", "is_decoder"]

BACKBONES = {**ENCODER_BACKBONES, **LLM_BACKBONES}


def is_decoder(backbone: str) -> bool:
    """Whether ``backbone`` is a decoder LLM (answers with label words) rather than an encoder with a head."""
    return is_causal_lm(backbone)


def make_model(method: str = "prompt_tuning", *, num_labels: int = 2, backbone: str = "minilm", seed: int = 0,
               **options):
    """Build a PET model on ``backbone``: returns ``(model, tokenizer)`` with only the method's parameters trainable.

    Args:
        method: ``"prompt_tuning"`` (the default and the toolkit's main path), ``"head_only"``, ``"lora"``,
            ``"gift"`` or ``"full"`` for encoders; decoders take ``"prompt_tuning"``.
        num_labels: number of classes.
        backbone: ``"minilm"``, ``"tiny"`` (a small random BERT, for tests) or a local encoder folder;
            ``"smollm2"``, ``"tiny-llm"`` or a local causal-LM folder for a decoder (options ``verbalizer=``,
            ``template=``, ``task=``: see :func:`gbair_nb.llm.make_llm_model`).
        seed: seeds the new head and any new PET parameters.
        **options: method options, e.g. ``num_virtual_tokens=20``, ``init_text="..."`` for prompt tuning.
    """
    if is_decoder(backbone):
        return make_llm_model(method, num_labels=num_labels, backbone=backbone, seed=seed, **options)
    return make_encoder_model(method, num_labels=num_labels, backbone=backbone, seed=seed, **options)

"""Checkers for the prompt-tuning labs: 01 (soft prompts on MiniLM) and 07 (a decoder LLM with a verbalizer).

Shapes follow the notebooks: B examples in a batch, T tokens, d the model width, m virtual tokens, V the vocabulary,
C classes. Every checker takes the student's value first, then the inputs it was computed from.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .core import BLANK, as_array, close, is_blank, judge, report

__all__ = ["check_prompt_tuning_params", "check_soft_prompt_inputs", "check_mean_pooling",
           "check_verbalizer_logits", "check_verbalizer_probs"]


def check_prompt_tuning_params(n_trainable: Any, *, num_virtual_tokens: int = 20, width: int = 384,
                               num_classes: int = 2) -> bool:
    """How many numbers train when a frozen encoder is prompt-tuned with a new linear classifier head?

    The soft prompt is ``num_virtual_tokens`` vectors of ``width`` numbers; the head maps the pooled ``width``-vector
    to ``num_classes`` logits (a weight matrix and one bias per class). Everything else is frozen.
    """
    m, d, c = num_virtual_tokens, width, num_classes
    right = m * d + c * d + c
    mistakes = [
        ("only the soft prompt counted: the new classifier head trains too", m * d),
        ("the head has a bias too: one number per class", m * d + c * d),
        ("only the head counted: the soft prompt's vectors train too", c * d + c),
        ("each virtual token is a whole vector of `width` numbers, not one number", m + c * d + c),
        ("the head has one output per class, so its weight is (num_classes × width)", m * d + d + 1),
        ("the head's weight is (num_classes × width): multiply, don't add", m * d + c + d + c),
    ]
    return judge(n_trainable, right, mistakes, what="the number of trainable parameters", rtol=0,
                 otherwise="add the soft prompt (virtual tokens × width) and the head (weight and bias)")


def check_soft_prompt_inputs(inputs_embeds: Any, attention_mask_out: Any, *, soft_prompt: Any, tokens: Any,
                             attention_mask: Any) -> bool:
    """The sequence a prompt-tuned model reads: the soft prompt *before* every example's token vectors.

    Inputs: ``soft_prompt`` (m, d), ``tokens`` (B, T, d) the frozen token embeddings, ``attention_mask`` (B, T).
    Expected: ``inputs_embeds`` (B, m + T, d) = [prompt ; tokens] per example, and the mask (B, m + T) with m ones
    in front (every text token may attend to every prompt vector).
    """
    if is_blank(inputs_embeds) or is_blank(attention_mask_out):
        return report(False, BLANK)
    P, X, M = as_array(soft_prompt), as_array(tokens), as_array(attention_mask)
    B, m = X.shape[0], P.shape[0]
    prompt = np.broadcast_to(P, (B, *P.shape))
    right_x = np.concatenate([prompt, X], axis=1)
    right_m = np.concatenate([np.ones((B, m)), M], axis=1)
    x, mask = as_array(inputs_embeds), as_array(attention_mask_out)
    if x is None or mask is None:
        return report(False, "both answers should be arrays (tensors) of numbers")
    if not close(x, right_x):
        if close(x, np.concatenate([X, prompt], axis=1)):
            return report(False, "the soft prompt goes BEFORE the text's token vectors, not after")
        if x.shape == (m + X.shape[1], X.shape[2]) or x.shape == (B * (m + X.shape[1]), X.shape[2]):
            return report(False, "one sequence per example: expand the prompt to (B, m, d) before concatenating")
        if x.ndim == 3 and x.shape[1] == X.shape[1]:
            return report(False, "concatenate along the sequence axis (dim=1), not the feature axis")
        if x.shape != right_x.shape:
            return report(False, f"check the shape: inputs_embeds should be (B, m + T, d) = {right_x.shape}; "
                                 f"yours is {x.shape}")
        return report(False, "each example's rows should be the m prompt vectors, then its own T token vectors")
    if mask.shape == M.shape:
        return report(False, "the mask must grow too: one entry per position of the new sequence (m + T)")
    if close(mask, np.concatenate([np.zeros((B, m)), M], axis=1)):
        return report(False, "the prompt positions must be attended to: their mask entries are 1, not 0")
    if close(mask, np.concatenate([M, np.ones((B, m))], axis=1)):
        return report(False, "the mask's prompt entries go where the prompt is: in front")
    if mask.shape != right_m.shape:
        return report(False, f"check the shape: the mask should be (B, m + T) = {right_m.shape}; yours is {mask.shape}")
    if not close(mask, right_m):
        return report(False, "the text's own mask entries (its padding) must be kept as they were")
    return report(True)


def check_mean_pooling(pooled: Any, hidden: Any, attention_mask: Any) -> bool:
    """Mean pooling: each example's sentence vector is the average of its hidden states over the *real* positions.

    ``hidden`` (B, T, d), ``attention_mask`` (B, T) with 1 = real token, 0 = padding → ``pooled`` (B, d),
    pool(h) = Σ_t mask_t h_t / Σ_t mask_t.
    """
    H, M = as_array(hidden), as_array(attention_mask)
    w = M[..., None]
    right = (H * w).sum(1) / np.clip(w.sum(1), 1, None)
    mistakes = [
        ("the padding positions were averaged in: weight each position by its mask entry", H.mean(1)),
        ("divide by the number of real tokens (the mask's sum per row), not by T", (H * w).sum(1) / H.shape[1]),
        ("you summed; the mean divides by the number of real tokens", (H * w).sum(1)),
        ("that is first-token pooling; average over all real tokens instead", H[:, 0]),
        ("average over the sequence axis (dim=1), not the feature axis", (H * w).sum(2) / M.sum(1, keepdims=True)),
    ]
    return judge(pooled, right, mistakes, what="pooled", shape="one vector of width d per example (B, d)",
                 otherwise="sum the hidden states of the real tokens, then divide by how many there are")


def _last_real(M: np.ndarray) -> np.ndarray:
    return M.sum(1).astype(int) - 1


def check_verbalizer_logits(class_logits: Any, logits: Any, attention_mask: Any, label_ids: Sequence[int]) -> bool:
    """The class logits of a verbalizer classifier: the next-token logits of the label words at the last real token.

    ``logits`` (B, T, V) the LM's next-token logits at every position, ``attention_mask`` (B, T) right-padded
    (1 … 1 0 … 0), ``label_ids`` (C,) the token id of each class's word → ``class_logits`` (B, C): row b is
    ``logits[b, last_b, label_ids]`` with last_b = (number of real tokens of row b) − 1.
    """
    L, M = as_array(logits), as_array(attention_mask)
    ids = [int(i) for i in label_ids]
    rows = np.arange(L.shape[0])
    last = _last_real(M)
    right = L[rows, last][:, ids]

    def at(pos):
        pos = np.clip(pos, 0, L.shape[1] - 1)
        return L[rows, pos][:, ids]

    full = L[rows, last]
    softmax = np.exp(full - full.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    mistakes = [
        ("a padded row ends with pads: read each row at its LAST REAL token, not at position −1",
         at(np.full_like(last, L.shape[1] - 1))),
        ("one position too far: the last real token sits at (number of real tokens) − 1", at(last + 1)),
        ("that is the first position: with right padding the answer is read at the end of the real tokens",
         at(np.zeros_like(last))),
        ("the columns are in the wrong order: column c must be the word of class c (label_ids[c])", right[:, ::-1]),
        ("these are probabilities over the whole vocabulary: keep the raw logits", softmax[:, ids]),
        ("these are log-probabilities over the whole vocabulary: keep the raw logits",
         np.log(np.clip(softmax[:, ids], 1e-300, None))),
    ]
    return judge(class_logits, right, mistakes, what="class_logits", shape="one row per example, one column per "
                 "label word (B, C)", otherwise="for each row b: take position (real tokens − 1), then the "
                 "columns label_ids")


def check_verbalizer_probs(probs: Any, logits: Any, attention_mask: Any, label_ids: Sequence[int]) -> bool:
    """p(c | x): a softmax over the C label words' logits only (the answer is one of the label words).

    Same inputs as :func:`check_verbalizer_logits`; ``probs`` (B, C), every row sums to 1.
    """
    L, M = as_array(logits), as_array(attention_mask)
    ids = [int(i) for i in label_ids]
    rows = np.arange(L.shape[0])
    full = L[rows, _last_real(M)]
    s = full[:, ids]
    right = np.exp(s - s.max(1, keepdims=True))
    right /= right.sum(1, keepdims=True)
    over_vocab = np.exp(full - full.max(1, keepdims=True))
    over_vocab /= over_vocab.sum(1, keepdims=True)
    over_batch = np.exp(s - s.max(0, keepdims=True))
    over_batch /= over_batch.sum(0, keepdims=True)
    mistakes = [
        ("that softmax ran over the whole vocabulary; normalise over the C label words only (rows must sum to 1)",
         over_vocab[:, ids]),
        ("the softmax ran over the batch (dim 0); it runs over the classes of each example (dim 1)", over_batch),
        ("a sigmoid of each logit is not a distribution over the classes: use a softmax", 1 / (1 + np.exp(-s))),
        ("these are still logits: turn them into probabilities", s),
    ]
    value = as_array(probs) if not is_blank(probs) else None
    if value is not None and value.shape == right.shape and not close(value, right) \
            and set(np.unique(value)) <= {0.0, 1.0}:
        return report(False, "these look like one-hot predictions; the question asks for probabilities")
    return judge(probs, right, mistakes, what="probs", shape="one row per example, one column per class (B, C)",
                 otherwise="take the class logits at the last real token, then a softmax over the classes")

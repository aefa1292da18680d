"""Per-example gradients: the gradient of each example's loss with respect to the trainable parameters, one row each.

TracIn (:mod:`gbair_nb.influence`), self-influence, GraNd and the G-BAIR scores are all dot products of these rows.
Row i is the flattened ∇θ ℓ(θ, z_i) over the *trainable* parameters only (for prompt tuning: the soft prompt and the
classifier head), in ``trainable_names(model)`` order; :func:`grad_slices` says where each parameter sits in a row
and :func:`lr_vector` gives the learning rate of every column.

All the cost is in the per-example gradients. :func:`per_example_grads` has a fast path that gets every example's
gradient from **one batched backward pass** — the same work as an ordinary training step — and a plain loop of
``torch.autograd.grad`` per example that works for any model:

- prompt tuning (peft): a pre-hook on the embeddings module swaps the ``inputs_embeds`` that peft built (prompt
  prepended to the word embeddings) for a leaf tensor; its gradient at the first ``num_virtual_tokens`` positions is
  each example's own gradient w.r.t. the soft prompt, because every example has its own copy of the prompt in the
  batch.
- trainable ``nn.Linear`` layers (the classifier head, LoRA A/B): hooks keep each layer's input x and the gradient of
  its output g; example b's weight gradient is Σ_t g[b,t] xᵀ[b,t] = einsum('bto,bti->boi'), its bias gradient Σ_t g.

The model is put in eval mode (no dropout) and restored afterwards, as are its trainable tensors.
"""
from __future__ import annotations

import inspect
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .pet import batches, load_trainable_state, trainable_names, trainable_state

__all__ = ["InfluenceError", "METHODS", "per_example_grads", "gradient_rows", "fast_path_available", "resolve_method",
           "grad_slices", "lr_vector", "preserved", "progress"]

METHODS = ("auto", "fast", "loop")


class InfluenceError(ValueError):
    """Gradients or influence could not be computed as asked: the message says what was wrong and what would work."""


def grad_slices(model: nn.Module) -> "OrderedDict[str, slice]":
    """Where each trainable parameter sits in a flattened gradient row: name → slice, in ``trainable_names`` order."""
    out: OrderedDict[str, slice] = OrderedDict()
    start = 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            out[name] = slice(start, start + p.numel())
            start += p.numel()
    if not out:
        raise InfluenceError("the model has no trainable parameters (requires_grad=True): nothing to attribute to")
    return out


def lr_vector(slices: Mapping[str, slice], lrs: Mapping[str, float] | float) -> torch.Tensor:
    """(P,) the learning rate of every trainable scalar, so ``(g * w) @ g'.T`` is the lr-weighted dot product."""
    total = max(s.stop for s in slices.values())
    w = torch.empty(total, dtype=torch.float32)
    for name, sl in slices.items():
        if isinstance(lrs, (int, float)):
            w[sl] = float(lrs)
        else:
            if name not in lrs:
                raise InfluenceError(f"the checkpoint's lrs have no rate for trainable parameter {name!r}; "
                                     f"they name {sorted(lrs)[:4]}")
            w[sl] = float(lrs[name])
    return w


@contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Eval mode and the model's own trainable tensors while inside; both restored on exit."""
    saved, was_training = trainable_state(model), model.training
    model.eval()
    try:
        yield
    finally:
        load_trainable_state(model, saved)
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def progress(total: int, desc: str, verbose: bool):
    """A tqdm bar counting examples (off unless ``verbose``); TracIn's passes use it too."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not verbose, leave=False, unit="ex")


# ------------------------------------------------------------------------------ per-example gradients: fast path
def _prompt_target(model: nn.Module) -> tuple[str, nn.Module, int] | None:
    """(prompt parameter name, embeddings module receiving ``inputs_embeds``, num_virtual_tokens) for a peft
    prompt-tuning model whose prompt is a plain embedding table read in order; None otherwise."""
    cfg = getattr(model, "active_peft_config", None)
    if cfg is None or getattr(cfg.peft_type, "value", str(cfg.peft_type)) != "PROMPT_TUNING":
        return None
    adapter = model.active_adapter
    name = f"prompt_encoder.{adapter}.embedding.weight"
    params = dict(model.named_parameters())
    nvt = int(cfg.num_virtual_tokens)
    tokens = getattr(model, "prompt_tokens", {}).get(adapter)
    if (name not in params or not params[name].requires_grad or tokens is None
            or not torch.equal(tokens.cpu(), torch.arange(nvt)) or params[name].shape[0] != nvt):
        return None
    base = model.get_base_model()
    word = base.get_input_embeddings()
    parent_name = next((n for n, m in base.named_modules() if m is word), None)
    if parent_name is None:
        return None
    parent = base.get_submodule(parent_name.rpartition(".")[0])
    if "inputs_embeds" not in inspect.signature(parent.forward).parameters:
        return None
    return name, parent, nvt


def _linear_targets(model: nn.Module) -> list[tuple[nn.Module, str | None, str | None]]:
    """(module, weight name if trainable, bias name if trainable) for every nn.Linear with a trainable tensor."""
    out = []
    for mname, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            w = f"{mname}.weight" if mod.weight.requires_grad else None
            b = f"{mname}.bias" if mod.bias is not None and mod.bias.requires_grad else None
            if w or b:
                out.append((mod, w, b))
    return out


def _fast_plan(model: nn.Module):
    prompt = _prompt_target(model)
    linears = _linear_targets(model)
    covered = {n for _, w, b in linears for n in (w, b) if n} | ({prompt[0]} if prompt else set())
    missing = [n for n in trainable_names(model) if n not in covered]
    return prompt, linears, missing


def fast_path_available(model: nn.Module) -> bool:
    """Whether :func:`per_example_grads` can use one batched backward for this model: every trainable tensor is
    a peft prompt-tuning prompt or the weight/bias of an ``nn.Linear`` (classifier head, LoRA A/B)."""
    return not _fast_plan(model)[2]


def _fast_batch(model: nn.Module, plan, slices, batch: dict) -> torch.Tensor:
    """(B, P) per-example gradients of the cross-entropy of one batch, from one backward pass."""
    prompt, linears, _ = plan
    emb: dict[str, torch.Tensor] = {}
    calls: dict[int, list] = {id(m): [] for m, _, _ in linears}
    handles = []

    def swap_inputs_embeds(module, args, kwargs):
        x = kwargs.get("inputs_embeds")
        if x is None:
            raise InfluenceError("the embeddings module was not called with inputs_embeds=; use method='loop'")
        leaf = x.detach().requires_grad_(True)
        emb["x"] = leaf
        return args, {**kwargs, "inputs_embeds": leaf}

    def keep_io(module, inputs, output):
        calls[id(module)].append((inputs[0].detach(), output))

    try:
        if prompt:
            handles.append(prompt[1].register_forward_pre_hook(swap_inputs_embeds, with_kwargs=True))
        for mod, _, _ in linears:
            handles.append(mod.register_forward_hook(keep_io))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    finally:
        for h in handles:
            h.remove()
    loss = F.cross_entropy(logits, batch["labels"], reduction="sum")  # Σ_b ℓ_b: ∂/∂(b's own copy) = ∇ℓ_b
    targets = ([emb["x"]] if prompt else []) + [out for m, _, _ in linears for _, out in calls[id(m)]]
    grads = list(torch.autograd.grad(loss, targets, allow_unused=True))
    n = batch["input_ids"].shape[0]
    dtype = torch.promote_types(logits.dtype, torch.float32)
    out = torch.zeros(n, max(s.stop for s in slices.values()), dtype=dtype, device=logits.device)
    if prompt:
        g = grads.pop(0)
        out[:, slices[prompt[0]]] = g[:, :prompt[2]].reshape(n, -1)
    for mod, wname, bname in linears:
        for x, y in calls[id(mod)]:
            go = grads.pop(0)
            if go is None:
                continue
            if x.shape[0] != n:
                raise InfluenceError(f"a Linear layer saw a batch dimension of {x.shape[0]}, not {n}; "
                                     "use method='loop'")
            x3, g3 = x.reshape(n, -1, x.shape[-1]), go.reshape(n, -1, go.shape[-1])
            if wname:
                out[:, slices[wname]] += torch.einsum("bto,bti->boi", g3, x3).reshape(n, -1)
            if bname:
                out[:, slices[bname]] += g3.sum(1)
    return out


def _loop_example(model: nn.Module, params: list[torch.Tensor], batch: dict) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = F.cross_entropy(logits, batch["labels"], reduction="sum")
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def gradient_rows(model, tokenizer, texts: list[str], labels: np.ndarray, *, method: str, batch_size: int,
                  max_length: int, sort_by_length: bool, pbar=None) -> torch.Tensor:
    """(n, P) per-example gradients at the model's current state (already in eval mode), rows in input order."""
    slices = grad_slices(model)
    n = len(texts)
    device = _device(model)
    dtype = torch.promote_types(next(model.parameters()).dtype, torch.float32)  # float64 models stay float64
    out = torch.empty(n, max(s.stop for s in slices.values()), dtype=dtype)
    if method == "loop":
        params = [p for p in model.parameters() if p.requires_grad]
        for i, batch in enumerate(batches(tokenizer, texts, labels, batch_size=1, max_length=max_length,
                                          device=str(device))):
            out[i] = _loop_example(model, params, batch).to(dtype).cpu()
            if pbar is not None:
                pbar.update(1)
        return out
    plan = _fast_plan(model)
    order = np.arange(n)
    if sort_by_length and n > batch_size:  # less padding: batches of similar lengths
        lengths = [len(x) for x in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
        order = np.argsort(lengths, kind="stable")
    texts_o, labels_o = [texts[i] for i in order], labels[order]
    pos = 0
    for batch in batches(tokenizer, texts_o, labels_o, batch_size=batch_size, max_length=max_length,
                         device=str(device)):
        b = batch["input_ids"].shape[0]
        out[torch.as_tensor(order[pos:pos + b])] = _fast_batch(model, plan, slices, batch).cpu()
        pos += b
        if pbar is not None:
            pbar.update(b)
    return out


def resolve_method(model: nn.Module, method: str) -> str:
    if method not in METHODS:
        raise InfluenceError(f"method={method!r}; use one of {METHODS}")
    if method == "loop":
        return "loop"
    missing = _fast_plan(model)[2]
    if method == "fast" and missing:
        raise InfluenceError(f"no fast path for trainable parameters {missing[:3]} (only peft prompt tuning and "
                             "nn.Linear weights/biases have one); use method='loop' or 'auto'")
    return "loop" if missing else "fast"


def per_example_grads(model: nn.Module, tokenizer, texts: Sequence[str], labels: Sequence[int], *,
                      state: Mapping[str, torch.Tensor] | None = None, method: str = "auto", batch_size: int = 16,
                      max_length: int = 64, sort_by_length: bool = True,
                      verbose: bool = True) -> tuple[torch.Tensor, "OrderedDict[str, slice]"]:
    """Gradient of each example's cross-entropy loss w.r.t. the trainable parameters (model in eval mode).

    Args:
        texts, labels: n examples and their class ids (the labels the loss is taken against).
        state: trainable tensors to use (a checkpoint's ``.state``); default: the model's current ones. The model's
            own tensors are restored afterwards.
        method: ``"fast"`` (one batched backward per batch: peft prompt tuning and trainable nn.Linear layers),
            ``"loop"`` (one ``torch.autograd.grad`` per example, any model), ``"auto"`` (fast where possible).
        sort_by_length: batch examples of similar token lengths together (less padding); rows stay in input order.

    Returns:
        ``(grads, slices)``: ``grads`` is an (n, P) float32 CPU tensor (float64 for a float64 model), row i =
        flattened ∇θ ℓ(θ, z_i) in ``trainable_names(model)`` order; ``slices[name]`` is that parameter's column
        range, so per-parameter learning rates can be applied (see :func:`lr_vector`).
    """
    method = resolve_method(model, method)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(texts):
        raise InfluenceError(f"{len(texts)} texts but {len(labels)} labels")
    with preserved(model), progress(len(texts), f"gradients ({method})", verbose) as pbar:
        if state is not None:
            load_trainable_state(model, state)
        g = gradient_rows(model, tokenizer, list(texts), labels, method=method, batch_size=batch_size,
                          max_length=max_length, sort_by_length=sort_by_length, pbar=pbar)
    return g, grad_slices(model)

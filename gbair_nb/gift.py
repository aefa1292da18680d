"""GIFT — generative interpretable fine-tuning (arXiv 2312.00700): one small pair of matrices per layer *type*.

Every selected frozen linear layer ``y = ω x + b`` (ω: ``(d_out, d_in)``, as ``nn.Linear`` stores it) becomes

    ŷ = ω (I + φ ψ) x + b = ω x + b + (ω φ) (ψ x),      φ ∈ R^{d_in × r},  ψ ∈ R^{r × d_in}

so the weight update is ΔW = (ω φ) ψ: LoRA whose "B" factor is *generated from the frozen weight* (B = ω φ, A = ψ).
One (φ, ψ) pair is shared by all layers of a type (``share="type"``: all query layers share one, all value layers
another) or by every selected layer (``share="all"``). The trainable-parameter count is 2·d_in·r per pair, however
deep the model is: on MiniLM (width 384), query + value at r = 8 is 2 × 2 × 384 × 8 = 12,288, against LoRA's 73,728.
ψ starts at zero and φ at PyTorch's default (Kaiming-uniform) init, so ΔW = 0: at initialisation the model *is* the
frozen backbone.

How it is wired (a design choice of this toolkit, not the paper's code):

- the pairs live in one container, ``model.gift`` (:class:`GiftAdapters`), so ``named_parameters()`` lists each pair
  once (``gift.query.psi.weight``, ``gift.query.phi.weight``, …) and checkpoints save them by those names;
- each selected ``nn.Linear`` is replaced by a :class:`GiftLinear` that *refers* to its pair without registering it;
- ψ and φ are themselves ``nn.Linear`` modules (no bias) applied token by token: ``x ↦ φ(ψ(x)) ↦ ω·``. That costs
  one extra d_in × d_out product per token and layer (~+17% forward FLOPs on MiniLM for q+v), and buys exact
  per-example gradients from one batched backward: :mod:`gbair_nb.influence`'s hooks on trainable ``nn.Linear``
  layers sum each call's ``einsum(output grad, input)``, which is exactly the chain rule through a shared pair
  (dL/dψ = Σ_layers (ωφ)ᵀ G xᵀ, dL/dφ = Σ_layers ωᵀ G (ψx)ᵀ).

Interpretability (the paper's claim, shown for ViT): the r columns of ω φ act as an r-way clustering head over tokens.
:func:`direction_responses` gives, for a few sentences, how strongly each token's hidden state at a layer points along
each column of ω φ (cosine) — a tokens × directions table to draw as a heatmap.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GiftPair", "GiftLinear", "GiftAdapters", "add_gift", "gift_param_count", "gift_layers",
           "generated_B", "direction_responses", "GiftError"]

SHARES = ("type", "all")


class GiftError(ValueError):
    """GIFT could not be attached as asked: the message says what was wrong and what would work."""


class GiftPair(nn.Module):
    """One shared (φ, ψ) pair. ``psi.weight`` is ψ ``(r, d_in)`` (zero at init), ``phi.weight`` is φ ``(d_in, r)``
    (Kaiming-uniform, nn.Linear's default)."""

    def __init__(self, d_in: int, r: int) -> None:
        super().__init__()
        self.psi = nn.Linear(d_in, r, bias=False)
        self.phi = nn.Linear(r, d_in, bias=False)
        nn.init.zeros_(self.psi.weight)

    @property
    def r(self) -> int:
        return self.psi.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """φ ψ x, token by token: (..., d_in) → (..., d_in)."""
        return self.phi(self.psi(x))


class GiftLinear(nn.Module):
    """A frozen ``nn.Linear`` ω plus GIFT's update: ``x ↦ ω x + b + ω (φ (ψ x))``. The pair is referenced, not
    owned (it is registered once on :class:`GiftAdapters`)."""

    def __init__(self, base: nn.Linear, pair: GiftPair, kind: str) -> None:
        super().__init__()
        self.base = base
        self.kind = kind
        object.__setattr__(self, "_pair", pair)  # not a submodule: named_parameters() must list it once

    @property
    def pair(self) -> GiftPair:
        return self._pair

    @property
    def weight(self) -> torch.Tensor:  # code that reads layer.weight (dtype, device, shape) keeps working
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(self._pair(x), self.base.weight)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, r={self._pair.r}"


class GiftAdapters(nn.ModuleDict):
    """The container of all (φ, ψ) pairs, attached as ``model.gift``: pair name (a layer type, or ``"all"``) →
    :class:`GiftPair`."""


def _kind(name: str) -> str:
    """The layer type of a module name: the name with its layer index removed
    (``bert.encoder.layer.3.attention.self.query`` → ``bert.encoder.layer.*.attention.self.query``)."""
    return re.sub(r"\.\d+(\.|$)", r".*\1", name)


def _short(kinds: Sequence[str]) -> dict[str, str]:
    """A short, unique, dot-free key per layer type: the last name component, longer where two would clash."""
    out = {}
    for depth in range(1, 10):
        keys = {k: "_".join(c for c in k.split(".")[-depth:] if c != "*") for k in kinds}
        if len(set(keys.values())) == len(keys):
            out = keys
            break
    return out or {k: k.replace(".", "_").replace("*", "x") for k in kinds}


def add_gift(model: nn.Module, *, r: int = 8, targets: Sequence[str] = ("query", "value"), share: str = "type",
             seed: int | None = None) -> GiftAdapters:
    """Attach GIFT to ``model`` in place and return the pairs (also at ``model.gift``).

    Args:
        model: any torch model; its existing parameters are left as they are (freeze them before or after).
        r: rank of each pair (the paper uses 32 on RoBERTa, 64 on Llama; 8 is plenty for MiniLM).
        targets: ``nn.Linear`` modules whose name is, or ends with ``"." +``, one of these (``"query"``,
            ``"value"``, ``"attention.output.dense"``, …).
        share: ``"type"`` — one pair per layer type (all ``query`` layers share one); ``"all"`` — one pair for every
            selected layer (their input widths must agree).
        seed: seeds φ's init (default: torch's current random state).

    The new parameters are trainable; ψ = 0 so the model's outputs are unchanged until training moves ψ.
    """
    if share not in SHARES:
        raise GiftError(f"share={share!r}; use 'type' (one pair per layer type) or 'all' (one pair for every layer)")
    if r < 1:
        raise GiftError(f"r={r}; the rank must be at least 1")
    if hasattr(model, "gift"):
        raise GiftError("this model already has GIFT attached (model.gift); build a fresh model")
    chosen = [(n, m) for n, m in model.named_modules()
              if isinstance(m, nn.Linear) and any(n == t or n.endswith("." + t) for t in targets)]
    if not chosen:
        linears = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise GiftError(f"no nn.Linear matches targets {list(targets)}; this model's linear layers end in {linears}")
    kinds = {n: _kind(n) for n, _ in chosen}
    keys = {k: "all" for k in kinds.values()} if share == "all" else _short(sorted(set(kinds.values())))
    widths: dict[str, set[int]] = {}
    for n, m in chosen:
        widths.setdefault(keys[kinds[n]], set()).add(m.in_features)
    for key, w in widths.items():
        if len(w) > 1:
            raise GiftError(f"layers sharing the pair {key!r} have different input widths {sorted(w)}; "
                            "use share='type' or targets of one width")
    gen_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    ref = chosen[0][1].weight
    pairs = GiftAdapters({key: GiftPair(w.pop(), r).to(device=ref.device, dtype=ref.dtype)
                          for key, w in sorted(widths.items())})
    if seed is not None:
        torch.random.set_rng_state(gen_state)
    model.gift = pairs
    for n, m in chosen:
        parent_name, _, child = n.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, GiftLinear(m, pairs[keys[kinds[n]]], kind=keys[kinds[n]]))
    return pairs


def gift_layers(model: nn.Module) -> "dict[str, GiftLinear]":
    """Module name → :class:`GiftLinear`, in model order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, GiftLinear)}


def gift_param_count(d_in: int | Sequence[int], r: int) -> int:
    """The formula: 2 · d_in · r per pair (pass one d_in per pair). Independent of depth."""
    widths = [d_in] if isinstance(d_in, int) else list(d_in)
    return int(sum(2 * w * r for w in widths))


def generated_B(layer: GiftLinear) -> torch.Tensor:
    """B = ω φ, ``(d_out, r)``: the LoRA "B" factor GIFT generates for this layer (its A is ψ)."""
    return layer.base.weight @ layer.pair.phi.weight


@torch.no_grad()
def direction_responses(model: nn.Module, tokenizer, texts: Sequence[str], *, kind: str | None = None,
                        layer: int = -1, max_length: int = 64) -> pd.DataFrame:
    """How strongly each token's hidden state points along each of GIFT's r directions (columns of ω φ).

    For the ``layer``-th GIFT layer of type ``kind`` (default: the first type; ``layer=-1`` the deepest), the
    response of token t to direction j is cos(h_t, (ω φ)[:, j]), h_t the layer's output at t. Read it as the
    paper's "clustering head": tokens that respond most to the same column are grouped by it.

    Returns a DataFrame with one row per (sentence, token) — columns ``sentence``, ``position``, ``token``,
    then ``d0 … d{r-1}`` (cosines in [-1, 1]) and ``cluster`` (the argmax direction). Padding and special tokens
    ([CLS], [SEP]) are left out.
    """
    layers = gift_layers(model)
    if not layers:
        raise GiftError("the model has no GIFT layers; build it with make_model('gift', ...)")
    kinds = list(dict.fromkeys(m.kind for m in layers.values()))
    kind = kind or kinds[0]
    chosen = [m for m in layers.values() if m.kind == kind]
    if not chosen:
        raise GiftError(f"no GIFT layer of type {kind!r}; types here: {kinds}")
    target = chosen[layer]
    B = F.normalize(generated_B(target).float(), dim=0)  # (d_out, r), unit columns
    seen: dict = {}
    handle = target.register_forward_hook(lambda mod, inp, out: seen.__setitem__("h", out.detach()))
    was_training = model.training
    model.eval()
    rows = []
    special = set(getattr(tokenizer, "all_special_ids", []))
    dev = next(model.parameters()).device
    try:
        for s, text in enumerate(texts):
            enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
            model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev))
            h = F.normalize(seen["h"][0].float(), dim=-1)  # (T', d_out); T' ≥ T if something was prepended
            ids = enc["input_ids"][0].tolist()
            h = h[-len(ids):]
            cos = (h @ B).cpu().numpy()
            for t, tok_id in enumerate(ids):
                if tok_id in special:
                    continue
                rows.append({"sentence": s, "position": t, "token": tokenizer.convert_ids_to_tokens(tok_id),
                             **{f"d{j}": float(cos[t, j]) for j in range(cos.shape[1])}})
    finally:
        handle.remove()
        model.train(was_training)
    df = pd.DataFrame(rows)
    dcols = [c for c in df.columns if re.fullmatch(r"d\d+", c)]
    df["cluster"] = np.asarray(df[dcols].values).argmax(1) if len(df) else []
    return df

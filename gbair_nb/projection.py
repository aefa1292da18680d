"""Random projections for TracIn: each per-example gradient sketched to d numbers instead of P.

A random linear map S: R^P → R^d (written as a (P, d) matrix, ``x ↦ x S`` for a row vector x) with
E[S Sᵀ] = I keeps dot products *on average*: E⟨xS, yS⟩ = ⟨x, y⟩ (Johnson & Lindenstrauss 1984). TRAK (Park et
al. 2023) and LoGra (Choe et al. 2024) score training data this way. The error of one estimate has

    Var(⟨xS, yS⟩ − ⟨x, y⟩) = (‖x‖²‖y‖² + ⟨x, y⟩² − 2 Σ_i x_i² y_i²) / d      rademacher, countsketch
                           = (‖x‖²‖y‖² + ⟨x, y⟩²) / d                         gaussian

(write ⟨xS, yS⟩ = Σ_ij x_i y_j ⟨s_i, s_j⟩ over the rows s_i of S: ⟨s_i, s_j⟩ has mean δ_ij and, for i ≠ j,
variance 1/d; ‖s_i‖² is exactly 1 for ±1/√d entries and for one signed 1 per row, and has variance 2/d for
Gaussian entries — the extra 2 Σ x_i² y_i² / d). Both are at most 2‖x‖²‖y‖²/d, so the standard deviation of the
error is at most **√(2/d) · ‖x‖ ‖y‖** whatever P is (:func:`distortion_bound`): 0.18 at d = 64, 0.044 at d = 1,024,
in units of ‖x‖‖y‖. A score is only as good as its size relative to that: self-influence ‖x‖² is estimated to
±√(2/d) of itself, but a dot product between nearly orthogonal gradients (cosine ≪ √(2/d)) is mostly noise.

Kinds of S (``kind=``):

- ``"countsketch"`` (default): each coordinate i goes, with a random sign, into one random bucket of d (Charikar,
  Chen & Farach-Colton 2002; the sparse Johnson–Lindenstrauss transform with one nonzero per row). Cost O(P) per
  example whatever d is — the only kind that keeps up with full fine-tuning's P = 22.6M on a CPU.
- ``"rademacher"``: dense ±1/√d entries (TRAK's choice). O(P·d) per example; same variance as countsketch.
- ``"gaussian"``: dense N(0, 1/d) entries. O(P·d) per example; a slightly larger variance (formula above).

The (P, d) matrix is **never stored**: its rows come in fixed blocks, and block b is regenerated whenever it is
needed from its own ``torch.Generator`` seeded with (seed, stream, b). Memory is one block (≤ 16 MB) and the
(n, d) result, for any P and any number of examples; the same (seed, stream) gives the same S in every process and
for every chunk of data, which is what lets a training set be streamed and sharded. The price is regenerating P
random numbers per call — for full fine-tuning's 22.6M about 0.5 s on one (loaded) CPU thread, as much as one or
two examples' gradients; for LoRA's 74k, about a millisecond.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

__all__ = ["Projection", "KINDS", "distortion_bound"]

KINDS = ("countsketch", "rademacher", "gaussian")
DENSE_BLOCK_ELEMENTS = 2**22  # a dense block of S: at most 4M entries (16 MB of float32)
SKETCH_BLOCK_ROWS = 2**16  # countsketch: rows per block (a bucket and a sign each)
WORK_ELEMENTS = 2**22  # countsketch: signed copy of at most this many gradient entries at a time


def distortion_bound(dim: int) -> float:
    """√(2/d): the largest standard deviation of ⟨xS, yS⟩ − ⟨x, y⟩, in units of ‖x‖‖y‖, for every kind of S."""
    if dim < 1:
        raise ValueError(f"dim={dim}; a projection needs at least one dimension")
    return math.sqrt(2.0 / dim)


class Projection:
    """A seeded random map R^P → R^d, applied in blocks of rows and never stored whole.

    Args:
        n_params: P, the length of the vectors to project (e.g. the number of trainable parameters).
        dim: d, the length of the projected vectors.
        seed: the random seed (a non-negative int); the same seed gives the same map everywhere.
        stream: an independent map from the same seed (TracIn uses one stream per checkpoint).
        kind: ``"countsketch"`` (default), ``"rademacher"`` or ``"gaussian"`` (see the module docstring).

    ``proj(g)`` maps an (n, P) tensor to (n, d) with E⟨proj(x), proj(y)⟩ = ⟨x, y⟩; ``proj(g, scale=s)`` projects
    ``g * s`` without forming it (TracIn passes √lr here). :meth:`matrix` returns S itself, (P, d), for small P.
    """

    def __init__(self, n_params: int, dim: int, *, seed: int = 0, stream: int = 0,
                 kind: str = "countsketch") -> None:
        for name, value, low in (("n_params", n_params, 1), ("dim", dim, 1), ("seed", seed, 0),
                                 ("stream", stream, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name}={value!r}; use an integer ≥ {low}")
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}; use one of {', '.join(KINDS)}")
        self.n_params, self.dim, self.seed, self.stream, self.kind = int(n_params), int(dim), int(seed), \
            int(stream), kind
        self.block_rows = SKETCH_BLOCK_ROWS if kind == "countsketch" else max(1, DENSE_BLOCK_ELEMENTS // self.dim)
        self.n_blocks = -(-self.n_params // self.block_rows)

    def __repr__(self) -> str:
        return (f"Projection(n_params={self.n_params}, dim={self.dim}, seed={self.seed}, stream={self.stream}, "
                f"kind={self.kind!r})")

    def rows(self, b: int) -> slice:
        """The rows of S (coordinates of the input) that block ``b`` covers."""
        return slice(b * self.block_rows, min((b + 1) * self.block_rows, self.n_params))

    def block(self, b: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Block ``b`` of S, generated from (seed, stream, b): a dense (rows, d) float32 tensor, or for
        countsketch ``(buckets, signs)``, (rows,) int32 and int8 tensors — row i of S is ``signs[i]`` (±1) at
        column ``buckets[i]`` and zero elsewhere."""
        if not 0 <= b < self.n_blocks:
            raise IndexError(f"block {b} of a projection with {self.n_blocks} blocks")
        words = np.random.SeedSequence([self.seed, self.stream, b]).generate_state(2, np.uint32)
        gen = torch.Generator().manual_seed((int(words[0]) << 32) | int(words[1]))
        sl = self.rows(b)
        n = sl.stop - sl.start
        if self.kind == "countsketch":  # one draw per row: bucket = r // 2, sign from the lowest bit
            r = torch.randint(0, 2 * self.dim, (n,), generator=gen)
            return (r >> 1).to(torch.int32), (1 - 2 * (r & 1)).to(torch.int8)
        if self.kind == "rademacher":
            signs = torch.randint(0, 2, (n, self.dim), generator=gen, dtype=torch.int8).float()
            return (2.0 * signs - 1.0) / math.sqrt(self.dim)
        return torch.randn((n, self.dim), generator=gen) / math.sqrt(self.dim)

    def blocks(self) -> Iterator[tuple[slice, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]]:
        """``(rows, block)`` for every block, generated one at a time."""
        for b in range(self.n_blocks):
            yield self.rows(b), self.block(b)

    def __call__(self, g: torch.Tensor, *, scale: torch.Tensor | None = None) -> torch.Tensor:
        """(n, P) → (n, d): ``(g * scale) @ S``, block by block (``scale``: (P,) or None)."""
        if g.dim() != 2 or g.shape[1] != self.n_params:
            raise ValueError(f"expected an (n, {self.n_params}) tensor to project; got shape {tuple(g.shape)}")
        if scale is not None and tuple(scale.shape) != (self.n_params,):
            raise ValueError(f"scale must have shape ({self.n_params},); got {tuple(scale.shape)}")
        out = torch.zeros(g.shape[0], self.dim, dtype=g.dtype, device=g.device)
        for rows, blk in self.blocks():
            part = g[:, rows]
            s = None if scale is None else scale[rows].to(g.dtype)
            if self.kind == "countsketch":
                buckets, signs = blk[0].to(g.device, torch.int64), blk[1].to(g.device)  # int32 index_add_: 30x slower
                signs = signs.to(g.dtype) if s is None else signs.to(g.dtype) * s
                step = max(1, WORK_ELEMENTS // part.shape[1])
                for a in range(0, g.shape[0], step):
                    out[a:a + step].index_add_(1, buckets, part[a:a + step] * signs)
            else:
                blk = blk.to(g.dtype).to(g.device)
                out.addmm_(part, blk if s is None else blk * s[:, None])
        return out

    def matrix(self, max_elements: int = 2**26) -> torch.Tensor:
        """S as one dense (P, d) float32 tensor — for tests and for teaching on small models only."""
        if self.n_params * self.dim > max_elements:
            raise ValueError(f"S would have {self.n_params} × {self.dim} entries (> {max_elements}); it is meant "
                             "to be applied block by block — call the projection instead")
        out = torch.zeros(self.n_params, self.dim)
        for rows, blk in self.blocks():
            if self.kind == "countsketch":
                buckets, signs = blk
                out[torch.arange(rows.start, rows.stop), buckets.long()] = signs.float()
            else:
                out[rows] = blk
        return out

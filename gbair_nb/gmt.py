"""GMT — gradient-mask tuning (Li et al. 2024, arXiv 2406.15330): update only the entries with the largest gradients.

Training accumulates the gradients of ``interval`` mini-batches, averages them, keeps the entries whose
|average gradient| is in the top ``keep_ratio`` fraction and zeroes the rest, then takes one optimizer step — so the
optimizer steps once per ``interval`` mini-batches (as gradient accumulation does). The paper reports gains over
plain fine-tuning, insensitivity to the ratio and about the same compute. Its "mask ratio" is the fraction *dropped*:
``keep_ratio = 1 − mask ratio``.

Options (``TrainConfig(gmt={...})``, read by :class:`GradientMasker`):

- ``keep_ratio``: the fraction of entries updated per step, in (0, 1].
- ``interval``: mini-batches whose gradients are averaged per step (N ≥ 1).
- ``granularity``: ``"tensor"`` (the top fraction of every tensor, the paper's choice) or ``"global"`` (one
  threshold across all masked tensors: some tensors may keep almost everything, others nothing).
- ``mask``: ``"gradient"`` zeroes the masked gradient entries before AdamW. **Caveat worth teaching:** that does
  *not* freeze them — AdamW's momentum (the running mean of past gradients) and its decoupled weight decay still
  move a weight whose current gradient is zero. ``"update"`` restores the masked entries after the step, so they
  truly do not move (their optimizer state still decays).
- ``random``: a control that keeps a uniformly random set of the same size (redrawn every step) instead of the
  largest — is it the *selection* that helps, or just updating fewer entries?
- ``include_head``: mask the classifier head too (default False: the head is new and small; GMT is about which
  backbone/PET entries to move).
- ``seed``: for the random control.

Works on any trainable set: full fine-tuning (``method="full"``) or the PET parameters of any method.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import torch
from torch import nn

__all__ = ["GMTConfig", "GradientMasker", "top_fraction_mask", "GMTError"]

GRANULARITIES = ("tensor", "global")
MASKS = ("gradient", "update")


class GMTError(ValueError):
    """A GMT option was out of range: the message says what would work."""


@dataclass
class GMTConfig:
    """Gradient-mask tuning options (see the module docstring)."""

    keep_ratio: float = 0.2
    interval: int = 1
    granularity: str = "tensor"
    mask: str = "gradient"
    random: bool = False
    include_head: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.keep_ratio <= 1.0:
            raise GMTError(f"keep_ratio={self.keep_ratio}; it is the fraction of entries updated, in (0, 1] "
                           "(the paper's mask ratio 0.8 is keep_ratio 0.2)")
        if int(self.interval) != self.interval or self.interval < 1:
            raise GMTError(f"interval={self.interval}; give a whole number of mini-batches ≥ 1")
        if self.granularity not in GRANULARITIES:
            raise GMTError(f"granularity={self.granularity!r}; use one of {GRANULARITIES}")
        if self.mask not in MASKS:
            raise GMTError(f"mask={self.mask!r}; use 'gradient' (zero the gradient) or 'update' (undo the step)")

    @classmethod
    def of(cls, options: "GMTConfig | Mapping | None") -> "GMTConfig":
        if isinstance(options, cls):
            return options
        unknown = set(options or {}) - set(cls.__dataclass_fields__)
        if unknown:
            raise GMTError(f"unknown GMT options {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**dict(options or {}))


def _k(n: int, ratio: float) -> int:
    return max(1, min(n, int(round(ratio * n))))


def top_fraction_mask(scores: Mapping[str, torch.Tensor], keep_ratio: float, *, granularity: str = "tensor",
                      generator: torch.Generator | None = None, random: bool = False) -> dict[str, torch.Tensor]:
    """Boolean masks (True = update) keeping the top ``keep_ratio`` of entries by ``scores`` (e.g. |avg grad|).

    ``granularity="tensor"``: exactly round(keep_ratio · numel) entries per tensor (at least 1);
    ``"global"``: exactly round(keep_ratio · total) entries over all tensors together. ``random=True`` keeps the
    same number of entries chosen uniformly at random (``generator`` seeds it). Ties are broken by ``torch.topk``.
    """
    if granularity not in GRANULARITIES:
        raise GMTError(f"granularity={granularity!r}; use one of {GRANULARITIES}")
    names = list(scores)

    def pick(flat: torch.Tensor, k: int) -> torch.Tensor:
        keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        if random:
            idx = torch.randperm(flat.numel(), generator=generator)[:k].to(flat.device)
        else:
            idx = torch.topk(flat.float(), k, sorted=False).indices
        keep[idx] = True
        return keep

    if granularity == "tensor":
        return {n: pick(scores[n].reshape(-1), _k(scores[n].numel(), keep_ratio)).reshape(scores[n].shape)
                for n in names}
    flat = torch.cat([scores[n].reshape(-1).float() for n in names])
    keep = pick(flat, _k(flat.numel(), keep_ratio))
    out, start = {}, 0
    for n in names:
        m = scores[n].numel()
        out[n] = keep[start:start + m].reshape(scores[n].shape)
        start += m
    return out


class GradientMasker:
    """Between ``loss.backward()`` and ``optimizer.step()``: accumulate, average, mask. Used by
    :func:`gbair_nb.train.train` when ``TrainConfig.gmt`` is set; usable by hand in any loop::

        masker = GradientMasker(model, keep_ratio=0.2, interval=4)
        for batch in loader:
            opt.zero_grad(); model(**batch).loss.backward()
            if masker.before_step():        # True every `interval` batches: grads now hold the masked average
                opt.step()
                masker.after_step()         # mask="update": put the masked entries back

    Attributes for inspection: ``masks`` (name → bool tensor of the last step), ``n_steps``, ``kept_fraction``
    (of the last step), ``last_average`` (name → the averaged gradient the last mask was chosen from).
    """

    def __init__(self, model: nn.Module, options: "GMTConfig | Mapping | None" = None, *,
                 exclude: tuple[str, ...] | None = None, **kwargs) -> None:
        self.config = GMTConfig.of({**(asdict(GMTConfig.of(options)) if options else {}), **kwargs})
        if exclude is None and not self.config.include_head:
            from .pet import head_names

            exclude = tuple(head_names(model))
        exclude = set(exclude or ())
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad and n not in exclude}
        if not self.params:
            raise GMTError("no trainable parameters left to mask (only the head is trainable?): "
                           "use include_head=True or a method with more trainable parameters")
        self._sum: dict[str, torch.Tensor] = {}
        self._count = 0
        self._before: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.last_average: dict[str, torch.Tensor] = {}
        self.n_steps = 0
        self.kept_fraction = float("nan")
        self._gen = torch.Generator().manual_seed(self.config.seed)

    @torch.no_grad()
    def before_step(self, *, last: bool = False) -> bool:
        """Add this mini-batch's gradients to the window. At the end of a window (every ``interval`` calls, or
        ``last=True``) write the masked average into ``.grad`` and return True: take the optimizer step now.
        Otherwise return False: skip the step (the caller's ``zero_grad`` then clears ``.grad``)."""
        for n, p in self.params.items():
            g = torch.zeros_like(p) if p.grad is None else p.grad
            self._sum[n] = g.detach().clone() if n not in self._sum else self._sum[n].add_(g)
        self._count += 1
        if self._count < self.config.interval and not last:
            return False
        avg = {n: s / self._count for n, s in self._sum.items()}
        c = self.config
        self.masks = top_fraction_mask({n: a.abs() for n, a in avg.items()}, c.keep_ratio,
                                       granularity=c.granularity, generator=self._gen, random=c.random)
        for n, p in self.params.items():
            p.grad = avg[n] * self.masks[n]
        if c.mask == "update":
            self._before = {n: p.detach().clone() for n, p in self.params.items()}
        kept = sum(int(m.sum()) for m in self.masks.values())
        self.kept_fraction = kept / sum(m.numel() for m in self.masks.values())
        self.last_average = avg
        self._sum, self._count = {}, 0
        self.n_steps += 1
        return True

    @torch.no_grad()
    def after_step(self) -> None:
        """For ``mask="update"``: restore the entries the mask left out, so only the kept ones moved."""
        if self.config.mask != "update" or not self._before:
            return
        for n, p in self.params.items():
            keep = self.masks[n]
            p.copy_(torch.where(keep, p, self._before[n]))
        self._before = {}

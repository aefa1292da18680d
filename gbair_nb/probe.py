"""A trusted probe: what a small model that never saw a noisy training label thinks of each training label.

The G-BAIR loop trusts its validation set: it is clean. A logistic regression on the *frozen, pretrained* backbone's
sentence embeddings, fit on the validation set alone, gives for every training example

    p_wrong(z) = 1 − p_probe(given label of z | text of z)

an estimate of the probability that z's label is wrong that owes nothing to the noisy labels (the PET model was
trained on them, the probe was not). Averaged over a flagged batch it estimates the batch's **precision** without a
truth mask, which is what lets the loop stop before a batch that would more likely dirty the labels than clean them
(:class:`gbair_nb.loop.StoppingRule`'s ``min_precision``). Summed over the training set it estimates how many labels
are wrong (what the per-round budget k should be measured against).

The probe is small on purpose: a few hundred clean examples and 384 features. Its estimates are noisy per example
and useful on average; ``benchmarks/bench_detectors.py`` measures how far its batch-precision estimates are from the
truth.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .data import TextDataset

__all__ = ["embed", "TrustedProbe", "probe_of"]

_CACHE: dict = {}


def embed(texts: Sequence[str], *, backbone: str = "minilm", max_length: int = 64, batch_size: int = 64,
          cache: bool = True) -> np.ndarray:
    """(n, d) sentence embeddings of ``texts`` from the frozen pretrained ``backbone``: the mean of the last hidden
    states over the real tokens (what all-MiniLM-L6-v2 was trained to produce). Nothing is trained here.

    Results are cached per (backbone, max_length, text) in this process, so the loop embeds each text once.
    """
    import torch

    from .pet import batches

    texts = list(texts)
    key = (backbone, max_length)
    store = _CACHE.setdefault(key, {}) if cache else {}
    todo = list(dict.fromkeys(t for t in texts if t not in store))
    if todo:
        encoder, tokenizer = _encoder(backbone)
        done = 0
        with torch.no_grad():
            for b in batches(tokenizer, todo, batch_size=batch_size, max_length=max_length):
                hidden = encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
                m = b["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vecs = ((hidden * m).sum(1) / m.sum(1).clamp(min=1.0)).float().numpy()
                for t, v in zip(todo[done:done + len(vecs)], vecs):
                    store[t] = v
                done += len(vecs)
    return np.stack([store[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)


def _encoder(backbone: str):
    """(the frozen transformer body, its tokenizer) of a built-in or local backbone, encoder or decoder."""
    key = ("encoder", backbone)
    if key not in _CACHE:
        from .llm import is_causal_lm

        if is_causal_lm(backbone):
            from .llm import load_causal_lm

            model, tokenizer = load_causal_lm(backbone)
            body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        else:
            from .pet import load_backbone

            model, tokenizer = load_backbone(backbone, num_labels=2)
            body = getattr(model, model.base_model_prefix)
        body.eval()
        _CACHE[key] = (body, tokenizer)
    return _CACHE[key]


class TrustedProbe:
    """Logistic regression on frozen embeddings, fit on a clean labelled set (the validation set).

    ``p_wrong(ds)`` → (n,) probability that each of ``ds``'s labels is wrong, by the probe; ``precision(ds,
    positions)`` → the mean of those over a batch (the expected fraction of wrong labels in it); ``n_wrong(ds)`` →
    their sum (the expected number of wrong labels).
    """

    def __init__(self, clean: TextDataset, *, backbone: str = "minilm", max_length: int = 64, C: float = 1.0,
                 seed: int = 0) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if len(np.unique(clean.labels)) < 2:
            raise ValueError("the trusted probe needs clean examples of at least two classes")
        self.backbone, self.max_length, self.num_classes = backbone, max_length, clean.num_classes
        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
        self.model.fit(self._x(clean.texts), clean.labels)

    def _x(self, texts) -> np.ndarray:
        return embed(texts, backbone=self.backbone, max_length=self.max_length)

    def proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, C) class probabilities by the probe (classes it never saw get 0)."""
        p = self.model.predict_proba(self._x(texts))
        out = np.zeros((len(p), self.num_classes))
        out[:, self.model.classes_] = p
        return out

    def p_wrong(self, ds: TextDataset) -> np.ndarray:
        """(n,) 1 − p_probe(given label | text): higher = more likely mislabeled."""
        p = self.proba(ds.texts)
        return 1.0 - p[np.arange(len(ds)), ds.labels]

    def precision(self, ds: TextDataset, positions: Sequence[int]) -> float:
        """Expected fraction of wrong labels among ``ds``'s examples at ``positions`` (NaN for an empty batch)."""
        positions = np.asarray(positions, dtype=np.int64)
        return float(self.p_wrong(ds.subset(positions)).mean()) if len(positions) else float("nan")

    def n_wrong(self, ds: TextDataset) -> float:
        """Expected number of wrong labels in ``ds``."""
        return float(self.p_wrong(ds).sum())

    def flip_rates(self, ds: TextDataset) -> np.ndarray:
        """(C, C) estimated noise: entry [i, j] (i ≠ j) is the fraction of the examples of true class i that carry
        label j in ``ds``; the diagonal is 0.

        With the probe's class probabilities as soft truth, the expected number of examples of true class i among
        those labelled j is Σ_{z labelled j} p_probe(i | z); dividing by the expected size of class i turns counts
        into rates, so a large class does not look noisier just because it is large. (Confident learning's
        estimate of the noise matrix, with a probe that never saw these labels as its model.)
        """
        p = self.proba(ds.texts)
        joint = np.zeros((self.num_classes, self.num_classes))  # [true, given]
        for j in range(self.num_classes):
            joint[:, j] = p[ds.labels == j].sum(0)
        rates = joint / np.clip(joint.sum(1, keepdims=True), 1e-12, None)
        np.fill_diagonal(rates, 0.0)
        return rates


def probe_of(ctx) -> TrustedProbe:
    """The probe of a :class:`gbair_nb.recovery.ScoreContext`: fit on its (clean) validation set with its run's
    backbone and max length, once per context (kept in ``ctx.cache``)."""
    if "probe" not in ctx.cache:
        ctx.cache["probe"] = TrustedProbe(ctx.val, backbone=ctx.run.config.backbone,
                                          max_length=ctx.run.config.max_length, seed=ctx.seed)
    return ctx.cache["probe"]

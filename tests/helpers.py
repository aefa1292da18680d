"""Small helpers shared by the test files (the tests folder is on sys.path when pytest runs them)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict:
    """The environment for a child Python process of a test: this one's, with this checkout first on PYTHONPATH and
    the caller's own PYTHONPATH kept after it (packages installed by path, as on a machine without pip, stay found)."""
    path = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return {**os.environ, "PYTHONPATH": path, **extra}


class FixedProbe:
    """A stand-in for a fitted ``gbair_nb.probe.TrustedProbe``: its class probabilities are given (one row per text,
    in order), the rest is TrustedProbe's own code (``flip_rates``)."""

    def __init__(self, proba) -> None:
        import numpy as np

        from gbair_nb.probe import TrustedProbe

        self._p = np.asarray(proba, dtype=float)
        self.num_classes = self._p.shape[1]
        self.flip_rates = TrustedProbe.flip_rates.__get__(self)

    def proba(self, texts):
        assert len(texts) == len(self._p)
        return self._p


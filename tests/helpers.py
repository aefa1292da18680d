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

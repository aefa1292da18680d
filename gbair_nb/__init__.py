"""gbair_nb — a Jupyter-first teaching toolkit for parameter-efficient tuning (PET), TracIn influence and
G-BAIR label recovery.

Importing the package does nothing but define ``__version__``: no torch import, no environment changes.
Import the module you need (``from gbair_nb import data, train``) and call :func:`gbair_nb.config.setup` once.
"""
__version__ = "0.1.0"

__all__ = ["__version__"]

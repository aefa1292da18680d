"""``python -m gbair_nb <subcommand> …`` — the toolkit from a shell.

Subcommands are registered in :data:`SUBCOMMANDS`: name → :class:`Subcommand` (a help line and the module that
provides ``add_arguments(parser)`` and ``run(args) -> int``). A subcommand's module is imported only when that
subcommand runs, so ``--help`` stays fast and a module with heavy imports costs nothing until it is used. One
module per command: :mod:`~gbair_nb.cli.train`, :mod:`~gbair_nb.cli.recover`, :mod:`~gbair_nb.cli.influence`,
:mod:`~gbair_nb.cli.cache`;
the options they share are :mod:`~gbair_nb.cli.args`.

Bad input (unknown dataset, missing file or column, a rate out of range, a folder that cannot be written, …) ends
with one line on stderr, ``error: …``, and exit code 2 — never a traceback, and before any long work starts.
Progress notes (sizes chosen, a time estimate, which file was read) go to the ``gbair_nb`` logger, which
:func:`main` shows on stderr unless ``--quiet``; results go to stdout.

``train`` writes into ``--out DIR`` (all files together once training has finished; an interrupted or failed run
leaves the folder as it was; a new run replaces the old run's files there and nothing else):

- ``run.json`` (config, per-epoch loss and validation metrics, checkpoint list), ``timing.json``,
  ``checkpoints/ckpt_NN.safetensors`` (the trainable tensors and the learning rates in force) — from
  :func:`gbair_nb.train.train`;
- ``data.json``: how the data was built (dataset as given and resolved, columns, split sizes, seed, corruption, each
  split's fingerprint), enough to rebuild it with :func:`gbair_nb.runs.read_run_data`;
- ``splits.csv``: ``id, split`` for every example drawn;
- ``corruption.csv``: the training set's ``id, label, noisy_label, is_corrupted`` (+ class names);
- ``test_metrics.json`` and ``test_predictions.csv``: the final model on the held-out test split.

The folder's format and its checks are :mod:`gbair_nb.runs`.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..config import DEVICE_ENV, device

__all__ = ["SUBCOMMANDS", "Subcommand", "main", "build_parser", "invoked_as"]


@dataclass(frozen=True)
class Subcommand:
    """A registered subcommand: ``module`` provides ``add_arguments(parser)`` and ``run(args) -> int``."""

    help: str
    module: str
    add_arguments: str = "add_arguments"
    run: str = "run"

    def load(self):
        mod = importlib.import_module(self.module)
        return getattr(mod, self.add_arguments), getattr(mod, self.run)


# ---------------------------------------------------------------------------------- subcommand registration point
# One line per subcommand. A module joins the CLI by defining
#     def add_arguments(parser: argparse.ArgumentParser) -> None: ...
#     def run(args: argparse.Namespace) -> int: ...            # 0 = success
# and adding an entry here. Raise DataError / PetError / FingerprintError / ValueError / FileNotFoundError for
# bad input: main() turns them into one `error: …` line and exit code 2.
SUBCOMMANDS: dict[str, Subcommand] = {
    "train": Subcommand("train a prompt-tuned classifier on (optionally corrupted) labels; save checkpoints",
                        "gbair_nb.cli.train"),
    "recover": Subcommand("G-BAIR: corrupt, then flag, relabel and retrain for a few rounds; write a report",
                          "gbair_nb.cli.recover"),
    "influence": Subcommand("TracIn of a train run: proponents, opponents, self-influence", "gbair_nb.cli.influence"),
    "cache": Subcommand("what the training cache holds; --prune removes what can never be reused",
                        "gbair_nb.cli.cache"),
}

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError,
                                                IsADirectoryError, PermissionError, FileExistsError)
# DataError, PetError and FingerprintError are ValueErrors; they are listed by name in _user_errors() too.


def _user_errors() -> tuple[type[BaseException], ...]:
    errors = list(USER_ERRORS)
    for module, name in [("gbair_nb.data", "DataError"), ("gbair_nb.pet", "PetError"),
                         ("gbair_nb.train", "FingerprintError"), ("gbair_nb.checkpoints", "RunFolderError"),
                         ("gbair_nb.gradients", "InfluenceError")]:
        mod = sys.modules.get(module)  # only if already imported: no import just to catch an error
        if mod is not None and hasattr(mod, name):
            errors.append(getattr(mod, name))
    return tuple(errors)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: …``, exit 2) instead of usage + message."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def invoked_as(argv0: str | None = None) -> str:
    """The command the user typed, for usage lines: ``gbair-nb`` (the console script) or ``python -m gbair_nb``."""
    name = Path(sys.argv[0] if argv0 is None else argv0).stem  # stem: Windows' launcher is gbair-nb.exe
    return "gbair-nb" if name == "gbair-nb" else "python -m gbair_nb"  # -m, torchrun, a test runner: the module


def build_parser(command: str | None = None, *, prog: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser. Only ``command``'s own arguments are added (its module is imported for that)."""
    parser = _Parser(prog=prog or invoked_as(),
                     description="gbair_nb: prompt tuning, TracIn influence and G-BAIR label recovery, offline.")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"gbair_nb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, spec in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=spec.help, description=spec.help)
        if name == command:
            add_arguments, run = spec.load()
            add_arguments(p)
            p.set_defaults(_run=run)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m gbair_nb``: returns the exit code (0 ok, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logger = logging.getLogger("gbair_nb")  # the package's progress notes, on stderr while this command runs
    handler, level = logging.StreamHandler(sys.stderr), logger.level
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    try:
        if os.environ.get(DEVICE_ENV):
            device()  # a bad GBAIR_DEVICE is said now, before any data is read or model trained
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)

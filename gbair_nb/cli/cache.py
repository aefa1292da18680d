"""``cache``: what the training cache holds, and pruning it.

    python -m gbair_nb cache            # the folder, its entries and their size; nothing is changed
    python -m gbair_nb cache --prune    # remove the entries the installed gbair_nb can never reuse
    python -m gbair_nb cache --clear    # remove every entry (the next runs train again)

An entry is reusable when the same code version wrote it and it is complete (see :mod:`gbair_nb.cache`): every edit
of the package or upgrade of torch / transformers / peft leaves the older entries unusable, and they stay on disk
until pruned. Entries changed in the last 10 minutes are kept (a training may be writing one); ``--dry-run`` says
what would go.
"""
from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--prune", action="store_true",
                      help="remove entries of another code version, and incomplete ones (they can never be reused)")
    what.add_argument("--clear", action="store_true", help="remove every entry: the next runs train again")
    parser.add_argument("--dry-run", action="store_true", help="with --prune or --clear: list, remove nothing")


def run(args: argparse.Namespace) -> int:
    from ..cache import cache_entries, cache_root, prune_cache

    if args.dry_run and not (args.prune or args.clear):
        raise ValueError("--dry-run goes with --prune or --clear (alone, `cache` changes nothing anyway)")
    root = cache_root()
    entries = cache_entries(root)
    reusable = [e for e in entries if e.reusable()]
    print(f"{root}: {len(entries)} cached trainings, {_mb(sum(e.bytes for e in entries))}; "
          f"{len(reusable)} reusable by this gbair_nb ({_mb(sum(e.bytes for e in reusable))}), "
          f"{len(entries) - len(reusable)} from other code or incomplete")
    if not (args.prune or args.clear):
        return 0
    removed, recent = prune_cache(everything=args.clear, root=root, dry_run=args.dry_run, entries=entries)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(removed)} entries, {_mb(sum(e.bytes for e in removed))}"
          + (f"; kept {len(recent)} changed in the last 10 minutes (a training may be writing them)"
             if recent else ""))
    return 0

"""The main job: a corrupted-label scenario, recovery with each scorer, one report and one recovery curve.

``python -m gbair_nb recover`` and notebook 04 both call :func:`run_recovery`; the report it returns is what
``DIR/report.json`` holds, and :func:`plot_recovery_curves` draws ``DIR/recovery_curve.png`` from it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .recovery import check_fix, gbair, train_clean_reference
from .scorers import OPTIONAL_SCORERS, SCORERS
from .scenarios import SCENARIOS, Scenario, make_scenario

__all__ = ["run_recovery", "curve_frame", "plot_recovery_curves", "QUICK_SCENARIO", "FILE_SCENARIO", "add_arguments",
           "run"]

log = logging.getLogger(__name__)

# Quick mode: the same scenario, smaller (each training a few seconds on 2 cores); a file is shrunk the same way
QUICK_SCENARIO = {"n_train": 300, "n_val": 150, "n_test": 300}
# A file in full mode: the default scenario's corruption and sizes, so it takes the time the built-in default takes
FILE_SCENARIO = {**SCENARIOS["sms_spam"]}
del FILE_SCENARIO["dataset"]
# Work per round of each scorer besides its retraining, in trainings (TracIn passes, cleanlab's 3 folds at 2/3 size)
_SCORING_TRAININGS = {"gbair": 0.5, "self_influence": 0.5, "grand": 0.5, "cleanlab": 2.0}


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    return obj


def run_recovery(scenario: Scenario, *, scorers: Sequence[str] = ("gbair", "random"), k: int | None = None,
                 rounds: int = 5, fix: str = "flip", config=None, seed: int = 0, options: dict | None = None,
                 patience: int = 1, clean: dict | None = None, round0=None, compute=None,
                 verbose: bool = True) -> dict:
    """Train the clean reference and the corrupted model once, then run the loop with every scorer.

    Returns the report (a JSON-ready dict): dataset, sizes, corruption (mode, rate, number of corrupted training
    labels), method, seed, the clean reference, and for each scorer its rounds (metrics, flagged ids, flagged
    precision, wrong labels remaining, seconds, detection metrics) and recovered fraction on macro-F1 and accuracy.
    ``clean`` (metrics from :func:`train_clean_reference`) and ``round0`` (a run trained on ``scenario.train`` with
    ``config``) reuse work already done, e.g. in a notebook; by default both are trained here. ``compute`` is how
    the heavy steps run (:data:`gbair_nb.loop.LOCAL` alone; ``job.compute`` in a torchrun job).
    """
    from .loop import LOCAL
    from .train import TrainConfig, train

    compute = compute or LOCAL
    # everything that can be wrong is found before the two trainings below, not after them
    scorers = list(scorers)
    if not scorers:
        raise ValueError(f"no scorer given; use one or more of {', '.join(SCORERS)}")
    unknown = [s for s in scorers if s not in SCORERS]
    if unknown:
        raise ValueError(f"unknown scorer {unknown[0]!r}; use one of {', '.join(SCORERS)} or 'all'")
    n = len(scenario.splits.train)
    if k is not None and not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the training-set size {n}; got {k}")
    check_fix(fix, scenario.splits.train)
    config = config or TrainConfig.default(seed=seed)
    config = replace(config, seed=seed)
    t0 = time.perf_counter()
    clean = clean if clean is not None else train_clean_reference(scenario, config, compute=compute)
    round0 = round0 if round0 is not None else train(scenario.train, config=config, step=compute.step, verbose=False)
    results = {}
    for name in scorers:
        if verbose:
            log.info(f"[{time.perf_counter() - t0:5.0f} s] recovery with scorer {name} …")
        rec = gbair(scenario, scorer=name, k=k, rounds=rounds, fix=fix, config=config, clean=clean, seed=seed,
                    options=options, round0=round0, patience=patience, compute=compute, verbose=verbose)
        results[name] = rec.summary()
    c = scenario.corruption
    report = {
        "dataset": scenario.splits.train.name,
        "scenario": scenario.name,
        "sizes": scenario.splits.sizes(),
        "class_names": scenario.splits.train.class_names,
        "corruption": {"mode": c.mode, "rate": c.p, "n_corrupted": c.n_corrupted,
                       "fraction_of_train": float(c.is_corrupted.mean())},
        "method": config.method,
        "backbone": config.backbone,
        "seed": seed,
        "k": results[scorers[0]]["options"]["k"] if scorers else k,
        "rounds": rounds,
        "fix": fix,
        "config": asdict(config),
        "clean": clean,
        "corrupted": {m: results[scorers[0]]["rounds"][0][m] for m in
                      ("val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1")} if scorers else None,
        "scorers": results,
        "seconds": time.perf_counter() - t0,
    }
    return _json_safe(report)


def curve_frame(report: dict, metric: str = "test_macro_f1") -> pd.DataFrame:
    """Long DataFrame (scorer, round, value, flagged_precision) behind the recovery curve."""
    rows = []
    for name, res in report["scorers"].items():
        for r in res["rounds"]:
            rows.append({"scorer": name, "round": r["round"], metric: r[metric],
                         "flagged_precision": r.get("flagged_precision"), "final": r["round"] == res["final_round"]})
    return pd.DataFrame(rows)


def plot_recovery_curves(report: dict, *, metric: str = "test_macro_f1", ax=None):
    """Per-round ``metric`` for each scorer, with the clean-label and corrupted references. Returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4))
    df = curve_frame(report, metric)
    for name, g in df.groupby("scorer", sort=False):
        ax.plot(g["round"], g[metric], marker="o", label=name, linestyle="--" if name == "random" else "-")
        fin = g[g["final"]]
        ax.scatter(fin["round"], fin[metric], s=140, facecolors="none", edgecolors="k", zorder=5)
    ax.axhline(report["clean"][metric], color="green", linestyle=":", label="clean labels (reference)")
    ax.axhline(report["corrupted"][metric], color="red", linestyle=":", label="corrupted (round 0)")
    ax.set_xlabel("round (k = %s relabeled per round)" % report.get("k"))
    ax.set_ylabel(metric.replace("_", " ").replace("macro f1", "macro-F1"))
    ax.set_title(f"{report['dataset']}: {report['corruption']['mode']} noise, "
                 f"{report['corruption']['n_corrupted']} wrong labels of {report['sizes']['train']}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return ax


# ----------------------------------------------------------------------------------------------------- the CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli import _positive_int, _rate, add_data_arguments, add_method_arguments

    quick = "/".join(str(v) for v in QUICK_SCENARIO.values())
    full = "/".join(str(FILE_SCENARIO[k]) for k in QUICK_SCENARIO)
    add_data_arguments(parser, sizes_from=f"default: the dataset's scenario in scenarios.SCENARIOS, {full} for a file, "
                                          f"quick mode {quick}; a file too small for them: 60/20/20%%")
    g = parser.add_argument_group("corruption")
    g.add_argument("--corrupt", type=_rate, default=None, metavar="P",
                   help="corruption rate (default: the scenario's; 0.5 of the positives for sms_spam)")
    g.add_argument("--mode", default=None, choices=["uniform", "class_conditional", "confusable"],
                   help="default class_conditional: missed positives, labelled negative")
    g = parser.add_argument_group("recovery")
    g.add_argument("--rounds", type=_positive_int, default=None, help="at most this many rounds (default 5, quick 2)")
    g.add_argument("--k", type=_positive_int, default=None, help="examples relabeled per round (default 4%% of train)")
    g.add_argument("--scorer", default="gbair,random",
                   help=f"comma-separated scorers, or 'all': {', '.join(SCORERS)} (default gbair,random)")
    g.add_argument("--fix", default="flip", choices=["flip", "predict", "remove"], help="how flagged labels are fixed")
    add_method_arguments(g)
    g.add_argument("--variant", default="dot", choices=["dot", "cosine"], help="TracIn variant for gbair")
    g.add_argument("--project", type=_positive_int, default=None, metavar="D",
                   help="TracIn on random projections of the gradients to D dimensions (default: exact)")
    g.add_argument("--quick", action="store_true", help="quick mode (also GBAIR_QUICK=1)")
    g.add_argument("--out", type=Path, default=Path("runs/recover"), help="output directory (default runs/recover)")
    g.add_argument("--quiet", action="store_true")
    g.add_argument("--backbone", default="minilm",
                   help="minilm (default), smollm2 (decoder LLM, verbalizer prompt tuning), or a local model folder")


def _scenario_from_args(args, quick: bool) -> tuple[Scenario, str]:
    """The built-in dataset's scenario (or the default one, for a file), shrunk in quick mode, as the arguments say;
    with a note of the sizes chosen."""
    from .cli import SIZE_KEYS, choose_sizes, confuser_probs
    from .data import load_dataset, split

    spec = dict(SCENARIOS.get(args.dataset, {**FILE_SCENARIO, "dataset": args.dataset}))
    ds = load_dataset(spec.pop("dataset"), text_col=args.text_col, label_col=args.label_col)
    sizes, note = choose_sizes({k: getattr(args, k) for k in SIZE_KEYS}, len(ds),
                               QUICK_SCENARIO if quick else {k: spec[k] for k in SIZE_KEYS})
    spec.update(sizes)
    for key, arg in [("p", "corrupt"), ("mode", "mode")]:
        if getattr(args, arg) is not None:
            spec[key] = getattr(args, arg)
    probs = None
    if spec["mode"] == "confusable" and spec["p"] > 0:  # the quick model `train --mode confusable` uses too
        train = split(ds, **sizes, seed=args.seed).train  # the split make_scenario draws below
        probs = confuser_probs(train.texts, train.labels, args.seed)
    return make_scenario(ds, seed=args.seed, probs=probs, **spec), f"data: {args.dataset}; {note}"


def _trainings(scorers: Sequence[str], rounds: int) -> float:
    """At most how many trainings' worth of work a recovery is: clean + round 0, then each scorer's rounds."""
    return 2 + sum(rounds * (1 + _SCORING_TRAININGS.get(s, 0.05)) for s in scorers)


def _fmt(x) -> str:
    """Two decimals, or "n/a" where a value is undefined (e.g. recovery when clean = corrupted)."""
    return "n/a" if x is None else f"{x:.2f}"


def run(args: argparse.Namespace) -> int:
    from .cli import estimate_note, estimate_seconds
    from .config import quick_mode, setup
    from .distributed import launched
    from .files import check_writable

    quick = quick_mode(True) if args.quick else quick_mode()
    scorers = ([s for s in SCORERS if s not in OPTIONAL_SCORERS] if args.scorer == "all" else
               [s.strip() for s in args.scorer.split(",") if s.strip()])
    if not scorers:
        raise ValueError(f"--scorer {args.scorer!r} names no scorer; give one or more of {', '.join(SCORERS)} "
                         "(comma-separated) or 'all'")
    unknown = [s for s in scorers if s not in SCORERS]
    if unknown:
        raise ValueError(f"unknown scorer {unknown[0]!r}; use one of {', '.join(SCORERS)} or 'all'")
    out: Path = args.out
    if not launched() or os.environ.get("RANK") == "0":  # only rank 0 writes (docs/distributed.md)
        check_writable(out)
    scenario, data_note = _scenario_from_args(args, quick)
    n_train = len(scenario.splits.train)
    if args.k is not None and args.k > n_train:
        raise ValueError(f"--k {args.k} is more than the {n_train} training examples; choose --k of at most "
                         f"{n_train} (or a larger --n-train)")
    check_fix(args.fix, scenario.splits.train)
    log.info(data_note)  # everything checked: now say what will run
    setup(quiet=True)
    from .cli import method_overrides
    from .train import TrainConfig

    overrides = {"seed": args.seed, "backbone": args.backbone, **method_overrides(args)}
    # each method its own learning rate; a decoder answers with the dataset's label words
    config = TrainConfig.for_method(args.method, quick=quick, dataset=scenario.splits.train, **overrides)
    rounds = args.rounds or (2 if quick else 5)
    log.info(f"scenario {scenario.name}: {scenario.splits.sizes()}, {scenario.corruption.n_corrupted} corrupted "
             f"training labels; scorers {', '.join(scorers)}; quick mode {'on' if quick else 'off'}")
    trainings = _trainings(scorers, rounds)
    note = estimate_note(estimate_seconds(n_train, config, trainings=trainings),
                         f"at most {trainings:.0f} trainings' worth of work ({rounds} rounds × {len(scorers)} "
                         f"scorers; rounds without a validation gain stop early)")
    if note:
        log.info(note)
    from .distributed import job
    from .files import figure_bytes, staged_folder, write_atomic

    with job() as j:  # under torchrun / accelerate launch: one process of several (docs/distributed.md)
        report = run_recovery(scenario, scorers=scorers, k=args.k, rounds=rounds, fix=args.fix, config=config,
                              seed=args.seed, compute=j.compute, verbose=not args.quiet and j.is_main,
                              options={"variant": args.variant, **({"project": args.project} if args.project else {})})
        if not j.agree(report):  # every rank finished with the same flagged ids; only rank 0 writes
            return 0
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = plot_recovery_curves(report)
    ax.figure.tight_layout()
    png = figure_bytes(ax.figure, dpi=120)
    plt.close(ax.figure)
    with staged_folder(out, replaces=["report.json", "recovery_curve.png"], last="report.json") as stage:
        write_atomic(stage / "recovery_curve.png", png)
        write_atomic(stage / "report.json", json.dumps(report, indent=2))  # whole or not at all
    print(f"clean macro-F1 {report['clean']['test_macro_f1']:.3f}, corrupted {report['corrupted']['test_macro_f1']:.3f}")
    for name, res in report["scorers"].items():
        fin = next(r for r in res["rounds"] if r["round"] == res["final_round"])
        prec = [r["flagged_precision"] for r in res["rounds"][1:]]
        print(f"  {name:>15}: final macro-F1 {fin['test_macro_f1']:.3f} (round {res['final_round']}), recovered "
              f"{_fmt(res['recovered_fraction']['test_macro_f1'])}, flagged precision "
              f"{', '.join(_fmt(p) for p in prec) or '-'}; stopped: {res['stopped_because']}")
    print(f"{report['seconds']:.0f} s → {out}/report.json, {out}/recovery_curve.png")
    return 0

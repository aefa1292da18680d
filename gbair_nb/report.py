"""The main job: a corrupted-label scenario, recovery with each scorer, one report and one recovery curve.

``python -m gbair_nb recover`` and notebook 04 both call :func:`run_recovery`; the report it returns is what
``DIR/report.json`` holds, and :func:`plot_recovery_curves` draws ``DIR/recovery_curve.png`` from it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .recovery import SCENARIOS, SCORERS, Scenario, check_fix, gbair, make_scenario, train_clean_reference

__all__ = ["run_recovery", "curve_frame", "plot_recovery_curves", "QUICK_SCENARIO", "add_arguments", "run"]

# Quick mode: the same scenario, smaller (each training a few seconds on 2 cores)
QUICK_SCENARIO = {"n_train": 300, "n_val": 150, "n_test": 300}


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
                 patience: int = 1, clean: dict | None = None, round0=None, verbose: bool = True) -> dict:
    """Train the clean reference and the corrupted model once, then run the loop with every scorer.

    Returns the report (a JSON-ready dict): dataset, sizes, corruption (mode, rate, number of corrupted training
    labels), method, seed, the clean reference, and for each scorer its rounds (metrics, flagged ids, flagged
    precision, wrong labels remaining, seconds, detection metrics) and recovered fraction on macro-F1 and accuracy.
    ``clean`` (metrics from :func:`train_clean_reference`) and ``round0`` (a run trained on ``scenario.train`` with
    ``config``) reuse work already done, e.g. in a notebook; by default both are trained here.
    """
    from .train import TrainConfig, train

    check_fix(fix, scenario.splits.train)  # before the two trainings below, not after
    config = config or TrainConfig.default(seed=seed)
    config = replace(config, seed=seed)
    t0 = time.perf_counter()
    clean = clean if clean is not None else train_clean_reference(scenario, config)
    round0 = round0 if round0 is not None else train(scenario.train, config=config, verbose=False)
    results = {}
    for name in scorers:
        if name not in SCORERS:
            raise ValueError(f"unknown scorer {name!r}; use one of {', '.join(SCORERS)} or 'all'")
        if verbose:
            print(f"[{time.perf_counter() - t0:5.0f} s] recovery with scorer {name} …", file=sys.stderr, flush=True)
        rec = gbair(scenario, scorer=name, k=k, rounds=rounds, fix=fix, config=config, clean=clean, seed=seed,
                    options=options, round0=round0, patience=patience, verbose=verbose)
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

    add_data_arguments(parser, sizes_from="split size (default: the dataset's scenario in recovery.SCENARIOS; "
                                          "quick mode 300/150/300)")
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


def _scenario_from_args(args, quick: bool) -> Scenario:
    from .data import DATASETS

    spec = dict(SCENARIOS.get(args.dataset, {"dataset": args.dataset, "mode": "class_conditional", "p": 0.5,
                                             "n_train": 0.6, "n_val": 0.2, "n_test": 0.2}))
    if quick and args.dataset in DATASETS:
        spec.update(QUICK_SCENARIO)
    for key, arg in [("n_train", "n_train"), ("n_val", "n_val"), ("n_test", "n_test"), ("p", "corrupt"),
                     ("mode", "mode")]:
        if getattr(args, arg) is not None:
            spec[key] = getattr(args, arg)
    dataset = spec.pop("dataset")
    if dataset not in DATASETS:
        from .data import load_dataset

        dataset = load_dataset(dataset, text_col=args.text_col, label_col=args.label_col)
    if spec.get("mode") == "confusable":
        raise ValueError("--mode confusable needs a model's probabilities; use `train --mode confusable` "
                         "or the Python API make_scenario(..., probs=...)")
    return make_scenario(dataset, seed=args.seed, **spec)


def _fmt(x) -> str:
    """Two decimals, or "n/a" where a value is undefined (e.g. recovery when clean = corrupted)."""
    return "n/a" if x is None else f"{x:.2f}"


def run(args: argparse.Namespace) -> int:
    from .config import quick_mode, setup

    quick = quick_mode(True) if args.quick else quick_mode()
    scorers = list(SCORERS) if args.scorer == "all" else [s.strip() for s in args.scorer.split(",") if s.strip()]
    unknown = [s for s in scorers if s not in SCORERS]
    if unknown:
        raise ValueError(f"unknown scorer {unknown[0]!r}; use one of {', '.join(SCORERS)} or 'all'")
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a directory")
    scenario = _scenario_from_args(args, quick)
    setup(quiet=True)
    from .cli import method_overrides
    from .train import TrainConfig

    overrides = {"seed": args.seed, "backbone": args.backbone, **method_overrides(args)}
    from .llm import is_causal_lm, task_options

    if is_causal_lm(args.backbone):  # a decoder answers with label words: the dataset's template and verbalizer
        overrides.update(method_options=task_options(scenario.splits.train), batch_size=8)
    config = TrainConfig.for_method(args.method, quick=quick, **overrides)  # each method its own learning rate
    rounds = args.rounds or (2 if quick else 5)
    print(f"scenario {scenario.name}: {scenario.splits.sizes()}, {scenario.corruption.n_corrupted} corrupted "
          f"training labels; scorers {', '.join(scorers)}; quick mode {'on' if quick else 'off'}", file=sys.stderr)
    from .distributed import job
    from .files import figure_bytes, write_atomic

    with job() as j:  # under torchrun / accelerate launch: one process of several (docs/distributed.md)
        report = run_recovery(scenario, scorers=scorers, k=args.k, rounds=rounds, fix=args.fix, config=config,
                              seed=args.seed, verbose=not args.quiet and j.is_main,
                              options={"variant": args.variant, **({"project": args.project} if args.project else {})})
        if not j.agree(report):  # every rank finished with the same flagged ids; only rank 0 writes
            return 0
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "report.json", json.dumps(report, indent=2))  # whole or not at all
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = plot_recovery_curves(report)
    ax.figure.tight_layout()
    write_atomic(out / "recovery_curve.png", figure_bytes(ax.figure, dpi=120))
    plt.close(ax.figure)
    print(f"clean macro-F1 {report['clean']['test_macro_f1']:.3f}, corrupted {report['corrupted']['test_macro_f1']:.3f}")
    for name, res in report["scorers"].items():
        fin = next(r for r in res["rounds"] if r["round"] == res["final_round"])
        prec = [r["flagged_precision"] for r in res["rounds"][1:]]
        print(f"  {name:>15}: final macro-F1 {fin['test_macro_f1']:.3f} (round {res['final_round']}), recovered "
              f"{_fmt(res['recovered_fraction']['test_macro_f1'])}, flagged precision "
              f"{', '.join(_fmt(p) for p in prec) or '-'}; stopped: {res['stopped_because']}")
    print(f"{report['seconds']:.0f} s → {out}/report.json, {out}/recovery_curve.png")
    return 0

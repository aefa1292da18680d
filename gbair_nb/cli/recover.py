"""``recover``: the main job — corrupt, then flag, relabel and retrain with each scorer; a report and a curve.

Writes ``DIR/report.json`` (:func:`gbair_nb.report.run_recovery`, or :func:`~gbair_nb.report.run_recovery_seeds`
with ``--seeds``: every seed's report and the means with 95% intervals) and ``DIR/recovery_curve.png`` (the curves
with their references; bands over seeds), both at once or neither.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Sequence

from ..metrics import kept_round
from ..scenarios import QUICK_SCENARIO, SCENARIOS, Scenario, make_scenario
from ..scorers import ALIASES, OPTIONAL_SCORERS, SCORERS
from .args import (SIZE_KEYS, add_data_arguments, add_method_arguments, choose_sizes, estimate_note,
                   estimate_seconds, method_overrides, positive_int, precision_gate, rate, seed_int)

__all__ = ["add_arguments", "run", "FILE_SCENARIO"]

log = logging.getLogger(__name__)

# The main job's stopping rule: the settings every loop in docs/benchmarks.md ran with (the library's ``gbair()``
# and ``run_recovery()`` keep patience 1 and no gate, the bare rule the notebooks teach first). Replayed over those
# loops, patience 1 stopped at a noisy validation dip in 13 of the 36 under uniform or confusable noise, and kept
# dirtier labels in 11 of them; a batch the trusted probe estimates below 0.5 precise would, flipped, add more wrong
# labels than it removes.
DEFAULT_PATIENCE = 2
DEFAULT_MIN_PRECISION = 0.5

# A file in full mode: the default scenario's corruption and sizes, so it takes the time the built-in default takes
FILE_SCENARIO = {k: v for k, v in SCENARIOS["sms_spam"].items() if k != "dataset"}
# Work per round of each scorer besides its retraining, in trainings (TracIn passes, cleanlab's 3 folds at 2/3 size)
_SCORING_TRAININGS = {"self_influence": 0.5, "grand": 0.5, "cleanlab": 2.0, "ekfac": 1.0, "auto": 0.5}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    quick = "/".join(str(v) for v in QUICK_SCENARIO.values())
    full = "/".join(str(FILE_SCENARIO[k]) for k in QUICK_SCENARIO)
    add_data_arguments(parser, sizes_from=f"default: the dataset's scenario in scenarios.SCENARIOS, {full} for a "
                                          f"file, quick mode {quick}; a file too small for them: 60/20/20%%")
    parser.add_argument("--seeds", default=None, metavar="S1,S2,…",
                        help="run the whole job once per seed and report means with 95%% intervals (replaces "
                             "--seed); each seed's report is also saved as DIR/seeds/seedN.json as soon as it is "
                             "done, so a run stopped early keeps the seeds it finished")
    parser.add_argument("--resume", action="store_true",
                        help="with --seeds: take the seeds an earlier run with the same settings saved in DIR/seeds "
                             "as they are and run only the others (a saved seed with other settings is an error, "
                             "before any training)")
    g = parser.add_argument_group("corruption")
    g.add_argument("--corrupt", type=rate, default=None, metavar="P",
                   help="corruption rate (default: the scenario's; 0.7 of the positives for the built-ins)")
    g.add_argument("--mode", default=None, choices=["uniform", "class_conditional", "confusable"],
                   help="default class_conditional: missed positives, labelled negative")
    g = parser.add_argument_group("recovery")
    g.add_argument("--rounds", type=positive_int, default=None, help="at most this many rounds (default 5, quick 2)")
    g.add_argument("--k", type=positive_int, default=None, help="examples relabeled per round (default 4%% of train)")
    g.add_argument("--scorer", default="auto,random",
                   help=f"comma-separated scorers, or 'all': {', '.join(SCORERS)} (default auto,random: auto is "
                        "G-BAIR when the trusted probe estimates that the wrong labels point one way, the probe "
                        "itself when they point both ways; random is the control)")
    g.add_argument("--fix", default="flip", choices=["flip", "predict", "remove"], help="how flagged labels are fixed")
    g.add_argument("--patience", type=positive_int, default=DEFAULT_PATIENCE,
                   help="stop after this many rounds without a new best validation macro-F1; the best round's "
                        f"labels are kept (default {DEFAULT_PATIENCE}: one noisy dip does not stop the loop)")
    g.add_argument("--min-precision", type=precision_gate, default=DEFAULT_MIN_PRECISION, metavar="P",
                   help="stop before a batch whose precision the trusted probe (a classifier fit on the clean "
                        f"validation set) estimates below P (default {DEFAULT_MIN_PRECISION}; 'none': no gate)")
    add_method_arguments(g)
    g.add_argument("--variant", default="dot", choices=["dot", "cosine"], help="TracIn variant for gbair")
    g.add_argument("--project", type=positive_int, default=None, metavar="D",
                   help="TracIn on random projections of the gradients to D dimensions (default: exact)")
    g.add_argument("--quick", action="store_true", help="quick mode (also GBAIR_QUICK=1)")
    g.add_argument("--no-cache", action="store_true",
                   help="train the clean reference and round 0 again even if this scenario was run before")
    g.add_argument("--out", type=Path, default=Path("runs/recover"), help="output directory (default runs/recover)")
    g.add_argument("--quiet", action="store_true")
    g.add_argument("--backbone", default="minilm",
                   help="minilm (default), smollm2 (decoder LLM, verbalizer prompt tuning), or a local model folder")


def _saved_seeds(args, seeds: Sequence[int], scenarios: dict, **settings) -> dict[int, dict]:
    """With ``--resume``: the seed reports an earlier run saved in ``DIR/seeds`` for these seeds, each checked
    against this run's settings (:func:`gbair_nb.report.saved_seed_mismatch`); one that does not match is an error
    that names the setting, raised before any training. Without ``--resume``: none."""
    from ..report import saved_seed_mismatch

    if not args.resume:
        return {}
    done = {}
    for s in seeds:
        path = args.out / "seeds" / f"seed{s}.json"
        if not path.is_file():
            continue
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"--resume: cannot read {path} ({e}); move it away to run seed {s} again") from None
        why = saved_seed_mismatch(saved, seed=s, scenario=scenarios[s][0], k=args.k, fix=args.fix,
                                  patience=args.patience, min_precision=args.min_precision, **settings)
        if why:
            raise ValueError(f"--resume: {path} was run with other settings: {why}. Run with the same settings, "
                             "or give another --out for these")
        done[s] = saved
    return done


def _seeds(args) -> list[int]:
    if args.seeds is None:
        return [args.seed]
    seeds = []
    for part in args.seeds.split(","):
        try:
            seeds.append(seed_int(part.strip()))
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"--seeds {args.seeds!r}: {e}") from None
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {args.seeds!r} repeats a seed; give each once")
    return seeds


def _scenario_from_args(args, quick: bool, seed: int) -> tuple[Scenario, str]:
    """The built-in dataset's scenario (or the default one, for a file), shrunk in quick mode, as the arguments say;
    with a note of the sizes chosen."""
    from ..data import confuser_probs, load_dataset, split

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
        train = split(ds, **sizes, seed=seed).train  # the split make_scenario draws below
        probs = confuser_probs(train.texts, train.labels, seed)
    return make_scenario(ds, seed=seed, probs=probs, **spec), f"data: {args.dataset}; {note}"


def _trainings(scorers: Sequence[str], rounds: int) -> float:
    """At most how many trainings' worth of work a recovery is: clean + round 0, then each scorer's rounds."""
    return 2 + sum(rounds * (1 + _SCORING_TRAININGS.get(s, 0.5 if s.startswith("gbair") else 0.05))
                   for s in scorers)


def _fmt(x) -> str:
    """Two decimals, or "n/a" where a value is undefined (e.g. recovery when clean = corrupted)."""
    return "n/a" if x is None else f"{x:.2f}"


def _summary_lines(report: dict) -> list[str]:
    if "per_seed" not in report:
        lines = [f"clean macro-F1 {report['clean']['test_macro_f1']:.3f}, corrupted "
                 f"{report['corrupted']['test_macro_f1']:.3f} (threshold fit on validation, no label fixed: "
                 f"{_fmt(report['corrupted'].get('test_macro_f1_calibrated'))}); seed {report['seed']}"]
        for name, res in report["scorers"].items():
            fin = kept_round(res)
            prec = [r["flagged_precision"] for r in res["rounds"][1:]]
            lines.append(f"  {name:>15}: kept macro-F1 {fin['test_macro_f1']:.3f} (round {res['final_round']}), "
                         f"recovered {_fmt(res['recovered_fraction']['test_macro_f1'])}, wrong labels "
                         f"{res['rounds'][0]['wrong_labels_remaining']} → {fin['wrong_labels_remaining']}, flagged "
                         f"precision {', '.join(_fmt(p) for p in prec) or '-'}; stopped: {res['stopped_because']}")
            if res.get("chosen"):
                lines.append(f"  {'':>15}  {name} chose {res['chosen']['scorer']}: {res['chosen']['reason']}")
        return lines
    s = report["summary"]

    def ci(d):
        return "n/a" if d["mean"] is None else (f"{d['mean']:.3f}" + (f" ± {d['ci95']:.3f}" if d["ci95"] else ""))

    lines = [f"{len(report['seeds'])} seeds {report['seeds']}, mean ± 95% interval: clean macro-F1 "
             f"{ci(s['clean']['test_macro_f1'])}, corrupted {ci(s['corrupted']['test_macro_f1'])}"]
    for name, res in s["scorers"].items():
        lines.append(f"  {name:>15}: kept macro-F1 {ci(res['kept_test_macro_f1'])}, recovered "
                     f"{ci(res['recovered_fraction']['test_macro_f1'])}, wrong labels kept "
                     f"{ci(res['wrong_labels_kept'])}")
        chosen = [(r["seed"], r["scorers"][name].get("chosen")) for r in report["per_seed"]]
        if any(c for _, c in chosen):
            lines.append(f"  {'':>15}  {name} chose " + "; ".join(
                f"{c['scorer']} (seed {sd}, one-way share {c['one_way_share']:.2f})" for sd, c in chosen if c))
    return lines


def run(args: argparse.Namespace) -> int:
    from ..config import quick_mode, setup
    from ..distributed import launched
    from ..files import check_writable
    from ..recovery import check_fix

    quick = quick_mode(True) if args.quick else quick_mode()
    scorers = ([s for s in SCORERS if s not in OPTIONAL_SCORERS and s not in ALIASES] if args.scorer == "all" else
               [s.strip() for s in args.scorer.split(",") if s.strip()])
    if not scorers:
        raise ValueError(f"--scorer {args.scorer!r} names no scorer; give one or more of {', '.join(SCORERS)} "
                         "(comma-separated) or 'all'")
    unknown = [s for s in scorers if s not in SCORERS]
    if unknown:
        raise ValueError(f"unknown scorer {unknown[0]!r}; use one of {', '.join(SCORERS)} or 'all'")
    seeds = _seeds(args)
    out: Path = args.out
    if not launched() or os.environ.get("RANK") == "0":  # only rank 0 writes (docs/distributed.md)
        check_writable(out)
    scenarios = {s: _scenario_from_args(args, quick, s) for s in seeds}  # bad data fails here, before training
    scenario, data_note = scenarios[seeds[0]]
    n_train = len(scenario.splits.train)
    if args.k is not None and args.k > n_train:
        raise ValueError(f"--k {args.k} is more than the {n_train} training examples; choose --k of at most "
                         f"{n_train} (or a larger --n-train)")
    check_fix(args.fix, scenario.splits.train)
    if args.resume and len(seeds) < 2:
        raise ValueError("--resume takes up the seeds a --seeds run saved in DIR/seeds; give --seeds with two or "
                         "more seeds (one seed's run saves only DIR/report.json)")
    log.info(data_note)  # everything checked: now say what will run
    setup(quiet=True)
    from ..train import TrainConfig

    overrides = {"seed": seeds[0], "backbone": args.backbone, **method_overrides(args)}
    # each method its own learning rate; a decoder answers with the dataset's label words
    config = TrainConfig.for_method(args.method, quick=quick, dataset=scenario.splits.train, **overrides)
    rounds = args.rounds or (2 if quick else 5)
    options = {"variant": args.variant, **({"project": args.project} if args.project else {})}
    done = _saved_seeds(args, seeds, scenarios, config=config, scorers=scorers, rounds=rounds, options=options)
    log.info(f"scenario {scenario.name}: {scenario.splits.sizes()}, {scenario.corruption.n_corrupted} corrupted "
             f"training labels; scorers {', '.join(scorers)}; quick mode {'on' if quick else 'off'}; "
             f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
             + (f" (finished earlier, taken from {out}/seeds: {', '.join(map(str, done))})" if done else ""))
    todo = len(seeds) - len(done)
    trainings = _trainings(scorers, rounds) * todo
    note = estimate_note(estimate_seconds(n_train, config, trainings=trainings),
                         f"at most {trainings:.0f} trainings' worth of work ({rounds} rounds × {len(scorers)} "
                         f"scorers × {todo} seed(s); rounds without a validation gain stop early; a cached "
                         "clean reference and round 0 are not trained again)")
    if note and todo:
        log.info(note)
    from ..distributed import job
    from ..files import figure_bytes, staged_folder, write_atomic
    from ..report import curve_frame, run_recovery_seeds

    with job() as j:  # under torchrun / accelerate launch: one process of several (docs/distributed.md)

        def save_seed(rep: dict) -> None:  # each finished seed, at once (only rank 0 writes)
            if len(seeds) > 1 and j.is_main:
                (out / "seeds").mkdir(parents=True, exist_ok=True)
                write_atomic(out / "seeds" / f"seed{rep['seed']}.json", json.dumps(rep, indent=2))

        report = run_recovery_seeds(lambda s: scenarios[s][0], seeds, on_seed=save_seed, done=done, scorers=scorers,
                                    k=args.k,
                                    rounds=rounds,
                                    fix=args.fix, config=config, patience=args.patience,
                                    min_precision=args.min_precision, compute=j.compute, options=options,
                                    cache=not args.no_cache and j.world_size == 1,
                                    verbose=not args.quiet and j.is_main)
        if not j.agree(report):  # every rank finished with the same flagged ids; only rank 0 writes
            return 0
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import plot_recovery_curves

    ax = plot_recovery_curves(curve_frame(report))
    ax.figure.tight_layout()
    png = figure_bytes(ax.figure, dpi=120)
    plt.close(ax.figure)
    with staged_folder(out, replaces=["report.json", "recovery_curve.png"], last="report.json") as stage:
        write_atomic(stage / "recovery_curve.png", png)
        write_atomic(stage / "report.json", json.dumps(report, indent=2))  # whole or not at all
    for line in _summary_lines(report):
        print(line)
    print(f"{report['seconds']:.0f} s → {out}/report.json, {out}/recovery_curve.png")
    return 0

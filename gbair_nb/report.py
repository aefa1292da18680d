"""The main job: a corrupted-label scenario, recovery with each scorer, one report — over one seed or several.

``python -m gbair_nb recover`` and notebook 04 both call :func:`run_recovery` (one seed) or
:func:`run_recovery_seeds` (several, with means and 95% intervals); the report is what ``DIR/report.json`` holds,
:func:`curve_frame` turns it into the numbers behind the recovery curve, and :func:`gbair_nb.plots.plot_recovery_curves`
draws ``DIR/recovery_curve.png`` from them.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .metrics import kept_round, mean_ci
from .recovery import check_fix, gbair, loop_options
from .scenarios import Scenario
from .scorers import SCORERS

__all__ = ["run_recovery", "run_recovery_seeds", "summarise_seeds", "saved_seed_mismatch", "curve_frame", "json_safe",
           "detector_results", "detector_matrix"]

log = logging.getLogger(__name__)

REFERENCE_METRICS = ("val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1", "test_macro_f1_calibrated")


def json_safe(obj):
    """``obj`` with numpy scalars and arrays made plain, and NaN/inf as None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    return obj


def run_recovery(scenario: Scenario, *, scorers: Sequence[str] = ("gbair", "random"), k: int | None = None,
                 rounds: int = 5, fix: str = "flip", config=None, seed: int = 0, options: dict | None = None,
                 patience: int = 1, min_precision: float | None = None, clean: dict | None = None, round0=None,
                 compute=None, cache: bool | str = False, verbose: bool = True) -> dict:
    """Train the clean reference and the corrupted model once, then run the loop with every scorer.

    Returns the report (a JSON-ready dict): dataset, sizes, corruption (mode, rate, number of corrupted training
    labels), method, seed, the clean reference, round 0 (``corrupted``: also its F1 with the decision threshold fit
    on validation, the no-relabeling reference), and for each scorer its rounds (metrics, flagged ids, flagged
    precision, wrong labels remaining, seconds, detection metrics) and recovered fraction on macro-F1 and accuracy.

    ``clean`` (metrics from :func:`~gbair_nb.recovery.train_clean_reference`) and ``round0`` (a run trained on
    ``scenario.train`` with ``config``) reuse work already done, e.g. in a notebook. ``cache=True`` keeps both
    trainings on disk, keyed by data, labels, settings and code (:mod:`gbair_nb.cache`), so a second run of the same
    scenario trains neither. ``compute`` is how the heavy steps run (:data:`gbair_nb.loop.LOCAL` alone; ``job.compute``
    in a torchrun job, which never uses the cache).
    """
    from .cache import cached_train
    from .loop import LOCAL, round_metrics
    from .train import TrainConfig

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
    judged = (scenario.splits.val, scenario.splits.test)
    cached = {"clean": False, "round0": False}
    if clean is None:
        log.info("training the clean reference (the true labels) …")
        run, cached["clean"] = cached_train(scenario.splits.train, config, val=scenario.splits.val, judged_on=judged,
                                            step=compute.step, cache=cache, verbose=verbose, what="clean reference")
        clean = round_metrics(run, *judged)
        del run
    if round0 is None:
        log.info(f"[{time.perf_counter() - t0:5.0f} s] training round 0 (the corrupted labels) …")
        round0, cached["round0"] = cached_train(scenario.train, config, judged_on=judged, step=compute.step,
                                                cache=cache, verbose=verbose, what="round 0")
    results = {}
    for name in scorers:
        log.info(f"[{time.perf_counter() - t0:5.0f} s] recovery with scorer {name} …")
        rec = gbair(scenario, scorer=name, k=k, rounds=rounds, fix=fix, config=config, clean=clean, seed=seed,
                    options=options, round0=round0, patience=patience, min_precision=min_precision,
                    compute=compute, verbose=verbose)
        results[name] = rec.summary()
    c = scenario.corruption
    first = results[scorers[0]]["rounds"][0]
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
        "k": results[scorers[0]]["options"]["k"],
        "rounds": rounds,
        "fix": fix,
        "config": asdict(config),
        "clean": clean,
        "corrupted": {m: first.get(m) for m in REFERENCE_METRICS},
        "scorers": results,
        "cached": cached,
        "seconds": time.perf_counter() - t0,
    }
    return json_safe(report)


def run_recovery_seeds(make: Callable[[int], Scenario], seeds: Sequence[int], *, config=None,
                       on_seed: Callable[[dict], None] | None = None, done: Mapping[int, dict] | None = None,
                       **kwargs) -> dict:
    """:func:`run_recovery` once per seed — ``make(seed)`` builds that seed's scenario (its split and corruption)
    and the training uses the same seed — then :func:`summarise_seeds`. One seed gives the single report as is.
    ``on_seed(report)`` is called with each seed's report as soon as it is done (the CLI saves it, so a run stopped
    after hours keeps the seeds it finished). ``done`` maps seeds to reports an earlier run finished with the same
    settings (check each with :func:`saved_seed_mismatch`): they are taken as they are, and only the other seeds
    run."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("give at least one seed")
    done = dict(done or {})
    reports = []
    for s in seeds:
        if s in done:
            log.info(f"seed {s} ({len(reports) + 1} of {len(seeds)}): finished by an earlier run, taken as it is")
            reports.append(done[s])
            continue
        log.info(f"seed {s} ({len(reports) + 1} of {len(seeds)}) …")
        reports.append(run_recovery(make(s), seed=s, config=config, **kwargs))
        if on_seed is not None:
            on_seed(reports[-1])
    return reports[0] if len(reports) == 1 else summarise_seeds(reports)


def saved_seed_mismatch(saved: dict, *, seed: int, scenario: Scenario, config, scorers: Sequence[str],
                        k: int | None, rounds: int, fix: str, patience: int, min_precision: float | None,
                        options: dict | None = None) -> str | None:
    """Why ``saved`` — one seed's report from an earlier run — cannot stand for seed ``seed`` of a run with these
    settings; None when it can.

    Compared: the seed; the scenario (name, sizes, class names, number of corrupted labels); the training settings
    (every field of ``config``); the scorers; and each scorer's loop settings (k — ``None`` means the default,
    4% of train —, rounds, fixer, patience, precision gate, TracIn options). The data themselves are not: a file
    edited between the two runs under the same name and sizes is not noticed.
    """
    if not isinstance(saved, dict) or not isinstance(saved.get("scorers"), dict):
        return "it is not one seed's report (no 'scorers')"
    if saved.get("seed") != seed:
        return f"it is seed {saved.get('seed')!r}'s report, not seed {seed}'s"
    expected = {"scenario": scenario.name, "sizes": scenario.splits.sizes(),
                "class_names": scenario.splits.train.class_names,
                "number of corrupted labels": scenario.corruption.n_corrupted}
    found = {"scenario": saved.get("scenario"), "sizes": saved.get("sizes"),
             "class_names": saved.get("class_names"),
             "number of corrupted labels": (saved.get("corruption") or {}).get("n_corrupted")}
    for key, want in json_safe(expected).items():
        if found[key] != want:
            return f"its {key} is {found[key]!r}, this run's is {want!r}"
    want_config = json_safe(asdict(replace(config, seed=seed)))
    got_config = saved.get("config") or {}
    for key, want in want_config.items():
        if got_config.get(key) != want:
            return f"it was trained with {key}={got_config.get(key)!r}, this run with {key}={want!r}"
    if list(saved["scorers"]) != list(scorers):
        return f"it ran the scorers {', '.join(saved['scorers'])}, this run asks for {', '.join(scorers)}"
    loop = json_safe(loop_options(len(scenario.splits.train), k=k, rounds=rounds, fix=fix, patience=patience,
                                  min_precision=min_precision, options=options))
    for name in scorers:
        got = saved["scorers"][name].get("options") or {}
        for key in sorted(set(loop) | set(got)):
            if got.get(key) != loop.get(key):
                return f"its {name} loop ran with {key}={got.get(key)!r}, this run's has {key}={loop.get(key)!r}"
    return None


def _ci(values) -> dict:
    mean, half, n = mean_ci(values)
    return {"mean": mean, "ci95": half, "n": n}


def summarise_seeds(reports: Sequence[dict]) -> dict:
    """Several one-seed reports of the same scenario → one report with ``seeds``, ``per_seed`` (the reports) and
    ``summary``: mean, 95% interval half-width (Student's t) and n of the references and, per scorer, of the
    recovered fraction, the kept round's test macro-F1 and wrong labels, and each round's flagged precision."""
    first = reports[0]
    summary = {"clean": {m: _ci([r["clean"].get(m) for r in reports]) for m in first["clean"]},
               "corrupted": {m: _ci([r["corrupted"].get(m) for r in reports]) for m in first["corrupted"]},
               "scorers": {}}
    for name in first["scorers"]:
        res = [r["scorers"][name] for r in reports if name in r["scorers"]]
        kept = [kept_round(q) for q in res]
        depth = max(len(q["rounds"]) for q in res)
        summary["scorers"][name] = {
            "recovered_fraction": {m: _ci([(q.get("recovered_fraction") or {}).get(m) for q in res])
                                   for m in ("test_macro_f1", "test_accuracy")},
            "kept_test_macro_f1": _ci([x["test_macro_f1"] for x in kept]),
            "kept_round": _ci([q["final_round"] for q in res]),
            "wrong_labels_kept": _ci([x["wrong_labels_remaining"] for x in kept]),
            "flagged_precision": [_ci([q["rounds"][r]["flagged_precision"] for q in res if len(q["rounds"]) > r])
                                  for r in range(1, depth)],
        }
    common = {k: v for k, v in first.items() if k not in ("seed", "scorers", "clean", "corrupted", "seconds",
                                                            "cached", "config")}
    return json_safe({**common, "seeds": [r["seed"] for r in reports], "per_seed": list(reports),
                      "summary": summary, "seconds": sum(r["seconds"] for r in reports)})


def curve_frame(report: dict, metric: str = "test_macro_f1") -> pd.DataFrame:
    """The numbers behind the recovery curve: one row per (seed, scorer, round) with ``metric``, the flagged
    precision and ``kept`` (the round whose labels the loop keeps).

    A loop that stopped early keeps the labels of its kept round: its value at the rounds it did not run is carried
    from there (``carried`` True), so every seed has a value at every round and the mean over seeds is taken over the
    same seeds at every round. ``attrs`` carry the metric, the references (clean labels, round 0, round 0 with the
    threshold fit on validation; means over seeds), ``k``, a title and, for one seed, why each loop that applied no
    batch stopped (``stopped_at_round_0``: its curve is a single point under the others).
    """
    reports = report.get("per_seed") or [report]
    depth = max(len(res["rounds"]) for r in reports for res in r["scorers"].values())
    rows = []
    for r in reports:
        for name, res in r["scorers"].items():
            by_round = {x["round"]: x for x in res["rounds"]}
            kept_value = by_round[res["final_round"]][metric]
            for rnd in range(depth):
                x = by_round.get(rnd)
                rows.append({"seed": r["seed"], "scorer": name, "round": rnd,
                             metric: x[metric] if x else kept_value,
                             "flagged_precision": x.get("flagged_precision") if x else None,
                             "kept": rnd == res["final_round"], "carried": x is None})
    df = pd.DataFrame(rows)

    def mean(key, m):
        return float(np.nanmean([np.nan if r[key].get(m) is None else r[key][m] for r in reports]))

    refs = {"clean labels (reference)": mean("clean", metric), "corrupted (round 0)": mean("corrupted", metric)}
    if metric == "test_macro_f1":
        refs["round 0, threshold fit on validation (no label fixed)"] = mean("corrupted", "test_macro_f1_calibrated")
    seeds = f"{len(reports)} seeds" if len(reports) > 1 else f"seed {reports[0]['seed']}"
    stopped = {name: res["stopped_because"] for name, res in reports[0]["scorers"].items()
               if len(reports) == 1 and len(res["rounds"]) == 1}  # a loop that applied no batch: say why
    df.attrs.update(metric=metric, references=refs, k=report.get("k"), stopped_at_round_0=stopped,
                    title=f"{report['dataset']}: {report['corruption']['mode']} noise, "
                          f"{report['corruption']['n_corrupted']} wrong labels of {report['sizes']['train']} "
                          f"({seeds})")
    return df


# ------------------------------------------------------------------------------ the detection matrix (05, benchmarks)
def detector_results(folder) -> pd.DataFrame:
    """The JSON files ``benchmarks/bench_detectors.py`` writes (one per dataset × noise mode × seed), as one long
    frame: a row per (dataset, mode, seed, scorer) with the round-1 detection metrics and seconds."""
    import json
    from pathlib import Path

    rows = []
    for f in sorted(Path(folder).glob("*.json")):
        r = json.loads(f.read_text())
        for scorer, m in r["scorers"].items():
            rows.append({"dataset": r["dataset"], "mode": r["mode"], "seed": r["seed"], "scorer": scorer,
                         "n_corrupted": r["n_corrupted"], "n_train": r["n_train"], **m})
    if not rows:
        raise FileNotFoundError(f"no detector results (*.json) in {folder}: run benchmarks/bench_detectors.py first")
    return pd.DataFrame(rows)


def detector_matrix(results: pd.DataFrame, metric: str = "auprc") -> pd.DataFrame:
    """Scorer × cell (``dataset/mode``) summary of :func:`detector_results`: one row per (scorer, cell) with the
    ``mean`` of ``metric`` over seeds, the ``half`` width of its 95% interval (NaN with one seed) and ``n`` seeds,
    plus ``best`` (the scorer with the highest mean in that cell) and ``within`` (this scorer's mean lies inside
    the best scorer's 95% interval, or above it — the goal the default scorer is held to)."""
    df = results.assign(cell=results["dataset"] + "/" + results["mode"])
    rows = []
    for (scorer, cell), g in df.groupby(["scorer", "cell"], sort=False):
        mean, half, n = mean_ci(g[metric].to_numpy(dtype=np.float64))
        rows.append({"scorer": scorer, "cell": cell, "mean": mean, "half": half, "n": n})
    out = pd.DataFrame(rows)
    best = out.loc[out.groupby("cell")["mean"].idxmax()].set_index("cell")
    out["best"] = out["cell"].map(best["scorer"])
    low = out["cell"].map(best["mean"] - best["half"].fillna(0.0))
    out["within"] = out["mean"] >= low
    out.attrs["metric"] = metric
    return out

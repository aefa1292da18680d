"""Which detector finds the wrong labels, in which noise regime? Round-1 detection of every scorer, over seeds.

A cell is (dataset, noise mode). For each cell and seed this trains the round-0 model on the noisy labels (the
toolkit's default recipe, ``TrainConfig.for_method("prompt_tuning")``), lets every scorer in
``gbair_nb.scorers.SCORERS`` rank the training set, and scores the ranking against the truth mask: AUROC, average
precision, precision@k (k = 4% of the training set, the loop's budget) and recall at 10% inspected. One JSON per
(cell, seed) in ``benchmarks/results/detectors/``, so an interrupted run resumes; the summary prints mean ± the 95%
interval (Student's t over seeds) per scorer and cell, and a Markdown heatmap-ready table.

Beside each JSON, ``scores/<cell>__seed<s>.npz`` keeps every scorer's per-example scores and the truth mask, so a
combination of scorers can be judged later without retraining: ``--combine gbair_balanced_unit+probe`` ranks by
the mean percentile rank of the named scorers (no weights) and prints its average precision beside theirs.

Noise modes: ``class_conditional`` (the dataset's default scenario: 70% of the positives labelled negative),
``uniform`` (20% of the labels flipped to another class), ``confusable`` (20% flipped to the class a TF-IDF +
logistic-regression model finds most likely among the wrong ones, out-of-fold: feature-dependent noise).

    OMP_NUM_THREADS=1 python benchmarks/bench_detectors.py                       # 2 datasets × 3 modes × 5 seeds
    python benchmarks/bench_detectors.py --datasets sms_spam --modes uniform --seeds 0
    python benchmarks/bench_detectors.py --summary-only
    python benchmarks/bench_detectors.py --summary-only --combine gbair_balanced_unit+probe
    python benchmarks/bench_detectors.py --summary-only --budget gbair_balanced_unit,probe   # how k should scale
    python benchmarks/bench_detectors.py --auto      # which scorer "auto" picks per cell and seed (probe only)
    python benchmarks/bench_detectors.py --auto --auto-rates 0.1,0.2,0.3,0.5 --seeds 0,1,2   # milder one-way noise
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = {"class_conditional": None, "uniform": 0.2, "confusable": 0.2}  # None: the scenario's own rate
METRICS = ("auprc", "auroc", "precision@k", "recall@10%")


def make_cell(dataset: str, mode: str, seed: int, sizes: dict | None = None):
    """The scenario of a cell: the dataset's default sizes (or ``sizes``), the noise mode's corruption."""
    from gbair_nb.scenarios import SCENARIOS, make_scenario

    spec = dict(SCENARIOS[dataset])
    spec.pop("dataset")
    spec.update(sizes or {})
    if mode != "class_conditional":
        spec.update(mode=mode, p=MODES[mode])
        spec.pop("source", None), spec.pop("target", None)
    if mode == "confusable":
        from gbair_nb.data import load_dataset, split
        from gbair_nb.data import confuser_probs

        s = split(load_dataset(dataset), n_train=spec["n_train"], n_val=spec["n_val"], n_test=spec["n_test"],
                  seed=seed)
        spec["probs"] = confuser_probs(s.train.texts, s.train.labels, seed)
    return make_scenario(dataset, seed=seed, name=f"{dataset}:{mode}", **spec)


def run_cell(dataset: str, mode: str, seed: int, scorers: list[str], out: Path, *, quick: bool = False,
             backbone: str = "minilm") -> dict:
    from gbair_nb.metrics import detection_metrics
    from gbair_nb.probe import probe_of
    from gbair_nb.scorers import SCORERS, ScoreContext
    from gbair_nb.loop import default_k
    from gbair_nb.scenarios import QUICK_SCENARIO
    from gbair_nb.train import TrainConfig, train

    sc = make_cell(dataset, mode, seed, QUICK_SCENARIO if quick else None)
    config = TrainConfig.for_method("prompt_tuning", quick=quick, seed=seed, backbone=backbone)
    t0 = time.perf_counter()
    run = train(sc.train, config=config, verbose=False)
    result = {"dataset": dataset, "mode": mode, "seed": seed, "n_train": len(sc.train),
              "n_corrupted": sc.corruption.n_corrupted, "k": default_k(len(sc.train)),
              "train_seconds": time.perf_counter() - t0, "config": config.__dict__, "scorers": {}}
    ctx = ScoreContext(run, sc.train, sc.splits.val, config, seed=seed)
    result["n_val_mistakes"] = int(len(ctx.val_mistakes()))
    probe = probe_of(ctx)  # the loop's mask-free estimate of a batch's precision, checked against the truth
    result["probe_n_wrong"] = probe.n_wrong(sc.train)
    kept = {}
    for name in scorers:
        t1 = time.perf_counter()
        scores = kept[name] = np.asarray(SCORERS[name](ctx), dtype=np.float64)
        m = detection_metrics(scores, sc.corruption.is_corrupted, k=result["k"], inspect=(0.1,))
        top = np.argsort(-scores, kind="stable")[:result["k"]]
        m["estimated_precision@k"] = probe.precision(sc.train, top)
        result["scorers"][name] = {**m, "seconds": time.perf_counter() - t1}
        print(f"  {name:>20}: AP {m['auprc']:.3f} AUROC {m['auroc']:.3f} P@k {m['precision@k']:.2f} "
              f"({time.perf_counter() - t1:.0f} s)", flush=True)
    if out.exists():  # adding scorers to a cell: the same seed retrains the same model, keep what was there
        before = json.loads(out.read_text())
        if before["n_val_mistakes"] != result["n_val_mistakes"]:
            raise SystemExit(f"{out.name}: the retrained model differs from the one scored before "
                             f"({before['n_val_mistakes']} vs {result['n_val_mistakes']} validation mistakes); "
                             "delete the file to score this cell afresh")
        for name, m in result["scorers"].items():  # a rescored scorer (to save its scores) should agree
            if name in before["scorers"] and abs(before["scorers"][name]["auprc"] - m["auprc"]) > 1e-6:
                print(f"  note: {name}'s AP was {before['scorers'][name]['auprc']:.4f} here before, "
                      f"now {m['auprc']:.4f}", flush=True)
        result["scorers"] = {**before["scorers"], **result["scorers"]}
    save_scores(scores_path(out), kept, sc.corruption.is_corrupted)
    out.write_text(json.dumps(result, indent=1, default=float))
    return result


def scores_path(out: Path) -> Path:
    """Where the per-example scores of the cell whose metrics are in ``out`` (a JSON) are kept."""
    return out.parent / "scores" / f"{out.stem}.npz"


def save_scores(path: Path, scores: dict[str, np.ndarray], truth: np.ndarray) -> None:
    """Add ``scores`` (scorer → (n,) array) to the cell's .npz, keeping scorers saved before; the truth mask must
    be the one saved before (same cell, same seed)."""
    from gbair_nb.files import atomic_path

    old = {}
    if path.exists():
        with np.load(path) as z:
            old = dict(z)
    truth = np.asarray(truth, dtype=bool)
    if "is_corrupted" in old and not np.array_equal(old["is_corrupted"], truth):
        raise SystemExit(f"{path.name}: the truth mask differs from the one saved before; delete it and rerun")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {**old, **{f"score:{k}": v for k, v in scores.items()}, "is_corrupted": truth}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: savez would append ".npz" to a name
        np.savez_compressed(f, **arrays)


def _cell_key(dataset: str, mode: str) -> tuple:
    """Sort key of a cell: by dataset, then in MODES' order (the tables' column and row order)."""
    return dataset, list(MODES).index(mode)


def _saved_scores(results: Path, names: list[str]):
    """Yield (dataset, mode, seed, truth mask, {name: scores}) for every saved (cell, seed) that holds all of
    ``names``, read from ``results/scores/*.npz``."""
    for f in sorted((results / "scores").glob("*.npz")):
        with np.load(f) as z:
            if not all(f"score:{n}" in z for n in names):
                continue
            truth, runs = z["is_corrupted"].astype(bool), {n: z[f"score:{n}"] for n in names}
        dataset, mode, seed = f.stem.split("__")
        yield dataset, mode, int(seed.removeprefix("seed")), truth, runs


def combine(results: Path, names: list[str]) -> "pd.DataFrame":
    """Round-1 detection of the rank-mean combination of ``names`` (mean percentile rank, no weights) and of each
    of them alone, on every (cell, seed) whose saved scores hold all of them: one row per (cell, seed, scorer)."""
    import pandas as pd

    from gbair_nb.loop import default_k
    from gbair_nb.metrics import detection_metrics, percentile_ranks

    rows = []
    for dataset, mode, seed, truth, runs in _saved_scores(results, names):
        k = default_k(len(truth))  # the budget run_cell scored precision@k with
        runs["+".join(names)] = np.mean([percentile_ranks(runs[n]) for n in names], axis=0)
        for name, s in runs.items():
            m = detection_metrics(s, truth, k=k, inspect=(0.1,))
            rows.append({"dataset": dataset, "mode": mode, "seed": seed, "scorer": name, **m})
    return pd.DataFrame(rows)


def auto_choices(results: Path, datasets: list[str], modes: list[str], seeds: list[int], *,
                 backbone: str = "minilm", quick: bool = False, save: bool = True) -> list[dict]:
    """What ``scorer="auto"`` picks in each saved (cell, seed), and why: one dict per (cell, seed) with
    :func:`gbair_nb.scorers.auto_choice`'s answer. Nothing is trained: the cell's scenario is rebuilt (the same
    noisy labels its JSON was scored on) and the trusted probe is fit on its validation set with the settings the
    loop fits it with. Auto ranks with the scorer it picks, so its round-1 metrics in a cell are that scorer's,
    read from the cell's JSON (``scripts/check_results.py``'s ``auto`` table). Written to ``results/auto/choices.json``
    (``save=False``: only returned)."""
    from gbair_nb.scenarios import QUICK_SCENARIO

    rows = []
    for dataset in datasets:
        for mode in modes:
            for seed in seeds:
                if not (results / f"{dataset}__{mode}__seed{seed}.json").exists():
                    continue
                t0 = time.perf_counter()
                c = _auto_on(make_cell(dataset, mode, seed, QUICK_SCENARIO if quick else None), seed, backbone, quick)
                rows.append({"dataset": dataset, "mode": mode, "seed": seed, **c})
                print(f"  {dataset} {mode} seed {seed}: one-way share {c['one_way_share']:.3f} → {c['scorer']} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if save:
        _save_auto(results, "choices.json", rows)
    return rows


def _save_auto(results: Path, name: str, rows: list[dict]) -> None:
    """Write ``rows`` to ``results/auto/NAME`` (what scripts/check_results.py's auto tables read)."""
    (results / "auto").mkdir(exist_ok=True)
    (results / "auto" / name).write_text(json.dumps(rows, indent=1))


def _auto_on(sc, seed: int, backbone: str, quick: bool = False) -> dict:
    """:func:`gbair_nb.scorers.auto_choice` on a scenario's noisy training labels, with the trusted probe fit as the
    loop fits it (the run's backbone and max length, the seed); no PET model is trained."""
    from gbair_nb.probe import TrustedProbe
    from gbair_nb.scorers import ScoreContext, auto_choice
    from gbair_nb.train import TrainConfig

    config = TrainConfig.for_method("prompt_tuning", quick=quick, seed=seed, backbone=backbone)
    probe = TrustedProbe(sc.splits.val, backbone=backbone, max_length=config.max_length, seed=seed)
    return auto_choice(ScoreContext(None, sc.train, sc.splits.val, config, seed=seed, cache={"probe": probe}))


def auto_at_rates(datasets: list[str], rates: list[float], seeds: list[int], *, backbone: str = "minilm") -> list[dict]:
    """The one-way share auto sees in each dataset's class-conditional scenario at other corruption rates ``rates``
    (the fraction of the positives labelled negative; the built-in scenarios use 0.7): where milder one-way noise
    crosses auto's threshold. Probe only, nothing trained; one dict per (dataset, rate, seed)."""
    from gbair_nb.scenarios import SCENARIOS, make_scenario

    rows = []
    for dataset in datasets:
        spec = {k: v for k, v in SCENARIOS[dataset].items() if k != "dataset"}
        for p in rates:
            for seed in seeds:
                sc = make_scenario(dataset, seed=seed, **{**spec, "p": p})
                c = _auto_on(sc, seed, backbone)
                rows.append({"dataset": dataset, "p": p, "seed": seed, "n_corrupted": sc.corruption.n_corrupted, **c})
                print(f"  {dataset} class-conditional p = {p:g}, seed {seed}: {sc.corruption.n_corrupted} wrong "
                      f"labels, one-way share {c['one_way_share']:.4f} → {c['scorer']}", flush=True)
    return rows


BUDGET_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)


def budget(results: Path, scorers: list[str], fractions=BUDGET_FRACTIONS) -> "pd.DataFrame":
    """How large can one round's budget k be before its batch turns imprecise? Measured on the saved round-1 scores.

    The trusted probe's p_wrong summed over the training set estimates how many labels are wrong (n̂, no truth
    needed). For each saved (cell, seed), each scorer in ``scorers`` and each fraction f, k = max(1, round(f · n̂))
    and the row holds the precision of that scorer's top k against the truth mask. One row per (cell, seed,
    scorer, fraction), with n̂, the true number of wrong labels and the default budget's own fraction k₄%/n̂."""
    import pandas as pd

    from gbair_nb.loop import default_k
    from gbair_nb.metrics import detection_metrics

    rows = []
    for dataset, mode, seed, truth, runs in _saved_scores(results, list(dict.fromkeys([*scorers, "probe"]))):
        n_hat = float(runs["probe"].sum())
        for name in scorers:
            for frac in fractions:
                k = max(1, int(round(frac * n_hat)))
                precision = detection_metrics(runs[name], truth, k=k, inspect=())["precision@k"]
                rows.append({"dataset": dataset, "mode": mode, "seed": seed, "scorer": name, "fraction": frac,
                             "k": k, "precision": precision, "n_hat": n_hat, "n_wrong": int(truth.sum()),
                             "default_fraction": default_k(len(truth)) / n_hat})
    return pd.DataFrame(rows)


def budget_table(rows: "pd.DataFrame") -> str:
    """Markdown: per cell, the probe's estimate n̂ against the truth, then each scorer's batch precision at
    k = f · n̂ (mean ± 95% CI over seeds; one seed shows no ±)."""
    from gbair_nb.metrics import mean_ci

    def pm(values, fmt="{:.2f}"):
        m, h, n = mean_ci(values)
        return fmt.format(m) + (f" ± {fmt.format(h)}" if n > 1 else "")

    fracs = sorted(rows["fraction"].unique())
    lines = ["| cell | seeds | wrong labels (n̂ by the probe) | default k / n̂ | scorer | "
             + " | ".join(f"k = {f:g} n̂" for f in fracs) + " |", "|---" * (5 + len(fracs)) + "|"]
    cells = rows.groupby(["dataset", "mode"], sort=False)
    for (dataset, mode), g in sorted(cells, key=lambda c: _cell_key(*c[0])):
        one = g.drop_duplicates("seed")
        head = [f"{dataset} {mode}", ", ".join(map(str, sorted(one["seed"]))),
                f"{pm(one['n_wrong'], '{:.0f}')} ({pm(one['n_hat'], '{:.0f}')})", pm(one["default_fraction"])]
        for i, (scorer, gs) in enumerate(g.groupby("scorer", sort=False)):
            cols = [pm(gs[gs["fraction"] == f]["precision"]) for f in fracs]
            lines.append("| " + " | ".join((head if i == 0 else [""] * 4) + [scorer] + cols) + " |")
    return "\n".join(lines)


def mean_pm(row) -> str:
    """A :func:`gbair_nb.report.detector_matrix` row as "mean ± half-width"; one seed has no interval to show."""
    return f"{row['mean']:.3f}" + (f" ± {row['half']:.3f}" if row["n"] > 1 else "")


def summary(results: Path) -> str:
    """Markdown: one table per metric, scorer × cell, mean ± 95% CI over seeds — from
    :func:`gbair_nb.report.detector_matrix`, the same numbers docs/benchmarks.md's generated tables show."""
    from gbair_nb.report import detector_matrix, detector_results

    rows = detector_results(results)
    cells = sorted({(d, m) for d, m in zip(rows["dataset"], rows["mode"])},
                   key=lambda c: _cell_key(*c))
    seeds = rows.groupby(["dataset", "mode"])["seed"].nunique()
    scorers = list(dict.fromkeys(rows["scorer"]))
    lines = []
    for metric in METRICS:
        m = detector_matrix(rows, metric).set_index(["scorer", "cell"])
        lines.append(f"\n**{metric}** (mean ± 95% CI over seeds; n seeds per cell in the header)\n")
        lines += ["| scorer | " + " | ".join(f"{d} {mo} (n={seeds[d, mo]})" for d, mo in cells) + " |",
                  "|---" * (len(cells) + 1) + "|"]
        for s in scorers:
            cols = []
            for d, mo in cells:
                key = (s, f"{d}/{mo}")
                if key not in m.index:
                    cols.append("–")
                    continue
                cols.append(mean_pm(m.loc[key]))
            lines.append(f"| {s} | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="sms_spam,tweets_binary")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--scorers", default="all", help="comma-separated names, or 'all' (every registered scorer)")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "detectors")
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--quick", action="store_true", help="quick-mode sizes and training (a smoke test)")
    ap.add_argument("--backbone", default="minilm", help="minilm (default); tiny for a smoke test")
    ap.add_argument("--combine", action="append", default=[], metavar="A+B",
                    help="also judge the rank-mean of these scorers from the saved scores (repeatable)")
    ap.add_argument("--auto", action="store_true",
                    help="which scorer auto picks in each saved cell and seed (fits the trusted probe only, no "
                         "training); writes results/auto/choices.json (not with --quick or another backbone)")
    ap.add_argument("--auto-rates", default=None, metavar="P1,P2",
                    help="with --auto: instead, the one-way share in each dataset's class-conditional scenario at "
                         "these corruption rates; writes results/auto/rates_DATASETS.json")
    ap.add_argument("--budget", default=None, metavar="A,B",
                    help="from the saved scores: each scorer's batch precision as k grows against the probe's "
                         "estimate of how many labels are wrong")
    args = ap.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    if args.auto:
        from gbair_nb.config import setup

        setup(quiet=True)
        seeds = [int(s) for s in args.seeds.split(",")]
        save = not args.quick and args.backbone == "minilm"  # a smoke test must not overwrite the measured files
        if args.auto_rates:
            rows = auto_at_rates(args.datasets.split(","), [float(p) for p in args.auto_rates.split(",")], seeds,
                                 backbone=args.backbone)
            if save:  # one file per dataset list, e.g. auto/rates_sms_spam+tweets_binary.json
                _save_auto(args.results, f"rates_{'+'.join(args.datasets.split(','))}.json", rows)
        else:
            auto_choices(args.results, args.datasets.split(","), args.modes.split(","), seeds, backbone=args.backbone,
                         quick=args.quick, save=save)
        return
    if not args.summary_only:
        from gbair_nb.config import setup
        from gbair_nb.scorers import ALIASES, OPTIONAL_SCORERS, SCORERS

        setup(quiet=True)
        scorers = ([s for s in SCORERS if s not in ALIASES and s not in OPTIONAL_SCORERS] if args.scorers == "all"
                   else args.scorers.split(","))
        for seed in [int(s) for s in args.seeds.split(",")]:
            for dataset in args.datasets.split(","):
                for mode in args.modes.split(","):
                    out = args.results / f"{dataset}__{mode}__seed{seed}.json"
                    todo = scorers
                    if out.exists():  # resume: only the scorers this cell has no metrics or no saved scores of
                        saved = []
                        if scores_path(out).exists():
                            with np.load(scores_path(out)) as z:
                                saved = z.files
                        done = json.loads(out.read_text())["scorers"]
                        todo = [s for s in scorers if s not in done or f"score:{s}" not in saved]
                        if not todo:
                            continue
                    print(f"{out.name}: {', '.join(todo)} …", flush=True)
                    t0 = time.perf_counter()
                    run_cell(dataset, mode, seed, todo, out, quick=args.quick, backbone=args.backbone)
                    print(f"{out.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    # --budget prints its table in place of the summary; --combine adds its tables after either
    print(budget_table(budget(args.results, args.budget.split(","))) if args.budget else summary(args.results))
    for combo in args.combine:
        from gbair_nb.report import detector_matrix

        rows = combine(args.results, combo.split("+"))
        if rows.empty:
            print(f"\n{combo}: no cell has saved scores of all of them")
            continue
        m = detector_matrix(rows, "auprc").set_index(["scorer", "cell"])
        cells = sorted(m.index.get_level_values("cell").unique())
        print(f"\n**{combo}**: average precision, mean ± 95% CI over the seeds with saved scores (n)\n")
        print("| scorer | " + " | ".join(cells) + " |\n" + "|---" * (len(cells) + 1) + "|")
        for s in dict.fromkeys(m.index.get_level_values("scorer")):
            print(f"| {s} | " + " | ".join(f"{mean_pm(m.loc[(s, c)])} (n={m.loc[(s, c), 'n']})" for c in cells)
                  + " |")


if __name__ == "__main__":
    main()

"""How stable is the base model? Round-0 F1 over seeds, and what a random fixer's round does to it.

For each training recipe (TrainConfig overrides), default scenario and seed this trains three models and records
their validation and test metrics:

- ``clean``: on the true labels (the ceiling);
- ``corrupted``: on the noisy labels (round 0 of every recovery loop);
- ``random_fix``: on the noisy labels after the random scorer's first round (flip k random examples, k = 4% of the
  training set, exactly as ``gbair(..., scorer="random")`` picks them).

A stable recipe has a small spread of the corrupted model's test macro-F1 over seeds, and a random fixer that moves
it by little (a control, not a collapse). Rows are appended to a JSONL file, so an interrupted run resumes.

    OMP_NUM_THREADS=1 python benchmarks/bench_base_model.py --recipes base,balanced --seeds 0,1,2,3,4
    python benchmarks/bench_base_model.py --summary-only
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

RECIPES = {
    "base": {},
    "balanced": {"class_weight": "balanced"},
    "nodrop": {"dropout": 0.0},
    "balanced_nodrop": {"class_weight": "balanced", "dropout": 0.0},
    "long": {"epochs": 8, "lr": 1.5e-2, "lr_head": 5e-3},
}


def _metrics(run, ds) -> dict:

    from gbair_nb.train import evaluate

    m = evaluate(run, ds)
    return {"accuracy": m.accuracy, "macro_f1": m.macro_f1, "probs": m.probs}


def _tuned_f1(val_probs, val_labels, test_probs, test_labels) -> float:
    """Test macro-F1 after moving the decision threshold to the one that maximises validation macro-F1."""
    from sklearn.metrics import f1_score

    if val_probs.shape[1] != 2:
        return float("nan")
    grid = np.unique(np.concatenate([val_probs[:, 1], [0.5]]))
    best = max(grid, key=lambda t: (f1_score(val_labels, (val_probs[:, 1] >= t).astype(int), average="macro"),
                                    -abs(t - 0.5)))
    return float(f1_score(test_labels, (test_probs[:, 1] >= best).astype(int), average="macro"))


def run_row(recipe: str, scenario: str, seed: int, kind: str, p: float | None) -> dict:
    from gbair_nb.loop import default_k
    from gbair_nb.scenarios import SCENARIOS, make_scenario
    from gbair_nb.train import TrainConfig, train

    spec = dict(SCENARIOS[scenario])
    if p is not None:
        spec["p"] = p
    dataset = spec.pop("dataset")
    sc = make_scenario(dataset, seed=seed, name=scenario, **spec)
    labels = sc.corruption.noisy_labels.copy() if kind != "clean" else sc.corruption.labels.copy()
    n_flipped_right = None
    if kind == "random_fix":
        k = default_k(len(labels))
        scores = np.random.default_rng(seed + 7919).random(len(labels))
        flagged = np.argsort(-scores, kind="stable")[:k]
        n_flipped_right = int(sc.corruption.is_corrupted[flagged].sum())
        labels[flagged] = 1 - labels[flagged]
    config = TrainConfig(seed=seed, **RECIPES[recipe])
    t0 = time.perf_counter()
    run = train(sc.splits.train.with_labels(labels), config=config, verbose=False)
    secs = time.perf_counter() - t0
    v, t = _metrics(run, sc.splits.val), _metrics(run, sc.splits.test)
    return {"recipe": recipe, "scenario": scenario, "p": spec["p"], "seed": seed, "kind": kind,
            "val_f1": v["macro_f1"], "test_f1": t["macro_f1"], "test_acc": t["accuracy"],
            "test_f1_tuned": _tuned_f1(v["probs"], sc.splits.val.labels, t["probs"], sc.splits.test.labels),
            "wrong_labels": int((labels != sc.corruption.labels).sum()), "flipped_right": n_flipped_right,
            "seconds": secs}


def summary(rows: list[dict]) -> str:
    import pandas as pd

    df = pd.DataFrame(rows)
    out = []
    for (recipe, scenario, p), g in df.groupby(["recipe", "scenario", "p"], sort=False):
        piv = g.pivot_table(index="seed", columns="kind", values="test_f1")
        line = f"{recipe:>16} {scenario:>14} p={p}: seeds {sorted(g.seed.unique())}"
        for kind in ("clean", "corrupted", "random_fix"):
            if kind in piv:
                v = piv[kind].dropna()
                line += f" | {kind} {v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"
        if {"corrupted", "random_fix"} <= set(piv):
            d = (piv["random_fix"] - piv["corrupted"]).dropna()
            line += f" | random Δ {d.mean():+.3f} (|Δ| {d.abs().mean():.3f})"
        tuned = g[g.kind == "corrupted"]["test_f1_tuned"]
        line += f" | corrupted, val-tuned threshold {tuned.mean():.3f} ± {tuned.std(ddof=1) if len(tuned) > 1 else 0:.3f}"
        out.append(line)
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="base,balanced")
    ap.add_argument("--scenarios", default="sms_spam,tweets_binary")
    ap.add_argument("--p", type=float, default=None, help="override the scenario's corruption rate")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--kinds", default="corrupted,random_fix,clean")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "base_model.jsonl")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args()
    rows = [json.loads(l) for l in args.results.read_text().splitlines() if l.strip()] if args.results.exists() else []
    if not args.summary_only:
        from gbair_nb.config import setup

        setup(quiet=True)
        done = {(r["recipe"], r["scenario"], r["p"], r["seed"], r["kind"]) for r in rows}
        from gbair_nb.scenarios import SCENARIOS

        for scenario in args.scenarios.split(","):
            p = args.p if args.p is not None else SCENARIOS[scenario]["p"]
            for seed in [int(s) for s in args.seeds.split(",")]:
                for recipe in args.recipes.split(","):
                    for kind in args.kinds.split(","):
                        if (recipe, scenario, p, seed, kind) in done:
                            continue
                        row = run_row(recipe, scenario, seed, kind, p)
                        rows.append(row)
                        with open(args.results, "a") as f:
                            f.write(json.dumps(row) + "\n")
                        print(f"{recipe} {scenario} p={p} seed {seed} {kind}: test F1 {row['test_f1']:.3f} "
                              f"(tuned {row['test_f1_tuned']:.3f}) {row['seconds']:.0f} s", flush=True)
    print(summary(rows))


if __name__ == "__main__":
    main()

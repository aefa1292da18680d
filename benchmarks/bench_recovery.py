"""Recovery benchmark: G-BAIR against the baselines on the built-in scenarios, over several seeds.

Each (scenario, seed) runs the main job (`gbair_nb.report.run_recovery`: clean reference, the corrupted round 0
shared by all scorers, then the loop with each scorer) and saves its report as JSON, so an interrupted benchmark
resumes where it stopped. The summary table (mean ± sd over seeds) is printed as Markdown.

    python benchmarks/bench_recovery.py                       # default: sms_spam and tweets_binary, 3 seeds
    python benchmarks/bench_recovery.py --scenarios sms_spam_uniform --seeds 0
    python benchmarks/bench_recovery.py --summary-only        # just print the table of what is saved
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


def run_one(scenario: str, seed: int, scorers: list[str], rounds: int, out: Path) -> dict:
    from gbair_nb.scenarios import SCENARIOS, make_scenario
    from gbair_nb.report import run_recovery
    from gbair_nb.train import TrainConfig

    spec = dict(SCENARIOS[scenario])
    dataset = spec.pop("dataset")
    sc = make_scenario(dataset, seed=seed, name=scenario, **spec)
    fix = "flip" if sc.splits.train.num_classes == 2 else "predict"
    report = run_recovery(sc, scorers=scorers, rounds=rounds, fix=fix, config=TrainConfig(seed=seed), seed=seed,
                          verbose=False)
    out.write_text(json.dumps(report, indent=2))
    return report


def _ms(values) -> str:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return "–"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def summary(results: Path) -> str:
    from gbair_nb.metrics import kept_round

    by_scenario: dict[str, list[dict]] = {}
    for f in sorted(results.glob("*.json")):
        rep = json.loads(f.read_text())
        by_scenario.setdefault(rep["scenario"], []).append(rep)
    lines = []
    for name, reps in by_scenario.items():
        r0 = reps[0]
        lines.append(f"\n### {name}: {r0['dataset']}, {r0['corruption']['mode']} noise, "
                     f"{r0['corruption']['n_corrupted']} of {r0['sizes']['train']} training labels wrong "
                     f"({r0['corruption']['fraction_of_train']:.1%}), k = {r0['k']}, ≤ {r0['rounds']} rounds, "
                     f"seeds {sorted(r['seed'] for r in reps)}\n")
        lines.append(f"clean-label test macro-F1 {_ms([r['clean']['test_macro_f1'] for r in reps])}; "
                     f"corrupted (round 0) {_ms([r['corrupted']['test_macro_f1'] for r in reps])}\n")
        lines.append("| scorer | final test macro-F1 | recovered (F1) | recovered (acc) | round-1 flagged precision "
                     "| round-1 AUROC | rounds used | wrong labels left |")
        lines.append("|---|---|---|---|---|---|---|---|")
        scorers = list(r0["scorers"])
        for s in scorers:
            res = [r["scorers"][s] for r in reps if s in r["scorers"]]
            final = [kept_round(q) for q in res]
            r1 = [q["rounds"][1] if len(q["rounds"]) > 1 else {} for q in res]
            lines.append(
                f"| {s} | {_ms([f['test_macro_f1'] for f in final])} "
                f"| {_ms([q['recovered_fraction']['test_macro_f1'] for q in res])} "
                f"| {_ms([q['recovered_fraction']['test_accuracy'] for q in res])} "
                f"| {_ms([x.get('flagged_precision') for x in r1])} "
                f"| {_ms([(q['rounds'][0].get('detection') or {}).get('auroc') for q in res])} "
                f"| {_ms([q['final_round'] for q in res])} "
                f"| {_ms([f['wrong_labels_remaining'] for f in final])} |")
        secs = [r["seconds"] for r in reps]
        lines.append(f"\n({len(reps)} seeds, {np.mean(secs):.0f} s per seed for all scorers)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="sms_spam,tweets_binary")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--scorers", default="gbair,random,loss,self_influence")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "recovery")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        from gbair_nb.config import setup

        print(setup(quiet=True), flush=True)
        for scenario in args.scenarios.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                out = args.results / f"{scenario}__{args.scorers.replace(',', '-')}__seed{seed}.json"
                if out.exists():
                    print(f"{out.name}: done already", flush=True)
                    continue
                t0 = time.perf_counter()
                run_one(scenario, seed, args.scorers.split(","), args.rounds, out)
                print(f"{out.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(summary(args.results))


if __name__ == "__main__":
    main()

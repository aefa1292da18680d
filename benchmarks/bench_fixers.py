"""Fixers compared, and re-ranking with a person's verdicts (issue 17, items 6 and 7).

    OMP_NUM_THREADS=1 python benchmarks/bench_fixers.py --results benchmarks/results/fixers --seeds 0,1,2
    python benchmarks/bench_fixers.py --results benchmarks/results/fixers --summary-only     # the table
    OMP_NUM_THREADS=1 python benchmarks/bench_fixers.py --dataset tweets_binary --seeds 0   # → fixers/tweets_binary

A built-in dataset's default scenario (SMS: 70% of the spam labelled ham; tweets_binary: 70% of the positives
labelled negative), the default scorer (``DEFAULT_GBAIR``), k = 4% per round, two rounds, and every fixer on the same
round-0 model of each seed:

- ``flip``, ``predict``, ``remove``: the automatic fixers of :data:`gbair_nb.recovery.FIXERS`;
- ``annotator``: a simulated person who gives the true label (the paper's "manual relabel" setting), answering
  through the relabel session like the widget (:func:`gbair_nb.human.human_fixer`);
- ``annotator+rerank``: the same person, and from round 2 on the remaining suspects are re-ranked with the verdicts
  of round 1 (:func:`gbair_nb.scorers.rerank`): round 2's flagged precision, with and without, is the measurement.

Both rounds always run (patience 99) so that round 2 is measured; the loop still keeps the round with the best
validation macro-F1 (the rollback), and the table reports that kept round. One JSON per (seed, fixer) in
``--results`` (SMS) or ``--results``/<dataset> (any other); a finished one is not run again.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXERS = ("flip", "predict", "remove", "annotator", "annotator+rerank")
FIXER_MINUTES = {"sms_spam": 45, "tweets_binary": 65}  # one seed, measured at load 2–4 (results JSON "seconds")


def results_folder(results: Path, dataset: str) -> Path:
    """Where a dataset's JSON files live: ``results`` for SMS (the first files), ``results/<dataset>`` otherwise."""
    return results if dataset == "sms_spam" else results / dataset


def run_seed(seed: int, out: Path, rounds: int, quick: bool = False, backbone: str = "minilm",
             dataset: str = "sms_spam") -> None:
    from gbair_nb.cache import cached_train
    from gbair_nb.human import human_fixer, simulated_annotator
    from gbair_nb.loop import round_metrics
    from gbair_nb.recovery import gbair
    from gbair_nb.scenarios import QUICK_SCENARIO, SCENARIOS, make_scenario
    from gbair_nb.scorers import DEFAULT_GBAIR
    from gbair_nb.train import TrainConfig

    todo = [f for f in FIXERS if not (out / f"seed{seed}__{f.replace('+', '_')}.json").exists()]
    if not todo:
        return
    spec = {**SCENARIOS[dataset], **(QUICK_SCENARIO if quick else {})}
    scenario = make_scenario(seed=seed, **spec)
    config = (TrainConfig.quick if quick else TrainConfig)(seed=seed, backbone=backbone)
    judged = (scenario.splits.val, scenario.splits.test)
    t0 = time.perf_counter()
    clean_run, _ = cached_train(scenario.splits.train, config, val=scenario.splits.val, judged_on=judged,
                                what="clean reference")
    clean = round_metrics(clean_run, *judged)
    del clean_run
    run0, _ = cached_train(scenario.train, config, judged_on=judged, what="round 0")
    print(f"seed {seed}: clean reference and round 0 in {time.perf_counter() - t0:.0f} s", flush=True)
    for name in todo:
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            if name.startswith("annotator"):
                fix = human_fixer(Path(tmp) / "journal.jsonl", scenario.train,
                                  annotator=simulated_annotator(scenario.splits.train, accuracy=1.0, seed=seed))
            else:
                fix = name
            rec = gbair(scenario, scorer=DEFAULT_GBAIR, rounds=rounds, fix=fix, config=config, clean=clean,
                        seed=seed, round0=run0, patience=99, rerank_with_verdicts=name.endswith("rerank"),
                        verbose=False)
        final = rec.final()
        result = {"dataset": dataset, "seed": seed, "fixer": name, "scorer": DEFAULT_GBAIR, "k": rec.options.get("k"),
                  "rounds": [{"round": r.round, "flagged_precision": r.flagged_precision,
                              "test_macro_f1": r.test_macro_f1, "val_macro_f1": r.val_macro_f1,
                              "wrong_labels_remaining": r.wrong_labels_remaining, "n_removed": r.n_removed}
                             for r in rec.rounds],
                  "kept_round": rec.final_round, "recovered_fraction": rec.recovered("test_macro_f1"),
                  "wrong_labels_round0": rec.rounds[0].wrong_labels_remaining,
                  "wrong_labels_kept": final.wrong_labels_remaining, "removed_kept": final.n_removed,
                  "clean_test_macro_f1": clean["test_macro_f1"], "seconds": time.perf_counter() - t1}
        path = out / f"seed{seed}__{name.replace('+', '_')}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"seed {seed} {name:17s} recovered {result['recovered_fraction']:.2f}, wrong labels "
              f"{result['wrong_labels_round0']} → {result['wrong_labels_kept']}, precision per round "
              f"{[round(r['flagged_precision'], 2) for r in result['rounds'][1:]]} ({result['seconds']:.0f} s)",
              flush=True)


def summary(out: Path) -> str:
    import pandas as pd

    from gbair_nb.metrics import mean_ci

    rows = [json.loads(p.read_text()) for p in sorted(out.glob("seed*__*.json"))]
    if not rows:
        return f"no results in {out}"
    df = pd.DataFrame(rows)
    seeds = sorted(int(s) for s in df["seed"].unique())

    def fmt(values, digits=2):
        mean, half, n = mean_ci(list(values))
        return f"{mean:.{digits}f}" if n < 2 else f"{mean:.{digits}f} ± {half:.{digits}f}"

    dataset = next((d for d in df.get("dataset", []) if isinstance(d, str)), "sms_spam")  # SMS files predate it
    names = {"sms_spam": "SMS spam"}
    lines = [f"seeds {seeds}; {names.get(dataset, dataset)}, default scenario; scorer {df['scorer'].iloc[0]}; "
             f"k = {df['k'].iloc[0]}; "
             "2 rounds, the kept round by validation macro-F1", "",
             "| fixer | recovered (F1) | wrong labels: round 0 → kept | round-1 precision | round-2 precision | "
             "per seed: recovered; wrong labels kept |", "|---|---|---|---|---|---|"]
    for name in FIXERS:
        g = df[df["fixer"] == name].sort_values("seed")
        if g.empty:
            continue
        p1 = [r[1]["flagged_precision"] for r in g["rounds"]]
        p2 = [r[2]["flagged_precision"] for r in g["rounds"] if len(r) > 2]
        per_seed = "; ".join(f"{a:.2f}, {b}" for a, b in zip(g["recovered_fraction"], g["wrong_labels_kept"]))
        lines.append(f"| {name} | {fmt(g['recovered_fraction'])} | {fmt(g['wrong_labels_round0'], 1)} → "
                     f"{fmt(g['wrong_labels_kept'], 1)} | {fmt(p1)} | {fmt(p2) if p2 else '–'} | {per_seed} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/fixers"))
    parser.add_argument("--dataset", default="sms_spam", choices=["sms_spam", "tweets_binary"],
                        help="a built-in binary dataset's default scenario: sms_spam (default, results in --results) "
                             "or tweets_binary (results in --results/tweets_binary)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="quick sizes and training (a smoke run, not the figure)")
    parser.add_argument("--backbone", default="minilm", help="minilm (the figure) or tiny (a smoke run of the code)")
    parser.add_argument("--summary-only", action="store_true", help="print the table of what is saved, run nothing")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        print(f"error: --seeds {args.seeds!r}: give integers separated by commas, e.g. 0,1,2", file=sys.stderr)
        return 2
    if args.rounds < 2:
        print("error: --rounds must be at least 2 (re-ranking acts from round 2)", file=sys.stderr)
        return 2
    out = results_folder(args.results, args.dataset)
    out.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        from gbair_nb.scenarios import SCENARIOS

        n = SCENARIOS[args.dataset]["n_train"]
        print(f"estimate: {len(seeds)} seed(s) × (2 + {len(FIXERS)} × {args.rounds}) trainings of MiniLM on {n} "
              f"{args.dataset} texts; one seed took ~{FIXER_MINUTES[args.dataset]} min at 1 thread beside one other "
              "job (docs/benchmarks.md)", flush=True)
        for seed in seeds:
            run_seed(seed, out, args.rounds, quick=args.quick, backbone=args.backbone, dataset=args.dataset)
    print(summary(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

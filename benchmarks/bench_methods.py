"""Which parameters to tune: accuracy, trainable parameters and seconds per epoch for every PET method on the same
data, and (``--gbair``) one G-BAIR round per method on the same corrupted labels.

    OMP_NUM_THREADS=2 python benchmarks/bench_methods.py --quick            # ~5 min on 2 cores
    OMP_NUM_THREADS=2 python benchmarks/bench_methods.py --gbair            # full sizes, + recovery per method

Data: the "sms_spam" scenario of gbair_nb.recovery (SMS spam, half the spam labelled ham). Accuracy is on the test
split after training on the *true* labels; G-BAIR starts from the corrupted labels. Timings are wall-clock on this
machine — check ``uptime`` first; they are only comparable within one run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gbair_nb.config import setup  # noqa: E402
from gbair_nb.recovery import gbair  # noqa: E402
from gbair_nb.metrics import recovered_fraction
from gbair_nb.scenarios import SCENARIOS, make_scenario
from gbair_nb.train import TrainConfig, evaluate, train  # noqa: E402

# name → (TrainConfig overrides). Learning rates chosen per method on this data (PET adapters want ~1e-3,
# soft prompts ~3e-2, full fine-tuning ~5e-5); the head always gets lr_head.
SETTINGS: dict[str, dict] = {
    "head_only": dict(method="head_only", method_options={}),
    "prompt_tuning": dict(method="prompt_tuning", lr=3e-2, method_options={"num_virtual_tokens": 20}),
    "lora": dict(method="lora", lr=2e-3, method_options={"r": 8}),
    "gift": dict(method="gift", lr=2e-3, method_options={"r": 8}),
    "full": dict(method="full", lr=5e-5, method_options={}),
    "gmt_full_0.05": dict(method="full", lr=5e-5, method_options={}, gmt={"keep_ratio": 0.05}),
    "gmt_full_0.2": dict(method="full", lr=5e-5, method_options={}, gmt={"keep_ratio": 0.2}),
    "gmt_full_0.2_random": dict(method="full", lr=5e-5, method_options={}, gmt={"keep_ratio": 0.2, "random": True}),
    "gmt_lora_0.2": dict(method="lora", lr=2e-3, method_options={"r": 8}, gmt={"keep_ratio": 0.2}),
}
# full fine-tuning's per-example gradients are 22.7M floats (91 MB) each, computed one example at a time (no fast
# path for embeddings and LayerNorm): TracIn streams them 2 at a time (influence.auto_chunk_size) and works, but one
# round takes many minutes on 2 CPU cores, so these join --gbair only with --gbair-full
NO_GBAIR = {"full", "gmt_full_0.05", "gmt_full_0.2", "gmt_full_0.2_random"}


def markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table (no tabulate dependency)."""
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 training examples, 3 epochs, max length 40, head lr 5e-2")
    ap.add_argument("--methods", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--gbair", action="store_true", help="also one G-BAIR round per method (k = 4%% of train)")
    ap.add_argument("--gbair-full", action="store_true", help="--gbair also for full fine-tuning and GMT on it (slow)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the table here too")
    args = ap.parse_args(argv)
    setup(quick=args.quick)
    warnings.filterwarnings("ignore")
    sizes = dict(SCENARIOS["sms_spam"])
    if args.quick:
        sizes.update(n_train=200, n_val=100, n_test=200)
    scenario = make_scenario(**sizes, seed=args.seed)
    base = TrainConfig(backbone="minilm", epochs=args.epochs or (3 if args.quick else 4),
                       max_length=40 if args.quick else 64, lr_head=5e-2 if args.quick else 1e-2, seed=args.seed)
    print(f"data: {scenario.summary()}", flush=True)
    rows = []
    for name in args.methods:
        config = replace(base, **SETTINGS[name])
        t0 = time.perf_counter()
        run = train(scenario.splits.train, config=config, verbose=False)
        test = evaluate(run, scenario.splits.test)
        row = {"method": name, "trainable_params": run.record["trainable_params"],
               "s_per_epoch": float(np.mean(run.timing["epoch_seconds"])),
               "test_accuracy": test.accuracy, "test_macro_f1": test.macro_f1}
        if args.gbair and (args.gbair_full or name not in NO_GBAIR):
            t1 = time.perf_counter()
            rec = gbair(scenario, rounds=1, config=config, clean=False, patience=5, verbose=False)
            r0, r1 = rec.rounds[0], rec.rounds[-1]
            row.update(corrupted_f1=r0.test_macro_f1, round1_f1=r1.test_macro_f1,
                       flagged_precision=r1.flagged_precision,
                       recovered=recovered_fraction(r1.test_macro_f1, r0.test_macro_f1, test.macro_f1),
                       gbair_s=time.perf_counter() - t1)
        row["total_s"] = time.perf_counter() - t0
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    df = pd.DataFrame(rows)
    print(markdown(df))
    if args.json:
        args.json.write_text(df.to_json(orient="records", indent=1))
    return df


if __name__ == "__main__":
    main()

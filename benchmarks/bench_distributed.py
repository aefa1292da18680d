"""Distributed benchmark: the per-example gradient pass on 1 and 2 processes (torchrun, gloo on CPU).

The same data (the first N SMS messages, max_length 64) and the same model (MiniLM prompt tuning, 20 virtual tokens,
one checkpoint) on 1 and on W processes, each process with one thread. Timed: ``gbair_nb.distributed.self_influence``
— each rank computes the per-example gradients of its slice of the training set (the fast path: one batched backward
per batch of 16), reduces them to one number per example and the numbers are gathered — between two barriers, best
of ``--repeats``. Scaling efficiency = t(1) / (W · t(W)); on a machine with W free cores 1.0 is the ceiling. The
CPU seconds of all ranks together (``time.process_time``) show the cost of sharding apart from how busy the machine
is: equal CPU seconds for 1 and W processes = no overhead.

    python benchmarks/bench_distributed.py                    # 1 and 2 processes, 256 examples
    python benchmarks/bench_distributed.py --examples 512 --procs 1 2 --repeats 3

The machine's load average (``uptime``) is printed beside the figures: on a shared machine it decides them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(n: int, repeats: int, batch_size: int) -> None:
    """One rank: time the sharded per-example gradient pass; rank 0 prints one JSON line."""
    import torch

    from gbair_nb import distributed as D
    from gbair_nb.config import setup
    from gbair_nb.data import load_dataset
    from gbair_nb.pet import trainable_state
    from gbair_nb.models import make_model

    setup(quiet=True, threads=1)
    with D.job() as j:
        ds = load_dataset("sms_spam").subset(list(range(n)))
        model, tok = make_model("prompt_tuning", num_labels=2, backbone="minilm", seed=0)
        checkpoints = [(trainable_state(model), 1.0)]
        times, cpu = [], []
        for _ in range(repeats):
            if j.world_size > 1:
                torch.distributed.barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            scores = D.self_influence(model, tok, checkpoints, ds, max_length=64, batch_size=batch_size,
                                      verbose=False)
            if j.world_size > 1:
                torch.distributed.barrier()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        per_rank = [None] * j.world_size
        if j.world_size > 1:
            torch.distributed.all_gather_object(per_rank, min(cpu))
        else:
            per_rank = [min(cpu)]
        j.agree(scores.round(3).tolist())
        if j.is_main:
            print(json.dumps({"procs": j.world_size, "n": n, "seconds": min(times), "all": times,
                              "cpu_seconds": sum(per_rank),
                              "checksum": float(scores.sum())}), flush=True)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", dest="n", type=int, default=256, help="training examples (default 256)")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts (default 1 2)")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats per process count (best is kept)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.n, args.repeats, args.batch_size)
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    rows = []
    print(f"load average before: {load_average()}  ({os.cpu_count()} cores)", flush=True)
    for w in args.procs:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(w),
               str(Path(__file__).resolve()), "--worker", "--examples", str(args.n),
               "--repeats", str(args.repeats), "--batch-size", str(args.batch_size)]
        load = load_average()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = next((x for x in res.stdout.splitlines() if x.startswith("{")), None)
        if res.returncode != 0 or line is None:
            print(res.stdout[-2000:], res.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append({**json.loads(line), "load_before": load})
        runs = ", ".join(f"{t:.1f}" for t in rows[-1]["all"])
        print(f"  {w} process(es): {rows[-1]['seconds']:.1f} s (runs {runs})", flush=True)
    t1 = next((r["seconds"] for r in rows if r["procs"] == 1), None)
    print(f"load average after: {load_average()}\n")
    print("| processes | seconds | examples/s | speedup | efficiency | CPU s (all ranks) | load (1 min) before |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        speed = t1 / r["seconds"] if t1 else float("nan")
        print(f"| {r['procs']} | {r['seconds']:.1f} | {r['n'] / r['seconds']:.1f} | {speed:.2f}× | "
              f"{speed / r['procs']:.2f} | {r['cpu_seconds']:.1f} | {r['load_before'].split()[0]} |")
    sums = {r["procs"]: r["checksum"] for r in rows}
    print(f"\nscore checksums (equal up to float): {sums}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

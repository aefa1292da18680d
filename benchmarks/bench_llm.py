"""Decoder path (SmolLM2-135M, verbalizer prompt tuning): load time of the cached folder, seconds per training step,
per-example gradient throughput — fast path (one batched backward) vs the loop vs a plain forward+backward, same run.

    OMP_NUM_THREADS=1 python benchmarks/bench_llm.py --quick        # a minute or two
    python benchmarks/bench_llm.py --threads 2 --n 64 --batch-size 8

Prints a JSON record (and writes it with --out).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _load_seconds() -> dict:
    """Load the cached folder in a fresh process, twice: the first load also pays transformers' lazy imports
    (cold), the second is the folder alone (warm). Wall and CPU seconds of the warm load."""
    code = ("import time;from gbair_nb import llm;llm.smollm2_path();r=[]\n"
            "for _ in range(2):\n"
            " llm._load_tokenizer.cache_clear();t=time.perf_counter();c=time.process_time();llm.load_causal_lm('smollm2')"
            ";r+=[time.perf_counter()-t,time.process_time()-c]\n"
            "print(*r)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))})
    cold_wall, cold_cpu, wall, cpu = map(float, out.stdout.split()[-4:])
    return {"load_cold_wall_s": cold_wall, "load_cold_cpu_s": cold_cpu, "load_wall_s": wall, "load_cpu_s": cpu}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 examples, 2 repeats")
    ap.add_argument("--n", type=int, default=64, help="examples for the gradient throughput")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=40, help="text tokens (the template is added)")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dataset", default="tweets_binary")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.steps = 16, 2
    import torch

    from gbair_nb.config import setup

    env = setup(threads=args.threads)
    from gbair_nb.data import load_dataset
    from gbair_nb.influence import per_example_grads
    from gbair_nb.llm import make_llm_model, task_options
    from gbair_nb.pet import batches

    rec = {"device": env["device"], "threads": torch.get_num_threads(), "n": args.n, "batch_size": args.batch_size,
           "max_length": args.max_length, "load": os.getloadavg()[0]}
    rec.update(_load_seconds())
    ds = load_dataset(args.dataset)
    texts, labels = ds.texts[:args.n], ds.labels[:args.n]
    model, tok = make_llm_model(backbone="smollm2", **task_options(ds))
    rec["tokens_per_example"] = float(tok(texts, max_length=args.max_length, return_tensors="pt")
                                      ["attention_mask"].sum(1).float().mean()) + model.num_virtual_tokens
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-2)
    batch_list = list(batches(tok, texts, labels, batch_size=args.batch_size, max_length=args.max_length))

    def step(b):
        loss = model(**b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    model.train()
    step(batch_list[0])  # warm-up
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(batch_list[i % len(batch_list)])
    rec["train_step_s"] = (time.perf_counter() - t0) / args.steps
    model.eval()

    def timed(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    def fwd_bwd():  # what a training step costs without the optimizer: the floor for the fast path
        for b in batch_list:
            model(**b).loss.backward()
        for p in params:
            p.grad = None

    def fwd_only():
        with torch.no_grad():
            for b in batch_list:
                model(**b)

    kw = dict(batch_size=args.batch_size, max_length=args.max_length, sort_by_length=False, verbose=False)
    rec["fwd_s"] = timed(fwd_only)
    rec["fwd_bwd_s"] = timed(fwd_bwd)
    fast = {}
    rec["fast_s"] = timed(lambda: fast.update(g=per_example_grads(model, tok, texts, labels, method="fast", **kw)[0]))
    loop = {}
    rec["loop_s"] = timed(lambda: loop.update(g=per_example_grads(model, tok, texts, labels, method="loop", **kw)[0]))
    g, h = fast["g"], loop["g"]
    rec["max_rel_diff"] = float(((g - h).norm(dim=1) / h.norm(dim=1)).max())
    rec["fast_examples_per_s"] = args.n / rec["fast_s"]
    rec["loop_examples_per_s"] = args.n / rec["loop_s"]
    rec["fast_vs_loop"] = rec["loop_s"] / rec["fast_s"]
    rec["fast_vs_fwd_bwd"] = rec["fast_s"] / rec["fwd_bwd_s"]
    print(json.dumps(rec, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rec, indent=2))
    return rec


if __name__ == "__main__":
    main()

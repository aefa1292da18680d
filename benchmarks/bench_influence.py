"""Benchmark: per-example gradients for TracIn on MiniLM prompt tuning (SMS spam, max_length 64).

One run, same model, data and checkpoints for every method. A unit of work is one per-example gradient
(an example at a checkpoint), so TracIn over n_train × n_test × C costs C · (n_train + n_test) units.

- fast:    ``gbair_nb.influence.tracin`` (one batched backward per batch; includes the score matmuls)
- plain:   an ordinary batched forward + backward over the same batches, no per-example work (the physical limit)
- forward: forward only, no grad (context)
- loop:    ``per_example_grads(method="loop")``, one ``torch.autograd.grad`` per example
- captum:  Captum ``TracInCP`` (sample_wise_grads_per_batch=False, its exact path) on a smaller subset, compared
           with ``tracin`` on the same subset, same checkpoints and same learning rates

    python benchmarks/bench_influence.py            # 128 train x 16 test x 2 checkpoints for Captum, 512 x 64 else
    python benchmarks/bench_influence.py --quick    # smaller
    python benchmarks/bench_influence.py --memory --n-train 2000 --n-test 2000 --checkpoints 3  # peak RSS, top-k
    python benchmarks/bench_influence.py --device cuda --batch-size 64    # on a GPU (the default picks one if seen)

It exits with status 1 when the fast path differs from the loop or from Captum by more than the stated tolerances
(``--tol-loop``, ``--tol-captum``), so a run that reports a difference also checks it.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync() -> None:
    """Wait for the GPU's queued work, so a host clock read after it measures that work (no-op on the CPU)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def make_checkpoints(model, tok, texts, labels, n: int, *, steps: int = 3, lr_prompt: float = 5e-2,
                     lr_head: float = 5e-3, device: str = "cpu"):
    """n checkpoints (state, lrs): the start, then after every `steps` SGD steps on batches of 16 — real
    training-like states with two parameter groups (prompt / head) at different rates."""
    import torch
    import torch.nn.functional as F

    from gbair_nb.pet import batches, trainable_state

    params = dict(model.named_parameters())
    names = [k for k, p in params.items() if p.requires_grad]
    lrs = {k: (lr_prompt if "prompt" in k else lr_head) for k in names}
    opt = torch.optim.SGD([{"params": [params[k]], "lr": lrs[k]} for k in names])
    start = trainable_state(model)
    out = [(start, dict(lrs))]
    data = batches(tok, texts, labels, batch_size=16, max_length=64, device=device)
    model.eval()
    while len(out) < n:
        for _ in range(steps):
            b = next(data)
            opt.zero_grad()
            F.cross_entropy(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                            b["labels"]).backward()
            opt.step()
        decay = 1 - 0.45 * len(out)  # a decaying schedule: later checkpoints count less
        out.append((trainable_state(model), {k: v * decay for k, v in lrs.items()}))
    from gbair_nb.pet import load_trainable_state
    load_trainable_state(model, start)
    opt.zero_grad(set_to_none=True)
    return out


def plain_forward_backward(model, tok, texts, labels, ckpts, batch_size, forward_only=False, device="cpu"):
    """What an ordinary training step costs over the same length-sorted batches: no per-example work."""
    import torch
    import torch.nn.functional as F

    from gbair_nb.pet import batches, load_trainable_state

    lengths = [len(x) for x in tok(texts, truncation=True, max_length=64)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    texts, labels = [texts[i] for i in order], labels[order]
    for state, _ in ckpts:
        load_trainable_state(model, state)
        for b in batches(tok, texts, labels, batch_size=batch_size, max_length=64, device=device):
            if forward_only:
                with torch.no_grad():
                    model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            else:
                loss = F.cross_entropy(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                       b["labels"], reduction="sum")
                loss.backward()
                model.zero_grad(set_to_none=True)


def captum_tracin(model, tok, ckpts, tr_texts, tr_labels, te_texts, te_labels, tmp: Path, batched: int = 0,
                  device: str = "cpu"):
    """Captum TracInCP over the prompt embedding and the head, one learning rate per checkpoint (Captum's API).

    ``batched=0``: batches of one example at its own length (Captum's fastest exact setting). ``batched=B``: a
    TensorDataset padded to max_length in batches of B, the usual way to feed it (and much slower: Captum's exact
    path runs one backward through the whole batch's graph for every example in it)."""
    import torch
    from captum.influence import TracInCP
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from gbair_nb.pet import load_trainable_state

    class Logits(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).logits

    paths, rates = [], []
    for i, (state, lrs) in enumerate(ckpts):
        paths.append(str(tmp / f"ckpt{i}.pt"))
        torch.save(state, paths[-1])
        rates.append(float(next(iter(lrs.values()))))

    def load(wrapper, path):
        load_trainable_state(wrapper.m, torch.load(path, weights_only=True))  # tensors only, never pickled code
        return rates[paths.index(path)]

    def loader(texts, labels):
        # batches of one, each at its own length: Captum's exact path runs one backward through the whole batch
        # graph per example, so batch size 1 (its default) with no padding is its fastest setting
        items = []
        for t, y in zip(texts, labels):
            e = tok([t], truncation=True, max_length=64, return_tensors="pt")
            items.append((e["input_ids"].to(device), e["attention_mask"].to(device),
                          torch.tensor([int(y)], device=device)))
        return items

    layers = [n for n, m in Logits(model).named_modules()
              if n.endswith("prompt_encoder.default.embedding") or n.endswith("classifier.modules_to_save.default")]
    def padded(texts, labels):
        e = tok(list(texts), padding="max_length", truncation=True, max_length=64, return_tensors="pt")
        return DataLoader(TensorDataset(e["input_ids"].to(device), e["attention_mask"].to(device),
                                        torch.as_tensor(labels, device=device)), batch_size=batched)

    if batched:
        train_data, test_data = padded(tr_texts, tr_labels), padded(te_texts, te_labels)
    else:
        train_data = DataLoader(loader(tr_texts, tr_labels), batch_size=None)
        test_data = DataLoader(loader(te_texts, te_labels), batch_size=None)
    tracer = TracInCP(Logits(model), train_data, paths, checkpoints_load_func=load, layers=layers,
                      loss_fn=nn.CrossEntropyLoss(reduction="none"), sample_wise_grads_per_batch=False)
    return tracer.influence(test_data).cpu().numpy()


def timed(fn):
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a minute or two)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--checkpoints", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--captum-train", type=int, default=None)
    ap.add_argument("--captum-test", type=int, default=None)
    ap.add_argument("--loop-n", type=int, default=None)
    ap.add_argument("--memory", action="store_true", help="only measure peak RSS of top_influences (streaming top-k)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--tol-loop", type=float, default=1e-6,
                    help="largest per-example ||g_fast - g_loop|| / ||g_loop|| accepted (default 1e-6)")
    ap.add_argument("--tol-captum", type=float, default=2e-6,
                    help="largest max|tracin - Captum| / max|Captum| accepted, batch 1 and padded (default 2e-6)")
    ap.add_argument("--device", default="auto",
                    help="cpu, cuda, or auto (default: cuda when torch sees a GPU, else cpu)")
    ap.add_argument("--dataset", default="sms_spam",
                    help="texts to use (sms_spam has 4,862; use tweets (38,158) for --memory --n-train 20000)")
    args = ap.parse_args(argv)

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    from gbair_nb.config import device as default_device

    dev = default_device() if args.device == "auto" else args.device
    if dev not in ("cpu", "cuda") or (dev == "cuda" and not torch.cuda.is_available()):
        ap.error(f"--device {args.device}: " + ("torch sees no GPU here (use --device cpu)" if dev == "cuda"
                                                 else "use cpu, cuda or auto"))
    from gbair_nb.data import load_dataset
    from gbair_nb.influence import per_example_grads, top_influences, tracin
    from gbair_nb.models import make_model

    q = args.quick
    n_train = args.n_train or (96 if q else 512)
    n_test = args.n_test or (16 if q else 64)
    cap_train = args.captum_train or (32 if q else 128)
    cap_test = args.captum_test or (8 if q else 16)
    loop_n = args.loop_n or (48 if q else 128)
    C = args.checkpoints

    ds = load_dataset(args.dataset)
    rng = np.random.default_rng(0)
    pos = rng.permutation(len(ds))
    model, tok = make_model(backbone="minilm", num_labels=ds.num_classes)
    model.to(dev)
    fit_texts = [ds.texts[i] for i in pos[-200:]]
    ckpts = make_checkpoints(model, tok, fit_texts, ds.labels[pos[-200:]], C, device=dev)
    uptime = open("/proc/loadavg").read().split()[:3]
    where = torch.cuda.get_device_name(0) if dev == "cuda" else f"CPU, torch threads {args.threads}"
    print(f"minilm prompt tuning, {sum(p.numel() for p in model.parameters() if p.requires_grad)} trainable params, "
          f"{args.dataset} ({ds.num_classes} classes), max_length 64, batch {args.batch_size}, {C} checkpoints, "
          f"{where}, torch {torch.__version__}, load average at start {' '.join(uptime)}")

    if args.memory:
        tr = ds.subset(pos[:n_train])
        te = ds.subset(pos[n_train:n_train + n_test])
        base = rss_mb()
        samples: list[tuple[float, float]] = []
        done = threading.Event()

        def sample():
            t0 = time.perf_counter()
            while not done.is_set():
                samples.append((time.perf_counter() - t0, rss_mb()))
                time.sleep(0.5)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        (pro, opp), dt = timed(lambda: top_influences(model, tok, ckpts, tr, te, k=args.k, batch_size=args.batch_size,
                                                     chunk_size=args.chunk_size, verbose=False))
        done.set()
        th.join()
        units = C * (n_train + n_test)
        arr = np.array(samples)
        print(f"top_influences k={args.k}, chunk_size={args.chunk_size}: {n_train} train x {n_test} test x {C} "
              f"checkpoints in {dt:.1f} s "
              f"({units / dt:.1f} gradient-examples/s); {len(pro)} proponent rows")
        print(f"RSS before {base:.0f} MB; peak RSS (ru_maxrss) {peak_rss_mb():.0f} MB; sampled max RSS in the "
              "first/second/third/last quarter of the run: "
              + ", ".join(f"{arr[(arr[:, 0] >= a * dt / 4) & (arr[:, 0] < (a + 1) * dt / 4 + 1e-9), 1].max():.0f}"
                          for a in range(4)) + " MB")
        P = sum(v.numel() for v in ckpts[0][0].values())
        print(f"test-side gradients held: {n_test} x {P} x {C} x 4 B = {n_test * P * C * 4 / 2**20:.0f} MB; "
              f"a train chunk: {args.chunk_size} x {P} x 4 B = {args.chunk_size * P * 4 / 2**20:.0f} MB")
        print("RSS trace (s: MB): " + ", ".join(f"{t:.0f}: {r:.0f}" for t, r in arr[:: max(1, len(arr) // 12)]))
        if dev == "cuda":
            print(f"peak GPU memory allocated by torch: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")
        return

    tr_texts, tr_labels = [ds.texts[i] for i in pos[:n_train]], ds.labels[pos[:n_train]]
    te_texts, te_labels = [ds.texts[i] for i in pos[n_train:n_train + n_test]], ds.labels[pos[n_train:n_train + n_test]]
    units = C * (n_train + n_test)
    all_texts, all_labels = tr_texts + te_texts, np.concatenate([tr_labels, te_labels])
    # warm up
    per_example_grads(model, tok, tr_texts[:32], tr_labels[:32], verbose=False)

    _, t_plain = timed(lambda: plain_forward_backward(model, tok, all_texts, all_labels, ckpts, args.batch_size,
                                                      device=dev))
    scores, t_fast = timed(lambda: tracin(model, tok, ckpts, tr_texts, tr_labels, te_texts, te_labels,
                                          batch_size=args.batch_size, verbose=False))
    _, t_plain2 = timed(lambda: plain_forward_backward(model, tok, all_texts, all_labels, ckpts, args.batch_size,
                                                       device=dev))
    _, t_fwd = timed(lambda: plain_forward_backward(model, tok, all_texts, all_labels, ckpts, args.batch_size,
                                                   forward_only=True, device=dev))
    t_plain = min(t_plain, t_plain2)  # the limit: give the baseline its better run
    (g_fast, _), t_fast_g = timed(lambda: per_example_grads(model, tok, tr_texts[:loop_n], tr_labels[:loop_n],
                                                            state=ckpts[-1][0], batch_size=args.batch_size,
                                                            verbose=False))
    (g_unsorted, _), t_unsorted = timed(lambda: per_example_grads(model, tok, tr_texts[:loop_n], tr_labels[:loop_n],
                                                                  state=ckpts[-1][0], batch_size=args.batch_size,
                                                                  sort_by_length=False, verbose=False))
    (g_loop, _), t_loop = timed(lambda: per_example_grads(model, tok, tr_texts[:loop_n], tr_labels[:loop_n],
                                                          state=ckpts[-1][0], method="loop", verbose=False))
    row_rel = float(((g_fast - g_loop).norm(dim=1) / g_loop.norm(dim=1)).max())
    elem_rel = float((g_fast - g_loop).abs().max() / g_loop.abs().max())

    # Captum: one rate per checkpoint, so give every parameter the prompt's rate here (and the same to tracin)
    import tempfile

    cap_ckpts = [(s, {k: next(iter(l.values())) for k in l}) for s, l in ckpts]
    cap_tr, cap_te = tr_texts[:cap_train], te_texts[:cap_test]
    with tempfile.TemporaryDirectory() as tmp:
        expected, t_captum = timed(lambda: captum_tracin(model, tok, cap_ckpts, cap_tr, tr_labels[:cap_train],
                                                         cap_te, te_labels[:cap_test], Path(tmp), device=dev))
        cb_tr, cb_te = min(cap_train, 16 if q else 32), min(cap_test, 4 if q else 8)
        expected_b, t_captum_b = timed(lambda: captum_tracin(model, tok, cap_ckpts, cap_tr[:cb_tr],
                                                             tr_labels[:cb_tr], cap_te[:cb_te], te_labels[:cb_te],
                                                             Path(tmp), batched=16, device=dev))
    ours, t_ours_small = timed(lambda: tracin(model, tok, cap_ckpts, cap_tr, tr_labels[:cap_train], cap_te,
                                              te_labels[:cap_test], batch_size=args.batch_size, verbose=False))
    cap_rel = float(np.abs(ours - expected).max() / np.abs(expected).max())
    cap_units = C * (cap_train + cap_test)
    cb_units = C * (cb_tr + cb_te)
    cap_rel_b = float(np.abs(ours[:cb_te, :cb_tr] - expected_b).max() / np.abs(expected_b).max())

    fast_eps = units / t_fast
    loop_eps = loop_n / t_loop
    captum_eps = cap_units / t_captum
    print(f"\nwork: TracIn {n_train} train x {n_test} test x {C} checkpoints = {units} gradient-examples; "
          f"loop on {loop_n}; Captum on {cap_train} x {cap_test} x {C} = {cap_units}")
    print(f"{'method':48s} {'seconds':>8s} {'examples/s':>11s}")
    rows = [
        ("fast path: tracin()", t_fast, fast_eps),
        ("plain batched forward+backward (limit)", t_plain, units / t_plain),
        ("forward only, no grad", t_fwd, units / t_fwd),
        (f"fast per_example_grads, {loop_n} ex", t_fast_g, loop_n / t_fast_g),
        (f"fast per_example_grads unsorted, {loop_n} ex", t_unsorted, loop_n / t_unsorted),
        (f"loop per_example_grads, {loop_n} ex", t_loop, loop_eps),
        (f"Captum TracInCP, {cap_train}x{cap_test}x{C}", t_captum, captum_eps),
        ("tracin() on the Captum subset", t_ours_small, cap_units / t_ours_small),
        (f"Captum, padded to 64, batches of 16, {cb_tr}x{cb_te}x{C}", t_captum_b, cb_units / t_captum_b),
    ]
    for name, t, eps in rows:
        print(f"{name:48s} {t:8.2f} {eps:11.1f}")
    print("\nratios")
    print(f"  fast path cost / plain forward+backward:            {t_fast / t_plain:.2f}x   (target <= 1.3x)")
    print(f"  fast path throughput / Captum TracInCP (per unit):  {fast_eps / captum_eps:.1f}x   (target >= 25x)")
    print(f"  same subset, Captum time / tracin() time:           {t_captum / t_ours_small:.1f}x")
    print(f"  fast path / Captum padded+batched 16 (per unit):    {fast_eps / (cb_units / t_captum_b):.1f}x")
    print(f"  fast per_example_grads vs loop:                      {t_loop / t_fast_g:.1f}x faster")
    print(f"  length-sorted batches vs unsorted:                   {t_unsorted / t_fast_g:.2f}x faster")
    print("max relative difference")
    print(f"  fast vs loop: per-example ||g_fast - g_loop|| / ||g_loop|| = {row_rel:.1e}; "
          f"max|diff| / max|g| = {elem_rel:.1e}")
    print(f"  tracin() vs Captum TracInCP: max|diff| / max|score| = {cap_rel:.1e} (batch 1), "
          f"{cap_rel_b:.1e} (padded, batches of 16)")
    print(f"load average at end {' '.join(open('/proc/loadavg').read().split()[:3])}")
    assert scores.shape == (n_test, n_train)
    checks = [("fast vs loop, per example", row_rel, args.tol_loop),
              ("tracin() vs Captum, batch 1", cap_rel, args.tol_captum),
              ("tracin() vs Captum, padded batches of 16", cap_rel_b, args.tol_captum)]
    failed = [f"{what}: {value:.1e} > {tol:.0e}" for what, value, tol in checks if not value <= tol]
    if failed:
        print("FAILED: " + "; ".join(failed), file=sys.stderr)
        sys.exit(1)
    print("exactness: " + "; ".join(f"{what} {value:.1e} <= {tol:.0e}" for what, value, tol in checks))


if __name__ == "__main__":
    main()

"""Benchmark: exact TracIn against approximate influence and the tools people use, on corrupted-label scenarios.

For each (scenario, PET method) the parent trains one run with ``TrainConfig.for_method`` (saved under
``RESULTS/runs/``, ignored by git, reused) and finds the validation mistakes M of its final model. Every **row** then
runs in its **own child process**: it loads the run, scores the training set two ways —

- ``self``: a per-example suspicion score (self-influence; the loss for the ``loss`` row), higher = more suspect;
- ``gbair``: G-BAIR's − Σ_{z'∈M} influence(z, z'), higher = more likely behind the validation mistakes;

and records wall seconds (fit + score; the model load is not counted) and its peak RSS (``resource.getrusage``
``ru_maxrss`` of the child, read at its end; the RSS right after loading is kept beside it). Rows:

- ``exact``, ``exact_last``: ``gbair_nb.influence`` over all checkpoints / the last one;
- ``proj{d}``: the same with ``project=d`` (countsketch); ``gauss1024``: the dense Gaussian kind (PET only: on full
  fine-tuning a dense (P × d) map is 23G random numbers per chunk);
- ``ekfac``: kronfluence's EK-FAC influence functions at the final parameters (fit + both scores;
  full fine-tuning: its Linear layers only);
- ``captum_b1``, ``captum_b16``: Captum ``TracInCP`` (its exact path) fed one unpadded example per batch or padded
  batches of 16, on the first ``--captum-n`` training examples, with one learning rate per checkpoint (Captum's API:
  the PET rate); after timing, our ``tracin`` with those same rates is compared with it (max relative difference);
- ``loss``: the cross-entropy under the given label at the final checkpoint — the zero-cost reference;
- ``pairwise_exact``, ``pairwise_proj1024``: ``tracin`` of the training set on the first ``--pairwise-n`` mistakes
  (the (n_M, n_train) matrix the relabeling view needs): exact holds n_M × P floats per checkpoint, projected n_M × d.

Each row's JSON (``RESULTS/{scenario}__{method}__{row}.json``) keeps its scores, so Spearman ρ against ``exact`` and
the detection metrics (``gbair_nb.recovery.detection_metrics``: AUROC, AP, precision@k with k = the number of
corrupted labels) are computed when the table is printed. An interrupted run resumes: rows with a JSON are skipped.

    python benchmarks/bench_peers.py --quick                  # CI-sized: sms_spam, small splits
    OMP_NUM_THREADS=1 python benchmarks/bench_peers.py        # sms_spam and tweets_binary × lora, full
    python benchmarks/bench_peers.py --table-only [--quick]   # print the tables from the saved JSON
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUICK_SIZES = {"n_train": 80, "n_val": 60, "n_test": 40}
DIMS = (64, 256, 1024, 4096)


def row_names(dims=DIMS) -> list[str]:
    return (["exact", "exact_last"] + [f"proj{d}" for d in dims]
            + ["gauss1024", "ekfac", "captum_b1", "captum_b16", "loss", "pairwise_exact", "pairwise_proj1024"])


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _scenario(name: str, seed: int, quick: bool):
    from gbair_nb.scenarios import SCENARIOS, make_scenario

    spec = dict(SCENARIOS[name])
    if quick:
        spec.update(QUICK_SIZES)
    return make_scenario(spec.pop("dataset"), seed=seed, name=name, **spec)


def _config(method: str, seed: int, quick: bool, backbone: str):
    from gbair_nb.train import TrainConfig

    return TrainConfig.for_method(method, quick=quick, seed=seed, backbone=backbone)


def prepare_run(scenario_name: str, method: str, args) -> Path:
    """Train (once) and record the validation mistakes of the final model."""
    run_dir = args.results / "runs" / f"{scenario_name}__{method}"
    meta = run_dir / "peers_meta.json"
    if meta.exists():
        return run_dir
    from gbair_nb.train import evaluate, train

    sc = _scenario(scenario_name, args.seed, args.quick)
    t0 = time.perf_counter()
    run = train(sc.train, config=_config(method, args.seed, args.quick, args.backbone), out_dir=run_dir,
                verbose=False)
    val = evaluate(run, sc.splits.val)
    mistakes = np.flatnonzero(val.preds != sc.splits.val.labels)
    meta.write_text(json.dumps({"mistakes": mistakes.tolist(), "val_accuracy": val.accuracy,
                                "train_seconds": time.perf_counter() - t0,
                                "n_corrupted": int(sc.corruption.is_corrupted.sum())}))
    print(f"  trained {scenario_name}/{method} in {time.perf_counter() - t0:.0f} s: val accuracy "
          f"{val.accuracy:.3f}, {len(mistakes)} mistakes", flush=True)
    return run_dir


# ------------------------------------------------------------------------------------------------- the rows
def _captum(run, texts, labels, mistakes_texts, mistakes_labels, *, batch: int, max_length: int):
    """Captum TracInCP over the trainable layers: (self-influence, aggregated influence on the mistakes)."""
    import torch
    from captum.influence import TracInCP
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from gbair_nb.pet import load_trainable_state

    model, tok = run.model, run.tokenizer

    class Logits(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).logits

    wrapper = Logits(model)
    layers = [n for n, m in wrapper.named_modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    tmp = tempfile.TemporaryDirectory(prefix="captum_")
    paths, rates = [], []
    for i, ck in enumerate(run.checkpoints):
        paths.append(str(Path(tmp.name) / f"ckpt{i}.pt"))
        torch.save(ck.load_state(), paths[-1])
        rates.append(float(ck.lr))

    def load(w, path):
        load_trainable_state(w.m, torch.load(path))
        return rates[paths.index(path)]

    def data(t, y):
        if batch == 1:  # one example per batch at its own length: Captum's fastest exact setting
            items = []
            for text, label in zip(t, y):
                e = tok([text], truncation=True, max_length=max_length, return_tensors="pt")
                items.append((e["input_ids"], e["attention_mask"], torch.tensor([int(label)])))
            return DataLoader(items, batch_size=None)
        e = tok(list(t), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        return DataLoader(TensorDataset(e["input_ids"], e["attention_mask"], torch.as_tensor(np.asarray(y))),
                          batch_size=batch)

    tracer = TracInCP(wrapper, data(texts, labels), paths, checkpoints_load_func=load, layers=layers,
                      loss_fn=nn.CrossEntropyLoss(reduction="none"), sample_wise_grads_per_batch=False)
    t0 = time.perf_counter()
    si = tracer.self_influence().numpy()
    t1 = time.perf_counter()
    agg = tracer.influence(data(mistakes_texts, mistakes_labels), aggregate=True).numpy().reshape(-1)
    t2 = time.perf_counter()
    tmp.cleanup()
    return si, agg, {"self": t1 - t0, "gbair": t2 - t1}, [(ck.load_state(), r) for ck, r in zip(run.checkpoints, rates)]


def score_row(row: str, run, sc, mistakes: np.ndarray, args) -> dict:
    """Scores and seconds of one row (runs in the child)."""
    from gbair_nb import influence
    from gbair_nb.scorers import ScoreContext

    train_ds = sc.train
    val = sc.splits.val
    m_texts, m_labels = [val.texts[i] for i in mistakes], val.labels[mistakes]
    opts = dict(max_length=run.config.max_length, verbose=False)
    out: dict = {"seconds": {}}
    t0 = time.perf_counter()
    if row in ("exact", "exact_last") or row.startswith(("proj", "gauss")):
        kw = dict(opts, checkpoints_used="last" if row == "exact_last" else "all")
        if row.startswith("proj"):
            kw.update(project=int(row[4:]))
        elif row.startswith("gauss"):
            kw.update(project=int(row[5:]), project_kind="gaussian")
        si = influence.self_influence(run.model, run.tokenizer, run.checkpoints, train_ds, **kw)
        t1 = time.perf_counter()
        agg = influence.aggregated_influence(run.model, run.tokenizer, run.checkpoints, train_ds, None, m_texts,
                                             m_labels, **kw)
        out["seconds"] = {"self": t1 - t0, "gbair": time.perf_counter() - t1}
        out["scores"] = {"self": si.tolist(), "gbair": (-agg).tolist()}
    elif row == "ekfac":
        from gbair_nb.peers import ekfac_influence

        run.load_checkpoint(-1)
        res = ekfac_influence(run.model, run.tokenizer, train_ds, None, m_texts, m_labels,
                              partial=run.config.method == "full", max_length=run.config.max_length)
        out["seconds"] = {"fit": res.seconds["fit"], "self": res.seconds["self_influence"],
                          "gbair": res.seconds["aggregated"]}
        out["scores"] = {"self": res.self_influence.tolist(), "gbair": (-res.aggregated).tolist()}
        out["ekfac"] = {"modules": len(res.modules), "uncovered_params": len(res.uncovered),
                        "uncovered_scalars": int(sum(p.numel() for n, p in run.model.named_parameters()
                                                     if n in set(res.uncovered)))}
    elif row.startswith("captum"):
        n = min(args.captum_n, len(train_ds))
        batch = int(row.split("_b")[1])
        si, agg, seconds, rates = _captum(run, train_ds.texts[:n], train_ds.labels[:n], m_texts, m_labels,
                                          batch=batch, max_length=run.config.max_length)
        out["seconds"] = seconds
        out["scores"] = {"self": si.tolist(), "gbair": (-agg).tolist()}
        out["subset"] = n
        t1 = time.perf_counter()  # ours on the same examples, checkpoints and rates, in the same process
        ours_si = influence.self_influence(run.model, run.tokenizer, rates, train_ds.texts[:n],
                                           train_ds.labels[:n], **opts)
        ours_agg = influence.aggregated_influence(run.model, run.tokenizer, rates, train_ds.texts[:n],
                                                  train_ds.labels[:n], m_texts, m_labels, **opts)
        out["ours_same_work_seconds"] = time.perf_counter() - t1
        out["captum_vs_ours_max_rel_diff"] = max(
            float(np.abs(si - ours_si).max() / np.abs(ours_si).max()),
            float(np.abs(agg - ours_agg).max() / max(np.abs(ours_agg).max(), 1e-30)))
    elif row == "loss":
        ctx = ScoreContext(run, train_ds, val, run.config)
        from gbair_nb.scorers import SCORERS

        out["scores"] = {"self": SCORERS["loss"](ctx).tolist()}
        out["seconds"] = {"self": time.perf_counter() - t0}
    elif row.startswith("pairwise"):
        k = min(args.pairwise_n, len(mistakes))
        kw = dict(opts, project=1024) if row == "pairwise_proj1024" else opts
        mat = influence.tracin(run.model, run.tokenizer, run.checkpoints, train_ds, None, m_texts[:k],
                               m_labels[:k], **kw)
        out["seconds"] = {"pairwise": time.perf_counter() - t0}
        out["pairwise"] = [[float(f"{x:.6g}") for x in r] for r in mat]
        out["pairwise_n"] = k
    else:
        raise ValueError(f"unknown row {row!r}")
    return out


def _skip_reason(row: str, method: str, mistakes: np.ndarray) -> str | None:
    if row == "gauss1024" and method == "full":
        return ("a dense Gaussian map of full fine-tuning's 22.6M parameters to 1,024 dimensions is 23G random "
                "numbers, regenerated for every chunk of 2 examples (use countsketch)")
    if (row.startswith("pairwise") or row == "ekfac" or row.startswith("captum")) and len(mistakes) == 0:
        return "no validation mistakes"
    return None


def child(spec: dict) -> None:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from gbair_nb.config import setup

    setup(quiet=True, threads=spec["threads"])
    from gbair_nb.runs import load_run

    args = argparse.Namespace(**spec["args"])
    sc = _scenario(spec["scenario"], args.seed, args.quick)
    run_dir = Path(spec["run_dir"])
    meta = json.loads((run_dir / "peers_meta.json").read_text())
    mistakes = np.asarray(meta["mistakes"], dtype=np.int64)
    run = load_run(run_dir, sc.train)
    for ck in run.checkpoints:
        ck.load_state()
    base = rss_mb()
    load_before = open("/proc/loadavg").read().split()[0]
    t0 = time.perf_counter()
    out = score_row(spec["row"], run, sc, mistakes, args)
    wall = time.perf_counter() - t0
    out.update({
        "scenario": spec["scenario"], "method": spec["method"], "row": spec["row"], "n_train": len(sc.train),
        "n_mistakes": int(len(mistakes)), "n_checkpoints": len(run.checkpoints),
        "trainable_params": int(sum(p.numel() for p in run.model.parameters() if p.requires_grad)),
        "is_corrupted": sc.corruption.is_corrupted.astype(int).tolist(), "wall_seconds": wall,
        "rss_mb": {"after_load": base, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
        "threads": spec["threads"], "load_average": [load_before, open("/proc/loadavg").read().split()[0]],
        "quick": args.quick, "date": time.strftime("%Y-%m-%d"),
    })
    Path(spec["out"]).write_text(json.dumps(out))


OPTIONAL = ("kronfluence", "captum", "einops", "einconv", "opt_einsum")  # a peer's package: its row is skipped


def run_rows(args) -> list[str]:
    """Run every row without a JSON, each in its own process; returns the rows that failed (they have no JSON, so
    the next run retries them)."""
    args.results.mkdir(parents=True, exist_ok=True)
    failed = []
    for scenario in args.scenarios:
        for method in args.methods:
            run_dir = prepare_run(scenario, method, args)
            mistakes = np.asarray(json.loads((run_dir / "peers_meta.json").read_text())["mistakes"])
            for row in args.rows:
                out = args.results / f"{scenario}__{method}__{row}.json"
                if out.exists() and not args.force:
                    continue
                reason = _skip_reason(row, method, mistakes)
                if reason:
                    out.write_text(json.dumps({"scenario": scenario, "method": method, "row": row,
                                               "skipped": reason}))
                    continue
                spec = {"scenario": scenario, "method": method, "row": row, "run_dir": str(run_dir),
                        "out": str(out), "threads": args.threads,
                        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                 if k in ("seed", "quick", "captum_n", "pairwise_n", "backbone")}}
                # this checkout first on the path, the caller's own path kept after it
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
                       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
                t0 = time.perf_counter()
                p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    err = (p.stderr.strip().splitlines() or ["?"])[-1]
                    missing_peer = any(f"No module named '{m}" in p.stderr for m in OPTIONAL)
                    if "PeerError" in p.stderr or missing_peer:  # the peer cannot run here: say so in the table
                        print(f"  {scenario}/{method}/{row}: skipped ({err})", flush=True)
                        out.write_text(json.dumps({"scenario": scenario, "method": method, "row": row,
                                                   "skipped": err}))
                    else:
                        print(f"  {scenario}/{method}/{row}: FAILED ({err})", flush=True)
                        failed.append(f"{scenario}/{method}/{row}")
                    continue
                print(f"  {scenario}/{method}/{row}: {time.perf_counter() - t0:.0f} s", flush=True)
    return failed


# ------------------------------------------------------------------------------------------------- the table
def _spearman(a, b) -> float | None:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    return None if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0 else float(spearmanr(a, b).statistic)


def frame(results: Path):
    """One row per (scenario, method, row): seconds, memory, Spearman ρ against exact and detection metrics."""
    import pandas as pd

    from gbair_nb.metrics import detection_metrics

    order = {name: i for i, name in enumerate(row_names())}
    rows = [json.loads(f.read_text()) for f in Path(results).glob("*__*__*.json")]
    rows.sort(key=lambda r: (r["scenario"], r["method"], order.get(r["row"], len(order)), r["row"]))
    exact = {(r["scenario"], r["method"]): r for r in rows if r.get("row") == "exact" and "scores" in r}
    pair_exact = {(r["scenario"], r["method"]): r for r in rows if r.get("row") == "pairwise_exact"
                  and "pairwise" in r}
    out = []
    for r in rows:
        rec = {"scenario": r["scenario"], "method": r["method"], "row": r["row"]}
        if "skipped" in r:
            out.append({**rec, "skipped": r["skipped"]})
            continue
        secs = r["seconds"]
        n = r.get("subset") or r["n_train"]
        rec.update(seconds=sum(secs.values()), fit_seconds=secs.get("fit", 0.0), n_scored=n, n_train=r["n_train"],
                   ms_per_example=1000 * sum(secs.values()) / n, peak_rss_mb=r["rss_mb"]["peak"],
                   scoring_mb=r["rss_mb"]["peak"] - r["rss_mb"]["after_load"], n_checkpoints=r["n_checkpoints"],
                   trainable_params=r["trainable_params"], n_mistakes=r["n_mistakes"],
                   captum_vs_ours=r.get("captum_vs_ours_max_rel_diff"),
                   ours_same_work_seconds=r.get("ours_same_work_seconds"), pairwise_n=r.get("pairwise_n"))
        truth = np.asarray(r["is_corrupted"], dtype=bool)[:n]
        ex = exact.get((r["scenario"], r["method"]))
        for key in ("self", "gbair"):
            s = (r.get("scores") or {}).get(key)
            if s is None:
                continue
            if ex is not None:
                rec[f"rho_{key}"] = _spearman(s, ex["scores"][key][:n])
            if 0 < truth.sum() < len(truth):
                d = detection_metrics(np.asarray(s), truth)
                rec.update({f"{key}_auroc": d["auroc"], f"{key}_ap": d["auprc"], f"{key}_p@k": d["precision@k"]})
        if "pairwise" in r and (r["scenario"], r["method"]) in pair_exact:
            rec["rho_pairwise"] = _spearman(r["pairwise"], pair_exact[(r["scenario"], r["method"])]["pairwise"])
        out.append(rec)
    return pd.DataFrame(out)


def _f(x, fmt="{:.3f}") -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)


def table(df, level: int = 3) -> str:
    """Markdown: one table per (scenario, method), under a heading of ``level`` (3: ``###``)."""
    lines = []
    for (scenario, method), g in df.groupby(["scenario", "method"], sort=False):
        ok = g[g.get("skipped", None).isna()] if "skipped" in g else g
        first = ok.iloc[0] if len(ok) else None
        head = f"\n{'#' * level} {scenario}, {method}"
        if first is not None:
            head += (f": {int(first['trainable_params']):,} trainable parameters, {int(first['n_checkpoints'])} "
                     f"checkpoints, {int(first['n_mistakes'])} validation mistakes")
        lines += [head + "\n", "| row | seconds (fit) | ms / example | peak RSS MB (+ scoring) | ρ self | ρ G-BAIR "
                  "| self AP | self AUROC | self P@k | G-BAIR AP | G-BAIR AUROC | G-BAIR P@k |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for _, r in g.iterrows():
            if isinstance(r.get("skipped"), str):
                lines.append(f"| {r['row']} | skipped: {r['skipped']} |" + " |" * 10)
                continue
            rho_g = r.get("rho_gbair") if not r["row"].startswith("pairwise") else r.get("rho_pairwise")
            sub = f" ({int(r['n_scored'])} ex.)" if r["n_scored"] != r["n_train"] else ""
            lines.append(
                f"| {r['row']}{sub} | {r['seconds']:.1f}{f' ({r.fit_seconds:.1f})' if r['fit_seconds'] else ''} "
                f"| {r['ms_per_example']:.1f} | {r['peak_rss_mb']:.0f} (+{r['scoring_mb']:.0f}) "
                f"| {_f(r.get('rho_self'))} | {_f(rho_g)} | {_f(r.get('self_ap'))} | {_f(r.get('self_auroc'))} "
                f"| {_f(r.get('self_p@k'))} | {_f(r.get('gbair_ap'))} | {_f(r.get('gbair_auroc'))} "
                f"| {_f(r.get('gbair_p@k'))} |")
    return "\n".join(lines)


def goals(df, level: int = 3) -> str:
    """The issue's goals, met or not, with the numbers behind each verdict (under a heading of ``level``)."""
    lines = [f"\n{'#' * level} Goals"]

    def get(g, row):
        hit = g[g["row"] == row]
        return hit.iloc[0] if len(hit) and np.isfinite(hit.iloc[0].get("seconds", np.nan)) else None

    for (scenario, method), g in df.groupby(["scenario", "method"], sort=False):
        ex, last, ek = get(g, "exact"), get(g, "exact_last"), get(g, "ekfac")
        tag = f"{scenario}/{method}"
        if method != "full" and ex is not None and ek is not None:
            for name, ref in (("all checkpoints", ex), ("last checkpoint", last)):
                if ref is None:
                    continue
                ratio = ek["seconds"] / ref["seconds"]
                ap_ok = ref.get("gbair_ap", np.nan) >= ek.get("gbair_ap", np.nan) - 1e-12
                lines.append(f"- {tag}: exact TracIn ({name}) {ref['seconds']:.1f} s vs EK-FAC fit + score "
                             f"{ek['seconds']:.1f} s (fit {ek['fit_seconds']:.1f} s): EK-FAC takes {ratio:.2f}x; "
                             f"G-BAIR AP {_f(ref.get('gbair_ap'))} vs {_f(ek.get('gbair_ap'))} — "
                             f"{'met' if ratio > 1 and ap_ok else 'not met'}")
        projs = [get(g, f"proj{d}") for d in (64, 256, 1024)]
        if ex is not None and any(p is not None for p in projs):
            for d, p in zip((64, 256, 1024), projs):
                if p is None:
                    continue
                if method != "full":
                    ok = min(p.get("rho_self", -1), p.get("rho_gbair", -1)) >= 0.9
                    lines.append(f"- {tag}: proj{d} Spearman self {_f(p.get('rho_self'))}, G-BAIR "
                                 f"{_f(p.get('rho_gbair'))} (goal ≥ 0.9) — {'met' if ok else 'not met'}")
                else:
                    mem = ex["scoring_mb"] / max(p["scoring_mb"], 1e-9)
                    t = ex["seconds"] / p["seconds"]
                    dap = p.get("gbair_ap", np.nan) - ex.get("gbair_ap", np.nan)
                    lines.append(f"- {tag}: proj{d} scoring memory {p['scoring_mb']:.0f} MB vs exact "
                                 f"{ex['scoring_mb']:.0f} MB ({mem:.2f}x less; goal ≥ 10x), time {p['seconds']:.1f} "
                                 f"vs {ex['seconds']:.1f} s ({t:.2f}x as fast; goal ≥ 5x), G-BAIR AP "
                                 f"{_f(p.get('gbair_ap'))} vs {_f(ex.get('gbair_ap'))} (Δ {_f(dap, '{:+.3f}')}; "
                                 f"goal within 0.02) — "
                                 f"{'met' if mem >= 10 and t >= 5 and abs(dap) <= 0.02 else 'not met'}")
        pe, pp = get(g, "pairwise_exact"), get(g, "pairwise_proj1024")
        if pe is not None and pp is not None:
            lines.append(f"- {tag}: pairwise (the first {int(pe['pairwise_n'])} of {int(pe['n_mistakes'])} mistakes "
                         f"× {int(pe['n_train'])} training examples × {int(pe['n_checkpoints'])} checkpoints): exact "
                         f"{pe['seconds']:.1f} s, +{pe['scoring_mb']:.0f} MB; proj1024 {pp['seconds']:.1f} s, "
                         f"+{pp['scoring_mb']:.0f} MB ({pe['scoring_mb'] / max(pp['scoring_mb'], 1e-9):.1f}x less "
                         f"memory, {pe['seconds'] / pp['seconds']:.2f}x the speed); ρ {_f(pp.get('rho_pairwise'))}")
        for b in (1, 16):
            c = get(g, f"captum_b{b}")
            if c is not None:
                ours = c["ours_same_work_seconds"]
                r = c["seconds"] / ours
                lines.append(f"- {tag}: Captum TracInCP batch {b}: {c['seconds']:.1f} s for self-influence + G-BAIR "
                             f"on {int(c['n_scored'])} examples; ours on the same work {ours:.1f} s "
                             f"({f'{r:.1f}x faster' if r >= 1 else f'Captum {1 / r:.2f}x faster'}); same numbers to "
                             f"{_f(c.get('captum_vs_ours'), '{:.1e}')} (max relative difference)")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized: sms_spam, 80/60/40 examples, quick training")
    ap.add_argument("--scenarios", default=None, help="default sms_spam,tweets_binary (quick: sms_spam)")
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--rows", default=None, help=f"comma-separated subset of {','.join(row_names())}")
    ap.add_argument("--captum-n", type=int, default=None, help="examples Captum scores (default 128, quick 16)")
    ap.add_argument("--pairwise-n", type=int, default=None, help="mistakes in the pairwise rows (default 16, quick 4)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=None,
                    help="default benchmarks/results/peers (quick: benchmarks/results/peers/quick)")
    ap.add_argument("--force", action="store_true", help="rerun rows that already have a JSON")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--backbone", default="minilm", help=argparse.SUPPRESS)  # "tiny" for a smoke test
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return
    args.scenarios = (args.scenarios or ("sms_spam" if args.quick else "sms_spam,tweets_binary")).split(",")
    args.methods = args.methods.split(",")
    args.rows = args.rows.split(",") if args.rows else row_names()
    unknown = [r for r in args.rows if r not in row_names() and not r.startswith(("proj", "gauss"))]
    if unknown:
        ap.error(f"unknown row(s) {unknown}; use {','.join(row_names())}")
    args.captum_n = args.captum_n or (16 if args.quick else 128)
    args.pairwise_n = args.pairwise_n or (4 if args.quick else 16)
    base = ROOT / "benchmarks" / "results" / "peers"
    args.results = args.results or (base / "quick" if args.quick else base)
    failed = []
    if not args.table_only:
        from gbair_nb.config import setup

        setup(quiet=True, threads=args.threads)
        print(f"bench_peers: {args.scenarios} × {args.methods}, {len(args.rows)} rows, quick {args.quick}, "
              f"load average {open('/proc/loadavg').read().split()[0]}", flush=True)
        failed = run_rows(args)
    df = frame(args.results)
    if len(df):
        print(table(df))
        print(goals(df))
    if failed:
        raise SystemExit(f"bench_peers: {len(failed)} row(s) failed: {', '.join(failed)} (rerun to retry them)")


if __name__ == "__main__":
    main()

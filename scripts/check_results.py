"""Check that the result tables in README.md and docs/benchmarks.md equal what benchmarks/results/ holds.

Every table whose numbers come from a results file sits between two markers in the Markdown:

    <!-- results: recovery-table sms_spam -->
    | scorer | final test macro-F1 | … |
    …
    <!-- /results -->

The opening marker names a kind and its arguments; one function per kind (``KINDS``) regenerates the text between
the markers from the JSON files, with the rounding the table prints. The check compares and prints a unified diff
for every block that differs; ``--write`` regenerates the blocks in place (run it when new results land, then read
the diff before committing).

    python scripts/check_results.py                      # README.md, docs/benchmarks.md, docs/course.md; exit 1 on a mismatch
    python scripts/check_results.py --write              # regenerate the tables from benchmarks/results/
    python scripts/check_results.py README.md --results DIR

Kinds:
    recovery-table SCENARIO      README's table for a recovery scenario (mean ± sd over seeds, 2 decimals)
    recovery-summary SCENARIO    the scenario's section of ``benchmarks/bench_recovery.py --summary-only``
    methods FILE [FILE …]        the PET-methods table; a later file fills the columns an earlier one left empty
    detectors [METRIC]           bench_detectors' scorer × cell matrix (default auprc), mean ± 95% CI over seeds
    budget SCORER [SCORER …]     bench_detectors' batch precision as k grows against the probe's n̂ (saved scores)
    auto                         what scorer="auto" picked per cell (bench_detectors --auto) and its round-1 AP
    auto-loops NAME [NAME …]     the saved loops as auto would have run them (the scorer it picked, per seed)
    auto-rates DATASETS          auto's one-way share at other class-conditional rates (bench_detectors --auto-rates)
    loops NAME                   a saved ``recover`` report (results/loops/NAME.json): the default's loops per scorer
    patience NAME [NAME …]       those loops replayed with patience 1 beside the patience they ran with
    fixers                       bench_fixers' table: every fixer on the same round-0 model, mean ± 95% CI over seeds
    peers DIR [goals]            bench_peers' tables (#### per scenario and method) from results/DIR, and its goals
    reading                      what each session asks a student to read and do, counted from the notebooks
    rendered MODE [PATH]         the rendered notebooks' run times in full or quick mode (docs/rendered/timings.json)
"""
from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gbair_nb.metrics import kept_round, mean_ci  # noqa: E402  (light: numpy only; the loop module loads torch)

DEFAULT_FILES = ("README.md", "docs/benchmarks.md", "docs/course.md")
OPEN = re.compile(r"^<!-- results: (?P<spec>[^>]*?) -->$")
CLOSE = "<!-- /results -->"


class CheckError(Exception):
    """A marker or a results file is unusable: the message says which and what would be right."""


# --------------------------------------------------------------------------------------------- recovery tables
def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckError(f"cannot read results file {path}: {e}") from None


def _reports(results: Path, scenario: str) -> list[dict]:
    """The saved reports of one recovery scenario, one per seed, in seed order."""
    files = sorted((results / "recovery").glob(f"{scenario}__*.json"))
    if not files:
        raise CheckError(f"no results for scenario {scenario!r} in {results / 'recovery'}")
    reps = [_load(f) for f in files]
    return sorted(reps, key=lambda r: r["seed"])


def _mean_sd(values, digits: int, *, count: bool = False) -> str:
    """'m ± sd' (sd with ddof 1) over the values that exist; one value: 'm'; none: '–'. A count that is the same
    in every seed prints as an integer."""
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return "–"
    if count and np.all(v == v[0]) and v[0] == int(v[0]):
        return str(int(v[0]))
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


ORDER = ("gbair", "loss", "self_influence", "random")  # README rows: the method first, then the baselines
NAMES = {"gbair": "**gbair**", "self_influence": "self-influence"}


def recovery_table(results: Path, scenario: str) -> str:
    """README's recovery table: per scorer, mean ± sd over seeds of the kept round's test macro-F1, the recovered
    fraction, round-1 and round-2 flagged precision, round-1 AUROC, and wrong labels left in the kept round."""
    reps = _reports(results, scenario)
    scorers = list(reps[0]["scorers"])
    scorers = [s for s in ORDER if s in scorers] + [s for s in scorers if s not in ORDER]
    header = ["scorer", "final test macro-F1", "recovered (F1)", "round-1 flagged precision", "round-2 precision",
              "round-1 AUROC", "wrong labels left"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in scorers:
        res = [r["scorers"][s] for r in reps if s in r["scorers"]]
        kept = [kept_round(q) for q in res]

        def at(q, i, key):
            return q["rounds"][i].get(key) if len(q["rounds"]) > i else None

        recovered = _mean_sd([q["recovered_fraction"]["test_macro_f1"] for q in res], 2)
        if all(q["final_round"] == 0 and len(q["rounds"]) > 1 for q in res):
            recovered += " (rolled back)"
        cells = [NAMES.get(s, s), _mean_sd([k["test_macro_f1"] for k in kept], 2), recovered,
                 _mean_sd([at(q, 1, "flagged_precision") for q in res], 2),
                 _mean_sd([at(q, 2, "flagged_precision") for q in res], 2),
                 _mean_sd([(q["rounds"][0].get("detection") or {}).get("auroc") for q in res], 2),
                 _mean_sd([k["wrong_labels_remaining"] for k in kept], 1, count=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _bench(name: str = "bench_recovery"):
    """A benchmark script of benchmarks/ as a module (its table functions are what the docs print)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recovery_summary(results: Path, scenario: str) -> str:
    """The scenario's section of what ``bench_recovery.py --summary-only`` prints (heading, references, table)."""
    _reports(results, scenario)  # a clear error when there is nothing
    text = _bench().summary(results / "recovery")
    sections = {s.split(":", 1)[0]: "### " + s.strip() for s in text.split("\n### ")[1:]}
    if scenario not in sections:
        raise CheckError(f"bench_recovery's summary has no section for {scenario!r}; it has {sorted(sections)}")
    return sections[scenario]


# ---------------------------------------------------------------------------------------------- PET methods
METHOD_LABELS = {  # row order and label of each bench_methods.py setting
    "head_only": "head_only",
    "prompt_tuning": "prompt_tuning (20 tokens)",
    "lora": "lora (q+v, r=8)",
    "gift": "gift (q+v, r=8, one pair per type)",
    "gmt_lora_0.2": "GMT on LoRA, keep 20%",
    "full": "full fine-tuning",
    "gmt_full_0.05": "GMT on full, keep 5%",
    "gmt_full_0.2": "GMT on full, keep 20%",
    "gmt_full_0.2_random": "GMT on full, random 20% mask (control)",
}
METHOD_COLUMNS = [  # (header, JSON key, format)
    ("trainable params", "trainable_params", "{:,}"), ("s/epoch", "s_per_epoch", "{:.1f}"),
    ("test acc", "test_accuracy", "{:.3f}"), ("test macro-F1", "test_macro_f1", "{:.3f}"),
    ("corrupted F1", "corrupted_f1", "{:.3f}"), ("round-1 F1", "round1_f1", "{:.3f}"),
    ("flagged precision", "flagged_precision", "{:.2f}"), ("recovered", "recovered", "{:.2f}"),
    ("G-BAIR s", "gbair_s", "{:.0f}"),
]


def methods_table(results: Path, *files: str) -> str:
    """The PET-methods table from ``bench_methods.py --json`` files: rows of the first file, in ``METHOD_LABELS``
    order; a value the first file lacks (None) is taken from the next file that has it (e.g. ``--gbair-full``)."""
    if not files:
        raise CheckError("the methods kind needs at least one results file, e.g. methods_seed0.json")
    tables = []
    for name in files:
        tables.append({row["method"]: row for row in _load(results / name)})
    rows = dict(tables[0])
    for extra in tables[1:]:
        for method, row in extra.items():
            if method in rows:
                rows[method] = {k: (v if v is not None else row.get(k)) for k, v in rows[method].items()}
    unknown = [m for m in rows if m not in METHOD_LABELS]
    lines = ["| method | " + " | ".join(h for h, _, _ in METHOD_COLUMNS) + " |",
             "|---|" + "---:|" * len(METHOD_COLUMNS)]
    for method in [m for m in METHOD_LABELS if m in rows] + unknown:
        row = rows[method]
        cells = [METHOD_LABELS.get(method, method)] + [
            fmt.format(row[key]) if row.get(key) is not None else "" for _, key, fmt in METHOD_COLUMNS]
        lines.append("|" + "|".join(f" {c} " if c else " " for c in cells) + "|")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- detection matrix
def detectors_table(results: Path, metric: str = "auprc") -> str:
    """Scorer × cell table of round-1 ``metric`` from ``bench_detectors.py`` (``results/detectors/*.json``):
    mean ± 95% half-width over seeds (3 decimals; one seed: the mean alone), the best mean of each cell in bold,
    rows in the order of their mean over the cells, best first."""
    from gbair_nb.report import detector_matrix, detector_results

    m = detector_matrix(detector_results(results / "detectors"), metric)
    cells = sorted(m["cell"].unique())
    order = m.groupby("scorer")["mean"].mean().sort_values(ascending=False).index
    counts = {c: int(m.loc[m["cell"] == c, "n"].max()) for c in cells}
    lines = [f"| {metric} | " + " | ".join(f"{c} (n={counts[c]})" for c in cells) + " |",
             "|---|" + "---:|" * len(cells)]
    for scorer in order:
        out = []
        for c in cells:
            row = m[(m["scorer"] == scorer) & (m["cell"] == c)]
            if row.empty:
                out.append("–")
                continue
            r = row.iloc[0]
            text = f"{r['mean']:.3f}" + (f" ± {r['half']:.3f}" if r["n"] > 1 else "")
            out.append(f"**{text}**" if r["best"] == scorer else text)
        lines.append(f"| {scorer} | " + " | ".join(out) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ loops of the default
def _mean_pm(values, digits: int) -> str:
    """Mean ± 95% half-width of the values that are not None ("–" for none; no ± for one value: one seed)."""
    mean, half, n = mean_ci([v for v in values if v is not None])
    if n == 0:
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if n > 1 else "")


def loops_table(results: Path, name: str) -> str:
    """The recovery loops of ``recover`` (its ``report.json``, one seed or ``--seeds``) saved as
    ``results/loops/NAME.json``: per scorer, mean ± 95% half-width over seeds (a value without ± is one seed) of the
    recovered fraction of test macro-F1, the kept round's test macro-F1, round-1 flagged precision, and the wrong
    labels at round 0 and at the kept round; and, per seed, why the loop stopped."""
    rep = _load(results / "loops" / f"{name}.json")
    reports = rep.get("per_seed") or [rep]
    cell = _mean_pm
    lines = [f"seeds {[r['seed'] for r in reports]}; clean test macro-F1 "
             f"{cell([r['clean']['test_macro_f1'] for r in reports], 3)}, corrupted (round 0) "
             f"{cell([r['corrupted']['test_macro_f1'] for r in reports], 3)}", "",
             "| scorer | recovered (F1) | kept test macro-F1 | round-1 precision | wrong labels: round 0 → kept |"
             " stopped because |", "|---|---|---|---|---|---|"]
    for scorer in reports[0]["scorers"]:
        res = [r["scorers"][scorer] for r in reports]
        kept = [kept_round(q) for q in res]
        lines.append("| " + " | ".join([
            scorer, cell([(q.get("recovered_fraction") or {}).get("test_macro_f1") for q in res], 2),
            cell([k["test_macro_f1"] for k in kept], 3),
            cell([q["rounds"][1]["flagged_precision"] if len(q["rounds"]) > 1 else None for q in res], 2),
            cell([q["rounds"][0]["wrong_labels_remaining"] for q in res], 1) + " → "
            + cell([k["wrong_labels_remaining"] for k in kept], 1),
            "; ".join(f"{q.get('stopped_because', '?')} (kept {q['final_round']})" for q in res)]) + " |")
    return "\n".join(lines)


def patience_table(results: Path, *names: str) -> str:
    """The saved loops ``results/loops/NAME.json`` (run with patience ≥ 2) replayed with patience 1 (no training:
    :func:`gbair_nb.loop.replayed_round`): per loops file and scorer, the kept round of each seed under both, and
    the kept round's test macro-F1 and wrong labels, mean ± 95% half-width over seeds, beside the last round the
    saved loop trained (what a rule that kept every applied batch would hand back). A seed where patience 1 keeps
    an earlier round stopped on a validation dip that a later round made up."""
    from gbair_nb.loop import replayed_round  # here, not at the top: it loads torch, which no other kind needs

    if not names:
        raise CheckError("patience: name at least one saved loops file (results/loops/NAME.json)")
    lines = ["| loops | scorer | seeds | rounds trained | kept round: patience 1 → saved | "
             "test macro-F1: patience 1 / saved / last round | wrong labels: patience 1 / saved / last round | "
             "stopped by a dip |", "|---|---|---|---|---|---|---|---|"]
    for name in names:
        rep = _load(results / "loops" / f"{name}.json")
        reports = rep.get("per_seed") or [rep]
        for scorer in reports[0]["scorers"]:
            res = [r["scorers"][scorer] for r in reports]
            saved = {q["options"]["patience"] for q in res}
            if saved == {1}:
                raise CheckError(f"patience: {name} ran with patience 1; there is nothing to replay")
            short, kept, last = [replayed_round(q, 1) for q in res], [kept_round(q) for q in res], \
                [q["rounds"][-1] for q in res]
            dips = sum(a["round"] < b["round"] for a, b in zip(short, kept))
            lines.append("| " + " | ".join([
                f"{name} (patience {', '.join(map(str, sorted(saved)))})", scorer,
                ", ".join(str(r["seed"]) for r in reports),
                ", ".join(str(len(q["rounds"]) - 1) for q in res),
                ", ".join(str(a["round"]) for a in short) + " → " + ", ".join(str(b["round"]) for b in kept),
                " / ".join(_mean_pm([r["test_macro_f1"] for r in rs], 3) for rs in (short, kept, last)),
                " / ".join(_mean_pm([r["wrong_labels_remaining"] for r in rs], 1) for rs in (short, kept, last)),
                f"{dips} of {len(res)}"]) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- auto: which scorer when
def _auto_choices(results: Path) -> dict:
    """(dataset, mode, seed) → what ``scorer="auto"`` picked there (``bench_detectors.py --auto``)."""
    return {(c["dataset"], c["mode"], c["seed"]): c for c in _load(results / "detectors" / "auto" / "choices.json")}


def auto_table(results: Path) -> str:
    """``bench_detectors.py --auto``: per cell, the one-way share of the estimated noise on each seed (min–max),
    what auto picked, and auto's round-1 average precision — the picked scorer's, seed by seed — beside the G-BAIR
    default's, the probe's and the best single scorer's (mean ± 95% half-width). The last column is issue 17's goal
    4a for auto: its mean inside the best single scorer's interval, or above it."""
    from gbair_nb.report import detector_matrix, detector_results

    rows = detector_results(results / "detectors")
    picks = _auto_choices(results)
    m = detector_matrix(rows, "auprc")
    lines = ["| cell | seeds | one-way share | auto picked | auto | gbair_balanced_unit | probe | best single scorer "
             "| auto within the best's interval |", "|---|---|---|---|---:|---:|---:|---:|---|"]
    for cell in sorted(m["cell"].unique()):
        dataset, mode = cell.split("/")
        seeds = sorted(rows.loc[(rows["dataset"] == dataset) & (rows["mode"] == mode), "seed"].unique())
        missing = [s for s in seeds if (dataset, mode, int(s)) not in picks]
        if missing:
            raise CheckError(f"auto: no choice saved for {cell} seed {missing[0]}; run benchmarks/bench_detectors.py "
                             "--auto")
        chosen = [picks[dataset, mode, int(s)] for s in seeds]
        cell_rows = rows[(rows["dataset"] == dataset) & (rows["mode"] == mode)]
        ap = [float(cell_rows.loc[(cell_rows["seed"] == s) & (cell_rows["scorer"] == c["scorer"]), "auprc"].iloc[0])
              for s, c in zip(seeds, chosen)]  # auto's AP on a seed is the AP of the scorer it picked there
        mean, half, _ = mean_ci(ap)
        cm = m[m["cell"] == cell].set_index("scorer")
        best = cm.loc[cm["best"].iloc[0]]

        def pm(mu, h):
            return f"{mu:.3f}" + (f" ± {h:.3f}" if h == h else "")

        shares = [c["one_way_share"] for c in chosen]
        names = sorted({c["scorer"] for c in chosen})
        within = mean >= best["mean"] - (best["half"] if best["half"] == best["half"] else 0.0)
        lines.append("| " + " | ".join([
            f"{dataset} {mode}", ", ".join(str(int(s)) for s in seeds), f"{min(shares):.2f}–{max(shares):.2f}",
            " / ".join(f"{n} ({sum(c['scorer'] == n for c in chosen)})" for n in names), pm(mean, half),
            pm(cm.loc["gbair_balanced_unit", "mean"], cm.loc["gbair_balanced_unit", "half"]),
            pm(cm.loc["probe", "mean"], cm.loc["probe", "half"]),
            f"{cm['best'].iloc[0]} {pm(best['mean'], best['half'])}", "yes" if within else "**no**"]) + " |")
    return "\n".join(lines)


def auto_loops_table(results: Path, *names: str) -> str:
    """The saved loops (``results/loops/NAME.json``) as auto would have run them: on each seed auto scores with the
    scorer it picked there (``detectors/auto/choices.json``; the loop decides once, on the labels it starts from,
    and keeps it), so its loop is that scorer's saved loop. Per file: the picks, the wrong labels at the kept round (per seed) of
    auto, the G-BAIR default and the probe, and the least precise batch auto's kept labels carry."""
    if not names:
        raise CheckError("auto-loops: name at least one saved loops file (results/loops/NAME.json)")
    picks = _auto_choices(results)
    lines = ["| loops | seeds | auto picked | wrong labels: round 0 → auto kept | G-BAIR default kept | probe kept | "
             "auto's least precise kept batch |", "|---|---|---|---|---|---|---|"]
    for name in names:
        rep = _load(results / "loops" / f"{name}.json")
        reports = rep.get("per_seed") or [rep]
        mode = rep["corruption"]["mode"]
        chosen = []
        for r in reports:
            key = (rep["dataset"], mode, r["seed"])
            if key not in picks:
                raise CheckError(f"auto-loops: no choice saved for {key}; run benchmarks/bench_detectors.py --auto")
            chosen.append(picks[key]["scorer"])

        def kept(scorers):
            return [kept_round(r["scorers"][s])["wrong_labels_remaining"] for r, s in zip(reports, scorers)]

        auto = [r["scorers"][s] for r, s in zip(reports, chosen)]
        batches = [q["rounds"][i]["flagged_precision"] for q in auto for i in range(1, q["final_round"] + 1)]
        lines.append("| " + " | ".join([
            name, ", ".join(str(r["seed"]) for r in reports),
            " / ".join(f"{n} ({chosen.count(n)})" for n in sorted(set(chosen))),
            f"{reports[0]['scorers'][chosen[0]]['rounds'][0]['wrong_labels_remaining']} → "
            + ", ".join(map(str, kept(chosen))) + f" ({_mean_pm(kept(chosen), 1)})",
            ", ".join(map(str, kept(["gbair_balanced_unit"] * len(reports)))),
            ", ".join(map(str, kept(["probe"] * len(reports)))),
            f"{min(batches):.2f}" if batches else "none kept"]) + " |")
    return "\n".join(lines)


def auto_rates_table(results: Path, datasets: str) -> str:
    """``bench_detectors.py --auto --auto-rates … --datasets D1,D2``: per dataset and corruption rate of its
    class-conditional scenario, the one-way share on each seed (3 decimals) and what auto picked."""
    rows = _load(results / "detectors" / "auto" / f"rates_{datasets}.json")
    lines = ["| dataset | of the source class mislabelled | wrong labels | one-way share per seed | auto picked |",
             "|---|---|---|---|---|"]
    for key in dict.fromkeys((r["dataset"], r["p"]) for r in rows):
        rs = [r for r in rows if (r["dataset"], r["p"]) == key]
        picks = [r["scorer"] for r in rs]
        lines.append(f"| {key[0]} | {key[1]:.0%} | {rs[0].get('n_corrupted', '–')} | "
                     + ", ".join(f"{r['one_way_share']:.3f}" for r in rs) + " | "
                     + " / ".join(f"{n} ({picks.count(n)})" for n in sorted(set(picks))) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- fixers compared
def fixers_table(results: Path, dataset: str = "sms_spam") -> str:
    """``benchmarks/bench_fixers.py --summary-only [--dataset D]``: per fixer, mean ± 95% half-width over seeds of the
    recovered fraction, the wrong labels at round 0 and at the kept round, rounds 1 and 2's flagged precision, and per
    seed. SMS's files are in ``fixers/``, another dataset's in ``fixers/<dataset>/``."""
    bench = _bench("bench_fixers")
    folder = bench.results_folder(results / "fixers", dataset)
    if not folder.is_dir():
        raise CheckError(f"fixers {dataset}: no folder {folder}; run benchmarks/bench_fixers.py --dataset {dataset}")
    return bench.summary(folder)


def budget_table(results: Path, *scorers: str) -> str:
    """``benchmarks/bench_detectors.py --summary-only --budget A,B``: each scorer's round-1 batch precision at
    k = f · n̂ (n̂: the trusted probe's estimate of how many labels are wrong), from the saved per-example scores."""
    if not scorers:
        raise CheckError("budget: name at least one scorer")
    bench = _bench("bench_detectors")
    rows = bench.budget(results / "detectors", list(scorers))
    if not len(rows):
        raise CheckError(f"no saved detector scores of {', '.join(scorers)} and the probe in {results / 'detectors'}")
    return bench.budget_table(rows)


def peers_table(results: Path, where: str = "peers", *extra: str) -> str:
    """``benchmarks/bench_peers.py --table-only``: one table per (scenario, method) of ``results/where`` (``peers``
    for the full size, ``peers/quick``), at heading level 4; with ``goals``, the issue's goals after them."""
    if set(extra) - {"goals"}:
        raise CheckError(f"peers {where} {' '.join(extra)}: the only option after the folder is 'goals'")
    bench = _bench("bench_peers")
    df = bench.frame(results / where)
    if not len(df):
        raise CheckError(f"no bench_peers results in {results / where}")
    return (bench.table(df, level=4) + ("\n" + bench.goals(df, level=4) if extra else "")).strip("\n")


# ------------------------------------------------------------------------------------ what a student reads
READING_WPM = 150  # words per minute for technical prose with formulas (a common planning figure; not measured here)


def _notebook_counts(path: Path) -> dict:
    """Markdown words, code cells, '## Exercise' and '## Predict before you run' headings of one notebook."""
    cells = json.loads(path.read_text())["cells"]
    md = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    heads = [text.splitlines()[0] for text in md if text.startswith("#")]
    return {"words": sum(len(text.split()) for text in md),
            "code": sum(c["cell_type"] == "code" for c in cells),
            "exercises": sum(re.match(r"#+ Exercise \d", h) is not None for h in heads),
            "predict": sum("Predict before you run" in h for h in heads)}


def session_counts(nb: Path) -> tuple[dict, dict | None]:
    """(the notebook's counts, its lab's counts or None when the session has no lab), see ``_notebook_counts``."""
    lab = ROOT / "notebooks" / "labs" / f"{nb.stem}_lab.ipynb"
    return _notebook_counts(nb), (_notebook_counts(lab) if lab.is_file() else None)


def reading_table(results: Path) -> str:
    """What each session asks a student to read and do, counted from the notebooks: the words of the notebook's and
    its lab's Markdown, the code cells, the lab's checked exercises and predict-before-you-run questions, and the
    reading time at ``READING_WPM`` words a minute (an assumption, not a measurement)."""
    lines = ["| notebook | words: notebook + lab | reading at 150 words/min | code cells: notebook + lab | "
             "lab exercises (checked) | predict before you run |", "|---|---|---|---|---|---|"]
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        a, lab = session_counts(nb)
        b = lab or {"words": 0, "code": 0}
        words = a["words"] + b["words"]
        lines.append(f"| {nb.stem} | {a['words']:,} + {b['words']:,} | {words / READING_WPM:.0f} min | "
                     f"{a['code']} + {b['code']} | {lab['exercises'] if lab else '–'} | "
                     f"{lab['predict'] if lab else '–'} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- rendered notebooks' times
def rendered_table(results: Path, mode: str = "full", timings: str = "docs/rendered/timings.json") -> str:
    """The measured run times of the rendered notebooks in one mode (``scripts/render_notebooks.py`` writes them;
    the path is relative to the repository): per notebook, the status, the wall time, the date, the torch threads and
    the load on the machine when the run ended (``–`` where the record predates those fields), and any ``--set``;
    a session notebook with no record in that mode is listed as not run."""
    if mode not in ("full", "quick"):
        raise CheckError(f"rendered: mode must be 'full' or 'quick', got {mode!r}")
    data = _load(ROOT / timings)
    lines = ["| notebook | status | wall time | date (UTC) | torch threads | load at the end | changed |",
             "|---|---|---|---|---|---|---|"]
    notebooks = {f.stem for f in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    for name in sorted(notebooks | set(data)):
        if mode not in data.get(name, {}):
            lines.append(f"| {name} | not run in {mode} mode | – | – | – | – | – |")
        else:
            r = data[name][mode]
            m, s = divmod(round(r["seconds"]), 60)
            wall = f"{m} min {s:02d} s" if m else f"{s} s"
            changed = ", ".join(f"`{k} = {v}`" for k, v in r.get("set", {}).items()) or "–"
            lines.append(f"| {name} | {r['status']} | {wall} | {r['date'][:16].replace('T', ' ')} | "
                         f"{r['machine'].get('threads', '–')} | {r['machine'].get('load', '–')} | {changed} |")
    return "\n".join(lines)


KINDS: dict[str, Callable[..., str]] = {
    "detectors": detectors_table,
    "auto": auto_table,
    "auto-loops": auto_loops_table,
    "auto-rates": auto_rates_table,
    "fixers": fixers_table,
    "budget": budget_table,
    "peers": peers_table,
    "rendered": rendered_table,
    "loops": loops_table,
    "patience": patience_table,
    "reading": reading_table,
    "recovery-table": recovery_table,
    "recovery-summary": recovery_summary,
    "methods": methods_table,
}


# ------------------------------------------------------------------------------------------------ the check
def blocks(text: str, where: str) -> list[tuple[int, int, str]]:
    """(first line, end line, spec) of every marked block: lines[first:end] is the generated text."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        m = OPEN.match(lines[i].strip())
        if m:
            try:
                end = next(j for j in range(i + 1, len(lines))
                           if lines[j].strip() == CLOSE or OPEN.match(lines[j].strip()))
            except StopIteration:
                raise CheckError(f"{where}:{i + 1}: '{lines[i].strip()}' has no closing '{CLOSE}'") from None
            if lines[end].strip() != CLOSE:
                raise CheckError(f"{where}:{i + 1}: '{lines[i].strip()}' is not closed before the next marker "
                                 f"(line {end + 1}); add '{CLOSE}' after its table")
            out.append((i + 1, end, m.group("spec").strip()))
            i = end
        i += 1
    return out


def generate(spec: str, results: Path, where: str) -> str:
    kind, *args = spec.split()
    if kind not in KINDS:
        raise CheckError(f"{where}: unknown results kind {kind!r}; use one of {', '.join(KINDS)}")
    return KINDS[kind](results, *args)


def check_file(path: Path, results: Path, *, write: bool) -> tuple[int, list[str]]:
    """(number of blocks, diffs) for one Markdown file; with ``write`` the file is rewritten when a block differs."""
    text = path.read_text()
    found = blocks(text, str(path))
    if not found:
        raise CheckError(f"{path} has no '<!-- results: … -->' block: mark its result tables (see --help)")
    lines = text.split("\n")
    diffs, new = [], list(lines)
    for first, end, spec in reversed(found):  # from the bottom, so earlier line numbers stay valid
        want = generate(spec, results, f"{path}:{first}").split("\n")
        have = lines[first:end]
        if have != want:
            diffs.append("\n".join(difflib.unified_diff(have, want, f"{path}:{first + 1} ({spec})",
                                                        f"from {results}", lineterm="")))
            new[first:end] = want
    if write and diffs:
        path.write_text("\n".join(new))
    return len(found), diffs[::-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path, help=f"Markdown files (default: {', '.join(DEFAULT_FILES)})")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--write", action="store_true", help="regenerate the marked tables in place")
    args = ap.parse_args(argv)
    files = args.files or [ROOT / f for f in DEFAULT_FILES]
    failed = False
    try:
        for path in files:
            if not path.exists():
                raise CheckError(f"{path} does not exist")
            n, diffs = check_file(path, args.results, write=args.write)
            for d in diffs:
                print(d)
            if diffs:
                print(f"{path}: {len(diffs)} of {n} result tables differ from {args.results}"
                      + (" (rewritten)" if args.write else ""))
            else:
                print(f"{path}: {n} result tables match {args.results}")
            failed |= bool(diffs) and not args.write
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

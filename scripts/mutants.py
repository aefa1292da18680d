"""Mutation check: plant one known bug at a time in a copy of gbair_nb and prove a unit test catches it.

Each mutation names a function (its qualname, found with ``ast``), a source fragment inside that function's body
and what to put instead: it is described by what it breaks, not by a line number, so it keeps applying while the
code around it moves. When the fragment is no longer in the function exactly once, the mutation refuses to apply
("mutation X no longer applies: update it") instead of silently mutating something else.

For every mutation the script copies ``gbair_nb/``, ``tests/`` and ``pytest.ini`` into a temporary directory,
applies the mutation there, and runs the tests meant to kill it (pytest node ids, tiny models, no notebooks). A
mutant is *killed* when a test fails, *survives* when they all pass. First, the same tests run once on the
unmutated copy: they must pass, or nothing the mutants show means anything (exit 2).

    python scripts/mutants.py                 # every mutant; prints `killed K of N`, exit 0 only if all are killed
    python scripts/mutants.py --list          # the mutations: name, where, intent, killing tests
    python scripts/mutants.py --check         # dry apply: every mutation still applies and its tests exist (1 s)
    python scripts/mutants.py --only gbair_sign_dropped,replay_ignores_undo --jobs 2

Tests are selected by node id (``tests/test_loop.py::test_name``), not with ``-k``: a renamed test is caught before
anything runs (the run starts with ``--check``; pytest itself would exit 4, counted as an error), where a ``-k``
that matches nothing selects zero tests — which tests/conftest.py turns into a failure, that is, a mutant counted as
killed by no test at all. A mutant counts as killed only when pytest exits 1 with a failed or erroring test in its
report.

Time: measured 142 s for the 20 mutants plus the baseline with ``--jobs 1`` on the 2-core machine, load 1.9-2.3
(another test process beside it); 194 s for 18 of them at load 3. Most of a mutant's seconds are Python starting
pytest and importing torch. docs/mutants.md lists each mutant, the test that kills it and its seconds.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("gbair_nb", "tests", "pytest.ini")  # what the targeted tests need, relative to the repository root
TIMEOUT_S = 600  # one mutant's tests; a mutant that hangs them counts as killed (a hang does not pass CI)
# PYTEST_DISABLE_PLUGIN_AUTOLOAD: the targeted tests use no plugin (xdist, nbval, benchmark, ...), and loading them
# all costs about 8 s per pytest process, half of a mutant's time
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GBAIR_QUICK": "1", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg",
       "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "240"}


class UsageError(Exception):
    """Bad input or a broken environment: reported as one line ``error: …``, exit 2."""


class MutationError(Exception):
    """A mutation that no longer applies to the source: the message says which and what to update."""


@dataclass(frozen=True)
class Mutation:
    """One planted bug: in ``function`` (a qualname such as ``"StoppingRule.decide"``) of ``file``, the fragment
    ``find`` (present exactly once in that function) becomes ``replace``; ``tests`` are the pytest node ids that
    must fail on it."""

    name: str
    intent: str
    file: str
    function: str
    find: str
    replace: str
    tests: tuple[str, ...]


T_GBAIR = "tests/test_gbair_score.py::test_gbair_score_equals_the_hand_computation"
T_PATIENCE = "tests/test_loop.py::test_patience_bound_is_reached_and_the_best_round_is_kept"
T_KEPT = "tests/test_loop.py::test_recovery_keeps_the_rule_s_round_and_its_labels"
T_FLAG = "tests/test_loop.py::test_flag_apply_record_on_planted_scores"
T_VARIANTS = "tests/test_scorers.py::test_variants_equal_their_definition_on_the_tracin_matrix"
T_LRS = "tests/test_influence.py::test_per_parameter_lrs_and_per_checkpoint"

MUTATIONS: tuple[Mutation, ...] = (
    Mutation("default_variant_not_unit", "the default G-BAIR variant sums raw gradients instead of unit-length ones",
             "gbair_nb/scorers.py", "_score_gbair_balanced_unit",
             "class_influence(ctx, unit=True)", "class_influence(ctx)", (T_VARIANTS,)),
    Mutation("default_variant_sign_flipped", "the default G-BAIR variant ranks proponents of each class, not opponents",
             "gbair_nb/scorers.py", "_score_gbair_balanced_unit",
             "_standardise(-row)", "_standardise(row)", (T_VARIANTS,)),
    Mutation("gbair_sign_dropped", "the G-BAIR score returns +Σ_M TracIn instead of −Σ_M TracIn",
             "gbair_nb/scorers.py", "_score_gbair_mistakes",
             "return -np.asarray(agg", "return np.asarray(agg", (T_GBAIR,)),
    Mutation("mistakes_under_predicted_labels",
             "the validation mistakes M are traced under the labels the model predicted, not their true labels",
             "gbair_nb/scorers.py", "_score_gbair_mistakes",
             "ctx.val.labels[mistakes]", "ctx.val_probs().argmax(1)[mistakes]", (T_GBAIR,)),
    Mutation("mistake_set_inverted", "M is the validation examples the model gets right, not the ones it gets wrong",
             "gbair_nb/scorers.py", "ScoreContext.val_mistakes",
             "!= self.val.labels", "== self.val.labels", (T_GBAIR,)),
    Mutation("kept_round_by_test_f1", "the kept round is the one with the best test macro-F1, not validation",
             "gbair_nb/loop.py", "StoppingRule.kept_round",
             "value = getattr(r, self.metric)", "value = r.test_macro_f1",
             ("tests/test_loop.py::test_kept_round_is_by_validation_never_by_test",)),
    Mutation("ties_keep_the_latest_round", "of rounds with equal validation F1, the latest is kept, not the earliest",
             "gbair_nb/loop.py", "StoppingRule.kept_round",
             "value > best_value + 1e-9", "value >= best_value - 1e-9",
             ("tests/test_loop.py::test_ties_keep_the_earliest_round",)),
    Mutation("patience_one_round_late", "the loop stops one round after `patience` rounds without gain",
             "gbair_nb/loop.py", "StoppingRule.decide",
             ">= self.patience", "> self.patience", (T_PATIENCE,)),
    Mutation("patience_one_round_early", "the loop stops one round before `patience` rounds without gain",
             "gbair_nb/loop.py", "StoppingRule.decide",
             ">= self.patience", ">= self.patience - 1", (T_PATIENCE,)),
    Mutation("patience_counter_doubled", "each round without gain counts twice toward the patience bound",
             "gbair_nb/loop.py", "StoppingRule.decide",
             "last.round - self.kept_round(records) >=", "2 * (last.round - self.kept_round(records)) >=",
             (T_PATIENCE,)),
    Mutation("recovered_from_last_round", "the recovered fraction is computed from the last round, not the kept one",
             "gbair_nb/loop.py", "Recovery.recovered",
             "getattr(self.final(), metric)", "getattr(self.rounds[-1], metric)", (T_KEPT,)),
    Mutation("rollback_keeps_last_labels", "the final labels are the last round's, not the kept round's",
             "gbair_nb/loop.py", "LoopState.recovery",
             "self.history[kept_round]", "self.history[-1]", (T_KEPT,)),
    Mutation("precision_over_all_examples",
             "flagged precision is the fraction of wrong labels in the whole training set, not among the flagged",
             "gbair_nb/loop.py", "LoopState.apply",
             "float(was_wrong.mean())", "float(self.scenario.corruption.is_corrupted.mean())", (T_FLAG,)),
    Mutation("flag_ignores_reviewed", "flag() can flag again an example a fixer already reviewed",
             "gbair_nb/loop.py", "LoopState.flag",
             "full[self.reviewed | ~self.kept]", "full[~self.kept]", (T_FLAG,)),
    Mutation("fixed_counts_any_relabel", "a wrong label relabeled to another wrong class counts as fixed",
             "gbair_nb/loop.py", "LoopState.apply",
             "int(self.labels[p] == truth[p] and wrong)", "int(wrong)",
             ("tests/test_loop.py::test_fixed_counts_only_labels_that_become_right",)),
    Mutation("tracin_lr_ignored", "TracIn weights every checkpoint and parameter by 1 instead of its learning rate",
             "gbair_nb/influence.py", "_setup",
             "lr_vector(slices, c.lrs)", "lr_vector(slices, 1.0)", (T_LRS,)),
    Mutation("tracin_lr_divided", "TracIn divides by the learning rate instead of multiplying",
             "gbair_nb/gradients.py", "lr_vector",
             "w[sl] = float(lrs[name])", "w[sl] = 1.0 / float(lrs[name])", (T_LRS,)),
    Mutation("tracin_lr_of_the_wrong_checkpoint", "each checkpoint's gradients are weighted by another's rates",
             "gbair_nb/influence.py", "_setup",
             "for c in ckpts]", "for c in ckpts[::-1]]", (T_LRS,)),
    Mutation("self_influence_lr_ignored", "self-influence sums squared gradients without the learning rates",
             "gbair_nb/influence.py", "self_influence",
             "sq.mul_(w.to(sq.dtype)).sum(1)", "sq.sum(1)",
             ("tests/test_influence.py::test_self_influence_is_the_diagonal",)),
    Mutation("prompt_slice_shifted", "the fast path reads the soft prompt's gradient one position too late",
             "gbair_nb/gradients.py", "_fast_batch",
             "g[:, :prompt[2]]", "g[:, 1:prompt[2] + 1]",
             ("tests/test_gradients.py::test_fast_path_equals_loop_prompt_tuning",)),
    Mutation("replay_ignores_undo", "replaying a relabel journal skips its undo entries",
             "gbair_nb/relabel.py", "RelabelSession._replay",
             "self._apply_undo()", "pass",
             ("tests/test_relabel.py::test_an_undo_is_replayed_when_the_session_is_reopened",
              "tests/test_relabel.py::test_replay_reproduces_exact_state_and_cursor")),
    Mutation("undo_forgets_removal", "undo restores the label but leaves a removed example removed",
             "gbair_nb/relabel.py", "RelabelSession._apply_undo",
             "self._labels[p], self._removed[p] = label, removed", "self._labels[p] = label",
             ("tests/test_relabel.py::test_undo_restores_previous_state_and_is_journaled",)),
)


# ------------------------------------------------------------------------------------------------ applying
def function_span(source: str, qualname: str, *, where: str = "") -> tuple[int, int]:
    """(first line, last line), 1-based and inclusive, of the function or method ``qualname`` in ``source``."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if name == qualname and not isinstance(child, ast.ClassDef):
                    found.append((child.lineno, child.end_lineno))
                visit(child, f"{name}.")

    visit(ast.parse(source), "")
    if len(found) != 1:
        raise MutationError(f"{where}function {qualname} is {'defined twice' if found else 'not found'}")
    return found[0]


def mutated_source(m: Mutation, source: str) -> str:
    """``source`` with ``m`` applied inside its function; :class:`MutationError` when it no longer applies."""
    try:
        first, last = function_span(source, m.function, where=f"{m.file}: ")
    except MutationError as e:
        raise MutationError(f"mutation {m.name} no longer applies: update it ({e})") from None
    lines = source.splitlines(keepends=True)
    body = "".join(lines[first - 1:last])
    count = body.count(m.find)
    if count != 1:
        raise MutationError(f"mutation {m.name} no longer applies: update it ({m.find!r} occurs {count} times in "
                            f"{m.function} of {m.file}, lines {first}-{last}; it must occur exactly once)")
    new = "".join(lines[:first - 1]) + body.replace(m.find, m.replace) + "".join(lines[last:])
    try:
        compile(new, m.file, "exec")
    except SyntaxError as e:
        raise MutationError(f"mutation {m.name} makes {m.file} invalid Python ({e.msg}, line {e.lineno}): "
                            "update it") from None
    return new


def missing_tests(m: Mutation, root: Path = ROOT) -> list[str]:
    """The node ids of ``m.tests`` whose file or test function does not exist (read with ``ast``)."""
    missing = []
    for node in m.tests:
        path, *names = node.split("::")
        file = root / path
        if not file.is_file():
            missing.append(node)
            continue
        defined = set()
        for stmt in ast.parse(file.read_text(encoding="utf-8")).body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defined.add(stmt.name)
            elif isinstance(stmt, ast.ClassDef):
                defined |= {f"{stmt.name}::{s.name}" for s in stmt.body if isinstance(s, ast.FunctionDef)}
        name = re.sub(r"\[.*\]$", "", "::".join(names))
        if names and name not in defined:
            missing.append(node)
    return missing


def copy_tree(dest: Path) -> None:
    """The files the tests need, from the repository into ``dest`` (no caches)."""
    for rel in COPIED:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / rel)


# ------------------------------------------------------------------------------------------------- running
def run_tests(copy: Path, tests: tuple[str, ...]) -> tuple[str, float, str]:
    """Run ``tests`` in ``copy``: ("passed" | "failed" | "error" | "timeout", seconds, the output's tail)."""
    env = {**os.environ, **ENV, "PYTHONPATH": str(copy)}
    report = copy / "report.xml"
    cmd = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, ""
    seconds = time.perf_counter() - t0
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
    counts = {"tests": 0, "failures": 0, "errors": 0}
    if report.exists():
        for suite in ET.parse(report).getroot().iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, 0))
    if done.returncode == 0 and counts["tests"] > 0:
        return "passed", seconds, tail
    if done.returncode == 1 and counts["failures"] + counts["errors"] > 0:
        return "failed", seconds, tail
    return "error", seconds, tail  # collection error, test not found (exit 4), nothing collected, ...


def check_imports_copy(copy: Path) -> None:
    """Make sure a test run in ``copy`` imports the copied package, not an installed one (:class:`UsageError`)."""
    env = {**os.environ, **ENV, "PYTHONPATH": str(copy)}
    out = subprocess.run([sys.executable, "-c", "import gbair_nb; print(gbair_nb.__file__)"], cwd=copy, env=env,
                         capture_output=True, text=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(copy.resolve()):
        raise UsageError(f"a test run in the copy imports gbair_nb from {out or '(nothing)'}, not from the copy "
                         f"{copy}; check PYTHONPATH and how gbair_nb is installed")


def run_mutant(m: Mutation, workdir: Path) -> tuple[str, float, str]:
    """Copy, mutate, test: ("killed" | "survived" | "error", seconds, detail)."""
    copy = workdir / m.name
    copy_tree(copy)
    path = copy / m.file
    try:
        path.write_text(mutated_source(m, path.read_text(encoding="utf-8")), encoding="utf-8")
    except MutationError as e:
        return "error", 0.0, str(e)
    outcome, seconds, tail = run_tests(copy, m.tests)
    shutil.rmtree(copy, ignore_errors=True)
    status = {"failed": "killed", "timeout": "killed", "passed": "survived"}.get(outcome, "error")
    if outcome == "failed":  # which test caught it, and how: pytest's short summary line (-ra in pytest.ini)
        detail = "\n".join(line[:200] for line in tail.splitlines() if line.startswith(("FAILED", "ERROR")))
    else:
        detail = "(timed out)" if outcome == "timeout" else tail if outcome == "error" else ""
    return status, seconds, detail


def select(only: str | None) -> list[Mutation]:
    if not only:
        return list(MUTATIONS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"--only names unknown mutation(s) {', '.join(unknown)}; "
                         f"see `python scripts/mutants.py --list`")
    return [known[n] for n in names]


def list_mutations(mutations: list[Mutation]) -> int:
    for m in mutations:
        print(f"{m.name}\n    {m.file} :: {m.function}\n    {m.intent}\n    {m.find!r} -> {m.replace!r}")
        for t in m.tests:
            print(f"    killed by {t}")
    return 0


def check(mutations: list[Mutation]) -> int:
    """Dry apply: each mutation applies to the current source and its tests exist; no test is run."""
    problems = []
    for m in mutations:
        try:
            mutated_source(m, (ROOT / m.file).read_text(encoding="utf-8"))
        except MutationError as e:
            problems.append(str(e))
        if not m.tests:
            problems.append(f"mutation {m.name} names no test that kills it")
        for node in missing_tests(m):
            problems.append(f"mutation {m.name}: test {node} does not exist (renamed?): update it")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if not problems:
        print(f"all {len(mutations)} mutations apply and name existing tests")
    return 1 if problems else 0


def run(mutations: list[Mutation], *, jobs: int = 1) -> int:
    """The baseline, then every mutant: 0 when all are killed, 1 otherwise, 2 when the baseline fails."""
    if check(mutations):
        return 1
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gbair-mutants-") as tmp:
        workdir = Path(tmp)
        base = workdir / "_unmutated"
        copy_tree(base)
        check_imports_copy(base)
        every = tuple(dict.fromkeys(t for m in mutations for t in m.tests))
        outcome, seconds, tail = run_tests(base, every)
        print(f"unmutated copy: {len(every)} targeted tests {outcome} ({seconds:.0f} s)", flush=True)
        if outcome != "passed":
            print(tail, file=sys.stderr)
            print("error: the targeted tests do not pass on the unmutated code; fix that first, mutants prove "
                  "nothing until they do (a test that needs a pytest plugin: see PYTEST_DISABLE_PLUGIN_AUTOLOAD in "
                  "ENV)", file=sys.stderr)
            return 2
        results: dict[str, tuple[str, float, str]] = {}
        width = max(len(m.name) for m in mutations)

        def one(m: Mutation) -> None:
            results[m.name] = status, secs, detail = run_mutant(m, workdir)
            print(f"[{len(results):>2}/{len(mutations)}] {m.name:<{width}}  {status:<8} {secs:5.1f} s", flush=True)
            if detail:
                print("    " + detail.replace("\n", "\n    "), flush=True)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, mutations))
    killed = [m.name for m in mutations if results[m.name][0] == "killed"]
    survived = [m.name for m in mutations if results[m.name][0] == "survived"]
    errors = [m.name for m in mutations if results[m.name][0] == "error"]
    print(f"killed {len(killed)} of {len(mutations)} ({time.perf_counter() - t_start:.0f} s)")
    if survived:
        print(f"survived: {', '.join(survived)}")
    if errors:
        print(f"errors (mutation or tests could not run): {', '.join(errors)}")
    return 0 if len(killed) == len(mutations) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="print the mutations and exit")
    ap.add_argument("--check", action="store_true", help="dry apply every mutation (no tests run); exit 1 if one "
                                                         "no longer applies or names a missing test")
    ap.add_argument("--only", metavar="NAME[,NAME]", help="run only these mutations")
    ap.add_argument("--jobs", type=int, choices=(1, 2), default=1, help="mutants tested at once (default 1)")
    args = ap.parse_args(argv)
    try:
        mutations = select(args.only)
        if args.list:
            return list_mutations(mutations)
        if args.check:
            return check(mutations)
        return run(mutations, jobs=args.jobs)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

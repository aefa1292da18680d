"""scripts/mutants.py cannot rot silently: every mutation still applies to the current source and names tests that
exist, and a mutation that no longer fits is refused with its name. (The mutant run itself takes minutes: it is
run by hand, `python scripts/mutants.py`, never by the suite.)"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "mutants.py"

spec = importlib.util.spec_from_file_location("mutants_script", SCRIPT)
mutants = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mutants  # dataclasses look their module up there
spec.loader.exec_module(mutants)

# the bugs issue 18 asks the script to plant, at least
REQUIRED = {"gbair_sign_dropped", "mistakes_under_predicted_labels", "kept_round_by_test_f1",
            "patience_one_round_late", "patience_one_round_early", "recovered_from_last_round", "tracin_lr_ignored",
            "tracin_lr_divided", "prompt_slice_shifted", "replay_ignores_undo", "precision_over_all_examples",
            "flag_ignores_reviewed"}


def script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_every_mutation_still_applies_and_names_existing_tests():
    listed = script("--list")
    assert listed.returncode == 0, listed.stderr
    names = [m.name for m in mutants.MUTATIONS]
    assert len(set(names)) == len(names) and REQUIRED <= set(names)
    for m in mutants.MUTATIONS:
        assert m.name in listed.stdout and m.tests
    checked = script("--check")
    assert checked.returncode == 0, checked.stderr
    assert f"all {len(names)} mutations apply and name existing tests" in checked.stdout


def test_a_mutation_changes_only_its_fragment_inside_its_function():
    m = next(m for m in mutants.MUTATIONS if m.name == "patience_one_round_late")
    source = (ROOT / m.file).read_text(encoding="utf-8")
    new = mutants.mutated_source(m, source)
    first, last = mutants.function_span(source, "StoppingRule.decide")
    old_lines, new_lines = source.splitlines(), new.splitlines()
    changed = [i + 1 for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    assert len(old_lines) == len(new_lines) and len(changed) == 1 and first <= changed[0] <= last
    assert m.replace in new_lines[changed[0] - 1]


@pytest.mark.parametrize("change, message", [
    (dict(find="no such fragment"), "occurs 0 times in StoppingRule.decide"),
    (dict(find="return"), "it must occur exactly once"),  # decide() has several returns
    (dict(find="float(was_wrong.mean())"), "occurs 0 times"),  # in loop.py, but in LoopState.apply, not here
    (dict(function="StoppingRule.gone"), "function StoppingRule.gone is not found"),
    (dict(replace=">= self.patience:::"), "makes gbair_nb/loop.py invalid Python"),
])
def test_a_mutation_that_no_longer_fits_is_refused_by_name(change, message):
    m = replace(next(m for m in mutants.MUTATIONS if m.name == "patience_one_round_late"), **change)
    with pytest.raises(mutants.MutationError, match="patience_one_round_late") as err:
        mutants.mutated_source(m, (ROOT / m.file).read_text(encoding="utf-8"))
    assert message in str(err.value) and ("update it" in str(err.value))


def test_check_reports_a_rotten_mutation_and_a_renamed_test(capsys):
    good = mutants.MUTATIONS[0]
    rotten = replace(good, name="rotten", find="this text is not in the function")
    renamed = replace(good, name="renamed", tests=("tests/test_loop.py::test_that_was_renamed",
                                                   "tests/test_loop.py::test_ties_keep_the_earliest_round"))
    assert mutants.check([good]) == 0
    assert mutants.check([rotten, renamed]) == 1
    err = capsys.readouterr().err.splitlines()
    with pytest.raises(mutants.MutationError) as rot:
        mutants.mutated_source(rotten, (ROOT / good.file).read_text(encoding="utf-8"))
    assert err == [f"error: {rot.value}",
                   "error: mutation renamed: test tests/test_loop.py::test_that_was_renamed does not exist "
                   "(renamed?): update it"]
    # parametrised ids are checked by their function
    assert mutants.missing_tests(replace(good, tests=(
        "tests/test_loop.py::test_patience_bound_is_reached_and_the_best_round_is_kept[1-expected0]",))) == []


def test_unknown_mutation_name_is_one_line():
    done = script("--only", "gbair_sign_dropped,no_such_mutant")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == ["error: --only names unknown mutation(s) no_such_mutant; see "
                                                "`python scripts/mutants.py --list`"]

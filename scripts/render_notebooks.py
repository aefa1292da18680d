"""Rendered copies of the notebooks: execute each one, stamp how it was run, write HTML and the measured run time.

    python scripts/render_notebooks.py                      # every notebooks/NN_*.ipynb, full mode (hours on 2 cores)
    python scripts/render_notebooks.py --quick notebooks/00_welcome.ipynb
    python scripts/render_notebooks.py --keep-executed      # also keep the executed .ipynb (for slides with figures)
    python scripts/render_notebooks.py --set ANNOTATE=True notebooks/03_relabel_by_hand.ipynb

Notebooks 03 and 09 wait for a person's clicks in full mode (Run-All stops before a round is applied); ``--set
ANNOTATE=True`` lets their simulated annotator answer instead. ``--set NAME=VALUE`` puts a cell ``NAME = VALUE``
right after the cell that first assigns ``NAME`` (VALUE must be a Python literal), and the banner says so.

For each notebook: run it top to bottom in a fresh kernel (working directory notebooks/, ``GBAIR_QUICK`` set to the
mode), put a banner cell first — mode, date, machine (cores, platform, Python, torch, device) and the measured wall
time — and write ``docs/rendered/<name>.html``. The times go to ``docs/rendered/timings.json``, one entry per notebook
and mode (a quick run never overwrites a full one), which the teacher's guide quotes. A notebook that fails is still
rendered, up to the failing cell, with the error in its banner and in the JSON; the script then exits 1.
The notebooks in the repository are never modified.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "rendered"
TIMINGS = "timings.json"


def machine() -> dict:
    """What the run time depends on: cores, the load on them (1-minute average, taken when the run ended), platform,
    Python, torch, its threads (``OMP_NUM_THREADS``, which the kernel inherits) and its device."""
    info = {"cores": os.cpu_count(), "platform": platform.platform(terse=True), "python": platform.python_version()}
    if hasattr(os, "getloadavg"):
        info["load"] = round(os.getloadavg()[0], 1)
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a requirement; the banner says so if it is missing
        info["torch"] = "not installed"
    return info


def parse_setting(text: str) -> tuple[str, object]:
    """``"NAME=VALUE"`` → (NAME, the literal VALUE); ValueError with what to write instead."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name.isidentifier():
        raise ValueError(f"--set {text!r}: write NAME=VALUE, e.g. --set ANNOTATE=True")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise ValueError(f"--set {text!r}: VALUE must be a Python literal (True, 8, 'text'), got {value!r}") from None


def override(nb, settings: dict):
    """A copy of ``nb`` with a cell ``NAME = VALUE`` after the first code cell that assigns each NAME.

    ValueError (naming the missing variables) if a NAME is never assigned at the top level of a code cell: the
    override would otherwise silently do nothing.
    """
    import copy

    import nbformat

    nb = copy.deepcopy(nb)
    missing = []
    for name, value in settings.items():
        pattern = re.compile(rf"^{re.escape(name)}\s*=(?!=)", re.MULTILINE)
        at = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and pattern.search(c.source)), None)
        if at is None:
            missing.append(name)
            continue
        cell = nbformat.v4.new_code_cell(f"{name} = {value!r}  # set by scripts/render_notebooks.py --set")
        cell.metadata = {"rendered": {"set": name}}
        nb.cells.insert(at + 1, cell)
    if missing:
        raise ValueError(f"--set: no code cell assigns {', '.join(missing)} at the top level; "
                         "check the name (it must appear as `NAME = ...` in the notebook)")
    return nb


def stamp(nb, *, mode: str, seconds: float, when: datetime, info: dict, error: str | None = None,
          settings: dict | None = None, source: str | None = None):
    """The notebook with a banner cell first saying how and when it ran (a copy; ``nb`` is not modified).
    ``source``, the notebook's path in the repository, makes the banner's command regenerate that notebook alone."""
    import copy

    import nbformat

    nb = copy.deepcopy(nb)
    status = f"**failed**: {error}" if error else "ran top to bottom"
    sets = "".join(f" --set {k}={v!r}" for k, v in (settings or {}).items())
    command = f"python scripts/render_notebooks.py{' --quick' if mode == 'quick' else ''}{sets}" + \
        (f" {source}" if source else "")
    load = "".join(f", {label} {info[key]}" for key, label in (("threads", "torch threads"), ("load", "load"))
                   if key in info)
    changed = ("  \n> Changed for this render: " + ", ".join(f"`{k} = {v!r}`" for k, v in settings.items())
               + " (a cell after the one that sets it).") if settings else ""
    text = (f"> **Rendered copy** · {mode} mode (`GBAIR_QUICK={'1' if mode == 'quick' else '0'}`) · "
            f"{when:%Y-%m-%d %H:%M} UTC · {status} in **{seconds:,.0f} s** of wall time on {info['cores']} cores{load} "
            f"({info['platform']}, Python {info['python']}, torch {info.get('torch', '?')}, "
            f"{info.get('device', 'cpu')}).{changed}  \n> Regenerate with `{command}`; the outputs below are that run's.")
    banner = nbformat.v4.new_markdown_cell(text)
    banner.metadata = {"rendered": {"mode": mode, "seconds": round(seconds, 1), "date": when.isoformat(),
                                    "machine": info, "error": error,
                                    "set": dict(settings or {})}}
    nb.cells.insert(0, banner)
    return nb


def to_html(nb) -> str:
    """Static HTML of an executed notebook (nbconvert's lab template; figures are embedded in the outputs)."""
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    return html


def execute(path: Path, *, quick: bool, timeout: int, settings: dict | None = None):
    """Run a notebook (with ``settings`` applied, see ``override``) in a fresh kernel; return (executed notebook,
    seconds, error or None)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    if settings:
        nb = override(nb, settings)
    # the kernel inherits the environment: the mode, and this checkout's gbair_nb first on the path
    env = {"GBAIR_QUICK": "1" if quick else "0",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    error = None
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
        lines = str(e).strip().splitlines()
        error = f"{type(e).__name__}: {lines[-1][:300] if lines else ''}"
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb, time.perf_counter() - t0, error


def render(path: Path, out: Path, *, quick: bool, timeout: int = 3600, keep_executed: bool = False,
           settings: dict | None = None) -> dict:
    """Execute, stamp and write one notebook's HTML; record its time in ``out/timings.json``; return the record."""
    import nbformat

    mode = "quick" if quick else "full"
    when = datetime.now(timezone.utc)
    nb, seconds, error = execute(path, quick=quick, timeout=timeout, settings=settings)
    info = machine()
    source = f"notebooks/{path.name}" if path.parent.name == "notebooks" else None
    stamped = stamp(nb, mode=mode, seconds=seconds, when=when, info=info, error=error, settings=settings,
                    source=source)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{path.stem}.html").write_text(to_html(stamped), encoding="utf-8")
    if keep_executed:
        nbformat.write(stamped, out / f"{path.stem}.{mode}.ipynb")
    record = {"seconds": round(seconds, 1), "date": when.isoformat(timespec="seconds"), "machine": info,
              "status": "ok" if error is None else f"error: {error}"}
    if settings:
        record["set"] = {k: repr(v) for k, v in settings.items()}
    timings_path = out / TIMINGS
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    timings.setdefault(path.stem, {})[mode] = record
    tmp = timings_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(timings, indent=2, sort_keys=True) + "\n")
    tmp.replace(timings_path)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/NN_*.ipynb")
    parser.add_argument("--quick", action="store_true", help="quick mode (GBAIR_QUICK=1) instead of full mode")
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default docs/rendered)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run (default 3600)")
    parser.add_argument("--keep-executed", action="store_true", help="also write the executed, stamped .ipynb")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a cell NAME = VALUE after the cell that first assigns NAME (e.g. ANNOTATE=True)")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    bad = [str(p) for p in notebooks if not p.is_file() or p.suffix != ".ipynb"]
    if bad:
        print(f"error: not a notebook file: {', '.join(bad)}; pass .ipynb paths (or none for all)", file=sys.stderr)
        return 2
    if args.timeout < 1:
        print(f"error: --timeout must be at least 1 second, got {args.timeout}", file=sys.stderr)
        return 2
    try:
        settings = dict(parse_setting(s) for s in args.set)
        if settings:  # every notebook must assign every NAME: checked before anything runs
            import nbformat

            for nb in notebooks:
                override(nbformat.read(nb, as_version=4), settings)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = 0
    for nb in notebooks:
        record = render(nb.resolve(), args.out, quick=args.quick, timeout=args.timeout,
                        keep_executed=args.keep_executed, settings=settings)
        failed += record["status"] != "ok"
        print(f"{nb.name}: {record['status']} in {record['seconds']:,.1f} s → {args.out / (nb.stem + '.html')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Build every lab notebook and its solutions notebook from ONE source file, so the two can never drift apart.

    python scripts/build_labs.py            # write notebooks/labs/NN_topic_lab.ipynb and
                                            #       notebooks/solutions/NN_topic_solutions.ipynb
    python scripts/build_labs.py --check    # exit 1 (and name them) if a committed notebook differs from its source

The sources are ``notebooks/labs/src/NN_topic.py``, Python files in the "percent" format (as jupytext reads them):

    # %% [markdown] slide          a markdown cell (its lines lose their leading "# "), opening a slide
    # %% check                     a code cell that calls a checker (tagged "check")
    # %% solution                  a cell that appears in the solutions notebook only (also: lab)

Header words after ``# %%``: ``[markdown]``; a slide type (slide, subslide, fragment, skip, notes, "-"); ``check``;
``solution`` or ``lab``; ``parameters`` (tag). Without a slide type a check cell is a ``fragment`` and any other cell
gets the type ``build_slides.auto_slide_type`` picks. Inside a code cell, the lines between ``# BEGIN SOLUTION`` and
``# END SOLUTION`` go to the solutions only; the lab gets, in their place, the lines of that block written as
``# lab: <code>`` (the blank, e.g. ``# lab: score = None  # YOUR CODE HERE``). In the solutions, a check call
``check_…(…);`` becomes ``assert check_…(…)``, so running the solutions under nbval fails if a solution stops
passing its own check.
Markdown cells may say ``{{kind}}`` ("lab" or "solutions") and ``{{companion}}`` (a link to the other notebook).
Generated notebooks carry no outputs and stable cell ids: building twice gives the same bytes.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_slides import SLIDE_TYPES, auto_slide_type  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "notebooks" / "labs" / "src"
LABS = REPO / "notebooks" / "labs"
SOLUTIONS = REPO / "notebooks" / "solutions"
HEADER = re.compile(r"^# %%(?P<words>.*)$")
WORDS = {"[markdown]", "check", "solution", "lab", "parameters", *SLIDE_TYPES}
KINDS = ("lab", "solutions")


class SpecError(ValueError):
    """A lab source is malformed: the message names the file, the line and what is expected."""


def parse(path: Path) -> list[dict]:
    """The cells of a source file: dicts with ``type``, ``words`` (header words), ``lines`` and ``line`` (1-based)."""
    cells: list[dict] = []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        m = HEADER.match(line)
        if m:
            words = m.group("words").split()
            unknown = [w for w in words if w not in WORDS]
            if unknown:
                raise SpecError(f"{path.name}:{no}: unknown word(s) {unknown} after '# %%'; use {sorted(WORDS)}")
            cells.append({"type": "markdown" if "[markdown]" in words else "code", "words": words, "lines": [],
                          "line": no})
        elif cells:
            cells[-1]["lines"].append(line)
        elif line.strip() and not line.startswith("#"):
            raise SpecError(f"{path.name}:{no}: code before the first '# %%' cell header")
    if not cells:
        raise SpecError(f"{path.name}: no cells (a cell starts with a '# %%' line)")
    return cells


def _markdown(lines: list[str], path: Path, no: int) -> str:
    out = []
    for i, line in enumerate(lines):
        if line == "#":
            out.append("")
        elif line.startswith("# "):
            out.append(line[2:])
        elif line.strip():
            raise SpecError(f"{path.name}:{no + 1 + i}: a markdown line must start with '# ' (or be '#')")
        else:
            out.append("")
    return "\n".join(out).strip("\n")


def _code(lines: list[str], kind: str, path: Path, no: int) -> str:
    out, inside = [], False
    for i, line in enumerate(lines):
        tag = line.strip()
        if tag == "# BEGIN SOLUTION":
            if inside:
                raise SpecError(f"{path.name}:{no + 1 + i}: BEGIN SOLUTION inside another solution block")
            inside = True
            continue
        if tag == "# END SOLUTION":
            if not inside:
                raise SpecError(f"{path.name}:{no + 1 + i}: END SOLUTION without BEGIN SOLUTION")
            inside = False
            continue
        if inside:
            indent = line[:len(line) - len(line.lstrip())]
            if tag.startswith("# lab:"):
                if kind == "lab":
                    out.append(indent + tag[len("# lab:"):].strip())
            elif kind == "solutions":
                out.append(line)
        else:
            out.append(line)
    if inside:
        raise SpecError(f"{path.name}: a solution block opened in the cell at line {no} is never closed")
    return "\n".join(out).strip("\n")


CHECK_CALL = re.compile(r"^(check_\w+\(.*\));[ \t]*$", re.S)


def _assert_checks(source: str) -> str:
    """``check_x(…);`` statements (possibly over several lines) → ``assert check_x(…)`` in the solutions."""
    out, buf = [], []
    for line in source.split("\n"):
        if buf or line.startswith("check_"):
            buf.append(line)
            m = CHECK_CALL.match("\n".join(buf))
            if m:
                out.append("assert " + m.group(1))
                buf = []
            continue
        out.append(line)
    if buf:
        out.extend(buf)
    return "\n".join(out)


def build(path: Path, kind: str) -> nbformat.NotebookNode:
    """The lab (``kind="lab"``) or solutions notebook of one source file."""
    stem = path.stem
    companion = (f"Solutions, once you have tried: [`../solutions/{stem}_solutions.ipynb`]"
                 f"(../solutions/{stem}_solutions.ipynb)" if kind == "lab" else
                 f"This is the **solutions** notebook; the lab with the blanks is "
                 f"[`../labs/{stem}_lab.ipynb`](../labs/{stem}_lab.ipynb)")
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    checks = 0
    for cell in parse(path):
        words = cell["words"]
        if ("solution" in words and kind == "lab") or ("lab" in words and kind == "solutions"):
            continue
        if cell["type"] == "markdown":
            text = _markdown(cell["lines"], path, cell["line"])
            text = text.replace("{{kind}}", kind).replace("{{companion}}", companion)
            new = nbformat.v4.new_markdown_cell(text)
        else:
            text = _code(cell["lines"], kind, path, cell["line"])
            if "check" in words:
                checks += 1
                if kind == "solutions":
                    text = _assert_checks(text)
            new = nbformat.v4.new_code_cell(text)
        slide = next((w for w in words if w in SLIDE_TYPES), None) or \
            ("fragment" if "check" in words else auto_slide_type(new.cell_type, new.source))
        new.metadata = {"slideshow": {"slide_type": slide}}
        tags = [w for w in ("check", "parameters") if w in words]
        if tags:
            new.metadata["tags"] = tags
        new.id = f"{stem.replace('_', '-')}-{len(nb.cells):02d}"
        nb.cells.append(new)
    if checks < 2:
        raise SpecError(f"{path.name}: a lab needs at least two check cells (found {checks})")
    nbformat.validate(nb)
    return nb


def targets(path: Path) -> dict[Path, str]:
    """Output path → notebook text for one source file."""
    return {LABS / f"{path.stem}_lab.ipynb": nbformat.writes(build(path, "lab")) + "\n",
            SOLUTIONS / f"{path.stem}_solutions.ipynb": nbformat.writes(build(path, "solutions")) + "\n"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare the committed notebooks with the sources")
    args = parser.parse_args(argv)
    sources = sorted(SRC.glob("[0-9][0-9]_*.py"))
    if not sources:
        print(f"error: no lab sources in {SRC.relative_to(REPO)}; expected files like 02_tracin.py", file=sys.stderr)
        return 2
    try:
        wanted = {p: text for src in sources for p, text in targets(src).items()}
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    generated = set(LABS.glob("*_lab.ipynb")) | set(SOLUTIONS.glob("*_solutions.ipynb"))
    orphans = sorted(generated - set(wanted))
    if args.check:
        stale = [p for p, text in wanted.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
        for p in stale:
            print(f"stale: {p.relative_to(REPO)} differs from its source; run python scripts/build_labs.py")
        for p in orphans:
            print(f"orphan: {p.relative_to(REPO)} has no source in {SRC.relative_to(REPO)}")
        if stale or orphans:
            return 1
        print(f"{len(wanted)} notebooks up to date with {len(sources)} sources")
        return 0
    for p, text in wanted.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists() or p.read_text(encoding="utf-8") != text:
            p.write_text(text, encoding="utf-8")
            print(f"wrote {p.relative_to(REPO)}")
    for p in orphans:
        print(f"note: {p.relative_to(REPO)} has no source; delete it if its lab was removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

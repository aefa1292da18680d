"""Slides (reveal.js) from the notebooks, without executing them and without touching the notebooks themselves.

    python scripts/build_slides.py                       # every notebook in notebooks/ → docs/slides/NN_*.slides.html
    python scripts/build_slides.py notebooks/02_tracin.ipynb notebooks/labs/02_tracin_lab.ipynb
    python scripts/build_slides.py --offline             # decks that work with no network (see below)

A cell that already has slide metadata (``"slideshow": {"slide_type": …}``, as the lab and solutions notebooks do)
keeps it. Every other cell gets a slide type on a temporary copy, by :func:`auto_slide_type`: a markdown cell that
starts with ``# `` or ``## `` opens a slide, ``### `` a sub-slide; a code cell of imports, setup or asserts only is
skipped; a long code cell (more than 15 lines) gets a sub-slide of its own; everything else continues the current
slide. The notebook files are never modified. Outputs are shown as they are stored (in git: none) — to project
figures, build from an executed copy (``scripts/render_notebooks.py --keep-executed`` writes them).

reveal.js itself is not in the deck. By default the deck loads it, with require.js and jQuery, from public CDNs
(nbconvert's defaults: reveal.js 4.0.2 from unpkg), so it needs a network connection when projected.
``--offline`` instead points the deck at ``docs/slides/vendor/`` (reveal.js 4.0.2, require.js 2.1.10, jQuery 2.1.4),
downloading them once with ``npm pack`` from the npm registry if they are not there; copy ``vendor/`` along with the
decks and they work with no network at all. (MathJax is not needed: the notebooks write formulas in Unicode; a
three-line stand-in keeps reveal.js's slide-change hook quiet.) Generated decks and ``vendor/`` are not committed.
"""
from __future__ import annotations

import argparse
import ast
import copy
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "slides"
VENDOR = "vendor"
SLIDE_TYPES = ("slide", "subslide", "fragment", "skip", "notes", "-")
LONG_CELL = 15  # lines: a code cell longer than this gets a sub-slide of its own
# npm package → (files to keep, relative to the package root)
VENDOR_FILES = {
    "reveal.js@4.0.2": ["dist/reveal.js", "dist/reveal.css", "dist/theme/simple.css", "plugin/notes/notes.js"],
    "requirejs@2.1.10": ["require.js"],
    "jquery@2.1.4": ["dist/jquery.min.js"],
}
MATHJAX_STANDIN = "window.MathJax = {Hub: {getAllJax: function () { return []; }, Rerender: function () {}}};\n"
SETUP_CALLS = {"setup", "quick_mode", "print", "display"}


def _is_setup(statement) -> bool:
    """An import, an assert, or a call (or assignment from a call) of setup/quick_mode/print/display."""
    if isinstance(statement, (ast.Import, ast.ImportFrom, ast.Assert)):
        return True
    value = statement.value if isinstance(statement, (ast.Expr, ast.Assign)) else None
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in SETUP_CALLS


def auto_slide_type(cell_type: str, source: str) -> str:
    """The slide type :mod:`build_slides` gives a cell without one: see the module docstring."""
    text = source.strip()
    if cell_type == "markdown":
        if text.startswith(("# ", "## ")):
            return "slide"
        return "subslide" if text.startswith("### ") else "-"
    if not text:
        return "skip"
    try:
        body = ast.parse(text).body
    except SyntaxError:  # IPython syntax (magics, `!`): show it
        body = None
    if body is not None and all(_is_setup(s) for s in body):
        return "skip"
    return "subslide" if len(text.splitlines()) > LONG_CELL else "-"


def with_slides(nb):
    """A copy of a notebook in which every cell has ``metadata.slideshow.slide_type`` (existing ones kept)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        show = cell.metadata.setdefault("slideshow", {})
        if show.get("slide_type") not in SLIDE_TYPES:
            show["slide_type"] = auto_slide_type(cell.cell_type, cell.source)
    return nb


def fetch_vendor(vendor: Path) -> None:
    """Download reveal.js, require.js and jQuery with ``npm pack`` into ``vendor`` (once)."""
    if (vendor / "reveal.js" / "dist" / "reveal.js").exists():
        return
    if shutil.which("npm") is None:
        raise SystemExit("error: --offline needs npm to download reveal.js once (apt-get install npm), "
                         f"or a copy of reveal.js 4.x in {vendor}/reveal.js")
    with tempfile.TemporaryDirectory() as tmp:
        for spec, files in VENDOR_FILES.items():
            done = subprocess.run(["npm", "pack", spec, "--silent"], cwd=tmp, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"error: npm pack {spec} failed: {done.stderr.strip()[:300]}")
            name = spec.split("@")[0]
            with tarfile.open(Path(tmp) / done.stdout.strip().splitlines()[-1]) as tar:
                for rel in files:
                    data = tar.extractfile(f"package/{rel}").read()
                    target = vendor / name / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
    (vendor / "mathjax-standin.js").write_text(MATHJAX_STANDIN)


def exporter(*, offline: bool):
    """nbconvert's SlidesExporter (reveal template), pointed at the CDNs or at ``vendor/``."""
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    c = Config()
    if offline:
        c.SlidesExporter.reveal_url_prefix = f"{VENDOR}/reveal.js"
        c.SlidesExporter.require_js_url = f"{VENDOR}/requirejs/require.js"
        c.SlidesExporter.jquery_url = f"{VENDOR}/jquery/dist/jquery.min.js"
        c.SlidesExporter.mathjax_url = f"{VENDOR}/mathjax-standin.js"
        c.SlidesExporter.font_awesome_url = ""
    c.SlidesExporter.reveal_scroll = True  # long cells scroll instead of running off the slide
    return SlidesExporter(config=c)


def build_deck(notebook: Path, out_dir: Path, *, offline: bool = False) -> Path:
    """Write ``out_dir/<notebook stem>.slides.html`` and return its path (no execution, no network)."""
    import nbformat

    nb = with_slides(nbformat.read(notebook, as_version=4))
    html, _ = exporter(offline=offline).from_notebook_node(nb, resources={"metadata": {"name": notebook.stem}})
    if offline:  # nbconvert always imports mermaid from a CDN as an ES module; the notebooks draw no diagrams
        html = re.sub(r'<script type="module">\s*import mermaid.*?</script>', "", html, flags=re.S)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{notebook.stem}.slides.html"
    target.write_text(html, encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to convert (default: every notebooks/NN_*.ipynb)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the decks (default docs/slides)")
    parser.add_argument("--offline", action="store_true",
                        help="reference reveal.js in OUT/vendor (fetched once with npm) instead of CDNs")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in notebooks if not p.is_file() or p.suffix != ".ipynb"]
    if missing:
        print(f"error: not a notebook file: {', '.join(missing)}; pass .ipynb paths (or none for all)",
              file=sys.stderr)
        return 2
    if args.offline:
        fetch_vendor(args.out / VENDOR)
    for nb in notebooks:
        print(f"wrote {build_deck(nb, args.out, offline=args.offline)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

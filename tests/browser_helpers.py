"""Start JupyterLab and a headless Chromium for end-to-end tests, and stop both whatever happens.

Used by ``tests/test_browser.py``. Nothing is downloaded: the browser is the system's ``chromium`` (Debian package),
driven by Playwright for Python (``pip install playwright``; never ``playwright install``).

- :func:`find_browser` says which browser to use, or why none can be used (the test is then skipped with that reason).
- :func:`jupyter_lab` runs ``jupyter lab`` on 127.0.0.1 with a random free port, a random token, a temporary root and
  its own config/workspace directories, in its own process group; on exit the whole group is terminated (killed if
  it does not stop in a few seconds).
- :func:`chromium_page` launches Chromium with the flags a closed network needs and closes it on exit.
- :class:`LabPage` knows the few JupyterLab things a test needs: open a notebook, run all cells, wait for output.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def find_browser() -> tuple[str | None, str]:
    """(path of a usable chromium, "") or (None, the reason the browser test cannot run here)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None, "Playwright for Python is not installed (pip install playwright; no browser download needed)"
    env = os.environ.get("GBAIR_CHROMIUM")
    for path in ([env] if env else []) + list(CHROMIUM_CANDIDATES) + [shutil.which("chromium") or ""]:
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path, ""
    return None, ("no chromium binary found (looked at $GBAIR_CHROMIUM, " + ", ".join(CHROMIUM_CANDIDATES)
                  + "); install it with: apt-get update && apt-get install -y chromium")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, *, grace: float = 8.0) -> None:
    """SIGTERM the process group ``proc`` leads (it was started with ``start_new_session=True``), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):  # kernels and anything else left in the group
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@dataclass
class Lab:
    url: str  # http://127.0.0.1:PORT
    token: str
    root: Path
    log: Path
    proc: subprocess.Popen

    def lab_url(self, path: str = "") -> str:
        return f"{self.url}/lab/tree/{path}?token={self.token}"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@contextlib.contextmanager
def jupyter_lab(root: Path, *, env: dict[str, str] | None = None, timeout: float = 60.0) -> Iterator[Lab]:
    """JupyterLab serving ``root`` on 127.0.0.1:<random port> with a random token; stopped on exit."""
    root = Path(root)
    port, token = free_port(), secrets.token_hex(16)
    state = root.parent / f".lab-state-{port}"
    for d in ("config", "runtime", "workspaces", "settings"):
        (state / d).mkdir(parents=True, exist_ok=True)
    # no "Would you like to get notified about official Jupyter news?" toast over the widgets
    notify = state / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notify.parent.mkdir(parents=True, exist_ok=True)
    notify.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    full_env = {**os.environ, **(env or {}), "JUPYTER_CONFIG_DIR": str(state / "config"),
                "JUPYTER_RUNTIME_DIR": str(state / "runtime")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
           f"--LabApp.workspaces_dir={state / 'workspaces'}", f"--LabApp.user_settings_dir={state / 'settings'}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.expose_app_in_browser=True"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    log = state / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    lab = Lab(f"http://127.0.0.1:{port}", token, root, log, proc)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{lab.log_tail()}")
            try:
                with urllib.request.urlopen(f"{lab.url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"jupyter lab did not answer within {timeout:.0f} s:\n{lab.log_tail()}")
            time.sleep(0.3)
        yield lab
    finally:
        stop_group(proc)


@contextlib.contextmanager
def chromium_page(executable: str, *, width: int = 1400, height: int = 1000) -> Iterator["object"]:
    """A Playwright page in the system Chromium (headless, no network extras); browser closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            page = context.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            with contextlib.suppress(Exception):
                browser.close()


class LabPage:
    """The JupyterLab actions a test needs, on a Playwright page."""

    def __init__(self, page, lab: Lab) -> None:
        self.page, self.lab = page, lab

    def open_notebook(self, path: str, *, timeout: float = 90.0) -> None:
        """Open ``path`` (relative to the root) and wait until its kernel is idle."""
        self.page.goto(self.lab.lab_url(path), wait_until="domcontentloaded")
        self.page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout * 1000)
        self.page.wait_for_function("() => !!window.jupyterapp", timeout=timeout * 1000)
        self.wait_idle(timeout=timeout)

    def kernel_status(self) -> str:
        return self.page.evaluate("""() => {
            const w = window.jupyterapp.shell.currentWidget;
            const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
            return k ? k.status : 'none';
        }""")

    def wait_idle(self, *, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while self.kernel_status() != "idle":
            if time.monotonic() > deadline:
                raise TimeoutError(f"kernel not idle after {timeout:.0f} s (status {self.kernel_status()!r})")
            self.page.wait_for_timeout(250)

    def command(self, name: str, args: dict | None = None) -> None:
        self.page.evaluate("([n, a]) => window.jupyterapp.commands.execute(n, a)", [name, args or {}])

    def run_all(self, *, sentinel: str, timeout: float = 150.0) -> None:
        """Run all cells (the command behind Run ▸ Run All Cells; the menu's markup differs between JupyterLab
        releases) and wait for ``sentinel`` in an output; raise on an error output."""
        self.command("notebook:run-all-cells")
        deadline = time.monotonic() + timeout
        while True:
            if self.page.locator(".jp-OutputArea-output", has_text=sentinel).count():
                return
            errors = self.page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                       has_text="Traceback")
            if errors.count() or self.page.locator(".jp-OutputArea-output", has_text="Traceback (most").count():
                raise AssertionError("a cell failed in JupyterLab:\n" + self.outputs_text()[-4000:])
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {sentinel!r} after {timeout:.0f} s; outputs so far:\n"
                                   + self.outputs_text()[-4000:])
            self.page.wait_for_timeout(500)

    def outputs_text(self) -> str:
        return "\n---\n".join(self.page.locator(".jp-OutputArea-output").all_inner_texts())

    def output_with(self, inner):
        """The last cell output area that contains ``inner`` (a Locator, or a text)."""
        key = "has_text" if isinstance(inner, str) else "has"
        return self.page.locator(".jp-OutputArea-output", **{key: inner}).last

"""A real browser: JupyterLab on loopback, a chapter opened in headless Chromium, its cells
run, and a screenshot in which a circuitsvis attention view has rendered (offline).

Skips, saying why, where Debian's Chromium is not installed (`make test` installs it as root).
The screenshot is kept in ``$COURSE_ARTIFACTS`` (default: pytest's temporary folder).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from utils import notebooks, paths

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                                "(apt-get install chromium; `make test` does)"),
]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
VIEW = ".jp-OutputArea-output [id^='circuits-vis']"


def chapter_with_attention_view() -> Path:
    """The first solution notebook that shows a circuitsvis view (cells run in order)."""
    for path in notebooks.chapter_notebooks(paths.SOLUTIONS_DIR):
        if "attention_views." in path.read_text():
            return path
    raise AssertionError("no chapter shows a circuitsvis attention view")


def first_cells_until_view(chapter: Path, target: Path) -> None:
    """Copy the chapter's cells up to and including its first attention view."""
    nb = notebooks.read_notebook(chapter)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "attention_views." in cell.source:
            nb.cells = nb.cells[: index + 1]
            break
    notebooks.write_notebook(nb, target)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab serving a copy of one chapter, on loopback, with a token."""
    chapter = chapter_with_attention_view()
    first_cells_until_view(chapter, tmp_path / chapter.name)
    port, token = _free_port(), "course-browser-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / ".jupyter"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / ".runtime")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}", f"--notebook-dir={tmp_path}",
         "--ServerApp.allow_root=True", "--LabApp.expose_app_in_browser=True"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start within 90 s")
    yield f"{base}/lab/tree/{chapter.name}?token={token}", chapter
    server.terminate()
    server.wait(timeout=20)


# The open notebook, read through JupyterLab's own model (window.jupyterapp): its kernel's
# status, how many code cells have run, and any errors they raised.
NOTEBOOK_STATE = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.sessionContext || !panel.content || !panel.content.model) return null;
  const state = {kernel: panel.sessionContext.kernelDisplayStatus, ran: 0, cells: 0, errors: []};
  for (const cell of panel.content.model.cells) {
    if (cell.type !== 'code') continue;
    state.cells += 1;
    if (cell.executionCount) state.ran += 1;
    for (let i = 0; i < cell.outputs.length; i++) {
      const out = cell.outputs.get(i).toJSON();
      if (out.output_type === 'error') state.errors.push(out.ename + ': ' + out.evalue);
    }
  }
  return state;
}"""


def _wait_for_view(page, timeout_s: float) -> dict:
    """Poll until an attention view is visible; fail at once, saying why, if a cell raised."""
    deadline = time.monotonic() + timeout_s
    state: dict = {}
    while time.monotonic() < deadline:
        state = page.evaluate(NOTEBOOK_STATE) or {}
        if state.get("errors"):
            raise AssertionError(f"a cell raised in JupyterLab: {state}")
        if page.locator(VIEW).count() and page.locator(VIEW).first.is_visible():
            return state
        time.sleep(2)
    raise AssertionError(f"no attention view after {timeout_s:.0f} s; notebook state: {state}")


def test_chapter_renders_attention_view_in_chromium(jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright

    url, chapter = jupyterlab
    artifacts = Path(os.environ.get("COURSE_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / f"browser-{chapter.stem}.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(url)
            page.wait_for_selector(".jp-Notebook", timeout=90_000)
            # Run only once the notebook's kernel has started and is idle (the toolbar's
            # indicator can read idle before a kernel is connected).
            page.wait_for_function(f"() => {{ const s = ({NOTEBOOK_STATE})(); "
                                   "return s && s.kernel === 'idle'; }", timeout=120_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            _wait_for_view(page, timeout_s=420)
            page.wait_for_function(f"() => [...document.querySelectorAll(\"{VIEW}\")]"
                                   ".some(e => e.querySelector('svg, canvas, table, div div'))",
                                   timeout=60_000)
        except Exception:
            page.screenshot(path=str(artifacts / f"browser-{chapter.stem}-FAILED.png"),
                            full_page=True)
            raise
        view = page.locator(VIEW).first
        view.scroll_into_view_if_needed()
        page.screenshot(path=str(shot))
        browser.close()
    assert shot.stat().st_size > 20_000

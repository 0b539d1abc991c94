"""A real browser: JupyterLab on loopback, a chapter opened in headless Chromium, its cells
run, and a screenshot in which a circuitsvis attention view has rendered (offline).

Skips, saying why, where Debian's Chromium is not installed (`make test` installs it as root).
The screenshot is kept in ``$COURSE_ARTIFACTS`` (default: pytest's temporary folder).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from course_tools import notebooks
from utils import paths

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


@contextlib.contextmanager
def _serve(folder: Path, notebook_name: str):
    """JupyterLab serving ``folder`` on loopback with a token; yields the notebook's URL."""
    port, token = _free_port(), "course-browser-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(folder / ".jupyter"),
           "JUPYTER_RUNTIME_DIR": str(folder / ".runtime")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}", f"--notebook-dir={folder}",
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
    try:
        yield f"{base}/lab/tree/{notebook_name}?token={token}"
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab serving a copy of one chapter, on loopback, with a token."""
    chapter = chapter_with_attention_view()
    first_cells_until_view(chapter, tmp_path / chapter.name)
    with _serve(tmp_path, chapter.name) as url:
        yield url, chapter


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


def _open_and_run_all(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(".jp-Notebook", timeout=90_000)
    # Run only once the notebook's kernel has started and is idle (the toolbar's
    # indicator can read idle before a kernel is connected).
    page.wait_for_function(f"() => {{ const s = ({NOTEBOOK_STATE})(); "
                           "return s && s.kernel === 'idle'; }", timeout=120_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")


def test_grading_cell_shows_the_report_in_jupyterlab(tmp_path):
    """The "check your work" cell grades the saved notebook and renders its report table."""
    from playwright.sync_api import sync_playwright

    from tests.course_layout import FIXTURE

    nb = notebooks.read_notebook(FIXTURE.student_notebook)
    nb.cells = [c for c in nb.cells if not notebooks.is_test_cell(c)]
    for cell in nb.cells:
        if notebooks.nbgrader_meta(cell).get("grade_id") == "center_rows":
            cell.source = "def center_rows(x):\n    return x - x.mean(dim=-1, keepdim=True)\n"
    nb.cells.append(nbformat.v4.new_code_cell(
        "from utils.check_my_work import grade_my_work\n"
        f"grade_my_work(checks_folder={str(FIXTURE.checks)!r}, "
        f"released_dir={str(FIXTURE.chapters)!r})"))
    notebooks.write_notebook(nb, tmp_path / f"{FIXTURE.name}.ipynb")
    table = ".jp-OutputArea-output table"
    with _serve(tmp_path, f"{FIXTURE.name}.ipynb") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            _open_and_run_all(page, url)
            page.wait_for_selector(table, timeout=180_000)
            text = page.locator(".jp-OutputArea-output:has(table)").last.inner_text()
        except Exception:
            page.screenshot(path=str(tmp_path / "grading-cell-FAILED.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert "1 / 3 points" in text, text
    assert "center_rows" in text and "mask_future" in text and "not implemented" in text


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
            _open_and_run_all(page, url)
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

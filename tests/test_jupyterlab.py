"""The notebooks' ipywidgets panels in a real JupyterLab 4 and a real browser (issue 25: "tweak sliders in
notebooks").

JupyterLab (``make lab`` installs it into .venv) serves a copy of chapter 2 from a temporary folder (so that its
autosave never touches the repository's notebook); Playwright drives Debian's chromium (as tests/test_browser.py
does) to open it, run every cell from the Run menu, wait for the panel that ``plots.widgets.offer`` shows in a
kernel started by the server, move one of its ipywidgets sliders with the keyboard and see the figure's title
change, which only the kernel's callback can do.

Without JupyterLab or a browser the test skips and says why; with ``CI`` set it fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_browser import LAUNCH_ARGS, SCREENSHOTS, _chromium, _unavailable

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "02_gradient_flow.ipynb"  # the quickest chapter with a panel (softmax_panel)
TOKEN = "cegppo-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving a copy of the chapter; yields its base URL and its log file."""
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        _unavailable("JupyterLab is not installed in this environment (`make lab` installs jupyterlab>=4)")
    folder = tmp_path_factory.mktemp("lab")
    shutil.copyfile(ROOT / "notebooks" / CHAPTER, folder / CHAPTER)
    settings = folder / ".settings"
    # every cell stays in the page (JupyterLab 4 detaches the cells out of view by default), and no news pop-up
    for name, value in (("@jupyterlab/notebook-extension/tracker", {"windowingMode": "none"}),
                        ("@jupyterlab/apputils-extension/notification", {"fetchNews": "false"})):
        target = settings / f"{name}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(value))
    port = _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(folder / ".config"), "JUPYTER_RUNTIME_DIR": str(folder / ".run"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(folder / ".workspaces")}
    env.pop("CEGPPO_PANELS", None)
    # The server's log goes to a file: a pipe nobody reads fills up (64 KiB) under load, when the server logs every
    # slow request, and then the server blocks on its next log line and the page never finishes running.
    log = folder / "jupyterlab.log"
    with open(log, "w") as sink:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "jupyter-lab"), "--no-browser", f"--port={port}", "--ip=127.0.0.1",
             f"--IdentityProvider.token={TOKEN}", "--ServerApp.password=", f"--ServerApp.root_dir={folder}",
             "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=True", "--allow-root"],
            cwd=folder, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
            break
        except Exception:
            if server.poll() is not None:
                pytest.fail("JupyterLab exited at start:\n" + log.read_text()[-3000:])
            time.sleep(0.5)
    else:
        server.terminate()
        pytest.fail("JupyterLab did not answer within 90 s")
    yield url, log
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def _started_cells(page) -> int:
    """Cells whose prompt shows they ran or are running ("[*]:" or "[3]:"), not "[ ]:"."""
    prompts = page.locator(".jp-Notebook .jp-InputPrompt").all_text_contents()
    return sum(1 for text in prompts if text.strip() not in ("", "[ ]:"))


def run_all_cells(page, tries: int = 3) -> None:
    """Run → Run All Cells, again if no cell has started within a minute (a click that lands while the page is
    still wiring the kernel up can be lost: one suspect of the hangs seen when this ran inside `make test`)."""
    for attempt in range(tries):
        page.locator(".jp-Notebook").first.click()
        page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        deadline = time.time() + 60
        while time.time() < deadline:
            if _started_cells(page):
                if attempt:
                    print(f"Run All Cells took {attempt + 1} clicks", file=sys.stderr)
                return
            page.wait_for_timeout(500)
    pytest.fail(f"no cell started after {tries} clicks on Run All Cells")


def what_the_page_shows(page, lab_log: Path) -> str:
    """A failure's evidence: a screenshot, the kernel's status, the cells' prompts and the server log's tail."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "jupyterlab-failure.png"
    page.screenshot(path=str(shot), full_page=True)
    status = page.locator(".jp-Notebook-ExecutionIndicator").first.get_attribute("data-status")
    prompts = page.locator(".jp-Notebook .jp-InputPrompt").all_text_contents()
    return (f"screenshot {shot}; kernel indicator {status!r}; prompts {prompts}\n"
            f"server log (last 3000 characters):\n{lab_log.read_text()[-3000:]}")


def test_a_chapter_runs_in_jupyterlab_and_its_ipywidgets_slider_redraws_the_figure(lab):
    lab, lab_log = lab
    executable = _chromium()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{lab}/lab/tree/{CHAPTER}?token={TOKEN}&reset", wait_until="domcontentloaded")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            run_all_cells(page)
            # the panel: ipywidgets sliders over a plotly figure drawn by JupyterLab's plotly renderer
            panel = page.locator(".jp-OutputArea .widget-vbox").filter(has=page.locator(".widget-slider")).first
            try:
                panel.wait_for(timeout=240_000)
            except Exception as error:
                pytest.fail(f"no panel after Run All: {error}\n{what_the_page_shows(page, lab_log)}")
            figure = panel.locator(".js-plotly-plot .gtitle").first
            figure.wait_for(timeout=60_000)
            before = figure.text_content()
            assert "r=1.50" in before, before  # the panel starts at r = 1.5
            slider = panel.locator(".widget-slider").first  # r, the kept token's ratio
            handle = slider.locator(".noUi-handle").first
            handle.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            box = handle.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()  # a reader drags the handle to the right
            page.mouse.move(box["x"] + box["width"] / 2 + 30, box["y"] + box["height"] / 2, steps=5)
            page.mouse.up()
            readout = slider.locator(".widget-readout").first.text_content()
            after, deadline = before, time.time() + 60  # the kernel redraws: a new figure replaces the old one
            while after == before and time.time() < deadline:
                page.wait_for_timeout(500)
                titles = panel.locator(".js-plotly-plot .gtitle")
                after = titles.first.text_content() if titles.count() else before
            ratio = float(readout)
            assert ratio > 1.5 and f"r={ratio:.2f}" in after and after != before, (readout, before, after)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            panel.screenshot(path=str(SCREENSHOTS / "jupyterlab-softmax-panel.png"))
        finally:
            browser.close()

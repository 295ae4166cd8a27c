"""The built book's chapter pages in a real browser: bytes transferred, time to the first figure drawn, and the
page's width at a 390-px phone viewport.

    .venv/bin/python benchmarks/book_pages.py [SITE]        # SITE defaults to _build/html

The site is served from a thread on 127.0.0.1 (Python's http.server: no compression, no cache headers). Each
page is opened in a fresh browser context (an empty cache) at 1,280 × 900, and again at 390 × 844:

- bytes: the sum of Chrome's encodedDataLength over every response the page loads until the network is idle
  (the page, scripts, style sheets, fonts, MathJax's pieces), with the five largest named;
- first figure: milliseconds from the navigation's start to the first plotly figure's svg in the page
  (a MutationObserver installed before the page's own scripts run records it);
- 390 px: document.documentElement.scrollWidth once every figure is drawn (more than 390: the page scrolls
  sideways) and the widest element that sticks out.

tests/test_browser.py holds the same three measurements to the targets of issue 25 (3 MB, 1.5 s, 390 px);
results/book_pages.txt holds what this script printed before and after.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["notebooks/01_clipping_quadrants", "notebooks/02_gradient_flow", "notebooks/03_entropy_dynamics_bandit",
            "notebooks/04_tiny_lm_rl", "notebooks/05_gpu_r1_distill_math", "book/gpu_recipe",
            "notebooks/06_steering_entropy"]
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FIRST_FIGURE = """(() => {
    window.__cegppoFirstFigure = null;
    const seen = () => document.querySelector('.plotly-graph-div .main-svg');
    new MutationObserver((records, observer) => {
        if (window.__cegppoFirstFigure === null && seen()) {
            window.__cegppoFirstFigure = performance.now();
            observer.disconnect();
        }
    }).observe(document, {childList: true, subtree: true});
})();"""
WIDEST = """() => {
    const width = document.documentElement.clientWidth;
    let widest = null, right = width;
    for (const e of document.querySelectorAll('body *')) {
        const r = e.getBoundingClientRect();
        if (r.width > 0 && r.right > right + 0.5) { right = r.right; widest = e; }
    }
    const name = widest ? `${widest.tagName.toLowerCase()}${widest.id ? '#' + widest.id : ''}`
        + `${widest.className && typeof widest.className === 'string' ? '.' + widest.className.trim().split(/\\s+/).join('.') : ''}` : '';
    return {scroll: document.documentElement.scrollWidth, widest: name, right: Math.round(right)};
}"""


def serve(site: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def measure(browser, url: str, width: int = 1280, height: int = 900) -> dict:
    """One page load in a fresh context: bytes, the largest responses, first-figure time, scroll width."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.add_init_script(FIRST_FIGURE)
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    urls, sizes = {}, {}
    cdp.on("Network.requestWillBeSent", lambda e: urls.__setitem__(e["requestId"], e["request"]["url"]))
    cdp.on("Network.loadingFinished", lambda e: sizes.__setitem__(e["requestId"], e["encodedDataLength"]))
    page.goto(url, wait_until="load")
    figures = page.locator(".plotly-graph-div").count()
    if figures:
        page.wait_for_function("() => [...document.querySelectorAll('.plotly-graph-div')]"
                               ".every(d => d.querySelector('.main-svg'))", timeout=120_000)
    try:  # MathJax fetches its pieces after "load"
        page.wait_for_load_state("networkidle", timeout=5_000)
    except Exception:  # a page that keeps polling: what it loaded in those 5 s is counted
        pass
    first = page.evaluate("() => window.__cegppoFirstFigure")
    wide = page.evaluate(WIDEST)
    largest = sorted(((size, urls.get(rid, "?").rsplit("/", 1)[-1]) for rid, size in sizes.items()), reverse=True)
    context.close()
    return {"bytes": sum(sizes.values()), "requests": len(sizes), "largest": largest[:5], "figures": figures,
            "first_figure_ms": first, **wide}


def main(site: Path) -> None:
    from playwright.sync_api import sync_playwright
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    server, base = serve(site)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
            print(f"site {site}; chromium {browser.version}; local http.server, empty cache per page")
            print(f"{'page':40s} {'MB':>6s} {'req':>4s} {'figs':>4s} {'first fig ms':>12s} {'390px scrollW':>13s}  widest at 390 px")
            for name in CHAPTERS:
                if not (site / f"{name}.html").exists():
                    continue
                wide = measure(browser, f"{base}/{name}.html")
                narrow = measure(browser, f"{base}/{name}.html", 390, 844)
                first = "-" if wide["first_figure_ms"] is None else f"{wide['first_figure_ms']:.0f}"
                print(f"{name:40s} {wide['bytes'] / 1e6:6.2f} {wide['requests']:4d} {wide['figures']:4d} {first:>12s} "
                      f"{narrow['scroll']:13d}  {narrow['widest'] or '-'}")
                print("    largest: " + ", ".join(f"{n} {s / 1e6:.2f} MB" for s, n in wide["largest"]))
            browser.close()
    finally:
        server.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "_build" / "html")

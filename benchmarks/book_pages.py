"""The built book's chapter pages in a real browser: bytes transferred, time to the first figure drawn, and the
page's width at a 390-px phone viewport.

    .venv/bin/python benchmarks/book_pages.py [SITE]        # SITE defaults to _build/html

The site is served from a thread on 127.0.0.1 (Python's http.server: no compression, no cache headers). Each
page is opened in a fresh browser context (an empty cache) at 1,280 × 900, and again at 390 × 844:

- bytes: the sum of Chrome's encodedDataLength over every response the page loads until the network is idle
  (the page, scripts, style sheets, fonts, MathJax's pieces), with the five largest named, from Python's
  http.server (no compression) and from the same files served gzip-compressed, as a static host serves them;
- first figure: milliseconds from the navigation's start to the first plotly figure's svg in the page
  (a MutationObserver installed before the page's own scripts run records it);
- 390 px: document.documentElement.scrollWidth once every figure is drawn (more than 390: the page scrolls
  sideways) and the widest element that sticks out.

tests/test_browser.py holds the same three measurements to the targets of issue 25 (3 MB, 1.5 s, 390 px);
results/book_pages.txt holds what this script printed before and after.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import io
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
    const clipped = (e) => { for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
        if (getComputedStyle(a).overflowX !== 'visible') return true; } return false; };
    for (const e of document.querySelectorAll('body *')) {
        const r = e.getBoundingClientRect();
        if (r.width > 0 && r.right > right + 0.5 && !clipped(e)) { right = r.right; widest = e; }
    }
    const name = widest ? `${widest.tagName.toLowerCase()}${widest.id ? '#' + widest.id : ''}`
        + `${widest.className && typeof widest.className === 'string' ? '.' + widest.className.trim().split(/\\s+/).join('.') : ''}` : '';
    return {scroll: document.documentElement.scrollWidth, widest: name, right: Math.round(right)};
}"""


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Compressing(Quiet):
    """As a static host (GitHub Pages, nginx's gzip) serves: text files gzip-compressed to a browser that asks."""

    TEXT = (".html", ".js", ".css", ".json", ".svg", ".txt", ".map")

    def send_head(self):
        path = Path(self.translate_path(self.path.split("?", 1)[0]))
        if path.is_dir():
            path = path / "index.html"
        if not ("gzip" in self.headers.get("Accept-Encoding", "") and path.suffix in self.TEXT and path.is_file()):
            return super().send_head()
        body = gzip.compress(path.read_bytes(), compresslevel=6, mtime=0)
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)


def serve(site: Path, handler=Quiet):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(site)))
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
    packed_server, packed = serve(site, Compressing)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
            print(f"site {site}; chromium {browser.version}; empty cache per page; MB = bytes transferred / 1e6 from "
                  "python's http.server (plain) and from a server that gzips text files (gzip)")
            print(f"{'page':40s} {'plain MB':>8s} {'gzip MB':>7s} {'req':>4s} {'figs':>4s} {'first fig ms':>12s} "
                  f"{'(gzip)':>6s} {'390px scrollW':>13s}  widest at 390 px")
            for name in CHAPTERS:
                if not (site / f"{name}.html").exists():
                    continue
                wide = measure(browser, f"{base}/{name}.html")
                gz = measure(browser, f"{packed}/{name}.html")
                narrow = measure(browser, f"{base}/{name}.html", 390, 844)
                first, first_gz = ("-" if r["first_figure_ms"] is None else f"{r['first_figure_ms']:.0f}" for r in (wide, gz))
                print(f"{name:40s} {wide['bytes'] / 1e6:8.2f} {gz['bytes'] / 1e6:7.2f} {wide['requests']:4d} "
                      f"{wide['figures']:4d} {first:>12s} {first_gz:>6s} {narrow['scroll']:13d}  {narrow['widest'] or '-'}")
                print("    largest (plain): " + ", ".join(f"{n} {s / 1e6:.2f} MB" for s, n in wide["largest"]))
            browser.close()
    finally:
        server.shutdown()
        packed_server.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "_build" / "html")

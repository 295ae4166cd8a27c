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

import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from page_load import LAUNCH_ARGS, Compressing, load, serve  # noqa: E402  (the helper tests/test_browser.py uses too)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["notebooks/01_clipping_quadrants", "notebooks/02_gradient_flow", "notebooks/03_entropy_dynamics_bandit",
            "notebooks/04_tiny_lm_rl", "notebooks/05_smollm2_cpu", "notebooks/06_gpu_r1_distill_math",
            "book/gpu_recipe", "notebooks/07_steering_entropy"]
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


def measure(browser, url: str, width: int = 1280, height: int = 900) -> dict:
    """``page_load.load`` and, once every figure is drawn, the element that sticks out furthest at this width."""
    loaded = load(browser, url, width, height)
    try:
        return {**{k: v for k, v in loaded.items() if k not in ("page", "context")},
                **loaded["page"].evaluate(WIDEST)}
    finally:
        loaded["context"].close()


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

"""One page load of the built book in a real browser, measured: the one helper that `benchmarks/book_pages.py`
(which prints the numbers) and `tests/test_browser.py` (which holds them to issue 25's targets) both import.

- ``serve(site, handler)``: the site from a thread on 127.0.0.1, by Python's http.server as it is (``Quiet``: no
  compression, no cache headers) or as a static host serves it (``Compressing``: text files gzip-compressed to a
  browser that asks, as GitHub Pages or nginx's gzip do);
- ``load(browser, url, width, height)``: one load in a fresh browser context with an empty cache: the bytes
  transferred (the sum of Chrome's encodedDataLength over every response until the network is quiet: the page,
  scripts, style sheets, fonts, MathJax's pieces), the largest responses, the time from the navigation's start to
  the first plotly figure's svg (a MutationObserver installed before the page's own scripts run records it), and
  the page's scroll width. The page and its context stay open for the caller, which closes the context.

`tests/test_page_load.py` checks the measurement on a made-up site whose answers are known.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import threading
from pathlib import Path

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FIRST_FIGURE = """(() => {
    window.__cegppoFirstFigure = null;
    new MutationObserver((records, observer) => {
        if (window.__cegppoFirstFigure === null && document.querySelector('.plotly-graph-div .main-svg')) {
            window.__cegppoFirstFigure = performance.now();
            observer.disconnect();
        }
    }).observe(document, {childList: true, subtree: true});
})();"""
ALL_FIGURES_DRAWN = ("() => [...document.querySelectorAll('.plotly-graph-div')]"
                     ".every(d => d.querySelector('.main-svg'))")


class Quiet(http.server.SimpleHTTPRequestHandler):
    """Python's static file server (``python -m http.server``), silent."""

    def log_message(self, *args):
        pass


class Compressing(Quiet):
    """A static host as readers meet one: text files (HTML, JavaScript, CSS, JSON, SVG) go out gzip-compressed to a
    browser that accepts it; fonts and images as they are."""

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
    """``(server, base_url)``: ``site`` served from a daemon thread; ``server.shutdown()`` stops it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def load(browser, url: str, width: int = 1280, height: int = 900, quiet_ms: int = 5_000) -> dict:
    """One load of ``url`` with an empty cache at ``width`` × ``height``, every figure drawn.

    Returns ``bytes`` (transferred), ``requests``, ``largest`` (the five largest responses as (bytes, file name)),
    ``figures`` (plotly figures on the page), ``first_figure_ms`` (None without a figure), ``scroll`` (the
    document's scroll width) and the open ``page`` and ``context``; the caller closes ``context``."""
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
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
            page.wait_for_function(ALL_FIGURES_DRAWN, timeout=120_000)
        try:  # MathJax fetches its pieces and fonts after "load"
            page.wait_for_load_state("networkidle", timeout=quiet_ms)
        except Exception:  # a page that keeps polling: what it loaded by then is counted
            pass
        largest = sorted(((size, urls.get(rid, "?").rsplit("/", 1)[-1]) for rid, size in sizes.items()), reverse=True)
        return {"bytes": sum(sizes.values()), "requests": len(sizes), "largest": largest[:5], "figures": figures,
                "first_figure_ms": page.evaluate("() => window.__cegppoFirstFigure"),
                "scroll": page.evaluate("() => document.documentElement.scrollWidth"), "page": page,
                "context": context}
    except Exception:
        context.close()
        raise

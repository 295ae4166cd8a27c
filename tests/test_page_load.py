"""The page-load measurement that `benchmarks/book_pages.py` prints and `tests/test_browser.py` bounds
(`benchmarks/page_load.py`), checked once on a made-up site whose answers are known: the bytes a page transfers
from plain and from compressing http.server, its first figure's time, and its scroll width."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import page_load  # noqa: E402

from test_browser import browser  # noqa: E402,F401  (the chromium fixture: skips without one, fails in CI)

pytestmark = pytest.mark.browser

FILLER = "<p>" + "the same sentence, again and again. " * 3000 + "</p>"  # ~110 kB that gzip shrinks 100-fold
PAGE = """<!doctype html><html><body>{filler}
<div class="plotly-graph-div" id="f"></div>
<div style="width: {wide}px">a wide block</div>
<script>setTimeout(() => {{ const s = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  s.setAttribute('class', 'main-svg'); document.getElementById('f').appendChild(s); }}, {delay});</script>
</body></html>"""


@pytest.fixture(scope="module")
def made_up_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "figure.html").write_text(PAGE.format(filler=FILLER, wide=500, delay=300))
    (site / "plain.html").write_text("<!doctype html><html><body><p>no figure</p></body></html>")
    return site


def test_bytes_first_figure_and_scroll_width_of_a_known_page(browser, made_up_site):  # noqa: F811
    size = (made_up_site / "figure.html").stat().st_size
    packed_size = len(gzip.compress((made_up_site / "figure.html").read_bytes(), compresslevel=6, mtime=0))
    plain_server, plain = page_load.serve(made_up_site)
    packed_server, packed = page_load.serve(made_up_site, page_load.Compressing)
    try:
        raw = page_load.load(browser, f"{plain}/figure.html", 390, 844, quiet_ms=500)
        raw["context"].close()
        zipped = page_load.load(browser, f"{packed}/figure.html", quiet_ms=500)
        zipped["context"].close()
        none = page_load.load(browser, f"{plain}/plain.html", quiet_ms=500)
        none["context"].close()
    finally:
        plain_server.shutdown()
        packed_server.shutdown()
    # the body and its headers, and a favicon request at most (a few hundred bytes)
    assert size <= raw["bytes"] <= size + 2_000, (size, raw)
    assert packed_size <= zipped["bytes"] <= packed_size + 2_000 and zipped["bytes"] < size / 20, (packed_size, zipped)
    assert raw["largest"][0][1] == "figure.html" and raw["figures"] == 1
    assert 300 <= raw["first_figure_ms"] < 5_000  # drawn by the timer, not before it
    assert raw["scroll"] >= 500 > 390  # the wide block makes a 390-px page scroll sideways
    assert none["figures"] == 0 and none["first_figure_ms"] is None and none["scroll"] <= 390 + 1280

"""The built book in a real browser: figures draw, sliders move, math renders, no JavaScript error.

Playwright (the Python package) drives Debian's chromium (``apt-get install chromium``; ``make test`` installs
it when apt is available; no browser download). The built site ``_build/html`` is served from a thread on
127.0.0.1. Screenshots of every page checked go to ``_build/screenshots/``.

Without a browser the tests skip and say why; with ``CI`` set they fail instead, so CI cannot pass silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import page_load  # noqa: E402  (serving the site and measuring one page load: shared with benchmarks/book_pages.py)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
LAUNCH_ARGS = page_load.LAUNCH_ARGS
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _toc_files() -> list[str]:
    """Every page of the book in reading order: the root, then each part's chapters and their sections."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())

    def walk(entries):
        for entry in entries:
            yield entry["file"]
            yield from walk(entry.get("sections", []))

    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += list(walk(part.get("chapters", [])))
    return files


CHAPTERS = [f for f in _toc_files() if f.startswith("notebooks/")]
# Chapters whose point is their interactive figures: each must have at least 3 figures and a slider.
VIZ_CHAPTERS = {"notebooks/01_clipping_quadrants", "notebooks/02_gradient_flow",
                "notebooks/03_entropy_dynamics_bandit"}
MATH_PAGES = [f for f in ("book/intro", "book/prerequisites", "book/background", "book/key_equations",
                          "book/cheat_sheet", "book/paper_in_brief") if f in _toc_files()]
PAGES = _toc_files()


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"the browser test must run in CI but cannot: {reason}")
    pytest.skip(reason)


def _chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    _unavailable("no chromium found (install Debian's: apt-get install chromium; `make test` does it with apt)")


def _site_is_stale() -> bool:
    if not (HTML / "index.html").exists():
        return True
    for chapter in CHAPTERS:
        page, source = HTML / f"{chapter}.html", ROOT / f"{chapter}.ipynb"
        if not source.exists():  # a markdown chapter: nothing to compare
            continue
        if not page.exists() or page.stat().st_mtime < source.stat().st_mtime:
            return True
    return False


@pytest.fixture(scope="module")
def site() -> Path:
    """The built book; built here (strictly, like `make book`) when missing or older than a notebook."""
    if _site_is_stale():
        jupyter_book = Path(sys.executable).parent / "jupyter-book"
        build = subprocess.run([str(jupyter_book), "build", str(ROOT), "-W", "-n", "--keep-going"],
                               capture_output=True, text=True, timeout=600, check=False)
        if build.returncode != 0 or _site_is_stale():
            pytest.fail("the book is not built and building it failed; run `make book` and read its errors:\n"
                        + build.stdout[-3000:] + build.stderr[-3000:])
    return HTML


@pytest.fixture(scope="module")
def base_url(site):
    server, url = page_load.serve(site, page_load.Quiet)
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def compressed_url(site):
    server, url = page_load.serve(site, page_load.Compressing)
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:  # pragma: no cover - playwright is a test dependency
        _unavailable(f"the playwright package is not importable: {err}")
    with sync_playwright() as playwright:
        try:
            instance = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        except Exception as err:  # a broken or incompatible chromium
            _unavailable(f"chromium at {executable} did not start: {err}")
        yield instance
        instance.close()


def _open(browser, url: str):
    """A fresh page with every JavaScript error, console error and failed request of the site recorded."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []

    def on_console(message):
        if message.type == "error" and not message.location.get("url", "").endswith("favicon.ico"):
            errors.append(f"console error: {message.text} at {message.location.get('url')}")

    def on_response(response):
        if response.status >= 400 and not response.url.endswith("favicon.ico"):
            errors.append(f"HTTP {response.status} for {response.url}")

    page.on("pageerror", lambda err: errors.append(f"page error: {err}"))
    page.on("console", on_console)
    page.on("response", on_response)
    page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
    page.goto(url, wait_until="load")
    return page, errors


def _wait_for_math(page) -> int:
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
    page.evaluate("() => MathJax.startup.promise")
    return page.evaluate("() => document.querySelectorAll('mjx-container').length")


FIGURE_STATE = """(id) => {
    const gd = document.getElementById(id);
    const drawn = [...gd.querySelectorAll('.main-svg .trace path, .main-svg .hm image, .main-svg .point')];
    return {
        visible: gd.data.map(t => t.visible === undefined ? true : t.visible).join(','),
        active: gd.layout.sliders && gd.layout.sliders.length ? gd.layout.sliders[0].active : null,
        svg: gd.querySelectorAll('.main-svg').length,
        marks: drawn.filter(e => (e.getAttribute('d') || e.getAttribute('href') || '').length > 4).length,
        shapes: drawn.map(e => e.getAttribute('d') || e.getAttribute('href') || '').join('|'),
        sliders: gd.querySelectorAll('.slider-container').length,
        traces: gd.data.length,
        notes: gd.querySelectorAll('.annotation-text').length,
    };
}"""


def _move_slider(page, figure, step: int) -> None:
    """Click the slider's rail at the tick of ``step``, as a reader would."""
    figure.scroll_into_view_if_needed()
    rail = figure.locator(".slider-rail-touch-rect").first.bounding_box()
    tick = figure.locator(".slider-tick-rect").nth(step).bounding_box()
    page.mouse.click(tick["x"] + tick["width"] / 2, rail["y"] + rail["height"] / 2)
    page.wait_for_timeout(300)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_figures_draw_sliders_move_math_renders(browser, base_url, chapter):
    page, errors = _open(browser, f"{base_url}/{chapter}.html")
    try:
        figures = page.locator(".plotly-graph-div")
        count = figures.count()
        if chapter in VIZ_CHAPTERS:
            assert count >= 3, f"{chapter}: only {count} plotly figures on the page"
        page.wait_for_function(
            "() => [...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('.main-svg'))",
            timeout=60_000)
        moved = 0
        for index in range(count):
            figure = figures.nth(index)
            fig_id = figure.get_attribute("id")
            before = page.evaluate(FIGURE_STATE, fig_id)
            # a figure of traces draws marks; a figure of notes only (chapter 6's smoke mode) draws its notes
            drawn = before["marks"] > 0 or (before["traces"] == 0 and before["notes"] > 0)
            assert before["svg"] > 0 and drawn, f"{chapter}: figure {index} drew no data: {before}"
            if before["sliders"]:
                target = 0 if before["active"] != 0 else 1
                _move_slider(page, figure, target)
                after = page.evaluate(FIGURE_STATE, fig_id)
                assert after["active"] == target, f"{chapter}: figure {index}: the slider did not move"
                assert after["visible"] != before["visible"], f"{chapter}: figure {index}: same traces visible"
                assert after["shapes"] != before["shapes"], f"{chapter}: figure {index}: the drawing did not change"
                assert after["marks"] > 0, f"{chapter}: figure {index}: nothing drawn after the slider moved"
                moved += 1
        if chapter in VIZ_CHAPTERS:
            assert moved >= 1, f"{chapter}: no figure with a slider"
        has_math = page.locator(".math").count() > 0  # MyST wraps every formula in .math
        if chapter in VIZ_CHAPTERS or has_math:
            assert _wait_for_math(page) > 0, f"{chapter}: MathJax rendered no formula"
        _check_math_screenshot_and_errors(page, chapter, errors)
        _screenshot_schematic(page, chapter, 1280)
    finally:
        page.close()


SCHEMATIC = "section#the-argument-in-one-picture"  # chapter 2's closing section: the 2×2 and its argument
SCHEMATIC_CHAPTER = "notebooks/02_gradient_flow"


def _screenshot_schematic(page, name: str, width: int) -> None:
    """Chapter 2's "argument in one picture" section as its own screenshot, ``schematic-<width>.png`` (issue 25)."""
    section = page.locator(SCHEMATIC)
    if name == SCHEMATIC_CHAPTER:
        assert section.count() == 1, f"{name}: no {SCHEMATIC}"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.evaluate("() => document.activeElement && document.activeElement.blur()")  # no focused skip link on it
        section.screenshot(path=str(SCREENSHOTS / f"schematic-{width}.png"))


def _check_math_screenshot_and_errors(page, name: str, errors: list[str]) -> None:
    """No formula failed to parse; save the page's screenshot; no JavaScript error came from it."""
    assert page.locator("mjx-merror").count() == 0, f"{name}: a formula failed to parse"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{Path(name).name}.png"), full_page=True)
    assert not errors, f"{name}: " + "; ".join(errors)


@pytest.mark.parametrize("name", MATH_PAGES)
def test_text_pages_render_math_without_errors(browser, base_url, name):
    page, errors = _open(browser, f"{base_url}/{name}.html")
    try:
        assert _wait_for_math(page) > 0, f"{name}: MathJax rendered no formula"
        _check_math_screenshot_and_errors(page, name, errors)
    finally:
        page.close()


# --------------------------------------------------------------------------------------------------
# Layout at 1280 px: every <pre>, table and figure fits the text column; figure titles and legends fit the figure
# --------------------------------------------------------------------------------------------------
# The text column is the content box of the theme's <article class="bd-article"> (its padding excluded): the
# paragraphs of the page end there. A <pre> must fit it and need no horizontal scroll; a table must fit it, or
# be its own scroll box (a wrapper that scrolls and holds nothing but the table, inside the column).
COLUMN_LAYOUT = """() => {
    const article = document.querySelector('article.bd-article') || document.querySelector('article');
    const cs = getComputedStyle(article), box = article.getBoundingClientRect();
    const left = box.left + parseFloat(cs.paddingLeft) + parseFloat(cs.borderLeftWidth);
    const right = box.right - parseFloat(cs.paddingRight) - parseFloat(cs.borderRightWidth);
    const shown = e => e.getClientRects().length > 0 && e.getBoundingClientRect().width > 0;
    const name = (e, i) => {
        const where = e.closest('section[id]');
        const text = (e.innerText || '').trim().replace(/\\s+/g, ' ').slice(0, 60);
        return `${e.tagName.toLowerCase()} #${i}${e.className ? ' .' + String(e.className).split(' ').join('.') : ''}`
            + ` in section "${where ? where.id : '-'}" ("${text}")`;
    };
    const scrollBox = e => {
        for (let a = e.parentElement; a && a !== article; a = a.parentElement) {
            const o = getComputedStyle(a).overflowX;
            if (o === 'auto' || o === 'scroll' || o === 'hidden') return a;
        }
        return null;
    };
    const fits = r => r.left >= left - 1 && r.right <= right + 1;
    const problems = [];
    [...article.querySelectorAll('pre')].forEach((e, i) => {
        if (!shown(e)) return;
        const r = e.getBoundingClientRect();
        if (!fits(r)) problems.push(`${name(e, i)}: spans x ${r.left.toFixed(0)}..${r.right.toFixed(0)}, `
                                    + `the column ${left.toFixed(0)}..${right.toFixed(0)}`);
        if (e.scrollWidth > e.clientWidth + 1) problems.push(`${name(e, i)}: needs a horizontal scroll `
                                    + `(scrollWidth ${e.scrollWidth} > clientWidth ${e.clientWidth})`);
    });
    [...article.querySelectorAll('table')].forEach((e, i) => {
        if (!shown(e) || e.parentElement.closest('table')) return;  // a nested table is its outer table's
        const r = e.getBoundingClientRect(), holder = scrollBox(e);
        if (fits(r) && (!holder || holder.scrollWidth <= holder.clientWidth + 1)) return;  // fits: no scroll
        const own = holder && getComputedStyle(holder).overflowX !== 'hidden' && fits(holder.getBoundingClientRect())
            && holder.querySelectorAll('table').length === e.querySelectorAll('table').length + 1
            && (holder.innerText || '').trim() === (e.innerText || '').trim();
        if (!own) problems.push(`${name(e, i)}: ${r.width.toFixed(0)} px wide, spans x ${r.left.toFixed(0)}..`
            + `${r.right.toFixed(0)}, the column ${left.toFixed(0)}..${right.toFixed(0)}, and it is not its own `
            + `scroll box (${holder ? 'its scrolling ancestor .' + holder.className + ' holds more or overflows'
                                    : 'no scrolling ancestor'})`);
    });
    return {left, right, problems};
}"""

# Inside each plotly figure: the main title, every axis title and every legend lie inside the figure's svg, no
# legend overlaps an axis title, and the figure is not wider than the text column; for a figure with a slider, at
# every step of it (a step may change the title, e.g. to the value it shows), as a reader moving it would see.
FIGURE_LAYOUT = """async ([left, right]) => {
    const problems = new Map();  // one line per figure and kind of problem: the first slider step that shows it
    const rect = e => e.getBoundingClientRect();
    const fmt = r => `x ${r.left.toFixed(0)}..${r.right.toFixed(0)}, y ${r.top.toFixed(0)}..${r.bottom.toFixed(0)}`;
    const overlap = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1
                              && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
    const report = (key, text) => { if (!problems.has(key)) problems.set(key, text); };
    const measure = (gd, label, step) => {
        const at = step === null ? '' : ` (slider step ${step})`;
        const svg = gd.querySelector('.main-svg');
        if (!svg) { report(label, `${label}: not drawn`); return; }
        const area = rect(svg);
        if (area.left < left - 1 || area.right > right + 1)
            report(`${label} width`, `${label}: ${area.width.toFixed(0)} px wide at x ${area.left.toFixed(0)}..`
                   + `${area.right.toFixed(0)}, the column ${left.toFixed(0)}..${right.toFixed(0)}`);
        const inside = r => r.left >= area.left - 1 && r.right <= area.right + 1
                            && r.top >= area.top - 1 && r.bottom <= area.bottom + 1;
        const texts = sel => [...gd.querySelectorAll(sel)].filter(e => (e.textContent || '').trim()
                                                                       && rect(e).width > 0);
        const axisTitles = texts('.infolayer text[class$="title"]')
            .filter(e => /^[xy]\\d*title$/.test(e.getAttribute('class')));
        const legends = [...gd.querySelectorAll('.infolayer g.legend')].map(e => e.querySelector('rect.bg') || e)
            .filter(e => rect(e).width > 0);
        const parts = [...texts('.infolayer text.gtitle').map(e => ['title', e]),
                       ...axisTitles.map(e => [`axis title ${e.getAttribute('class').replace('title', '')}`, e]),
                       ...legends.map(e => ['legend', e])];
        for (const [what, e] of parts) {
            const r = rect(e);
            if (!inside(r)) report(`${label} ${what}`, `${label}: the ${what} "${(e.textContent || '').trim()
                .slice(0, 40)}" at ${fmt(r)} leaves the figure's svg area ${fmt(area)}${at}`);
        }
        for (const legend of legends) {
            for (const t of axisTitles) {
                if (overlap(rect(legend), rect(t))) report(`${label} legend ${t.getAttribute('class')}`,
                    `${label}: the legend at ${fmt(rect(legend))} overlaps the axis title `
                    + `"${t.textContent.trim().slice(0, 40)}" at ${fmt(rect(t))}${at}`);
            }
        }
    };
    const apply = async (gd, step) => {
        const [data, layout] = step.args || [];
        if (step.method === 'update') await Plotly.update(gd, data || {}, layout || {});
        else if (step.method === 'restyle') await Plotly.restyle(gd, data || {});
        else if (step.method === 'relayout') await Plotly.relayout(gd, data || {});
    };
    const figures = [...document.querySelectorAll('.plotly-graph-div')];
    for (const [i, gd] of figures.entries()) {
        const title = (gd.layout && gd.layout.title && gd.layout.title.text) || '';
        const label = `figure ${i} (#${gd.id}, "${title.replace(/<[^>]+>/g, '').slice(0, 70)}")`;
        measure(gd, label, null);
        const slider = gd.layout && gd.layout.sliders && gd.layout.sliders[0];
        if (!slider) continue;
        for (const [k, step] of slider.steps.entries()) { await apply(gd, step); measure(gd, label, k); }
        await apply(gd, slider.steps[slider.active || 0]);
    }
    return [...problems.values()];
}"""


def _settle(page) -> None:
    """Open every dropdown, wait for the figures to draw and the formulas to typeset: the layout is final."""
    page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('.main-svg'))",
        timeout=60_000)
    if page.locator(".math").count():
        _wait_for_math(page)
    page.wait_for_timeout(200)


@pytest.mark.parametrize("name", PAGES)
def test_pre_blocks_tables_and_figures_fit_the_text_column(browser, base_url, name):
    """At 1280 × 900 no <pre> is wider than the text column or needs a horizontal scroll, and every table fits the
    column or scrolls inside a box of its own; every plotly figure fits the column, its title, axis titles and
    legend lie inside its svg, and no legend covers an axis title. One page load for both checks (each page load
    draws every figure: two tests of one load each cost ~45 s more of make test)."""
    page, _errors = _open(browser, f"{base_url}/{name}.html")
    try:
        _settle(page)
        layout = page.evaluate(COLUMN_LAYOUT)
        assert not layout["problems"], f"{name}: " + "\n  ".join([""] + layout["problems"])
        if page.locator(".plotly-graph-div").count():
            problems = page.evaluate(FIGURE_LAYOUT, [layout["left"], layout["right"]])
            assert not problems, f"{name}: " + "\n  ".join([""] + problems)
    finally:
        page.close()


# --------------------------------------------------------------------------------------------------
# Weight, speed, phone, keyboard (issue 25): what a page transfers, when its first figure is drawn, no sideways
# scroll at 390 px, legends below and one column of subplots there, every slider reachable with Tab and named
# --------------------------------------------------------------------------------------------------
# The chapter pages and the GPU recipe (the pages that overflowed at 390 px or carried plotly.js).
HEAVY_PAGES = CHAPTERS + [f for f in PAGES if f == "book/gpu_recipe"]
# Issue 25's target is 3 MB transferred. Measured (benchmarks/results/book_pages.txt): 0.98-1.25 MB from a
# compressing host and 3.1-3.8 MB from python -m http.server (no compression; 3.5-4.1 MB with MathJax's combined
# tex-chtml.js); before issue 25: 2.7-2.9 MB and 8.6-9.0 MB.
# The bounds sit between, so that a page loading the full plotly.js or fontawesome.js again fails.
MAX_TRANSFERRED = 2_000_000  # bytes per page from a compressing static host
MAX_UNCOMPRESSED = 4_600_000  # bytes per page from python -m http.server: the full plotly.js alone is 4.8 MB
# The target is 1.5 s from a local server; measured 0.66-1.09 s here (0.8-2.5 s with the box at load 6), against
# 1.4-1.8 s before (2.8-4.4 s at load 6) (benchmarks/results/book_pages.txt). The bound is three times the
# target so that a loaded 2-core CI box does not fail it: it catches a gross regression (a figure that never
# draws, or draws after seconds of work), not the old page, which the weight bounds above catch.
MAX_FIRST_FIGURE_MS = 4_500


@pytest.mark.parametrize("name", HEAVY_PAGES)
def test_page_weight_and_first_figure_time(browser, base_url, compressed_url, name):
    """At most MAX_TRANSFERRED bytes from a compressing host (issue 25: 3 MB) and MAX_UNCOMPRESSED from plain
    http.server; the first figure drawn within MAX_FIRST_FIGURE_MS of the navigation's start."""
    plain = page_load.load(browser, f"{base_url}/{name}.html")
    plain["context"].close()
    packed = page_load.load(browser, f"{compressed_url}/{name}.html")
    packed["context"].close()
    assert packed["bytes"] <= MAX_TRANSFERRED, f"{name}: {packed['bytes']:,} bytes transferred: {packed['largest']}"
    assert plain["bytes"] <= MAX_UNCOMPRESSED, f"{name}: {plain['bytes']:,} bytes uncompressed: {plain['largest']}"
    names = [n for _, n in plain["largest"]]
    assert not any(n.startswith("fontawesome.js") for n in names) and "plotly.min.js" not in names, names
    assert not any(n.startswith("tex-chtml.js") for n in names), names  # MathJax as components (book_assets)
    if name.startswith("notebooks/"):
        assert plain["first_figure_ms"] is not None, f"{name}: no figure drawn"
        assert plain["first_figure_ms"] <= MAX_FIRST_FIGURE_MS, f"{name}: first figure after {plain['first_figure_ms']:.0f} ms"


NARROW_LAYOUT = """() => [...document.querySelectorAll('.plotly-graph-div')].filter(gd => gd._fullLayout).map(gd => {
    const layout = gd._fullLayout;
    const xs = Object.keys(layout).filter(k => /^xaxis\\d*$/.test(k)).map(k => layout[k].domain);
    const legend = layout.showlegend && gd.querySelector('.legend');
    return {id: gd.id, width: gd.clientWidth, columns: new Set(xs.map(d => d[0].toFixed(2))).size,
            legend: legend ? layout.legend.orientation : null,
            legendBelow: legend ? legend.getBoundingClientRect().top >= gd.querySelector('.main-svg .cartesianlayer')
                                  .getBoundingClientRect().bottom - 1 : null};
})"""


@pytest.mark.parametrize("name", HEAVY_PAGES)
def test_no_sideways_scroll_at_390_px_legends_below_one_column(browser, base_url, name):
    """On a 390 × 844 phone the page does not scroll sideways, and every plotly figure has one column of subplots
    and its legend (if any) horizontal, below the plots."""
    loaded = page_load.load(browser, f"{base_url}/{name}.html", 390, 844)
    try:
        page = loaded["page"]
        page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")
        page.wait_for_timeout(300)
        scroll = page.evaluate("() => document.documentElement.scrollWidth")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{Path(name).name}-390.png"))  # the opening, as a phone shows it
        _screenshot_schematic(page, name, 390)
        assert scroll <= 390, f"{name}: the page is {scroll} px wide at a 390-px viewport"
        for figure in page.evaluate(NARROW_LAYOUT):
            assert figure["columns"] == 1, f"{name}: {figure}"
            assert figure["legend"] in (None, "h") and figure["legendBelow"] in (None, True), f"{name}: {figure}"
    finally:
        loaded["context"].close()


ACCESSIBLE_INPUTS = """() => [...document.querySelectorAll('input[type=range], select')].map(el => ({
    id: el.id || el.className, name: (el.getAttribute('aria-label') || [...(el.labels || [])]
        .map(l => l.textContent).join(' ')).trim()}))"""


def test_sliders_are_reached_with_tab_named_and_moved_with_arrow_keys(browser, base_url):
    """Chapter 1: every range input and select has a name for a screen reader; Tab reaches each plotly slider's
    keyboard twin and each live input; an arrow key on the twin moves the plotly slider and changes the traces."""
    name = "notebooks/01_clipping_quadrants"
    page, errors = _open(browser, f"{base_url}/{name}.html")
    try:
        _settle(page)
        inputs = page.evaluate(ACCESSIBLE_INPUTS)
        # Figure 1.1's and Figure 1.3's slider twins, the weight explorer's method and its four sliders
        assert len(inputs) >= 7 and all(i["name"] for i in inputs), inputs
        twins = page.locator("input.cegppo-slider-key")
        sliders = page.evaluate("() => [...document.querySelectorAll('.plotly-graph-div')]"
                                ".filter(gd => gd.layout && gd.layout.sliders && gd.layout.sliders.length).length")
        assert twins.count() == sliders >= 2
        reached, live = set(), set()
        page.locator("article").first.focus() if False else page.evaluate("() => document.activeElement.blur()")
        for _ in range(400):  # Tab through the page, as a keyboard reader does
            page.keyboard.press("Tab")
            focused = page.evaluate("() => { const e = document.activeElement; return e ? [e.className, e.id, "
                                    "e.dataset.input || ''] : null; }")
            if focused and focused[0] == "cegppo-slider-key":
                reached.add(page.evaluate("() => document.activeElement.nextElementSibling.id"))
            elif focused and focused[2]:
                live.add(focused[1])
        assert len(reached) == sliders, reached
        assert len(live) >= 5, live  # the weight explorer's method and four sliders at least
        twin = twins.first
        gd_id = twin.evaluate("el => el.nextElementSibling.id")
        before = page.evaluate(FIGURE_STATE, gd_id)
        twin.focus()
        page.keyboard.press("ArrowRight" if before["active"] == 0 else "ArrowLeft")
        page.wait_for_timeout(300)
        after = page.evaluate(FIGURE_STATE, gd_id)
        assert after["active"] != before["active"] and after["visible"] != before["visible"], (before, after)
        assert twin.get_attribute("aria-valuetext") and "slider" in twin.get_attribute("aria-label")
        assert not errors, errors
    finally:
        page.close()

"""The live figures (``plots.live``): their JavaScript computes what the package computes, their inputs move the
plot, their config is the registry's.

Without a browser: the JSON config each figure carries holds the registry's methods, defaults, fixed values and
ranges (a method registered later appears; one whose weight has no JS formula does not), and bad arguments are
refused. In chromium (``browser``): ``window.cegppoLive``'s formulas against ``losses.gradient_weight`` and
``toy.demos.single_softmax_update`` on a grid (1e-12), the inputs against the plotted data, the layout against a
700-px column, and the same formula grid on the built book's chapters 1 and 2 (red until they hold the figures).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import plotly
import pytest

from cegppo_edu.losses import (METHODS, Method, ce_gppo, ce_gppo_per_token, cispo_weight, clip_weight, get_method,
                               gradient_weight, method_label, register_method, token_level_methods)
from cegppo_edu.plots import live
from cegppo_edu.toy import demos
from test_browser import _open, base_url, browser, site  # noqa: F401  (fixtures, shared with the book's test)

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
CONFIG = re.compile(r'<script type="application/json" class="cegppo-live-config">(.*?)</script>', re.S)
COLUMN = 700  # px: the book's text column at a 1280-px viewport is about 700-800 px
BOOK_PAGES = {"notebooks/01_clipping_quadrants.html": ("weight", "live.weight_explorer()", "chapter 1"),
              "notebooks/02_gradient_flow.html": ("update", "live.softmax_update_explorer()", "chapter 2")}


def _config(figure) -> dict:
    (found,) = CONFIG.findall(figure._repr_html_())
    return json.loads(found)


def _options(figure, name: str) -> list[str]:
    select = re.search(rf'<select id="[^"]+" data-input="{name}"[^>]*>(.*?)</select>', figure._repr_html_(), re.S).group(1)
    return re.findall(r'<option value="([^"]*)"', select)


# --------------------------------------------------------------------------------------------------
# The config is the registry's
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [live.weight_explorer, live.softmax_update_explorer])
def test_the_config_holds_the_registrys_methods_defaults_and_fixed_values(make):
    figure = make()
    config = _config(figure)
    expected = token_level_methods(include_aliases=False, compared_only=True)  # grpo, dapo, gppo, ce_gppo, cispo
    assert list(config["methods"]) == expected == _options(figure, "method") == live.live_methods()
    for name, spec in config["methods"].items():
        method = get_method(name)
        assert spec["label"] == method_label(name) and spec["defaults"] == method.defaults
        assert spec["fixed"] == method.fixed
        assert spec["family"] == {clip_weight: "clip", cispo_weight: "cispo"}[method.weight]
        for hyper, control in spec["controls"].items():
            assert hyper in method.defaults and hyper in config["hypers"]
            allowed = method.ranges[hyper]
            assert allowed.contains(control["min"]) and allowed.contains(control["max"]), (name, hyper, control)
            steps = (method.defaults[hyper] - control["min"]) / control["step"]
            assert control["min"] <= method.defaults[hyper] <= control["max"] and abs(steps - round(steps)) < 1e-9
    assert "beta1" not in config["methods"]["gppo"]["controls"] and config["methods"]["gppo"]["fixed"]["beta1"] == 1.0
    if config["kind"] == "weight":
        assert config["methods"]["cispo"]["controls"]["eps_low"]["max"] == 1.0  # CISPO's own ε_l = 1 is reachable
        assert config["reference"]["params"] == get_method("grpo").resolve()
        assert config["reference"]["followEps"] == ["eps_low", "eps_high"]  # the page draws it at the method's ε


def test_the_page_holds_the_script_the_plot_div_and_a_note_for_a_kernel():
    text = live.weight_explorer()._repr_html_()
    assert "function defineCegppoLive" in text and "window.cegppoLive = window.cegppoLive ||" in text
    assert 'class="plotly-graph-div"' in text  # what makes the book load plotly.js on the page
    assert "cegppo_edu.plots.widgets.weight_panel()" in text and "softmax_panel()" in live.softmax_update_explorer().html
    assert str(math.exp(20)) in text  # the ratio clamp comes from losses.LOG_RATIO_CLAMP, not the JS
    assert not re.search(r"\b0\.28\b|\b1e-?20\b", live.LIVE_JS.read_text())  # no default or clamp written in the JS


def test_every_call_gets_its_own_ids():
    pages = [live.weight_explorer(), live.weight_explorer(), live.softmax_update_explorer(),
             live.softmax_update_explorer()]
    ids = [i for page in pages for i in re.findall(r' id="([^"]+)"', page.html)]
    assert len(ids) == len(set(ids)) and len(ids) > 4 * 5


def _made_up(weight):
    def loss(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.25, agg="token-mean"):
        return ce_gppo(logp, old_logp, adv, mask, eps_low, eps_high, 0.5, 0.5, None, agg)
    return Method("made_up", "made-up", loss, ce_gppo_per_token, weight, "made up for this test",
                  fixed={"beta1": 0.5, "beta2": 0.5})


@pytest.fixture
def register():
    """Register a made-up method with a given weight function for one test."""
    def add(weight):
        return register_method(_made_up(weight))
    yield add
    METHODS.pop("made_up", None)


def test_a_registered_clip_method_appears_with_its_own_defaults(register):
    register(clip_weight)
    figure = live.weight_explorer()
    spec = _config(figure)["methods"]["made_up"]
    assert "made_up" in _options(figure, "method") and spec["family"] == "clip"
    assert spec["defaults"] == {"eps_low": 0.2, "eps_high": 0.25} and spec["fixed"] == {"beta1": 0.5, "beta2": 0.5}
    assert set(spec["controls"]) == {"eps_low", "eps_high"}


def test_a_method_with_another_weight_function_is_left_out(register):
    def doubled_weight(r, a, **hyper):
        return 2 * clip_weight(r, a, **hyper)
    register(doubled_weight)
    assert "made_up" in token_level_methods() and "made_up" not in live.live_methods()
    for figure in (live.weight_explorer(), live.softmax_update_explorer()):
        assert "made_up" not in _config(figure)["methods"] and "made_up" not in _options(figure, "method")
    with pytest.raises(ValueError, match="methods entry='made_up' is not allowed"):
        live.weight_explorer(methods=["ce_gppo", "made_up"])


@pytest.mark.parametrize("call, message", [
    (lambda: live.weight_explorer(method="ppo_clip"), "method='ppo_clip' is not allowed; choose one of grpo"),
    (lambda: live.weight_explorer(method="gspo"), "method='gspo' is not allowed"),
    (lambda: live.weight_explorer(methods=["gspo"]), "methods entry='gspo' is not allowed"),
    (lambda: live.weight_explorer(methods=[]), "methods is empty"),
    (lambda: live.weight_explorer(method="dapo", methods=["grpo"]), "method='dapo' is not allowed; choose one of grpo"),
    (lambda: live.weight_explorer(r_max=1.0), r"r_max=1.0 is outside the allowed range \(1.0, 20.0\]"),
    (lambda: live.weight_explorer(r_max=float("nan")), "r_max=nan is outside"),
    (lambda: live.weight_explorer(height=100), r"height=100 is outside the allowed range \[250, 1200\]"),
    (lambda: live.weight_explorer(reference="nope"), "reference='nope' is not allowed"),
    (lambda: live.softmax_update_explorer(token=8), r"token=8 is outside the allowed range \[0, 7\]"),
    (lambda: live.softmax_update_explorer(token=1.0), r"token=1.0 is outside the allowed range \[0, 7\] \(an integer\)"),
    (lambda: live.softmax_update_explorer(logits=[1.0]), "must be a 1-D array of 2 to 64 finite numbers"),
    (lambda: live.softmax_update_explorer(logits=[[1.0, 2.0]]), r"got shape \(1, 2\)"),
    (lambda: live.softmax_update_explorer(logits=[1.0, float("inf")]), "finite numbers"),
    (lambda: live.softmax_update_explorer(ratio=3.0), r"ratio=3.0 is outside the allowed range \[0.1, 2.5\]"),
    (lambda: live.softmax_update_explorer(adv=-2.0), r"adv=-2.0 is outside the allowed range \[-1.0, 1.0\]"),
    (lambda: live.softmax_update_explorer(lr=0.0), r"lr=0.0 is outside the allowed range \[0.05, 1.0\]"),
    (lambda: live.softmax_update_explorer(ratio_range=(0.0, 2.0)), r"ratio_range=\(0.0, 2.0\) must be \(low, high\)"),
    (lambda: live.softmax_update_explorer(ratio_range=(2.0, 1.0)), "with low < high, both in"),
    (lambda: live.softmax_update_explorer(lr_range=0.5), r"lr_range=0.5 must be \(low, high\)"),
    (lambda: live.softmax_update_explorer(method="gspo"), "method='gspo' is not allowed"),
])
def test_bad_arguments_are_refused_with_the_value_and_the_allowed_range(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_weight_explorers_fixed_y_range_holds_every_slider_position_and_no_more():
    """The top is the largest F of any slider position (the update panel's range follows its bars: see
    test_the_update_panel_draws_the_packages_update_and_fills_its_axis)."""
    config = _config(live.weight_explorer())
    top, r = config["layout"]["yaxis"]["range"][1] / 1.05, np.linspace(0.0, 2.5, 251)
    largest = max(float(gradient_weight(r, adv, method, **dict(zip(spec["controls"], corner))).max())
                  for method, spec in config["methods"].items() for adv in (-1.0, 1.0)
                  for corner in itertools.product(*[(c["min"], c["max"]) for c in spec["controls"].values()]))
    assert top == pytest.approx(largest) and top == pytest.approx(3.0)  # CE-GPPO, β2 = 2, ε_h = 0.5


def test_package_update_on_the_interval_edges_matches_its_own_weight():
    """On r = 1±ε exactly the live figure (and ``gradient_weight``) keep the token inside; so must the autograd
    update of ``single_softmax_update`` (a plain old_logp = log π_a − log r round trip moved r off the edge)."""
    logits = np.array(live.CHAPTER2_LOGITS)
    worst = 0.0
    for token, eps in itertools.product(range(8), (0.1, 0.2, 0.28, 0.3, 0.5)):
        for ratio, adv in ((1 + eps, 1.0), (1 - eps, -1.0)):
            out = demos.single_softmax_update(logits, token, ratio, adv, "grpo", lr=1.0, eps_low=eps, eps_high=eps)
            formula = out["weight"] * adv * (np.eye(8)[token] - out["prob"])
            worst = max(worst, np.abs(out["delta"] - formula).max())
    assert worst <= 1e-12, f"delta and weight·Â·(onehot − π) differ by up to {worst:.2f} on the edges"


# --------------------------------------------------------------------------------------------------
# The formulas in the browser, against the package
# --------------------------------------------------------------------------------------------------
def _hyper_grid(method: str):
    """Hyper-parameter sets for ``method``: every combination of a few values of the parameters it takes."""
    takes = get_method(method).defaults
    values = {"eps_low": (0.1, 0.2, 0.28, 1.0) if method == "cispo" else (0.1, 0.2, 0.28),
              "eps_high": (0.2, 0.28, 0.5), "beta1": (0.0, 0.5, 1.5), "beta2": (0.0, 1.0, 2.0), "dual_clip": (None, 3.0)}
    names = [n for n in values if n in takes]
    return [dict(zip(names, combo)) for combo in itertools.product(*(values[n] for n in names))]


@functools.lru_cache(maxsize=1)
def _weight_grid():
    """Cases ``{family, params, rs, advs}`` and the package's F for each (R, A) block. r includes 0, the edges
    r = 1±ε and the dual clip c exactly, values around the clamp e^±20, a huge one and inf (sent as "inf")."""
    cases, expected = [], []
    advs = [-1.5, -1.0, 0.0, 0.7, 2.0]
    for method in live.live_methods():
        family = live.WEIGHT_FAMILIES[get_method(method).weight]
        for hyper in _hyper_grid(method):
            p = get_method(method).resolve(**hyper)
            rs = [0.0, 1e-300, math.exp(-21), 0.3, 1 - p["eps_low"], 1.0, 1 + p["eps_high"], 1.9, 3.0, 5.0,
                  math.exp(20), math.exp(21), 1e300, math.inf]
            cases.append({"family": family, "params": p, "rs": ["inf" if math.isinf(r) else r for r in rs],
                          "advs": advs})
            expected.append(gradient_weight(np.array(rs)[:, None], np.array(advs)[None, :], method, **hyper))
    return cases, expected


WEIGHT_GRID_JS = """(cases) => cases.map((c) => c.rs.map((r) => c.advs.map(
    (adv) => window.cegppoLive.gradientWeight(c.family, r === "inf" ? Infinity : r, adv, c.params))))"""


@functools.lru_cache(maxsize=1)
def _update_grid():
    """Cases for softmaxUpdate, the package's result for each (``single_softmax_update``) and a float64 ΔH."""
    rng = np.random.default_rng(0)
    softmaxes = [np.array(live.CHAPTER2_LOGITS), rng.normal(scale=2.0, size=5), np.array([10.0, -10.0, 0.0, 0.0])]
    cases, expected = [], []
    for logits, method in itertools.product(softmaxes, live.live_methods()):
        family = live.WEIGHT_FAMILIES[get_method(method).weight]
        betas = [{"beta1": 0.5, "beta2": 1.0}, {"beta1": 1.5, "beta2": 0.2}] if "beta1" in get_method(method).defaults \
            else [{}]
        tokens = sorted({0, len(logits) // 2, len(logits) - 1})
        grid = itertools.product(betas, tokens, (0.3, 0.75, 1.19, 1.5, 2.4, 50.0), (-1.0, -0.3, 1.0))
        for (hyper, token, ratio, adv), lr in zip(grid, itertools.cycle((0.5, 1.0, 0.25))):
            out = demos.single_softmax_update(logits, token, ratio, adv, method, lr=lr, **hyper)
            cases.append({"logits": logits.tolist(), "token": token, "ratio": ratio, "adv": adv, "family": family,
                          "params": get_method(method).resolve(**hyper), "lr": lr})
            expected.append({**out, "dH_pred64": _predicted64(logits, out["delta"]),
                             "dH_meas64": _entropy64(logits + out["delta"]) - _entropy64(logits)})
    return cases, expected


def _log_softmax64(z):
    shifted = z - z.max()
    return shifted - np.log(np.exp(shifted).sum())


def _entropy64(z):
    logpi = _log_softmax64(z)
    return float(-(np.exp(logpi) * logpi).sum())


def _predicted64(z, delta):
    """−Cov_π(log π, Δz) in float64."""
    logpi = _log_softmax64(z)
    pi = np.exp(logpi)
    return float(-(pi * (logpi - (pi * logpi).sum()) * (delta - (pi * delta).sum())).sum())


UPDATE_GRID_JS = """(cases) => cases.map((c) => {
    const out = window.cegppoLive.softmaxUpdate(c.logits, c.token, c.ratio, c.adv, c.family, c.params, c.lr);
    return {delta: out.delta, weight: out.weight, dHPred: out.dHPred, dHMeas: out.dHMeas};
})"""


def _check_formulas(page) -> None:
    """window.cegppoLive on this page computes F and one softmax update as the package does."""
    cases, expected = _weight_grid()
    got = page.evaluate(WEIGHT_GRID_JS, cases)
    assert sum(np.size(e) for e in expected) > 5000
    for case, js, py in zip(cases, got, expected):
        np.testing.assert_allclose(np.array(js, dtype=float), py, rtol=1e-12, atol=1e-12,
                                   err_msg=f"gradientWeight vs gradient_weight: {case['family']} {case['params']}")
    cases, expected = _update_grid()
    got = page.evaluate(UPDATE_GRID_JS, cases)
    for case, js, py in zip(cases, got, expected):
        where = f"softmaxUpdate vs single_softmax_update: {case}"
        np.testing.assert_allclose(js["delta"], py["delta"], rtol=1e-12, atol=1e-12, err_msg=where)
        np.testing.assert_allclose(js["weight"], py["weight"], rtol=1e-12, atol=0, err_msg=where)
        np.testing.assert_allclose([js["dHPred"], js["dHMeas"]], [py["dH_pred64"], py["dH_meas64"]],
                                   rtol=1e-12, atol=1e-12, err_msg=where)
        # The package's ΔH are float32: each entropy within about one float32 ulp of max |z| (1e-6 at |z| = 10).
        np.testing.assert_allclose([js["dHPred"], js["dHMeas"]], [py["dH_pred"], py["dH_meas"]],
                                   rtol=1e-5, atol=2e-6, err_msg=where + " (the package's ΔH are float32)")


# --------------------------------------------------------------------------------------------------
# A standalone page: plotly.js and the figures, in a 700-px column
# --------------------------------------------------------------------------------------------------
def _write_page(folder: Path, with_plotly: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PLOTLY_JS, folder / "plotly.min.js")
    figures = [live.weight_explorer(), live.softmax_update_explorer(), live.weight_explorer(method="gppo")]
    head = '<script src="plotly.min.js"></script>' if with_plotly else ""
    page = folder / "index.html"
    page.write_text(f'<!doctype html><html><head><meta charset="utf-8"><title>live</title>{head}</head><body>'
                    f'<div id="column" style="width:{COLUMN}px">{"".join(f.html for f in figures)}</div></body></html>')
    return page


@pytest.fixture(scope="module")
def standalone(tmp_path_factory) -> str:
    return _write_page(tmp_path_factory.mktemp("live")).as_uri()


@pytest.fixture
def page(browser, standalone):  # noqa: F811
    page, errors = _open(browser, standalone)
    try:
        page.wait_for_function("() => [...document.querySelectorAll('.cegppo-live')].every("
                               "(r) => r.querySelector('.main-svg'))", timeout=30_000)
    except Exception as err:  # say what the page said
        page.close()
        raise AssertionError(f"the live figures did not draw: {'; '.join(errors) or err}") from None
    yield page
    page.close()
    assert not errors, "; ".join(errors)


def _root(kind: str, index: int = 0) -> str:
    return f"[...document.querySelectorAll('.cegppo-live')].filter((r) => JSON.parse(r.querySelector(" \
           f"'script.cegppo-live-config').textContent).kind === '{kind}')[{index}]"


def _traces(page, kind: str, index: int = 0) -> dict:
    """The plotted traces of one figure, by uid: {uid: {x, y}} (and its layout's y range)."""
    return page.evaluate(f"""() => {{
        const gd = {_root(kind, index)}.querySelector('.plotly-graph-div');
        const traces = Object.fromEntries(gd.data.map((t) => [t.uid, {{x: Array.from(t.x), y: Array.from(t.y)}}]));
        return {{...traces, yrange: gd.layout.yaxis.range, title: gd.layout.title.text}};
    }}""")


def _set(page, kind: str, name: str, value, index: int = 0) -> None:
    """Set an input's value and tell the page, as a script (or an assistive tool) would."""
    page.evaluate(f"""(value) => {{
        const el = {_root(kind, index)}.querySelector('[data-input="{name}"]');
        el.value = value;
        el.dispatchEvent(new Event(el.tagName === 'SELECT' ? 'change' : 'input', {{bubbles: true}}));
    }}""", str(value))


def _output(page, kind: str, name: str) -> str:
    return page.evaluate(f"() => {_root(kind)}.querySelector('output[data-for=\"{name}\"]').textContent")


def _values(page, kind: str) -> dict:
    return page.evaluate(f"""() => Object.fromEntries([...{_root(kind)}.querySelectorAll('[data-input]')]
        .map((el) => [el.dataset.input, el.value]))""")


@pytest.mark.browser
def test_the_page_formulas_equal_the_packages(page):
    _check_formulas(page)
    assert page.evaluate("() => typeof window.cegppoLive.mount") == "function"


@pytest.mark.browser
def test_each_method_draws_the_packages_weight_and_moving_beta2_moves_the_flat_segment(page):
    for method in live.live_methods():
        _set(page, "weight", "method", method)
        values = _values(page, "weight")
        hyper = {h: float(values[h]) for h in live.WEIGHT_HYPERS if h in get_method(method).defaults}
        assert hyper == {h: get_method(method).defaults[h] for h in hyper}, f"{method}: sliders not at its defaults"
        traces = _traces(page, "weight")
        for sign, adv in (("+", 1.0), ("-", -1.0)):
            got = traces[f"method{sign}"]
            np.testing.assert_allclose(got["y"], gradient_weight(np.array(got["x"]), adv, method, **hyper),
                                       rtol=1e-12, atol=1e-12, err_msg=f"{method}, Â={adv}")
            ref = traces[f"reference{sign}"]  # PPO / GRPO on the interval the method is drawn with
            eps = {k: float(values[k]) if k in get_method(method).defaults else get_method(method).fixed[k]
                   for k in ("eps_low", "eps_high")}
            eps["eps_low"] = min(eps["eps_low"], np.nextafter(1.0, 0.0))  # PPO's range is ε_l < 1; CISPO's ε_l = 1
            np.testing.assert_allclose(ref["y"], gradient_weight(np.array(ref["x"]), adv, "grpo", **eps), atol=1e-12)
        assert method_label(method) in traces["title"]
        for name in ("beta1", "beta2"):
            disabled = page.evaluate(f"() => {_root('weight')}.querySelector('[data-input=\"{name}\"]').disabled")
            assert disabled == (name not in get_method(method).defaults), (method, name)
            if name in get_method(method).fixed:
                assert _output(page, "weight", name) == f"{get_method(method).fixed[name]:g} (fixed)"
            elif name not in get_method(method).defaults:
                assert _output(page, "weight", name) == "not used"

    _set(page, "weight", "method", "ce_gppo")
    _set(page, "weight", "beta2", 1.5)
    eps_high = float(_values(page, "weight")["eps_high"])
    upper = _traces(page, "weight")["method+"]
    flat = [y for x, y in zip(upper["x"], upper["y"]) if x > 1 + eps_high + 1e-6]
    assert flat and all(y == 1.5 * (1 + eps_high) for y in flat), flat
    assert _output(page, "weight", "beta2") == "1.5" and "β2=1.5" in _traces(page, "weight")["title"]
    other = _traces(page, "weight", index=1)["method+"]  # the second weight explorer (GPPO) did not move
    assert all(y == 1.0 * 1.2 for x, y in zip(other["x"], other["y"]) if x > 1.2 + 1e-6)


@pytest.mark.browser
def test_mouse_and_keyboard_move_the_sliders_and_the_curves(page):
    page.locator(".cegppo-live").first.scroll_into_view_if_needed()
    root_id = page.evaluate(f"() => {_root('weight')}.id")
    eps_high = page.locator(f'#{root_id} [data-input="eps_high"]')
    box = eps_high.bounding_box()
    page.mouse.click(box["x"] + 0.8 * box["width"], box["y"] + box["height"] / 2)  # a reader clicks the rail
    moved = float(_values(page, "weight")["eps_high"])
    assert moved > 0.3, moved
    upper = _traces(page, "weight")["method+"]
    jump = [x for x, y, y_next in zip(upper["x"], upper["y"], upper["y"][1:]) if y != y_next and x > 1]
    assert jump and abs(jump[-1] - (1 + moved)) < 1e-6, (jump, moved)
    assert _output(page, "weight", "eps_high") == f"{moved:g}"

    beta1 = page.locator(f'#{root_id} [data-input="beta1"]')
    beta1.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")  # two steps of 0.05 from CE-GPPO's 0.5
    assert _values(page, "weight")["beta1"] == "0.6"
    lower = _traces(page, "weight")["method-"]
    eps_low = float(_values(page, "weight")["eps_low"])
    assert lower["y"][0] == 0.6 * (1 - eps_low)


@pytest.mark.browser
def test_the_update_panel_draws_the_packages_update_and_fills_its_axis(page):
    logits = np.array(live.CHAPTER2_LOGITS)
    reaches = []
    for token, ratio, adv, lr, method in ((6, 1.5, 1.0, 0.5, "ce_gppo"), (0, 0.6, -1.0, 0.5, "ce_gppo"),
                                          (6, 0.6, -1.0, 0.95, "gppo"), (3, 2.2, 0.35, 0.25, "grpo"),
                                          (7, 1.8, 1.0, 1.0, "cispo"), (6, 0.4, 1.0, 0.05, "ce_gppo")):
        _set(page, "update", "method", method)
        for name, value in (("token", token), ("ratio", ratio), ("adv", adv), ("lr", lr)):
            _set(page, "update", name, value)
        values = _values(page, "update")
        hyper = {h: float(values[h]) for h in live.UPDATE_HYPERS if h in get_method(method).defaults}
        out = demos.single_softmax_update(logits, token, ratio, adv, method, lr=lr, **hyper)
        drawn = _traces(page, "update")
        np.testing.assert_allclose(drawn["delta"]["y"], out["delta"], rtol=1e-12, atol=1e-12, err_msg=method)
        # π before and after the update, below the bars
        np.testing.assert_allclose(drawn["probBefore"]["y"], out["prob"], rtol=1e-12, atol=1e-15)
        after = np.exp(logits + out["delta"] - (logits + out["delta"]).max())
        np.testing.assert_allclose(drawn["probAfter"]["y"], after / after.sum(), rtol=1e-12, atol=1e-15)
        # the y range is symmetric and the tallest bar fills at least 1/2.75 of its half (ladder 1, 2, 5; 10 % at the
        # chapter's default when the range held every input position)
        low, high = drawn["yrange"]
        largest = float(np.abs(out["delta"]).max())
        assert low == -high and largest <= high, (method, largest, drawn["yrange"])
        assert largest >= 0.36 * high if largest > 0 else high == 1, (method, largest, drawn["yrange"])  # 0: PPO clipped
        reaches.append(high)
        text = page.evaluate(f"() => {_root('update')}.querySelector('.cegppo-live-readout').textContent")
        assert f"F = {out['weight']:.3f}" in text, text
        pred, meas = (f"{'−' if v < 0 else '+'}{abs(v):.5f}" for v in (out["dH_pred"], out["dH_meas"]))
        assert f"first order (−Covπ(log π, Δz)) {pred}" in text and f"measured (H(z+Δz) − H(z)) {meas}" in text, text
    assert len(set(reaches)) >= 3  # the range follows the update's size


LAYOUT_JS = """(root) => {
    const box = (el) => el.getBoundingClientRect();
    const svg = box(root.querySelector('.main-svg'));
    const texts = [...root.querySelectorAll('.gtitle, .xtitle, .x2title, .ytitle, .annotation-text, .legendtext')];
    const outside = texts.filter((el) => { const b = box(el);
        return b.left < svg.left - 1 || b.right > svg.right + 1 || b.top < svg.top - 1 || b.bottom > svg.bottom + 1; });
    const controls = [...root.querySelectorAll('.cegppo-live-control')].filter((el) => box(el).right > box(root).right + 1);
    return {texts: texts.length, outside: outside.map((el) => el.textContent), controls: controls.length,
            root: box(root).width, scroll: root.scrollWidth - root.clientWidth, svg: svg.width,
            column: box(document.getElementById('column')).width};
}"""


@pytest.mark.browser
def test_titles_lie_inside_the_plot_and_the_figure_fits_its_column(page):
    for kind in ("weight", "update"):
        state = page.evaluate(f"() => ({LAYOUT_JS})({_root(kind)})")
        assert state["texts"] >= (7 if kind == "weight" else 3), state  # title, axis titles (+ panels, legend)
        assert not state["outside"], f"{kind}: clipped text {state}"
        assert state["controls"] == 0 and state["scroll"] <= 0, f"{kind}: wider than its column: {state}"
        assert state["root"] <= COLUMN and state["svg"] <= COLUMN, state
    assert page.locator(".cegppo-live-note:visible").count() == 0  # the note is for pages without plotly.js
    assert page.locator(".cegppo-live-body:visible").count() == 3


@pytest.mark.browser
def test_a_figure_added_later_mounts_itself_and_reuses_the_pages_functions(page):
    """As a re-executed cell does: the new figure's script draws it, window.cegppoLive stays the first one."""
    page.evaluate("() => { window.firstLive = window.cegppoLive; }")
    added = live.weight_explorer(method="cispo")
    page.evaluate("""(html) => document.getElementById('column').appendChild(
        document.createRange().createContextualFragment(html))""", added.html)
    fig_id = re.search(r'class="cegppo-live" id="([^"]+)"', added.html).group(1)
    root = page.locator(f"#{fig_id}")
    root.locator(".main-svg").first.wait_for(timeout=10_000)
    assert page.evaluate("() => window.cegppoLive === window.firstLive")
    assert page.locator(".cegppo-live[data-cegppo-mounted]").count() == 4
    assert _values(page, "weight")["method"] == "ce_gppo" and "CISPO" in _traces(page, "weight", index=2)["title"]


@pytest.mark.browser
def test_without_plotly_the_figure_shows_its_note_and_raises_nothing(browser, tmp_path):  # noqa: F811
    page, errors = _open(browser, _write_page(tmp_path, with_plotly=False).as_uri())
    try:
        notes = page.locator(".cegppo-live-note")
        assert notes.count() == 3 and all(notes.nth(i).is_visible() for i in range(3))
        assert "weight_panel()" in notes.first.inner_text()
        assert not page.locator(".cegppo-live-body").first.is_visible()
        assert page.evaluate("() => typeof window.cegppoLive.gradientWeight") == "function"
        assert not errors, "; ".join(errors)
    finally:
        page.close()


# --------------------------------------------------------------------------------------------------
# The built book (red until chapters 1 and 2 hold the explorers)
# --------------------------------------------------------------------------------------------------
@pytest.mark.browser
@pytest.mark.parametrize("name", list(BOOK_PAGES))
def test_the_book_pages_live_figure_computes_as_the_package(browser, base_url, name):  # noqa: F811
    kind, call, chapter = BOOK_PAGES[name]
    page, errors = _open(browser, f"{base_url}/{name}")
    try:
        kinds = page.evaluate("() => [...document.querySelectorAll('.cegppo-live script.cegppo-live-config')]"
                              ".map((s) => JSON.parse(s.textContent).kind)")
        assert kind in kinds, f"page {name} has no live figure ({kind}): add {call} to {chapter}"
        page.wait_for_function("() => [...document.querySelectorAll('.cegppo-live')].every("
                               "(r) => r.querySelector('.main-svg'))", timeout=30_000)
        _check_formulas(page)
        assert not errors, "; ".join(errors)
    finally:
        page.close()

"""Structure of every figure of the book (via ``fig.to_dict()``, not pixels), the notebook renderer, the panels."""

import re
from pathlib import Path

import numpy as np
import plotly.io as pio
import pytest

from cegppo_edu.toy import demos
from cegppo_edu.plots import figures, live, style, widgets
from cegppo_edu.plots.style import GROUP_COLORS
from cegppo_edu.token_groups import GROUPS

ROOT = Path(__file__).resolve().parents[1]


def _slider_steps(fig_dict):
    sliders = fig_dict["layout"].get("sliders", [])
    assert len(sliders) == 1
    return sliders[0]["steps"]


def _visible_sets(fig_dict):
    return [frozenset(i for i, v in enumerate(step["args"][0]["visible"]) if v) for step in _slider_steps(fig_dict)]


def _check_slider(fig_dict, n_steps, always=0):
    """Every step toggles ``visible`` over all traces, steps show different traces, the active step is drawn."""
    steps = _slider_steps(fig_dict)
    assert len(steps) == n_steps
    n = len(fig_dict["data"])
    for step in steps:
        assert step["method"] == "update"
        assert len(step["args"][0]["visible"]) == n
    sets = _visible_sets(fig_dict)
    assert len(set(sets)) == n_steps  # each step shows something different
    common = frozenset.intersection(*sets)
    assert len(common) == always
    active = fig_dict["layout"]["sliders"][0]["active"]
    drawn = frozenset(i for i, t in enumerate(fig_dict["data"]) if t.get("visible", True) is True)
    assert drawn == sets[active]


def _axis_title(fig_dict, axis="xaxis"):
    return fig_dict["layout"][axis]["title"]["text"]


def test_weight_plane_figure():
    d = figures.weight_plane_figure().to_dict()
    heatmaps = [t for t in d["data"] if t["type"] == "heatmap"]
    assert [t["name"] for t in heatmaps] == [style.method_label(m) for m in style.compared_methods()]
    _check_slider(d, 5)
    assert "ratio r" in _axis_title(d) and "advantage" in _axis_title(d, "yaxis")
    # the heat map is gradient_weight itself: PPO's upper-clipped corner is 0, CE-GPPO's is β2(1+ε_h)
    fig = figures.weight_plane_figure()
    maps = [t for t in fig.data if t.type == "heatmap"]
    r, adv = np.asarray(maps[0].x), np.asarray(maps[0].y)
    corner = np.ix_(adv > 0, r > 1.25)  # (Â, r) indices of the upper-clipped corner
    assert (np.asarray(maps[0].z)[corner] == 0).all()
    np.testing.assert_allclose(np.asarray(maps[3].z)[corner], 1.2, rtol=1e-6)
    assert maps[0].name == "PPO / GRPO" and maps[3].name == "CE-GPPO"


@pytest.mark.parametrize("eps_high", [0.2, 0.3])
def test_weight_plane_bounds_and_title_follow_each_methods_own_eps(eps_high):
    """Figure 1.1: each slider step shows the dashed lines r = 1−ε_l, 1+ε_h of its method (DAPO's ε_h = 0.28,
    CISPO's ε_l = 1 and ε_h = 0.28 included), and its title names ε_l and ε_h (issue 25: the lines stayed at
    0.8/1.2 under DAPO and CISPO, and DAPO's title had no ε_h)."""
    from cegppo_edu.losses import get_method
    d = figures.weight_plane_figure(eps_high=eps_high).to_dict()
    for step, method in zip(_slider_steps(d), style.compared_methods()):
        own = get_method(method).defaults
        eps_l = own["eps_low"] if method in ("dapo", "cispo") else 0.2
        eps_h = own["eps_high"] if method in ("dapo", "cispo") else eps_high
        shown = [t for t, v in zip(d["data"], step["args"][0]["visible"]) if v and t["type"] == "scatter"]
        lines = sorted(round(float(t["x"][0]), 9) for t in shown)
        expected = sorted(round(x, 9) for x in (1 - eps_l, 1 + eps_h) if x > 0)  # CISPO: no line at r = 0
        assert lines == expected, (method, lines, expected)
        assert all(t["line"]["dash"] == "dash" for t in shown)
        title = step["args"][1]["title.text"].replace("<br>", " ")
        assert f"ε_l={eps_l:g}" in title and f"ε_h={eps_h:g}" in title, (method, title)


@pytest.mark.parametrize("param, values", [("beta2", [0.0, 0.5, 1.0, 2.0]), ("beta1", [0.0, 1.0]),
                                           ("eps_high", [0.1, 0.2, 0.28]), ("eps_low", [0.1, 0.3])])
def test_weight_curves_figure(param, values):
    d = figures.weight_curves_figure(param, values).to_dict()
    n_methods = len(style.compared_methods())
    assert len(d["data"]) == len(values) * 2 * n_methods
    _check_slider(d, len(values))
    names = {t["name"] for t in d["data"]}
    assert names == {style.method_label(m) for m in style.compared_methods()}
    assert d["layout"]["xaxis"]["title"]["text"] == "ratio r"
    assert d["layout"]["yaxis"]["title"]["text"] == "F(r, Â)"
    assert d["layout"]["sliders"][0]["currentvalue"]["prefix"].startswith(figures.HYPER_LABELS[param])


def test_weight_curves_ce_gppo_plateau_follows_beta2():
    fig = figures.weight_curves_figure("beta2", [0.5, 2.0], methods=("ce_gppo",))
    # traces: (β2=0.5: Â>0, Â<0), (β2=2: Â>0, Â<0)
    for trace, beta2 in ((fig.data[0], 0.5), (fig.data[2], 2.0)):
        x, y = np.asarray(trace.x), np.asarray(trace.y)
        np.testing.assert_allclose(y[x > 1.25], beta2 * 1.2, rtol=1e-6)


def test_weight_curves_rejects_unknown_param():
    with pytest.raises(ValueError, match="param"):
        figures.weight_curves_figure("gamma", [1.0])
    with pytest.raises(ValueError, match="values"):
        figures.weight_curves_figure("beta1", [])


def test_funnel_figure():
    sample = demos.funnel_sample(n_responses=16, length=16)
    eps = [0.1, 0.2, 0.3]
    d = figures.funnel_figure(sample, eps, summaries=[demos.funnel_summary(sample, e, e) for e in eps]).to_dict()
    assert [t["name"] for t in d["data"][:4]] == list(GROUPS)
    assert [t["marker"]["color"] for t in d["data"][:4]] == [GROUP_COLORS[g] for g in GROUPS]
    assert len(d["data"]) == 4 + 3 * len(eps)  # 4 groups + (two band lines + one bar chart) per ε
    _check_slider(d, len(eps), always=4)
    assert d["layout"]["yaxis"]["type"] == "log"
    assert "probability" in _axis_title(d)
    assert all("% of tokens leave" in s["args"][1]["title.text"] for s in _slider_steps(d))


def test_stop_gradient_figure():
    ratios = np.linspace(0.5, 1.5, 11)
    curves = {m: {a: demos.value_and_grad_curves(ratios, a, m) for a in (1.0, -1.0)} for m in ("grpo", "ce_gppo")}
    d = figures.stop_gradient_figure(ratios, curves).to_dict()
    assert len(d["data"]) == 2 * 2 * 2  # methods × signs × (value, gradient)
    assert {t["name"] for t in d["data"]} == {"PPO / GRPO", "CE-GPPO"}
    assert d["layout"]["xaxis3"]["title"]["text"] == "ratio r"
    assert d["layout"]["yaxis3"]["title"]["text"] == "∂ℓ/∂log π"


def test_grad_vs_prob_figure():
    d = figures.grad_vs_prob_figure([0.1, 0.5, 0.9], {"grpo": [1, 2, 3], "ce_gppo": [2, 3, 4]}).to_dict()
    assert [t["name"] for t in d["data"]] == ["PPO / GRPO", "CE-GPPO"]
    assert "probability" in _axis_title(d) and "|F·Â|" in _axis_title(d, "yaxis")


def test_logit_update_figure():
    logits = np.array([2.0, 1.0, 0.0, -1.0])
    cases = [dict(demos.single_softmax_update(logits, 3, 1.5, 1.0), label="PA&LP", token=3, group="PA&LP"),
             dict(demos.single_softmax_update(logits, 3, 0.6, -1.0), label="NA&LP", token=3, group="NA&LP")]
    d = figures.logit_update_figure(cases).to_dict()
    assert [t["type"] for t in d["data"]] == ["bar", "bar"]
    _check_slider(d, 2)
    colors = d["data"][0]["marker"]["color"]
    kept = [i for i, label in enumerate(d["data"][0]["x"]) if label.startswith("▶")]
    assert len(kept) == 1 and colors[kept[0]] == GROUP_COLORS["PA&LP"]
    assert "ΔH predicted" in _slider_steps(d)[0]["args"][1]["title.text"]
    assert _axis_title(d, "yaxis").startswith("update Δz_b")
    with pytest.raises(ValueError, match="cases"):
        figures.logit_update_figure([])


@pytest.fixture(scope="module")
def histories():
    from cegppo_edu.toy import bandit
    return [bandit.simulate(m, steps=12, seeds=2) for m in ("grpo", "dapo", "ce_gppo")]


def test_bandit_history_figure(histories):
    d = figures.bandit_history_figure(histories[2]).to_dict()
    assert len(d["data"]) == 2 * 6  # (band, line) × entropy, reward, clip low, clip high, ΔH meas, ΔH pred
    lines = [t["name"] for t in d["data"][1::2]]
    assert lines == ["entropy", "reward", "clipped below (Â<0)", "clipped above (Â>0)", "ΔH measured",
                     "ΔH predicted (first order)"]
    # Figure 3.9's legend: the panels with two series only, and no two entries drawn alike (issue 25: the
    # entropy's black line and "ΔH measured" were two identical legend entries)
    shown = [t for t in d["data"] if t.get("showlegend", True) is not False]
    assert [t["name"] for t in shown] == lines[2:]
    looks = [(t["line"]["color"], t["line"].get("dash")) for t in shown]
    assert len(set(looks)) == len(looks), looks
    np.testing.assert_allclose(figures.bandit_history_figure(histories[2]).data[1].y, histories[2].entropy, rtol=1e-6)
    assert d["layout"]["xaxis3"]["title"]["text"] == "step (rollout batch)"
    assert "CE-GPPO" in d["layout"]["title"]["text"]


def test_entropy_comparison_and_prediction_figures(histories):
    d = figures.entropy_comparison_figure(histories).to_dict()
    assert len(d["data"]) == 6 and d["data"][1]["name"] == "PPO / GRPO"
    assert _axis_title(d) == "step (rollout batch)" and _axis_title(d, "yaxis") == "entropy"
    d_irr = figures.entropy_comparison_figure(histories, "entropy_irrelevant").to_dict()  # seed-mean only series
    assert len(d_irr["data"]) == 6
    fig = figures.entropy_prediction_figure(histories[2])
    d = fig.to_dict()
    assert [t["name"] for t in d["data"]] == ["y = x", "one step of one seed"]
    assert len(fig.data[1].x) == 12 * 2
    assert "predicted" in _axis_title(d) and "measured" in _axis_title(d, "yaxis")
    fig = figures.cumulative_prediction_figure(histories)
    assert len(fig.data) == 6
    np.testing.assert_allclose(fig.data[0].y, np.cumsum(histories[0].dH_meas), rtol=1e-5, atol=1e-6)


def test_group_contribution_figure(histories):
    d = figures.group_contribution_figure(histories, window=3).to_dict()
    per_run = len(GROUPS) + 2
    assert len(d["data"]) == per_run * 3
    assert [t["name"] for t in d["data"][:per_run]] == list(GROUPS) + ["clipped tokens (all groups)", "ΔH measured"]
    assert [t["line"]["color"] for t in d["data"][:4]] == [GROUP_COLORS[g] for g in GROUPS]
    _check_slider(d, 3)
    assert [s["label"] for s in _slider_steps(d)][:2] == ["PPO / GRPO", "DAPO"]
    with pytest.raises(ValueError, match="histories"):
        figures.group_contribution_figure([])


def test_beta_sweep_and_grid_figures(histories):
    from cegppo_edu.toy import bandit
    sweep = bandit.sweep([0.5, 1.0], [0.5, 1.0, 2.0], steps=8, seeds=2)
    d = figures.beta_sweep_figure(sweep, references=histories[:2]).to_dict()
    # references (band, line), CE-GPPO at its default (0.5, 1) as a grey line, one (band, line) per grid cell
    assert len(d["data"]) == 2 * 2 + 1 + 2 * 6
    _check_slider(d, 6, always=5)
    labels = [s["label"] for s in _slider_steps(d)]
    assert labels[0] == "0.5, 0.5" and labels[-1] == "1, 2"
    assert d["layout"]["sliders"][0]["currentvalue"]["prefix"] == "β1, β2 = "
    # Figure 3.3 is not Figure 3.1 at its start: it opens on the first grid point, beside the default run
    assert d["layout"]["sliders"][0]["active"] == 0
    default = sweep.histories[0][1]  # β1 = 0.5, β2 = 1
    fig = figures.beta_sweep_figure(sweep, references=histories[:2])
    np.testing.assert_allclose(fig.data[4].y, default.entropy_per_seed.mean(0), rtol=1e-6)
    # one legend name for the moving curve at every step: the legend (and the plot's width) never changes
    assert len({t["name"] for t in d["data"][5:] if t.get("showlegend", True) is not False}) == 1
    fig = figures.beta_grid_figure(sweep)
    d = fig.to_dict()
    assert d["data"][0]["type"] == "heatmap" and np.asarray(fig.data[0].z).shape == (2, 3)
    np.testing.assert_allclose(fig.data[0].z, sweep.final("entropy"))  # the final values (summaries.final_mean)
    assert _axis_title(d).startswith("β2") and _axis_title(d, "yaxis").startswith("β1")
    # Figure 3.4: categorical axes, so the cells of β = 0.5, 1, 2 are equal (a numeric axis made them unequal)
    assert d["layout"]["xaxis"]["type"] == "category" and d["layout"]["yaxis"]["type"] == "category"


def test_book_renderer_emits_json_and_a_div_without_plotly_js(monkeypatch):
    monkeypatch.delenv(style.STORE_ONCE, raising=False)
    fig = figures.weight_curves_figure("beta1", [0.5])
    renderer = style.BookRenderer()
    bundle = renderer.to_mimebundle(fig.to_dict())
    assert set(bundle) == {"application/vnd.plotly.v1+json", "text/html"}
    html = bundle["text/html"]
    # an empty div and the figure as JSON: no code runs before the book's deferred plotly.js and book_figures.js
    assert "plotly-graph-div" in html and 'style="height:460px; width:100%;"' in html
    assert "Plotly.newPlot" not in html and "<script>" not in html
    script = re.search(r'<script type="application/json" data-cegppo-figure="(fig-[0-9a-f]+-\d+)">(.*)</script>$',
                       html, re.S)
    import json
    figure = json.loads(script.group(2))
    assert len(figure["data"]) == len(fig.data) and figure["config"] == style.FIGURE_CONFIG
    assert len(html) < 200_000 and "<script src" not in html  # plotly.js itself is served by the book
    assert "MathJax" not in html
    ids = re.findall(r'id="(fig-[0-9a-f]+-\d+)"', html)
    again = style.BookRenderer().to_mimebundle(fig.to_dict())["text/html"]
    assert ids and ids == re.findall(r'id="(fig-[0-9a-f]+-\d+)"', again)  # deterministic ids
    second = renderer.to_mimebundle(fig.to_dict())["text/html"]
    assert re.findall(r'id="(fig-[0-9a-f]+-\d+)"', second) != ids  # same figure twice on a page: new id


def test_book_renderer_stores_a_figure_once_when_asked(monkeypatch):
    monkeypatch.setenv(style.STORE_ONCE, "1")
    bundle = style.BookRenderer().to_mimebundle(figures.weight_curves_figure("beta1", [0.5]).to_dict())
    assert set(bundle) == {"application/vnd.plotly.v1+json"}


def test_setup_notebook_installs_the_renderer():
    saved = pio.renderers.default
    try:
        style.setup_notebook()
        assert pio.renderers.default == "cegppo_book"
        assert isinstance(pio.renderers["cegppo_book"], style.BookRenderer)
    finally:
        pio.renderers.default = saved


def test_notation_page_colours_match_the_package():
    text = (ROOT / "book" / "notation.md").read_text()
    for group, color in GROUP_COLORS.items():
        if group in GROUPS:
            assert f'<span style="color:{color}">■ {group}</span>' in text


def test_widget_panels_rebuild_on_change():
    panel = widgets.weight_panel()
    first = panel.figure
    panel.controls["beta2"].value = 1.75
    assert panel.figure is not first
    assert "β2=1.75" in panel.figure.layout.title.text
    soft = widgets.softmax_panel()
    soft.controls["adv"].value = -1.0
    soft.controls["ratio"].value = 0.5
    bars = soft.figure.data[0]
    assert bars.name == "r=0.50, Â=-1.00"
    kept = [i for i, label in enumerate(bars.x) if label.startswith("▶")]
    assert len(kept) == 1 and bars.marker.color[kept[0]] == GROUP_COLORS["NA&LP"]  # π≈0.01, Â<0: NA&LP
    assert "ΔH predicted -" in soft.figure.layout.title.text


def test_bandit_and_funnel_panels_rebuild_on_change():
    panel = widgets.bandit_panel(steps=4, seeds=1)
    assert "CE-GPPO β1=0.5, β2=1" in panel.figure.layout.title.text
    panel.controls["beta1"].value = 0.25
    assert "β1=0.25" in panel.figure.layout.title.text
    panel.controls["method"].value = "grpo"  # the β sliders do not apply to GRPO
    assert "PPO / GRPO" in panel.figure.layout.title.text
    funnel = widgets.funnel_panel()
    funnel.controls["eps"].value = 0.3
    assert funnel.figure.layout.title.text.startswith("ε = 0.3")


# --------------------------------------------------------------------------------------------------
# What a reader sees: exact zeros in white, comparable bars, titles that fit, colours that read, labels not ids
# --------------------------------------------------------------------------------------------------
def _color_at(colorscale, fraction):
    """The colour a plotly colour scale gives to ``fraction`` (the last stop at or below it)."""
    return [c for x, c in colorscale if x <= fraction][-1]


def test_weight_plane_draws_exactly_zero_in_white_and_small_weights_dark():
    fig = figures.weight_plane_figure()
    heat = fig.data[0]
    scale = [tuple(stop) for stop in heat.colorscale]
    zmax = heat.zmax
    assert _color_at(scale, 0.0) == "#ffffff"
    for small in (1e-3, 0.02, 0.1):  # a small F > 0 (PPO's F = r at r = 0.02 is one) is far from white
        red, green, blue = (int(_color_at(scale, small / zmax)[i:i + 2], 16) for i in (1, 3, 5))
        assert red + green + blue < 3 * 160, f"F={small} is drawn almost white"
    assert min(np.asarray(heat.z)[np.asarray(heat.z) > 0]) < 0.05  # such weights are on the figure


def test_logit_update_bars_share_one_y_range_across_cases():
    logits = np.array([2.0, 1.0, 0.0, -1.0])
    big = dict(demos.single_softmax_update(logits, 3, 1.5, 1.0, lr=1.0), label="big", token=3, group="PA&LP")
    small = dict(demos.single_softmax_update(logits, 3, 0.6, -1.0, lr=1.0), label="small", token=3, group="NA&LP")
    fig = figures.logit_update_figure([big, small])
    low, high = fig.layout.yaxis.range
    reach = max(np.abs(big["delta"]).max(), np.abs(small["delta"]).max())
    assert high >= reach and -low >= reach and high < 1.5 * reach  # fixed, covers both, not wasteful
    assert fig.layout.yaxis.autorange in (None, False)


def test_titles_are_wrapped_to_the_column_and_get_room_above_the_plot():
    assert style.wrap("a " * 100, width=20).count("<br>") >= 9
    assert all(len(line) <= style.TITLE_CHARS for line in style.wrap("word " * 60).split("<br>"))
    assert style.wrap("short title") == "short title"
    history = __import__("cegppo_edu.toy.bandit", fromlist=["x"]).simulate("ce_gppo", steps=5, seeds=2)
    fig = figures.entropy_prediction_figure(history)  # its title is longer than one line
    lines = fig.layout.title.text.split("<br>")
    assert len(lines) == 2 and all(len(line) <= style.TITLE_CHARS for line in lines)
    one_line = figures.entropy_comparison_figure([history], title="short")
    assert fig.layout.margin.t > one_line.layout.margin.t  # two lines get more room than one


def _contrast_with_white(color: str) -> float:
    """WCAG contrast ratio of ``color`` against white."""
    def channel(value):
        value /= 255
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(int(color[i:i + 2], 16)) for i in (1, 3, 5))
    return 1.05 / (0.2126 * r + 0.7152 * g + 0.0722 * b + 0.05)


def test_method_lines_read_on_white_and_differ_where_methods_overlap():
    for method, color in style.METHOD_COLORS.items():
        assert _contrast_with_white(color) >= 2.5, f"{method}'s colour {color} is too light on white"
    assert len(set(style.METHOD_COLORS.values())) == len(style.METHOD_COLORS)
    assert not set(style.METHOD_COLORS.values()) & set(GROUP_COLORS.values())
    dashes = [style.method_line(m)["dash"] for m in style.compared_methods()]
    assert len(set(dashes)) == len(dashes)  # lines that lie on top of each other (F = r) stay distinguishable
    fig = figures.weight_curves_figure("beta2", values=[1.0])
    assert fig.data[0].name == "CE-GPPO"  # drawn first, so the thinner dashed lines show on top of it


def test_run_figures_name_runs_by_their_method_labels():
    from cegppo_edu.plots import run_figures

    assert run_figures.run_label("ce_gppo β1=1 β2=0.5") == "CE-GPPO β1=1 β2=0.5"
    assert run_figures.run_label("grpo") == "PPO / GRPO" and run_figures.run_label("my run") == "my run"
    runs = {"grpo": [{"step": 1, "reward/mean": 0.5}], "ce_gppo (live)": [{"step": 1, "reward/mean": 0.6}]}
    names = {t.name for t in run_figures.run_curves_figure(runs, curves=(("reward/mean", "reward"),)).data}
    assert names == {"PPO / GRPO", "CE-GPPO (live)"}


def test_cumulative_and_comparison_figures_never_wear_token_group_colours(histories):
    for fig in (figures.cumulative_prediction_figure(histories), figures.entropy_comparison_figure(histories)):
        colors = {t.line.color for t in fig.data if t.line.color}
        assert colors and not colors & set(GROUP_COLORS.values()), colors
    assert {t.line.color for t in figures.cumulative_prediction_figure(histories).data} == \
        {style.method_color(h.method) for h in histories}


def test_tables_render_as_html_tables_and_align_as_text():
    from cegppo_edu.plots.tables import Table

    table = Table(["a", "b"], [[1, "x<y"], ["long value", 2.5]])
    page = table._repr_html_()
    assert page.startswith('<table class="cegppo-table">') and "<td>x&lt;y</td>" in page and "|" not in page
    assert str(table).splitlines()[1].startswith("1           x<y")
    rows = Table.from_dicts([{"n": 1.23456, "m": float("nan")}], digits=2)
    assert rows.rows == [["1.23", "—"]]
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        Table(["a", "b"], [["only one"]])


def test_funnel_share_axis_fits_the_tallest_bar_of_any_step():
    """Figure 1.3 (the funnel): the share axis runs to 1.1 × the tallest bar over every ε step, not to 1 (issue 25: bars of at
    most 0.22 on an axis to 1)."""
    sample = demos.funnel_sample(seed=0)
    eps = [0.1, 0.2, 0.3]
    fig = figures.funnel_figure(sample, eps)
    tallest = max(float(np.max(t.y)) for t in fig.data if t.type == "bar")
    top = fig.layout.yaxis2.range[1]
    assert tallest <= top <= 1.1 * tallest + 1e-12 and top < 1, (tallest, top)


def test_study_grid_has_colour_scales_categorical_axes_and_accuracy_intervals_inside_0_1():
    """Figure 4.10: a colour scale per heat map, equal cells, and the accuracy intervals written in the cells cut to
    [0, 1] (issue 25: t-intervals of accuracy went below 0; the figure had no colour scale)."""
    from cegppo_edu.plots import study_figures
    st = study_figures.st  # the study module the figure reads (lm.study, moving to experiments.study)

    class Fake:  # 5 seeds per configuration; accuracy near 0 with a spread, so the t-interval reaches below 0
        def final(self, name, key):
            b1, b2 = next((c["beta1"], c["beta2"]) for n, c in st.CONFIGS.items() if n == name)
            base = 0.02 if key == st.ACCURACY else 1.0 + b2
            return np.array([base, base + 0.05, 0.0 if key == st.ACCURACY else base, base + 0.01, base - 0.01 * b1])

    fig = study_figures.beta_grid_figure(Fake())
    d = fig.to_dict()
    assert [t["type"] for t in d["data"]] == ["heatmap", "heatmap"]
    assert all(t.get("showscale", True) is not False and t["colorbar"]["title"]["text"] for t in d["data"])
    assert {d["layout"][a]["type"] for a in ("xaxis", "yaxis", "xaxis2", "yaxis2")} == {"category"}
    lows = [float(v) for row in d["data"][1]["text"] for cell in row for v in re.findall(r"\[(-?[\d.]+),", cell)]
    assert lows and min(lows) == 0.0  # cut at 0 (uncut it is negative)
    assert "cut at 0 and 1" in " ".join(a["text"] for a in d["layout"]["annotations"])


def test_gpu_preview_figure_states_what_the_smoke_run_logged():
    """Chapter 6 in smoke mode: one annotated figure, a panel per metric, each naming what the run logged."""
    from cegppo_edu.plots import run_figures
    runs = {"ce_gppo (smoke)": [{"step": 0, "eval/accuracy": 0.0},
                                *({"step": k, "reward/mean": -1.0, "entropy/mean": 5.0 + k, "PA&LP/clip_high_frac": 0.0,
                                   "NA&LP/clip_low_frac": 0.0, **{f"{g}/clipped": 0.0 for g in GROUPS}}
                                  for k in (1, 2, 3))]}
    d = run_figures.gpu_preview_figure(runs).to_dict()
    texts = [a["text"].replace("<br>", " ") for a in d["layout"]["annotations"]]
    notes = [t for t in texts if t.startswith("On a GPU")]
    assert len(notes) == len(run_figures.GPU_PANELS) == 4
    assert "3 steps, entropy/mean = 6 to 8" in notes[0] and "= -1 to 0" in notes[1], notes
    assert not d["data"]  # no flat curve of a random model


def test_the_vendored_plotly_bundles_are_the_installed_plotly_version():
    """book/_ext/vendor's partial bundles must be the plotly.js the figures were made for (the one inside the
    installed plotly package); an upgrade of plotly without new bundles fails here, not in a reader's browser."""
    from plotly.offline import get_plotlyjs_version
    import importlib.util
    spec = importlib.util.spec_from_file_location("book_assets", ROOT / "book" / "_ext" / "book_assets.py")
    assets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(assets)
    for name, (path, _traces) in assets.BUNDLES.items():
        head = path.read_text(encoding="utf-8", errors="replace")[:400]
        version = re.search(r"plotly\.js(?: \([a-z]+ - minified\))? v(\d+\.\d+\.\d+)", head)
        assert version and version.group(1) == get_plotlyjs_version(), (name, head[:120])
    # the smallest bundle that draws a page's traces
    line = style.figure_html(figures.weight_curves_figure("beta1", [0.5]).to_dict(), "fig-a-0")
    heat = style.figure_html(figures.weight_plane_figure().to_dict(), "fig-b-0")
    assert assets.bundle_for(line) == "plotly-basic.min.js"
    assert assets.bundle_for(line + heat) == "plotly-cartesian.min.js"
    assert assets.bundle_for('<div class="plotly-graph-div"></div><script>Plotly.newPlot()</script>') == "plotly.min.js"
    from cegppo_edu.plots import run_figures  # a figure of annotations only (chapter 6's smoke mode): no traces
    empty = style.figure_html(run_figures.gpu_preview_figure({"run": [{"step": 1}]}).to_dict(), "fig-c-0")
    assert assets.bundle_for(empty) == "plotly-basic.min.js"
    assert assets.bundle_for(empty + live.weight_explorer().html) == "plotly-basic.min.js"


def test_offer_shows_a_panel_only_where_a_front_end_can_draw_it(monkeypatch, capsys):
    """plots.widgets.offer: nothing built, shown or returned under nbclient (make notebooks, the book build: no
    JPY_SESSION_NAME), the panel in a kernel a Jupyter server started; CEGPPO_PANELS overrides either way."""
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv(widgets.PANELS_ENV, raising=False)
    built = []

    def make():
        built.append(1)
        return widgets.weight_panel()
    assert widgets.offer(make) is None and not built
    monkeypatch.setenv("JPY_SESSION_NAME", "/notebooks/01_clipping_quadrants.ipynb")
    panel = widgets.offer(make)
    assert isinstance(panel, widgets.Panel) and built == [1] and set(panel.controls) == {"eps_low", "eps_high", "beta1", "beta2"}
    monkeypatch.setenv(widgets.PANELS_ENV, "0")
    assert widgets.offer(make) is None and built == [1]
    monkeypatch.delenv("JPY_SESSION_NAME")
    monkeypatch.setenv(widgets.PANELS_ENV, "1")
    assert isinstance(widgets.offer(widgets.funnel_panel), widgets.Panel)


PANEL_CELLS = {"01_clipping_quadrants": {"weight_panel", "funnel_panel"}, "02_gradient_flow": {"softmax_panel"},
               "03_entropy_dynamics_bandit": {"bandit_panel"}}


@pytest.mark.parametrize("name", sorted(PANEL_CELLS))
def test_each_chapter_with_a_panel_offers_it_in_a_cell_kept_out_of_the_book_and_the_outputs(name):
    import nbformat
    cells = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells
    offered = {}
    for cell in cells:
        found = re.search(r"widgets\.offer\(widgets\.(\w+)\)", cell.source) if cell.cell_type == "code" else None
        if found:
            offered[found.group(1)] = cell
    assert set(offered) == PANEL_CELLS[name]
    for panel, cell in offered.items():
        assert "remove-cell" in cell.metadata.get("tags", []), f"{name}: the {panel} cell shows in the book"
        assert not cell.outputs, f"{name}: the {panel} cell has stored outputs"
        assert callable(getattr(widgets, panel))

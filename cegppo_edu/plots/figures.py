"""Plotly figures of chapters 1-3: one function per figure, each returning a ``go.Figure``.

Conventions (DESIGN.md; colours, labels and helpers in ``plots.style``):
- the four token groups always wear ``style.GROUP_COLORS``; methods wear ``style.method_color``;
- sliders are plotly-native: every step's traces are precomputed and a step only toggles which are visible
  (``method="update"``), so they move on the static site, without a kernel;
- figures take numbers computed elsewhere (``losses``, ``toy.demos``, ``toy.bandit``) and compute nothing but layout.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..losses import get_method, gradient_weight
from ..summaries import FINAL_STEPS
from ..token_groups import GROUPS, HP_THRESHOLD
from .style import (DOWN_COLOR, FALLBACK_COLORS, GROUP_COLORS, METHOD_COLORS, HYPER_LABELS, TEMPLATE, UP_COLOR, add_visibility_slider,
                    compared_methods, f32, finish, hyper_text, mean_band_traces, method_color, method_label, method_line,
                    moving_average, step_axis, zero_white_colorscale)


# --------------------------------------------------------------------------------------------------
# Chapter 1: the (r, Â) plane
# --------------------------------------------------------------------------------------------------
SLIDER_HYPERS = ("eps_low", "eps_high", "beta1", "beta2")


def _shared_hyper(**given) -> dict:
    """ε and β of the chapters' reference point, CE-GPPO's defaults, with the given (not None) values on top."""
    reference = get_method("ce_gppo").defaults
    return {k: reference[k] if given.get(k) is None else given[k] for k in SLIDER_HYPERS}


def _method_hyper(method: str, **shared) -> dict:
    """The shared slider values ``method`` takes: each of its hyper-parameters whose default is CE-GPPO's (a
    method with its own default, as DAPO's ε_h = 0.28 or CISPO's ε, keeps it)."""
    own, reference = get_method(method).defaults, get_method("ce_gppo").defaults
    return {k: v for k, v in shared.items() if k in own and own[k] == reference.get(k)}


def weight_breakpoints(method: str, r_min: float, r_max: float, **hyper) -> np.ndarray:
    """The ratios at which F(r, ·) of ``method`` changes its formula, both sides of each jump, and the ends: F is
    piecewise linear in r (r inside the interval, a constant or clip(r) outside), so a curve through these points
    is exact, with a few numbers instead of hundreds."""
    p = get_method(method).resolve(**hyper)
    edges = [1 - p["eps_low"], 1 + p["eps_high"]] + ([p["dual_clip"]] if p.get("dual_clip") else [])
    points = [r_min, r_max] + [e + d for e in edges for d in (-1e-9, 0.0, 1e-9)]
    return np.unique([x for x in points if r_min <= x <= r_max])


def _method_bounds(method: str, **shared) -> tuple[float, float]:
    """The clip interval [1−ε_l, 1+ε_h] that ``method`` uses with the shared slider values (DAPO and CISPO keep
    their own ε)."""
    p = get_method(method).resolve(**_method_hyper(method, **shared))
    return 1 - p["eps_low"], 1 + p["eps_high"]


def _method_title_hyper(method: str, **shared) -> dict:
    """The ε and β ``method`` uses with the shared slider values, as the figure titles print them: ε_l and ε_h
    always, β1 and β2 where the method takes or fixes them (PPO / GRPO and DAPO fix them at 0, GPPO at 1)."""
    p = get_method(method).resolve(**_method_hyper(method, **shared))
    return {k: p[k] for k in SLIDER_HYPERS if k in p}


def weight_plane_figure(methods=None, eps_low=None, eps_high=None, beta1=None, beta2=None,
                        r_max=2.0, n=100) -> go.Figure:
    """Heat map of the gradient weight F(r, Â) over the (r, Â) plane, one method per slider step.

    White is exactly F = 0, where a method drops the token's gradient (``style.zero_white_colorscale``: any F > 0
    starts at the scale's dark end). The dashed lines are the shown method's r = 1−ε_l and r = 1+ε_h (DAPO's
    ε_h = 0.28 and CISPO's ε_l = 1, ε_h = 0.28 move them; a bound at r ≤ 0 is not drawn); the step's title names
    the method's ε_l, ε_h and, where it has them, β1, β2. The two corners PPO clips are labelled with the group
    that mostly lives there (PA&LP, NA&LP). ``methods`` defaults to ``style.compared_methods()``; unset ε, β are
    CE-GPPO's defaults.
    """
    methods = methods or compared_methods()
    shared = _shared_hyper(eps_low=eps_low, eps_high=eps_high, beta1=beta1, beta2=beta2)
    eps_low, eps_high = shared["eps_low"], shared["eps_high"]
    r = np.linspace(0.02, r_max, n)
    adv = np.array([-1.0, 1.0])  # F depends on the sign of Â only: one row per sign
    zmax = max(1.5, r_max)
    fig = go.Figure()
    step_traces = []
    for method in methods:
        hyper = _method_hyper(method, **shared)
        weight = gradient_weight(r[None, :], adv[:, None], method, **hyper)  # (2, R)
        indices = [len(fig.data)]
        fig.add_trace(go.Heatmap(x=f32(r), y=f32(adv), z=f32(weight), zmin=0, zmax=zmax,
                                 colorscale=zero_white_colorscale(zmax),
                                 name=method_label(method), colorbar={"title": {"text": "F"}},
                                 hovertemplate="r=%{x:.2f}<br>Â=%{y:.2f}<br>F=%{z:.2f}<extra></extra>"))
        for x in _method_bounds(method, **shared):
            if 0 < x < r_max:  # the method's own bounds, shown and hidden with its step
                indices.append(len(fig.data))
                fig.add_trace(go.Scatter(x=[x, x], y=[-2, 2], mode="lines", showlegend=False, hoverinfo="skip",
                                         name=f"r = {x:g}", line={"color": "#555555", "dash": "dash", "width": 1.5}))
        step_traces.append(indices)
    fig.add_hline(y=0, line_color="#555555")
    fig.add_annotation(x=(1 + eps_high + r_max) / 2, y=1.0, text="Â>0, r>1+ε_h<br>mostly PA&LP",
                       showarrow=False, font={"color": GROUP_COLORS["PA&LP"], "size": 14}, bgcolor="white")
    fig.add_annotation(x=(1 - eps_low) / 2, y=-1.0, text="Â<0, r<1−ε_l<br>mostly NA&LP",
                       showarrow=False, font={"color": GROUP_COLORS["NA&LP"], "size": 14}, bgcolor="white")
    labels = [method_label(m) for m in methods]
    titles = [f"Gradient weight F(r, Â) under {method_label(m)} ({hyper_text(_method_title_hyper(m, **shared))}); "
              f"dashed: r = 1−ε_l, 1+ε_h" for m in methods]
    add_visibility_slider(fig, step_traces, labels, "method: ", titles)
    fig.update_layout(height=500, xaxis_title="ratio r = π_θ / π_old", yaxis_title="advantage Â",
                      template=TEMPLATE)
    fig.update_xaxes(showline=True, mirror=True, linecolor="#555555")  # the plane's edge, where F = 0 meets white
    fig.update_yaxes(range=[-2, 2], tickvals=[-1, 1], ticktext=["Â < 0", "Â > 0"], showline=True, mirror=True,
                     linecolor="#555555")
    return finish(fig)


def weight_curves_figure(param: str = "beta2", values=(0.0, 0.25, 0.5, 0.75, 1.0, 1.5), methods=None,
                         eps_low=None, eps_high=None, beta1=None, beta2=None, r_max=2.0) -> go.Figure:
    """F against r for Â>0 (left) and Â<0 (right), one curve per method; a slider over one hyper-parameter.

    ``param`` is one of ``eps_low``, ``eps_high``, ``beta1``, ``beta2``; each slider step holds the curves
    computed with that value (the others fixed, CE-GPPO's defaults unless given), so the slider moves on the
    static site.
    """
    # CE-GPPO first and the others dashed on top of it: where methods agree (F = r) every line stays visible
    methods = sorted(methods or compared_methods(), key=lambda m: m != "ce_gppo")
    fixed = _shared_hyper(eps_low=eps_low, eps_high=eps_high, beta1=beta1, beta2=beta2)
    if param not in fixed:
        raise ValueError(f"param={param!r} is not one of {', '.join(fixed)}")
    if len(values) == 0:
        raise ValueError("values is empty; give at least one value for the slider")
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True,
                        subplot_titles=("Â > 0 (positive advantage)", "Â < 0 (negative advantage)"))
    step_traces = []
    for value in values:
        hyper = {**fixed, param: value}
        indices = []
        for col, adv in ((1, 1.0), (2, -1.0)):
            for method in methods:
                method_hyper = _method_hyper(method, **hyper)
                r = weight_breakpoints(method, 0.01, r_max, **method_hyper)
                weight = gradient_weight(r, adv, method, **method_hyper)
                indices.append(len(fig.data))
                fig.add_trace(go.Scatter(x=f32(r), y=f32(weight), mode="lines", name=method_label(method),
                                         legendgroup=method, showlegend=(col == 1), line=method_line(method)),
                              row=1, col=col)
        step_traces.append(indices)
    labels = [f"{value:g}" for value in values]
    # DAPO and CISPO keep their own ε_h = 0.28 (CISPO: no lower bound); the chapter's text says so.
    titles = [f"Gradient weight F against r: {hyper_text({**fixed, param: v})}" for v in values]
    add_visibility_slider(fig, step_traces, labels, f"{HYPER_LABELS[param]} = ", titles,
                           active=min(range(len(values)), key=lambda k: abs(values[k] - fixed[param])))
    fig.update_xaxes(title_text="ratio r")
    fig.update_yaxes(title_text="F(r, Â)", row=1, col=1)
    fig.update_layout(height=460, template=TEMPLATE)
    return finish(fig)


def clipped_weight_figure(weights: dict) -> go.Figure:
    """Stacked bars, one per method, of the gradient weight each gives the tokens PPO clips, split by token group.

    ``weights[method][group]`` as returned by ``toy.demos.clipped_weight_by_group``; each group wears its colour."""
    methods = list(weights)
    fig = go.Figure()
    for group in GROUPS:
        fig.add_trace(go.Bar(x=[method_label(m) for m in methods], y=[weights[m][group] for m in methods], name=group,
                             marker_color=GROUP_COLORS[group],
                             hovertemplate=f"{group}: %{{y:.4f}}<extra>%{{x}}</extra>"))
    fig.update_layout(barmode="stack", height=400, template=TEMPLATE,
                      yaxis_title="Σ F·|Â| on clipped tokens / all tokens",
                      title_text="The gradient each method gives the tokens PPO clips, by token group")
    return finish(fig)


def funnel_figure(sample: dict, eps_values=(0.1, 0.15, 0.2, 0.25, 0.3), threshold: float = HP_THRESHOLD,
                  summaries: list[dict] | None = None, max_points: int = 3000) -> go.Figure:
    """The paper's figure 1 (left) from our own numbers: ratio after one update against probability before it.

    Left: one point per token, coloured by group (fixed colours); the horizontal lines mark [1−ε, 1+ε] for the
    slider's ε (ε_l = ε_h = ε). Right: the share of tokens in each probability bin that leave the interval.
    ``summaries`` (one ``demos.funnel_summary`` per ε) goes into the step titles.
    """
    prob, ratio, group = (np.asarray(sample[k]) for k in ("prob", "ratio", "group"))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38],
                        subplot_titles=("ratio after one update", "share outside [1−ε, 1+ε]"))
    keep = np.arange(len(prob))[:max_points]
    for index, name in enumerate(GROUPS):
        sel = keep[group[keep] == index]
        fig.add_trace(go.Scatter(x=f32(prob[sel]), y=f32(ratio[sel]), mode="markers", name=name,
                                   marker={"color": GROUP_COLORS[name], "size": 4, "opacity": 0.7}),
                      row=1, col=1)
    always = tuple(range(len(fig.data)))
    edges = np.linspace(0, 1, 11)
    centres = 0.5 * (edges[1:] + edges[:-1])
    bins = np.clip(np.digitize(prob, edges) - 1, 0, len(centres) - 1)
    step_traces, tallest = [], 0.0
    for eps in eps_values:
        start = len(fig.data)
        for y, label in ((1 - eps, f"1−ε = {1 - eps:g}"), (1 + eps, f"1+ε = {1 + eps:g}")):
            fig.add_trace(go.Scatter(x=[0, 1], y=[y, y], mode="lines", name=label, showlegend=False,
                                     line={"color": "black", "dash": "dash"}), row=1, col=1)
        outside = (ratio < 1 - eps) | (ratio > 1 + eps)
        share = np.array([outside[bins == b].mean() if (bins == b).any() else 0.0 for b in range(len(centres))])
        tallest = max(tallest, float(share.max()))
        fig.add_trace(go.Bar(x=centres, y=share, width=0.09, name="left the interval", showlegend=False,
                             marker_color=["#56B4E9" if c < threshold else "#0072B2" for c in centres]),
                      row=1, col=2)
        step_traces.append(list(range(start, len(fig.data))))
    if summaries is None:
        titles = [f"ε = {eps:g}" for eps in eps_values]
    else:
        titles = [f"ε = {eps:g}: {100 * s['outside_frac']:.1f}% of tokens leave [1−ε, 1+ε]; "
                  f"{100 * s['outside_lp_share']:.0f}% of those have p < {threshold:g} "
                  f"(of all tokens: {100 * s['lp_frac']:.0f}%)" for eps, s in zip(eps_values, summaries)]
    add_visibility_slider(fig, step_traces, [f"{e:g}" for e in eps_values], "ε_l = ε_h = ", titles,
                           active=len(eps_values) // 2, always=always)
    fig.update_xaxes(title_text="probability π_old of the sampled token", row=1, col=1)
    fig.update_yaxes(title_text="ratio r (log scale)", type="log", row=1, col=1)
    fig.update_xaxes(title_text="probability bin", range=[0, 1], row=1, col=2)
    # one range for every step (the bars compare across ε), fitted to the tallest bar of any step
    fig.update_yaxes(title_text="share outside", range=[0, min(1.0, 1.1 * tallest) or 1.0], row=1, col=2)
    fig.update_layout(height=520, template=TEMPLATE)
    return finish(fig)


# --------------------------------------------------------------------------------------------------
# Chapter 2: gradients through the stop-gradient
# --------------------------------------------------------------------------------------------------
def stop_gradient_figure(ratios, curves: dict, eps_low=0.2, eps_high=0.2) -> go.Figure:
    """Per-token objective ℓ (top) and its gradient ∂ℓ/∂log π = F·Â (bottom) against r, for Â = +1 and −1.

    ``curves[method][adv] = (loss_values, d_loss_d_logp)`` as returned by ``demos.value_and_grad_curves``
    (losses are minimised, so the figure shows their negatives, the objective being maximised).
    """
    fig = make_subplots(rows=2, cols=2, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("Â = +1: objective ℓ", "Â = −1: objective ℓ",
                                        "Â = +1: gradient ∂ℓ/∂log π", "Â = −1: gradient ∂ℓ/∂log π"))
    for method in sorted(curves, key=lambda m: m != "ce_gppo"):  # CE-GPPO below, the dashed others on top
        for col, adv in ((1, 1.0), (2, -1.0)):
            values, grads = curves[method][adv]
            for row, y in ((1, -np.asarray(values)), (2, -np.asarray(grads))):
                fig.add_trace(go.Scatter(x=ratios, y=y, mode="lines", name=method_label(method),
                                         legendgroup=method, showlegend=(row == 1 and col == 1),
                                         line=method_line(method)),
                              row=row, col=col)
    for x in (1 - eps_low, 1 + eps_high):
        fig.add_vline(x=x, line_dash="dash", line_color="grey")
    fig.update_xaxes(title_text="ratio r", row=2)
    fig.update_yaxes(title_text="ℓ (per token)", row=1, col=1)
    fig.update_yaxes(title_text="∂ℓ/∂log π", row=2, col=1)
    fig.update_layout(height=620, template=TEMPLATE,
                      title_text="Value vs gradient: the stop-gradient flattens the value, not the gradient")
    return finish(fig)


def grad_vs_prob_figure(centres, curves: dict, title: str | None = None) -> go.Figure:
    """Mean gradient size reaching a token's own logit against its probability, one line per method.

    ``curves[method] = mean |F·Â|·(1−π)`` per probability bin (``demos.grad_norm_by_prob`` + ``binned_mean``).
    """
    fig = go.Figure()
    for method, y in curves.items():
        fig.add_trace(go.Scatter(x=centres, y=y, mode="lines+markers", name=method_label(method),
                                 line=method_line(method, "grey")))
    fig.update_layout(height=440, template=TEMPLATE, xaxis_title="probability π_old of the token",
                      yaxis_title="mean |F·Â|·(1−π) on its logit",
                      title_text=title or "How much gradient each method sends, by token probability")
    return finish(fig)


def logit_update_figure(cases: list[dict]) -> go.Figure:
    """Bars of the logit update Δz_b on every logit of one softmax when one token is kept; a slider over cases.

    Each case is ``demos.single_softmax_update(...)`` plus ``label``, ``token`` and ``group`` (a name in
    ``GROUPS``), and optionally ``short``, the slider's label (default ``label``). Logits are sorted by probability; the kept token's bar wears its group's colour, the others
    green (up) or pink (down). The step title gives ΔH predicted (first order) and measured.
    """
    if not cases:
        raise ValueError("cases is empty; give at least one single_softmax_update result")
    fig = go.Figure()
    step_traces, titles = [], []
    # one y-range for every case, so that the bars' heights compare across the slider's steps
    reach = 1.1 * max(float(np.abs(case["delta"]).max()) for case in cases) or 1.0
    for case in cases:
        order = np.argsort(-case["prob"])
        delta = case["delta"][order]
        colors = [GROUP_COLORS[case["group"]] if b == case["token"] else (UP_COLOR if d > 0 else DOWN_COLOR)
                  for b, d in zip(order, delta)]
        labels = [f"{'▶ ' if b == case['token'] else ''}π={p:.3f}" for b, p in zip(order, case["prob"][order])]
        step_traces.append([len(fig.data)])
        fig.add_trace(go.Bar(x=labels, y=delta, marker_color=colors, name=case["label"],
                             hovertemplate="%{x}<br>Δz=%{y:.4f}<extra></extra>"))
        titles.append(f"{case['label']}: F={case['weight']:.2f}, ΔH predicted {case['dH_pred']:+.4f}, "
                      f"measured {case['dH_meas']:+.4f}")
    add_visibility_slider(fig, step_traces, [c.get("short", c["label"]) for c in cases], "kept token: ", titles)
    fig.update_layout(height=480, template=TEMPLATE, showlegend=False,
                      xaxis_title="logit b (sorted by probability; ▶ = the kept token)",
                      yaxis_title="update Δz_b = −η ∂loss/∂z_b", yaxis_range=[-reach, reach])
    return finish(fig)


# --------------------------------------------------------------------------------------------------
# Chapter 3: the token bandit (``bandit.History`` / ``bandit.Sweep``)
# --------------------------------------------------------------------------------------------------
def _history_label(history) -> str:
    label = method_label(history.method)
    if history.method == "ce_gppo":
        label += f" β1={history.hyper['beta1']:g}, β2={history.hyper['beta2']:g}"
    return label


def _run_color(histories, k: int) -> str:
    """Run k's colour: its method's, unless several runs share the method (then distinct spare colours, never a
    token group's)."""
    method = histories[k].method
    spare = [c for c in FALLBACK_COLORS if c not in METHOD_COLORS.values()]
    if sum(h.method == method for h in histories) == 1:
        return method_color(method, spare[k % len(spare)])
    return spare[k % len(spare)]


def bandit_history_figure(history) -> go.Figure:
    """One token-bandit run: entropy, reward, clip fractions and ΔH (predicted against measured) per step.

    Lines are means over seeds, bands ±1 standard deviation over seeds.
    """
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.14, horizontal_spacing=0.14,
                        subplot_titles=("entropy (mean over positions)", "reward of the batch",
                                        "share of token-updates clipped", "entropy change per step"))
    color = method_color(history.method, "#000000")
    # the two upper panels hold one series each, named by their subplot titles: no legend entry (the entropy's
    # black line would read as a second "ΔH measured"); the legend names the lower panels' pairs only
    for trace in mean_band_traces(history.entropy_per_seed, "entropy", color, showlegend=False):
        fig.add_trace(trace, row=1, col=1)
    for trace in mean_band_traces(history.reward_per_seed, "reward", "#0072B2", showlegend=False):
        fig.add_trace(trace, row=1, col=2)
    for name, per_seed, col in (("clipped below (Â<0)", history.clip_low_per_seed, GROUP_COLORS["NA&LP"]),
                                ("clipped above (Â>0)", history.clip_high_per_seed, GROUP_COLORS["PA&LP"])):
        for trace in mean_band_traces(per_seed, name, col):
            fig.add_trace(trace, row=2, col=1)
    for name, per_seed, col, dash in (("ΔH measured", history.dH_meas_per_seed, "#000000", None),
                                      ("ΔH predicted (first order)", history.dH_pred_per_seed, "#D55E00", "dot")):
        for trace in mean_band_traces(per_seed, name, col, dash=dash):
            fig.add_trace(trace, row=2, col=2)
    fig.update_xaxes(title_text="step (rollout batch)", row=2)
    fig.update_yaxes(title_text="H (nats)", row=1, col=1)
    fig.update_yaxes(title_text="mean reward", row=1, col=2)
    fig.update_yaxes(title_text="fraction", row=2, col=1)
    fig.update_yaxes(title_text="ΔH per step", row=2, col=2)
    fig.update_layout(height=700, template=TEMPLATE,
                      title_text=f"Token bandit: {_history_label(history)}, {history.seeds} seeds "
                                 f"(mean ±1 sd over seeds)")
    return finish(fig)


def entropy_comparison_figure(histories, field: str = "entropy", title: str | None = None) -> go.Figure:
    """The seed-mean of ``field`` (``entropy``, ``entropy_irrelevant``, ``reward``...) with ±1 sd bands, one
    line per run. ``histories`` is a list of ``bandit.History`` (labels and colours from their method)."""
    fig = go.Figure()
    for k, history in enumerate(histories):
        color = _run_color(histories, k)
        per_seed = getattr(history, f"{field}_per_seed", None)
        if per_seed is None:  # a series stored only as its seed-mean
            per_seed = np.asarray(getattr(history, field))[None]
        for trace in mean_band_traces(per_seed, _history_label(history), color):
            fig.add_trace(trace)
    fig.update_layout(height=460, template=TEMPLATE, xaxis_title="step (rollout batch)",
                      yaxis_title=field.replace("_", " "),
                      title_text=title or f"{field.replace('_', ' ')}: mean over seeds, band ±1 sd")
    return finish(fig)


def entropy_prediction_figure(history, max_points: int = 2400) -> go.Figure:
    """Predicted (first order, summed over token groups) against measured entropy change, one point per step
    and seed, with the line y = x."""
    pred = np.asarray(history.dH_pred_per_seed).ravel()[:max_points]
    meas = np.asarray(history.dH_meas_per_seed).ravel()[:max_points]
    lim = float(np.nanmax(np.abs(np.r_[pred, meas]))) * 1.05 or 1.0
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[-lim, lim], y=[-lim, lim], mode="lines", name="y = x",
                             line={"color": "grey", "dash": "dash"}))
    fig.add_trace(go.Scatter(x=f32(pred), y=f32(meas), mode="markers", name="one step of one seed",
                             marker={"size": 4, "color": method_color(history.method, "#000000"),
                                     "opacity": 0.5}))
    corr = float(np.corrcoef(pred, meas)[0, 1]) if len(pred) > 1 else float("nan")
    fig.update_layout(height=460, template=TEMPLATE, xaxis_title="ΔH predicted (Σ −η·F·Â·I_a over tokens)",
                      yaxis_title="ΔH measured (H after − H before)",
                      title_text=f"{_history_label(history)}: predicted vs measured entropy change per step "
                                 f"(correlation {corr:.3f})")
    return finish(fig)


def cumulative_prediction_figure(histories) -> go.Figure:
    """Running sums of the predicted (dotted) and measured (solid) per-step entropy changes, one colour per run:
    where the first-order prediction is biased, the bias accumulates over steps."""
    fig = go.Figure()
    for k, history in enumerate(histories):
        color = _run_color(histories, k)
        steps = step_axis(history.steps)
        label = _history_label(history) + (f", η={history.toy['lr']:g}" if "lr" in history.toy else "")
        fig.add_trace(go.Scatter(**steps, y=f32(np.cumsum(history.dH_meas)), mode="lines", legendgroup=label,
                                 name=f"{label}: measured", line={"color": color, "width": 2}))
        fig.add_trace(go.Scatter(**steps, y=f32(np.cumsum(history.dH_pred)), mode="lines", legendgroup=label,
                                 name=f"{label}: predicted", line={"color": color, "width": 2, "dash": "dot"}))
    fig.update_layout(height=460, template=TEMPLATE, xaxis_title="step (rollout batch)",
                      yaxis_title="Σ ΔH since step 0 (seed mean)",
                      title_text="Cumulative entropy change: measured (solid) vs first-order prediction (dotted)")
    return finish(fig)


def group_contribution_figure(histories, window: int = 10) -> go.Figure:
    """Each token group's first-order contribution to the entropy change of every step (moving average over
    ``window`` steps), the clipped tokens' part, and the measured ΔH; a slider selects the run (method)."""
    if not histories:
        raise ValueError("histories is empty; give at least one bandit.History")
    fig = go.Figure()
    step_traces, labels, titles = [], [], []
    for history in histories:
        start = len(fig.data)
        steps = step_axis(history.steps)
        for g, name in enumerate(GROUPS):
            fig.add_trace(go.Scatter(**steps, y=f32(moving_average(history.group_dH_pred[:, g], window)),
                                     mode="lines", name=name, line={"color": GROUP_COLORS[name], "width": 2}))
        clipped = np.asarray(history.group_dH_clipped).sum(-1)
        fig.add_trace(go.Scatter(**steps, y=f32(moving_average(clipped, window)), mode="lines",
                                 name="clipped tokens (all groups)", line={"color": "#000000", "dash": "dot"}))
        fig.add_trace(go.Scatter(**steps, y=f32(moving_average(history.dH_meas, window)), mode="lines",
                                 name="ΔH measured", line={"color": "grey", "width": 3}))
        step_traces.append(list(range(start, len(fig.data))))
        labels.append(_history_label(history))
        titles.append(f"Who moves the entropy: {_history_label(history)} (moving average over {window} steps)")
    add_visibility_slider(fig, step_traces, labels, "run: ", titles)
    fig.add_hline(y=0, line_color="lightgrey")
    fig.update_layout(height=520, template=TEMPLATE, xaxis_title="step (rollout batch)",
                      yaxis_title="contribution to ΔH per step")
    return finish(fig)


def beta_sweep_figure(sweep, references=(), field: str = "entropy", active: int = 0) -> go.Figure:
    """CE-GPPO's ``field`` curve for each (β1, β2) of a ``bandit.Sweep`` on one slider, against reference runs
    (``references``: histories of other methods, always shown, dashed) and, when the grid holds CE-GPPO's default
    (β1, β2), that run as a thin grey line, so every step compares with the default.

    The slider starts at step ``active`` (default the first grid point: at the default point the figure would only
    repeat a comparison of the methods at their defaults). Its labels are short ("0.25, 0.5", the prefix names
    β1, β2), so that every step is labelled; the moving curve's legend entry has one name at every step, so the
    legend, and with it the plot's width, never changes.
    """
    fig = go.Figure()
    for history in references:
        for trace in mean_band_traces(getattr(history, f"{field}_per_seed"), _history_label(history),
                                       method_color(history.method, "grey"), dash="dash"):
            fig.add_trace(trace)
    default = get_method("ce_gppo").defaults
    grid = [(i, j) for i in range(len(sweep.beta1s)) for j in range(len(sweep.beta2s))]
    home = next(((i, j) for i, j in grid if sweep.beta1s[i] == default["beta1"]
                 and sweep.beta2s[j] == default["beta2"]), None)
    if home is not None:
        history = sweep.histories[home[0]][home[1]]
        fig.add_trace(go.Scatter(**step_axis(np.asarray(getattr(history, f"{field}_per_seed")).shape[1]),
                                 y=f32(np.asarray(getattr(history, f"{field}_per_seed")).mean(0)), mode="lines",
                                 name=f"CE-GPPO at its default β1={default['beta1']:g}, β2={default['beta2']:g}",
                                 line={"color": "#999999", "width": 1.5}))
    always = tuple(range(len(fig.data)))
    step_traces, labels, titles = [], [], []
    final = sweep.final(field)
    for i, j in grid:
        beta1, beta2 = sweep.beta1s[i], sweep.beta2s[j]
        history = sweep.histories[i][j]
        start = len(fig.data)
        for trace in mean_band_traces(getattr(history, f"{field}_per_seed"), "CE-GPPO at the slider's β1, β2",
                                       method_color("ce_gppo")):
            fig.add_trace(trace)
        step_traces.append(list(range(start, len(fig.data))))
        labels.append(f"{beta1:g}, {beta2:g}")
        titles.append(f"CE-GPPO with β1={beta1:g}, β2={beta2:g}: final {field.replace('_', ' ')} "
                      f"{final[i, j]:.3f} (mean of the last {FINAL_STEPS} steps)")
    add_visibility_slider(fig, step_traces, labels, "β1, β2 = ", titles, active=active, always=always)
    fig.update_layout(height=560, template=TEMPLATE, xaxis_title="step (rollout batch)",
                      yaxis_title=field.replace("_", " "))
    return finish(fig)


def beta_grid_figure(sweep, field: str = "entropy") -> go.Figure:
    """Heat map of the final ``field`` (``summaries.final_mean``) over the (β1, β2) grid of a sweep; both axes are
    categorical, so every grid point gets a cell of the same size whatever the spacing of its β values."""
    final = sweep.final(field)
    text = [[f"{v:.3f}" for v in row] for row in final]
    fig = go.Figure(go.Heatmap(x=[f"{b:g}" for b in sweep.beta2s], y=[f"{b:g}" for b in sweep.beta1s], z=final,
                               text=text, texttemplate="%{text}", colorscale="Viridis",
                               colorbar={"title": {"text": field}}))
    fig.update_layout(height=420, template=TEMPLATE, xaxis_title="β2 (upper side, Â>0)",
                      yaxis_title="β1 (lower side, Â<0)",
                      title_text=f"CE-GPPO: final {field.replace('_', ' ')} over the (β1, β2) grid")
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return finish(fig)


__all__ = [
    "bandit_history_figure",
    "clipped_weight_figure",
    "beta_grid_figure",
    "beta_sweep_figure",
    "cumulative_prediction_figure",
    "entropy_comparison_figure",
    "entropy_prediction_figure",
    "funnel_figure",
    "grad_vs_prob_figure",
    "group_contribution_figure",
    "logit_update_figure",
    "stop_gradient_figure",
    "weight_curves_figure",
    "weight_plane_figure",
]

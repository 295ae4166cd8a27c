"""ipywidgets panels over ``plots.figures`` for continuous exploration in a *live* kernel.

On the static site these panels do nothing (their callbacks need a kernel); the book's figures carry
plotly-native sliders instead. Each panel is a small object: ``panel.controls`` (name → widget),
``panel.figure`` (the last ``go.Figure`` drawn), ``panel.widget`` (what to display). In a notebook:

    from cegppo_edu.plots import widgets
    widgets.weight_panel().widget

The sliders start at CE-GPPO's defaults (``losses.METHODS``). The chapters offer their panels in cells that call
``offer(panel)``: it shows the panel in a kernel that a Jupyter server started for a front end (JupyterLab,
Jupyter Notebook) and nothing elsewhere, so that the stored outputs (``make notebooks``) and the book (which
re-executes the chapters) hold no widget, whose callbacks would be dead there.
"""

from __future__ import annotations

from collections.abc import Callable

import os

import ipywidgets as ipw
import numpy as np
import torch
from IPython.display import clear_output, display

from ..losses import get_method
from ..token_groups import CLASSES, classify
from ..toy import demos
from . import figures
from .style import compared_methods

START = get_method("ce_gppo").defaults  # where the ε and β sliders start


class Panel:
    """Controls + an output area; every change of a control rebuilds the figure with ``build(**values)``."""

    def __init__(self, build: Callable[..., object], controls: dict[str, ipw.ValueWidget], title: str = ""):
        self.build = build
        self.controls = controls
        self.output = ipw.Output()
        self.figure = None
        header = [ipw.HTML(f"<b>{title}</b>")] if title else []
        self.widget = ipw.VBox(header + [ipw.HBox(list(controls.values()), layout={"flex_flow": "row wrap"}),
                                         self.output])
        for control in controls.values():
            control.observe(lambda change: self.refresh(), names="value")
        self.refresh()

    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def refresh(self) -> None:
        self.figure = self.build(**self.values())
        with self.output:
            clear_output(wait=True)
            display(self.figure)


def _slider(value, low, high, step, description):
    return ipw.FloatSlider(value=value, min=low, max=high, step=step, description=description,
                           continuous_update=False, readout_format=".2f")


def weight_panel(methods=None) -> Panel:
    """F(r, Â) against r for every method (default ``style.compared_methods()``), with sliders for ε_l, ε_h, β1, β2."""
    methods = methods or compared_methods()

    def build(eps_low, eps_high, beta1, beta2):
        return figures.weight_curves_figure("beta2", [beta2], methods, eps_low=eps_low, eps_high=eps_high,
                                            beta1=beta1, beta2=beta2)
    controls = {"eps_low": _slider(START["eps_low"], 0.05, 0.5, 0.01, "ε_l"),
                "eps_high": _slider(START["eps_high"], 0.05, 0.5, 0.01, "ε_h"),
                "beta1": _slider(START["beta1"], 0.0, 2.0, 0.05, "β1"),
                "beta2": _slider(START["beta2"], 0.0, 2.0, 0.05, "β2")}
    return Panel(build, controls, "Gradient weight F against r")


def funnel_panel() -> Panel:
    """The funnel for any step size, logit scale and clip width (recomputed on every change)."""
    def build(lr, logit_scale, eps):
        sample = demos.funnel_sample(lr=lr, logit_scale=logit_scale)
        return figures.funnel_figure(sample, [eps], summaries=[demos.funnel_summary(sample, eps, eps)])
    controls = {"lr": _slider(200.0, 20.0, 800.0, 20.0, "step size"),
                "logit_scale": _slider(4.0, 1.0, 8.0, 0.5, "logit scale"),
                "eps": _slider(START["eps_low"], 0.05, 0.5, 0.01, "ε")}
    return Panel(build, controls, "Which tokens leave the clip interval after one update")


def softmax_panel(logits=(3.0, 2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0), token: int = 6) -> Panel:
    """One softmax, one kept token: the update on every logit and ΔH, for any r, Â, β and step size."""
    logits = np.asarray(logits, dtype=float)

    def build(ratio, adv, beta1, beta2, lr):
        if adv == 0:
            adv = 1e-3  # zero advantage has no gradient; keep the figure drawable
        out = demos.single_softmax_update(logits, token, ratio, adv, "ce_gppo", lr=lr, beta1=beta1, beta2=beta2)
        group = CLASSES[int(classify(torch.tensor([out["prob"][token]]), torch.tensor([adv])))]
        return figures.logit_update_figure([{**out, "label": f"r={ratio:.2f}, Â={adv:+.2f}", "token": token,
                                             "group": group}])
    controls = {"ratio": _slider(1.5, 0.1, 3.0, 0.05, "r"), "adv": _slider(1.0, -1.0, 1.0, 0.1, "Â"),
                "beta1": _slider(START["beta1"], 0.0, 2.0, 0.05, "β1"),
                "beta2": _slider(START["beta2"], 0.0, 2.0, 0.05, "β2"), "lr": _slider(0.5, 0.05, 2.0, 0.05, "η")}
    return Panel(build, controls, "CE-GPPO's update on one softmax")


def bandit_panel(steps: int = 200, seeds: int = 4) -> Panel:
    """Run the token bandit live for any method and (β1, β2) and show its history."""
    from ..toy import bandit  # imported here: the bandit module is optional for the other panels

    def build(method, beta1, beta2):
        takes_beta = "beta1" in get_method(method).defaults  # CE-GPPO; the others fix or lack β
        betas = {"beta1": beta1, "beta2": beta2} if takes_beta else {}
        return figures.bandit_history_figure(bandit.simulate(method=method, steps=steps, seeds=seeds, **betas))
    controls = {"method": ipw.Dropdown(options=compared_methods(), value="ce_gppo", description="method"),
                "beta1": _slider(START["beta1"], 0.0, 2.0, 0.05, "β1"),
                "beta2": _slider(START["beta2"], 0.0, 2.0, 0.05, "β2")}
    return Panel(build, controls, "Token bandit")


PANELS_ENV = "CEGPPO_PANELS"  # "1": always show offered panels, "0": never; unset: only with a front end


def in_live_front_end() -> bool:
    """Whether a widget displayed now can be drawn and moved: a kernel started by a Jupyter server for a notebook
    session (jupyter_server sets ``JPY_SESSION_NAME`` in the kernel's environment; nbclient, which ``make
    notebooks`` and the book build execute the chapters with, does not). ``CEGPPO_PANELS`` overrides it."""
    forced = os.environ.get(PANELS_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return bool(os.environ.get("JPY_SESSION_NAME"))


def offer(make_panel: Callable[..., Panel], *args, **kwargs) -> Panel | None:
    """Show ``make_panel(*args, **kwargs)``'s widget where a front end can draw it (``in_live_front_end``) and
    return the panel; elsewhere build nothing, show nothing and return None (a cell ending in None stores no
    output)."""
    if not in_live_front_end():
        return None
    panel = make_panel(*args, **kwargs)
    display(panel.widget)
    return panel


__all__ = ["PANELS_ENV", "Panel", "bandit_panel", "funnel_panel", "in_live_front_end", "offer", "softmax_panel",
           "weight_panel"]

"""Sphinx directives of this book: tables and figures computed from the package when the book is built, so that
no page types a number the package knows.

- ``cegppo-figure NAME``: a figure of ``cegppo_edu.plots.diagrams.FIGURES`` as a plotly div and its JSON
  (``plots.style.figure_html``; ``book_assets`` then loads plotly.js and ``book_figures.js`` on the page).
- ``cegppo-method-defaults``: each token-level method's ε_l, ε_h, β1, β2, dual clip, interval and F in the two
  clipped corners at its defaults, from ``losses.METHODS`` and ``losses.gradient_weight``.
- ``cegppo-group-entropy``: each token group's advantage sign, probability, first-order effect on the entropy,
  the side PPO clips it on and CE-GPPO's weight there, from ``token_groups``.
- ``cegppo-updates``: the updates per rollout batch K of the toy bandit and of every trainer preset.

Each table is made by a plain function (``*_table()``: a header and rows of strings) that
``tests/test_book_pages.py`` compares with the registry.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

import cegppo_edu
from cegppo_edu import losses, token_groups

PACKAGE = Path(cegppo_edu.__file__).parent
NONE = "—"  # a hyper-parameter the method does not take, or a corner it does not have


def number(value) -> str:
    """How the tables print a number: shortest exact form (0.2, 1.28, 8)."""
    return f"{float(value):g}"


# --------------------------------------------------------------------------------------------------
# The tables, as plain data
# --------------------------------------------------------------------------------------------------
def corner_ratios(eps_low: float, eps_high: float) -> tuple[float | None, float]:
    """One ratio inside each clipped corner: halfway to 0 below 1−ε_l (None when 1−ε_l ≤ 0: no lower corner) and
    1.5 × (1+ε_h) above. F is constant in each corner for every token-level method here (the test checks it)."""
    low = 1 - eps_low
    return (low / 2 if low > 0 else None), 1.5 * (1 + eps_high)


def method_defaults_table() -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per token-level method of the clip family in the registry (aliases named in their
    original's row; chapter 7's baselines have their own table there)."""
    header = ["method", "ε_l", "ε_h", "β1", "β2", "dual clip c", "interval", "F clipped below", "F clipped above"]
    rows = []
    for name in losses.token_level_methods(include_aliases=False, compared_only=True):
        spec = losses.get_method(name)
        p = spec.resolve()
        aliases = [a for a in losses.token_level_methods() if losses.get_method(a).alias_of == name]
        label = f"{spec.label} (`{name}`" + "".join(f", `{a}`" for a in aliases) + ")"

        def hyper(key):
            if key in spec.fixed:
                return f"{number(spec.fixed[key])} (fixed)"
            if key not in spec.defaults:
                return NONE
            return "off" if p[key] is None else number(p[key])

        below, above = corner_ratios(p["eps_low"], p["eps_high"])
        f_below = NONE + " (no lower bound)" if below is None else number(losses.gradient_weight(below, -1.0, name))
        f_above = number(losses.gradient_weight(above, 1.0, name))
        interval = f"[{number(1 - p['eps_low'])}, {number(1 + p['eps_high'])}]"
        rows.append([label, number(p["eps_low"]), number(p["eps_high"]), hyper("beta1"), hyper("beta2"),
                     hyper("dual_clip"), interval, f_below, f_above])
    return header, rows


def group_of(adv: float, prob: float) -> str:
    """The token group ``token_groups.classify`` puts a token of advantage ``adv`` and probability ``prob`` in."""
    index = token_groups.classify(torch.tensor([[prob]]), torch.tensor([adv])).item()
    return token_groups.CLASSES[index]


def group_entropy_table(method: str = "ce_gppo") -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per token group, in ``token_groups.GROUPS`` order; weights at ``method``'s defaults."""
    threshold = token_groups.HP_THRESHOLD
    p = losses.get_method(method).resolve()
    below, above = corner_ratios(p["eps_low"], p["eps_high"])
    label = losses.get_method(method).label
    header = ["group", "Â", f"π (HP: ≥ {number(threshold)})", "first-order effect on the entropy",
              "PPO clips it when", f"F there under {label} (defaults)"]
    found = {}
    for adv in (1.0, -1.0):
        for prob in ((1 + threshold) / 2, threshold / 2):
            lower, upper = losses.clipped_sides(torch.tensor([below, above]), torch.tensor([adv, adv]),
                                                p["eps_low"], p["eps_high"])
            if bool(upper[1]):
                side, weight = "r > 1+ε_h", losses.gradient_weight(above, adv, method)
            else:
                assert bool(lower[0]), "a token with Â < 0 is clipped below"
                side, weight = "r < 1−ε_l", losses.gradient_weight(below, adv, method)
            found[group_of(adv, prob)] = ["> 0" if adv > 0 else "< 0", "high" if prob >= threshold else "low",
                                          token_groups.GROUP_ENTROPY_EFFECT[group_of(adv, prob)], side, number(weight)]
    return header, [[group] + found[group] for group in token_groups.GROUPS]


def updates_table() -> tuple[list[str], list[list[str]]]:
    """Header and rows: K = mini-batches × epochs for the toy bandit's defaults and every registered trainer preset."""
    from cegppo_edu import pretrained  # noqa: F401  (registers the GPU presets and chapter 5's)
    from cegppo_edu.lm import config
    from cegppo_edu.toy import bandit

    header = ["where", "K = mini-batches × epochs", "K"]
    toy = {f.name: f.default for f in dataclasses.fields(bandit.Toy)}
    rows = [["token bandit (`Toy`, chapter 3)", f"`minibatches` × `epochs` = {toy['minibatches']} × {toy['epochs']}",
             str(toy["minibatches"] * toy["epochs"])]]
    for name in sorted(config.PRESETS):
        c = config.get_preset(name)
        rows.append([f"`cegppo train --preset {name}`",
                     f"`mini_batches` × `update_epochs` = {c.mini_batches} × {c.update_epochs}",
                     str(c.mini_batches * c.update_epochs)])
    return header, rows


# --------------------------------------------------------------------------------------------------
# docutils nodes
# --------------------------------------------------------------------------------------------------
def _cell(directive, text: str):
    entry = nodes.entry()
    paragraph = nodes.paragraph()
    inline, messages = directive.state.inline_text(text, directive.lineno)  # `code` in a cell stays code
    paragraph += inline
    entry += paragraph
    entry += messages
    return entry


def table_node(directive, header: list[str], rows: list[list[str]], classes=()) -> nodes.table:
    table = nodes.table(classes=["cegppo-generated", *classes])
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    head += nodes.row("", *[_cell(directive, text) for text in header])
    group += head
    body = nodes.tbody()
    for row in rows:
        body += nodes.row("", *[_cell(directive, text) for text in row])
    group += body
    return table


class _GeneratedTable(SphinxDirective):
    has_content = False
    make = None  # the table function

    def run(self):
        for module in ("losses.py", "token_groups.py", "lm/config.py", "toy/bandit.py", "gpu/presets.py"):
            self.env.note_dependency(str(PACKAGE / module))  # rebuild the page when the registry changes
        header, rows = type(self).make()
        return [table_node(self, header, rows)]


class MethodDefaults(_GeneratedTable):
    make = staticmethod(method_defaults_table)


class GroupEntropy(_GeneratedTable):
    make = staticmethod(group_entropy_table)


class Updates(_GeneratedTable):
    make = staticmethod(updates_table)


class Figure(SphinxDirective):
    """``cegppo-figure NAME``: the figure ``diagrams.FIGURES[NAME]()`` as a responsive plotly div."""

    required_arguments = 1
    option_spec = {"height": directives.positive_int}

    def run(self):
        from cegppo_edu.plots import diagrams

        name = self.arguments[0]
        if name not in diagrams.FIGURES:
            raise self.error(f"cegppo-figure: unknown figure {name!r}; known: {', '.join(sorted(diagrams.FIGURES))}")
        for module in ("plots/diagrams.py", "plots/figures.py", "plots/style.py", "losses.py"):
            self.env.note_dependency(str(PACKAGE / module))
        fig = diagrams.FIGURES[name]()
        if "height" in self.options:
            fig.update_layout(height=self.options["height"])
        from cegppo_edu.plots.style import figure_html  # drawn by book_figures.js once plotly.js has loaded

        html = figure_html(fig.to_dict(), f"fig-{name.replace('_', '-')}")
        return [nodes.raw("", html, format="html")]


def setup(app):
    app.add_directive("cegppo-figure", Figure)
    app.add_directive("cegppo-method-defaults", MethodDefaults)
    app.add_directive("cegppo-group-entropy", GroupEntropy)
    app.add_directive("cegppo-updates", Updates)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


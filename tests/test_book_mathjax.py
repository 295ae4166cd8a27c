"""The book loads MathJax as the components its formulas need (book/_ext/book_assets.py), not the 1.16 MB
combined tex-chtml.js; the browser tests check that every page's math still renders, without errors."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import book_assets  # noqa: E402


def test_the_offline_tex_chtml_is_replaced_by_the_loader_and_its_components_keeping_the_page_options():
    config = SimpleNamespace(mathjax_path="mathjax/tex-chtml.js",
                             mathjax3_config={"options": {"processHtmlClass": "math"}})
    book_assets._lean_mathjax(None, config)
    assert config.mathjax_path == "mathjax/startup.js"
    assert config.mathjax3_config["options"] == {"processHtmlClass": "math", "enableMenu": False}
    assert config.mathjax3_config["loader"]["load"][0] == "input/tex-base"
    assert {"output/chtml", "a11y/assistive-mml", "[tex]/ams"} <= set(config.mathjax3_config["loader"]["load"])
    assert "ams" in config.mathjax3_config["tex"]["packages"]["[+]"]


def test_every_component_it_loads_is_served_by_the_offline_mathjax():
    import importlib.util

    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    static = Path(spec.origin).parent / "static" / "mathjax"
    assert (static / "startup.js").is_file()
    for component in book_assets.MATHJAX_COMPONENTS:
        path = component.replace("[tex]/", "input/tex/extensions/")
        assert (static / f"{path}.js").is_file(), component


def test_another_mathjax_set_on_purpose_is_left_alone():
    config = SimpleNamespace(mathjax_path="https://cdn.example/mathjax/tex-svg.js", mathjax3_config=None)
    book_assets._lean_mathjax(None, config)
    assert config.mathjax_path.endswith("tex-svg.js") and config.mathjax3_config is None

"""The book's pages as a reader meets them: every page on the intro's reading path, numbered chapters that count
1, 2, 3 ... with sections N.1, N.2, no stale "PAPER.md" citation, and the cheat sheet's generated tables equal
to the package's registry (so no number on it is typed by hand).

The tables are made by ``book/_ext/book_directives.py`` when the book is built; here their functions are called
directly and compared with ``losses.gradient_weight`` and the registries. Where the book has been built
(``_build/html``, as ``make test`` does before pytest), the rendered pages are checked too.
"""

from __future__ import annotations

import html
import importlib
import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cegppo_edu import cli, losses, token_groups

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
HTML = ROOT / "_build" / "html"
FRAGMENT = BOOK / "_fragments" / "f_table.md"
sys.path.insert(0, str(BOOK / "_ext"))
import book_directives  # noqa: E402  (the book's Sphinx extension, importable without Sphinx running)

NUMBERED_PARTS = ("Chapters", "Running at scale", "Beyond the paper")  # their chapters count 1, 2, ...; their sections N.1, N.2, ...
NUMBER = re.compile(r"^(\d+(?:\.\d+)*)\.?\s")


# --------------------------------------------------------------------------------------------------
# The table of contents and the pages' sources
# --------------------------------------------------------------------------------------------------
def toc() -> dict:
    return yaml.safe_load((ROOT / "_toc.yml").read_text())


def toc_pages() -> list[str]:
    """Every page in reading order: the root, then each part's chapters, each followed by its sections."""
    def walk(entries):
        for entry in entries:
            yield entry["file"]
            yield from walk(entry.get("sections", []))

    data = toc()
    return [data["root"]] + [page for part in data.get("parts", []) for page in walk(part.get("chapters", []))]


def source(page: str) -> Path:
    for suffix in (".md", ".ipynb"):
        if (ROOT / f"{page}{suffix}").exists():
            return ROOT / f"{page}{suffix}"
    raise AssertionError(f"_toc.yml lists {page}, which has no .md or .ipynb file")


def title(page: str) -> str:
    """The page's title: its first level-1 heading (a notebook's first markdown cell holding one)."""
    path = source(page)
    if path.suffix == ".md":
        texts = [path.read_text()]
    else:
        cells = json.loads(path.read_text())["cells"]
        texts = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    for text in texts:
        for line in text.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    raise AssertionError(f"{path.name} has no level-1 title")


def link_target(href: str) -> str | None:
    """A link of book/intro.md as a TOC entry ("book/background", "notebooks/01_..."), or None if external."""
    if re.match(r"^[a-z]+:", href) or href.startswith("#"):
        return None
    path = (BOOK / href.split("#")[0]).resolve()
    return str(path.relative_to(ROOT).with_suffix("")) if path.suffix in (".md", ".ipynb") else None


# --------------------------------------------------------------------------------------------------
# Reading path, numbering, citations
# --------------------------------------------------------------------------------------------------
def test_the_intro_links_every_toc_page_in_reading_order():
    pages = toc_pages()
    links = [link_target(href) for href in re.findall(r"\]\(([^)\s]+)\)", (BOOK / "intro.md").read_text())]
    first = {}
    for position, target in enumerate(links):
        first.setdefault(target, position)
    missing = [page for page in pages[1:] if page not in first]
    assert not missing, f"book/intro.md's reading path does not link: {missing}"
    order = sorted(pages[1:], key=first.get)
    assert order == pages[1:], f"the intro links the pages in another order than _toc.yml:\n{order}\n{pages[1:]}"


def test_no_page_cites_paper_md():
    """The project's paper summary is the page "The paper in brief"; the old file name PAPER.md must not appear."""
    sources = [source(page) for page in toc_pages()] + sorted((BOOK / "_fragments").glob("*.md"))
    offending = [path.relative_to(ROOT).as_posix() for path in sources if "PAPER.md" in path.read_text()]
    assert not offending, f"pages still cite PAPER.md (link the paper in brief and its section instead): {offending}"


def test_numbered_chapters_and_their_sections_count_in_order():
    """Chapters of the numbered parts are titled "1. ...", "2. ..." in TOC order, their sections "N.1 ...",
    "N.2 ..."; no other page's title starts with a number."""
    expected_chapter = 1
    problems = []
    for part in toc()["parts"]:
        numbered = part["caption"] in NUMBERED_PARTS
        for chapter in part["chapters"]:
            entries = [(chapter["file"], f"{expected_chapter}")]
            entries += [(section["file"], f"{expected_chapter}.{k}")
                        for k, section in enumerate(chapter.get("sections", []), start=1)]
            for page, number in entries:
                found = NUMBER.match(title(page))
                if numbered and (not found or found.group(1) != number):
                    problems.append(f"{page}: title {title(page)!r} should start with {number!r}")
                if not numbered and found:
                    problems.append(f"{page} ({part['caption']}): title {title(page)!r} is numbered")
            expected_chapter += numbered
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------------
# The cheat sheet's generated tables against the registries
# --------------------------------------------------------------------------------------------------
def _float(cell: str) -> float:
    return float(cell.split()[0])


def _samples_below(low: float) -> np.ndarray:
    return np.array([low * f for f in (0.999, 0.9, 0.5, 0.1, 1e-3)])


def _samples_above(high: float) -> np.ndarray:
    return np.array([high * f for f in (1.001, 1.1, 1.5, 3.0, 50.0)])


def test_method_defaults_table_is_the_registry():
    header, rows = book_directives.method_defaults_table()
    column = {name: index for index, name in enumerate(header)}
    names = [re.search(r"`(\w+)`", row[0]).group(1) for row in rows]
    assert names == losses.token_level_methods(include_aliases=False, compared_only=True)
    for name, row in zip(names, rows):
        spec = losses.get_method(name)
        p = spec.resolve()
        assert row[0].startswith(spec.label), row
        for alias in losses.token_level_methods():
            if losses.get_method(alias).alias_of == name:
                assert f"`{alias}`" in row[0], f"{name}'s row does not name its alias {alias}"
        assert _float(row[column["ε_l"]]) == p["eps_low"] and _float(row[column["ε_h"]]) == p["eps_high"], row
        for key, label in (("beta1", "β1"), ("beta2", "β2"), ("dual_clip", "dual clip c")):
            cell = row[column[label]]
            if key in spec.fixed:
                assert cell == f"{spec.fixed[key]:g} (fixed)", (name, key, cell)
            elif key not in spec.defaults:
                assert cell == book_directives.NONE, (name, key, cell)
            elif spec.defaults[key] is None:
                assert cell == "off", (name, key, cell)
            else:
                assert _float(cell) == spec.defaults[key], (name, key, cell)
        low, high = 1 - p["eps_low"], 1 + p["eps_high"]
        assert row[column["interval"]] == f"[{low:g}, {high:g}]", row
        # F in each clipped corner: one value everywhere in the corner, the one the table prints
        above = losses.gradient_weight(_samples_above(high), 1.0, name)
        assert np.all(above == above[0]) and _float(row[column["F clipped above"]]) == pytest.approx(above[0]), row
        if low > 0:
            below = losses.gradient_weight(_samples_below(low), -1.0, name)
            assert np.all(below == below[0]) and _float(row[column["F clipped below"]]) == pytest.approx(below[0]), row
        else:
            assert row[column["F clipped below"]].startswith(book_directives.NONE), row


def test_group_entropy_table_is_token_groups():
    header, rows = book_directives.group_entropy_table()
    assert [row[0] for row in rows] == list(token_groups.GROUPS)
    p = losses.get_method("ce_gppo").resolve()
    low, high = 1 - p["eps_low"], 1 + p["eps_high"]
    for group, adv_sign, prob, effect, side, weight in rows:
        assert effect == token_groups.GROUP_ENTROPY_EFFECT[group], group
        adv = 1.0 if adv_sign == "> 0" else -1.0
        probability = 0.9 if prob == "high" else 0.1
        assert book_directives.group_of(adv, probability) == group
        if adv > 0:
            assert side == "r > 1+ε_h" and _float(weight) == pytest.approx(losses.gradient_weight(1.5 * high, adv)), group
        else:
            assert side == "r < 1−ε_l" and _float(weight) == pytest.approx(losses.gradient_weight(0.5 * low, adv)), group
    assert header[2].endswith(f"{token_groups.HP_THRESHOLD:g})")


def test_updates_table_is_the_toy_and_the_presets():
    from cegppo_edu import pretrained  # noqa: F401  (registers the GPU presets and chapter 5's)
    from cegppo_edu.lm import config
    from cegppo_edu.toy import bandit

    _, rows = book_directives.updates_table()
    toy = bandit.Toy()
    assert rows[0][2] == str(toy.minibatches * toy.epochs)
    presets = {re.search(r"--preset ([\w.-]+)", row[0]).group(1): row for row in rows[1:]}
    assert sorted(presets) == sorted(config.PRESETS)
    for name, row in presets.items():
        c = config.get_preset(name)
        assert row[1].endswith(f"= {c.mini_batches} × {c.update_epochs}") and row[2] == str(c.mini_batches * c.update_epochs)


# --------------------------------------------------------------------------------------------------
# The symbolic F table: written once, included twice, and right
# --------------------------------------------------------------------------------------------------
def _fragment_rows() -> list[list[str]]:
    lines = [ln for ln in FRAGMENT.read_text().splitlines() if ln.startswith("|")]
    return [[cell.strip() for cell in ln.strip("|").split("|")] for ln in lines[2:]]


def _evaluate(cell: str, r: float, p: dict) -> float:
    """A cell such as $\\beta_2(1+\\varepsilon_h)$ or $r$ as a number, with the method's hyper-parameters."""
    expr = re.fullmatch(r"\$(.*)\$", cell).group(1)
    for tex, name in ((r"\beta_1", "beta1"), (r"\beta_2", "beta2"), (r"\varepsilon_l", "eps_low"),
                      (r"\varepsilon_h", "eps_high")):
        expr = expr.replace(tex, f"({p.get(name, 'None')})")
    expr = re.sub(r"\)\s*\(", ")*(", expr)  # implicit product
    assert re.fullmatch(r"[\d\s.+\-*()r]+", expr), f"cannot evaluate {cell!r}"
    return float(eval(expr, {"r": r}))  # noqa: S307 (digits, r, + - * and brackets only)


def test_fragment_f_table_matches_gradient_weight():
    labels = {losses.get_method(n).label: n for n in losses.token_level_methods(include_aliases=False, compared_only=True)}
    rows = _fragment_rows()
    assert [row[0] for row in rows] == list(labels), "the F table lists other methods than the registry"
    for label, inside, below, above in rows:
        name = labels[label]
        p = losses.get_method(name).resolve()
        low, high = 1 - p["eps_low"], 1 + p["eps_high"]
        for r in np.linspace(max(low, 0.01), high, 7):  # inside the interval, both signs of Â (r ≥ 0.01: F clamps r)
            assert _evaluate(inside, r, p) == pytest.approx(float(losses.gradient_weight(r, 1.0, name))), label
            assert _evaluate(inside, r, p) == pytest.approx(float(losses.gradient_weight(r, -1.0, name))), label
        for r in _samples_above(high):
            assert _evaluate(above, r, p) == pytest.approx(float(losses.gradient_weight(r, 1.0, name))), label
        for r in _samples_below(low) if low > 0 else ():
            assert _evaluate(below, r, p) == pytest.approx(float(losses.gradient_weight(r, -1.0, name))), label


def test_fragment_f_table_is_included_by_key_equations_and_cheat_sheet_and_written_nowhere_else():
    header = next(ln for ln in FRAGMENT.read_text().splitlines() if ln.startswith("| method |"))
    include = re.compile(r"```\{include\}\s+_fragments/f_table\.md\s*\n```")
    for page in ("key_equations", "cheat_sheet"):
        assert include.search((BOOK / f"{page}.md").read_text()), f"book/{page}.md does not include the F table"
    copies = [page for page in toc_pages() if header in source(page).read_text()]
    assert not copies, f"pages that paste the F table instead of including it: {copies}"


# --------------------------------------------------------------------------------------------------
# The cheat sheet's commands and names are real
# --------------------------------------------------------------------------------------------------
def _cheat_sheet() -> str:
    return (BOOK / "cheat_sheet.md").read_text()


def test_cheat_sheet_commands_exist():
    block = re.search(r"```bash\n(.*?)```", _cheat_sheet(), re.S).group(1)
    commands = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.split("#")[0].strip()]
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    parser = cli.build_parser()
    seen = set()
    for command in commands:
        words = shlex.split(command)
        seen.add(" ".join(words[:2]))
        if words[0] == "make":
            assert words[1] in targets, f"the cheat sheet's `{command}`: no such Makefile target"
        else:
            assert words[0] == "cegppo", command
            try:
                parser.parse_args(words[1:])
            except SystemExit as exit_:
                pytest.fail(f"the cheat sheet's `{command}` is not a valid command line (exit {exit_.code})")
    for required in ("make book", "make test", "make check", "cegppo bandit", "cegppo train", "cegppo eval"):
        assert required in seen, f"the cheat sheet lacks `{required} ...`"


def test_cheat_sheet_names_exist_in_the_package():
    """Every `module.name` the cheat sheet points to (in code spans) exists in cegppo_edu."""
    modules = ("losses", "advantages", "token_groups", "entropy", "summaries", "teaching", "lm.config", "toy.bandit")
    prose = re.sub(r"```.*?```", "", _cheat_sheet(), flags=re.S)  # the fenced blocks hold no names
    spans = re.findall(r"`([^`]+)`", prose)
    names = [m.group(0) for span in spans
             for m in [re.match(r"(?:%s)\.\w+" % "|".join(re.escape(mod) for mod in modules), span)] if m]
    assert len(names) > 10, names
    for dotted in names:
        module, attr = dotted.rsplit(".", 1)
        assert hasattr(importlib.import_module(f"cegppo_edu.{module}"), attr), f"cegppo_edu.{dotted} does not exist"
    for field in re.findall(r"--set (\w+)=", _cheat_sheet()):
        from cegppo_edu.lm.config import TrainConfig

        assert field in TrainConfig.__dataclass_fields__, f"--set {field}: not a TrainConfig field"
    for field in re.findall(r"simulate\(\.\.\., ([^)]*)\)", _cheat_sheet()):
        from cegppo_edu.toy.bandit import Toy

        for name in re.findall(r"(\w+)=", field):
            assert name in Toy.__dataclass_fields__, f"{name}: not a Toy field"


# --------------------------------------------------------------------------------------------------
# The background figure and the glossary
# --------------------------------------------------------------------------------------------------
def test_background_figure_is_built_from_gradient_weight_and_captioned():
    from cegppo_edu.plots import diagrams

    text = (BOOK / "background.md").read_text()
    assert "```{cegppo-figure} clipped_corners" in text
    caption = re.search(r"\*\*Figure B\.1\.\*\*(.*?)\n\n", text, re.S)
    assert caption and "*Takeaway:*" in caption.group(1), "Figure B.1 needs its caption and a takeaway"
    fig = diagrams.clipped_corners_figure()
    p = losses.get_method("ce_gppo").resolve()
    edges = np.array([1 - p["eps_low"], 1 + p["eps_high"]])
    for trace in fig.data:
        name = next(n for n in diagrams.CONTRAST if losses.get_method(n).label == trace.name)
        adv = 1.0 if trace.xaxis == "x" else -1.0
        x = np.asarray(trace.x, float)
        away = np.abs(x[:, None] - edges).min(1) > 1e-6  # at a jump the float32 x rounds to either side
        assert away.sum() >= 2
        np.testing.assert_allclose(np.asarray(trace.y)[away], losses.gradient_weight(x[away], adv, name), atol=1e-6)
    corners = [a.text for a in fig.layout.annotations if a.text.startswith("clipped corner")]
    assert f"F = {float(losses.gradient_weight(3.0, 1.0, 'ce_gppo')):g}" in corners[0]
    assert f"F = {float(losses.gradient_weight((1 - p['eps_low']) / 2, -1.0, 'ce_gppo')):g}" in corners[1]


GLOSSARY_TERMS = ("trust region", "probability ratio", "advantage", "group advantage", "clipping", "clipped token",
                  "stop-gradient", "dual clip", "dynamic sampling", "zero-variance group", "token-mean", "seq-mean",
                  "entropy collapse", "entropy explosion", "PA&LP", "NA&LP", "PA&HP", "NA&HP", "rollout batch",
                  "mini-batch update", "K", "first-order entropy change", "entropy influence", "avg@k", "pass@k",
                  "warm start", "paired seeds", "confidence interval")


def test_glossary_defines_the_book_s_concepts():
    text = (BOOK / "glossary.md").read_text()
    block = re.search(r"```\{glossary\}\n(.*?)```", text, re.S).group(1)
    terms = {ln.strip() for ln in block.splitlines() if ln and not ln.startswith(" ")}
    missing = [term for term in GLOSSARY_TERMS if term not in terms]
    assert not missing, f"the glossary does not define {missing}"


# --------------------------------------------------------------------------------------------------
# The built pages (when the book has been built): the generated tables and the included F table are there
# --------------------------------------------------------------------------------------------------
def _built(page: str) -> str:
    """The text of a built page; skipped when it is missing or older than what it is made from."""
    path = HTML / f"{page}.html"
    if not path.exists():
        pytest.skip(f"{path} is not built (make book)")
    inputs = [source(page), FRAGMENT, *(BOOK / "_ext").glob("*.py")]
    if path.stat().st_mtime < max(p.stat().st_mtime for p in inputs):
        pytest.skip(f"{path} is older than its sources (make book)")
    text = re.sub(r"<[^>]+>", " ", path.read_text())
    return re.sub(r"\s+", " ", html.unescape(text))


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text.replace("`", ""))


def test_built_cheat_sheet_shows_the_registry_tables():
    page = _squeeze(_built("book/cheat_sheet"))
    for make in (book_directives.method_defaults_table, book_directives.group_entropy_table,
                 book_directives.updates_table):
        header, rows = make()
        for row in [header] + rows:
            assert _squeeze("".join(row)) in page, f"the built cheat sheet lacks the row {row}"


def test_built_pages_both_show_the_f_table():
    """The rendered F table (each row's cells, math as MathJax's \\( \\) source) is on both pages."""
    for name in ("book/key_equations", "book/cheat_sheet"):
        page = _squeeze(_built(name))
        for row in _fragment_rows():
            cells = [re.sub(r"\$(.*?)\$", r"\\(\1\\)", cell) for cell in row]
            assert _squeeze("".join(cells)) in page, f"{name} lacks the F table's row {cells}"

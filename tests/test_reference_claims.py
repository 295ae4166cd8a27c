"""The reference pages claim only what the claims scoreboard supports.

``tests/test_scoreboard.py`` holds the scoreboard to the chapters' computed verdicts; this file holds the pages a
reader consults without reading the chapters to the scoreboard:

- every table with a ``scoreboard`` and a ``verdict`` column, and every inline citation ``row ID: *verdict*``,
  must name a scoreboard row and repeat its verdict;
- a tuning rule the book once stated as fact (``RULES``) may appear only while every scoreboard row that tests it
  holds; a rule no row supports may not appear at all.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from test_scoreboard import _rows

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
# the pages a reader takes advice from; scaling_verl.md is another engineer's page (see PENDING)
PAGES = ("cheat_sheet.md", "intro.md", "background.md", "scaling_verl.md")
INLINE = re.compile(r"\brows? ([A-Z]\d+[\w-]*)(?: and ([A-Z]\d+[\w-]*))?: \*([^*]+)\*")
# (pattern of a statement, the scoreboard rows that must all hold before a page may state it as fact)
RULES = [
    (r"(raising|larger|raise) \$?\\?β?_?\{?\\?beta_2\}?\$? (keeps|should keep) the entropy higher", ("P6", "P6-lm")),
    (r"(raising|larger) \$?\\beta_1\$? (lets|should let) it fall faster", ("P7", "P7-lm")),
    (r"raise β2 relative to β1", ("P6-lm", "P7-lm")),
    (r"if it climbs, raise β1", ("P7-lm",)),
    (r"exactly the ones that steer", ()),  # chapter 4, Figure 4.8: unclipped tokens carry most of the change
]
# A page whose owner has yet to change a sentence: strict xfail, so the test turns red once the page is fixed
# and the marker must go.
PENDING: dict[str, str] = {}  # page -> why it is expected to fail until its owner fixes it (none now)


def _tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table of ``text`` as a list of {header: cell} rows."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
        elif block:
            header, rows = block[0], [row for row in block[2:]]
            tables.append([dict(zip(header, row)) for row in rows])
            block = []
    return tables


def _citations(text: str) -> list[tuple[str, str]]:
    """(row, verdict) for every table row with a scoreboard and a verdict column, and every inline citation."""
    found = []
    for table in _tables(text):
        for row in table:
            if "scoreboard" in row and "verdict" in row:
                found.append((row["scoreboard"], row["verdict"]))
    for match in INLINE.finditer(text):
        found += [(key, match.group(3)) for key in match.group(1, 2) if key]
    return found


def _page(name: str):
    marks = [pytest.mark.xfail(strict=True, reason=PENDING[name])] if name in PENDING else []
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", [p for p in PAGES if p not in PENDING])
def test_every_cited_row_exists_with_the_verdict_the_page_gives(name):
    rows = _rows()
    for key, verdict in _citations((BOOK / name).read_text()):
        assert key in rows, f"{name} cites scoreboard row {key}, which does not exist"
        assert rows[key]["verdict"] == verdict, \
            f"{name} says row {key} is {verdict!r}; the scoreboard says {rows[key]['verdict']!r}"


def test_the_cheat_sheet_cites_the_rows_behind_its_tuning_advice():
    cited = {key for key, _ in _citations((BOOK / "cheat_sheet.md").read_text())}
    assert {"P6", "P6-lm", "P7", "P7-lm", "B10", "B12"} <= cited, cited


@pytest.mark.parametrize("name", [_page(p) for p in PAGES])
def test_no_page_states_a_rule_its_scoreboard_rows_do_not_support(name):
    rows, text = _rows(), " ".join((BOOK / name).read_text().split())  # one line: a rule may wrap
    for pattern, needed in RULES:
        match = re.search(pattern, text, re.I)
        if match is None:
            continue
        failing = [key for key in needed if rows[key]["verdict"] != "holds"]
        assert needed and not failing, (
            f"{name} states {match.group(0)!r}, but " +
            (f"scoreboard rows {failing} do not hold" if needed else "no scoreboard row supports it"))


def test_the_readers_find_what_they_check():
    """The parsers see a table citation and an inline one, and a rule in the wording the pages once used."""
    text = ("| rule | scoreboard | verdict |\n|---|---|---|\n| x | P6 | holds |\n\n"
            "as row P4: *holds* and rows P6 and P7: *not resolved at 8 seeds*")
    assert _citations(text) == [("P6", "holds"), ("P4", "holds"), ("P6", "not resolved at 8 seeds"),
                                ("P7", "not resolved at 8 seeds")]
    old = "So **raising $\\beta_2$ keeps the entropy higher, raising $\\beta_1$ lets it fall faster**"
    assert re.search(RULES[0][0], old, re.I) and re.search(RULES[1][0], old, re.I)

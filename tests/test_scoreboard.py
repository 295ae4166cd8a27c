"""The claims scoreboard (book/scoreboard.md) says what the chapters compute.

Each chapter prints its verdicts in its last cell as ``scoreboard: {key: verdict}`` (nbval checks that cell
against a fresh run, under every kernel set); here the stored outputs are read and every key must have a row
with the same verdict. A row no chapter computes must either be "untested here" or name the unit tests that
back it, and those tests must exist. The page has two tables of rows (claims about the methods, checks of the
software: S rows) and a tally at the top, recounted here from the rows.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "scoreboard.md"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
VERDICT = re.compile(r"^(holds|does not hold|untested here|not resolved at \d+ (seeds|cases)|equal within ±[\d.]+)$")
HEADER = ["#", "claim", "from", "verdict", "evidence"]
TALLY_HEADER = ["verdict", "claims about the methods", "checks of the software"]
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every markdown table of ``text``: (header cells, rows of cells)."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
        elif block:
            tables.append((block[0], block[2:]))
            block = []
    return tables


def _row_tables() -> list[list[dict]]:
    """The tables of scoreboard rows (claims about the methods, checks of the software), each as dicts."""
    tables = [[dict(zip(header, row)) for row in rows] for header, rows in _tables(PAGE.read_text()) if header == HEADER]
    assert len(tables) == 2, f"expected the claims table and the software table, found {len(tables)}"
    return tables


def _rows() -> dict[str, dict]:
    rows = {}
    for table in _row_tables():
        for cells in table:
            assert cells["#"] not in rows, f"row {cells['#']} twice"
            rows[cells["#"]] = cells
    return rows


def _computed() -> dict[str, tuple[str, str]]:
    """key -> (verdict, notebook) from every chapter's stored ``scoreboard:`` line."""
    found = {}
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            for out in cell.get("outputs", []):
                for match in re.finditer(r"^scoreboard: (\{.*\})$", out.get("text", ""), re.M):
                    for key, verdict in ast.literal_eval(match.group(1)).items():
                        assert key not in found, f"{key} computed by {found[key][1]} and {path.name}"
                        found[key] = (verdict, path.name)
    return found


def _test_exists(file: str, name: str) -> bool:
    tree = ast.parse((ROOT / file).read_text())
    return any(isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body)


def test_every_verdict_a_chapter_computes_is_on_the_scoreboard():
    rows, computed = _rows(), _computed()
    assert len(computed) >= 15, f"only {len(computed)} verdicts printed by the chapters"
    for key, (verdict, notebook) in computed.items():
        assert key in rows, f"{notebook} computes {key} ({verdict}) but the scoreboard has no row for it"
        assert rows[key]["verdict"] == verdict, \
            f"scoreboard row {key} says {rows[key]['verdict']!r}; {notebook} computes {verdict!r}"


def test_every_other_row_is_untested_or_names_tests_that_exist():
    rows, computed = _rows(), _computed()
    for key, row in rows.items():
        assert VERDICT.match(row["verdict"]), f"row {key}: {row['verdict']!r} is not a verdict"
        if key in computed or row["verdict"] == "untested here":
            continue
        references = TEST_REFERENCE.findall(row["evidence"])
        assert references, f"row {key} is neither computed by a chapter nor backed by a named test"
        for file, name in references:
            assert _test_exists(file, name), f"row {key} names {file}::{name}, which does not exist"


@pytest.mark.parametrize("line, key, verdict", [
    ("scoreboard: {'X1': 'holds'}", "X1", "holds"),
    ("scoreboard: {'X2': 'not resolved at 8 seeds', 'X3': 'does not hold'}", "X3", "does not hold")])
def test_the_reader_of_scoreboard_lines_parses_what_the_chapters_print(line, key, verdict, tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(...)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"other line\n{line}\n")]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "x.ipynb")
    monkeypatch.setattr(__import__(__name__), "NOTEBOOKS", [tmp_path / "x.ipynb"])
    assert _computed()[key] == (verdict, "x.ipynb")


def _tally_of(rows: list[dict]) -> dict[str, int]:
    out = {"holds": 0, "does not hold": 0, "not resolved": 0, "untested here": 0}
    for row in rows:
        verdict = "not resolved" if row["verdict"].startswith("not resolved") else row["verdict"]
        out[verdict] = out.get(verdict, 0) + 1
    return out


def test_the_tally_at_the_top_counts_the_rows_and_software_checks_are_apart():
    claims, software = _row_tables()
    tallies = [(header, rows) for header, rows in _tables(PAGE.read_text()) if header == TALLY_HEADER]
    assert len(tallies) == 1, "the page needs one tally table at its top"
    printed = {row[0]: (int(row[1]), int(row[2])) for row in tallies[0][1]}
    counted = {k: (v, _tally_of(software).get(k, 0)) for k, v in _tally_of(claims).items()}
    assert printed == counted, f"the tally says {printed}; the rows count {counted}"
    assert all(row["#"].startswith("S") for row in software), [r["#"] for r in software]
    assert not any(row["#"].startswith("S") for row in claims), "a software check among the claims"

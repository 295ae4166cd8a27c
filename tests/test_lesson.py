"""The chapters read as a lesson (issue 25): each opens with what it found, each finding pointing to a figure that
exists; each later chapter points back to chapter 2's argument in one picture; each has an exercise that asks for
code, with its check's output folded; and each ends with a folded Reproducibility note, with the version cell out of
the reading path and the checked numbers folded.

``tests/test_notebooks.py`` checks the figures, captions and exercises as such; this file checks the shape of the
lesson around them.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["01_clipping_quadrants", "02_gradient_flow", "03_entropy_dynamics_bandit", "04_tiny_lm_rl",
            "05_smollm2_cpu", "07_steering_entropy"]
FINDINGS = ":::{admonition} What this chapter finds"
ARGUMENT = "argument-in-one-picture"
CAPTION = re.compile(r"^\*\*Figure (\d+)\.(\d+)\.\*\*", re.M)


def _cells(name):
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).cells


def _tags(cell) -> list[str]:
    return cell.metadata.get("tags", [])


def _figures(cells) -> set[str]:
    return {f"{a}.{b}" for c in cells if c.cell_type == "markdown" for a, b in CAPTION.findall(c.source)}


@pytest.mark.parametrize("name", CHAPTERS)
def test_the_chapter_opens_with_its_findings_each_pointing_to_a_figure(name):
    cells = _cells(name)
    first = cells[0].source
    assert FINDINGS in first, f"{name}: the first cell has no findings box"
    box = first.split(FINDINGS, 1)[1].split("\n:::", 1)[0]
    findings = [line for line in box.splitlines() if line.startswith("- ")]
    assert len(findings) >= 2, f"{name}: a findings box with {len(findings)} findings"
    figures = _figures(cells)
    items = re.split(r"\n(?=- )", box[box.index("\n- ") + 1:])
    for item in items:
        named = re.findall(r"Figures? (\d+\.\d+)", item)
        assert named, f"{name}: a finding points to no figure: {item[:80]!r}"
        assert set(named) <= figures, f"{name}: a finding names {set(named) - figures}, not a figure of the chapter"


@pytest.mark.parametrize("name", [n for n in CHAPTERS if int(n[:2]) > 2])
def test_every_later_chapter_points_back_to_the_argument(name):
    text = "\n".join(c.source for c in _cells(name) if c.cell_type == "markdown")
    assert f"]({ARGUMENT})" in text, f"{name} does not link chapter 2's argument in one picture"


def test_the_argument_is_where_the_later_chapters_point():
    cells = _cells("02_gradient_flow")
    assert any(c.cell_type == "markdown" and c.source.startswith(f"({ARGUMENT})=") for c in cells)


@pytest.mark.parametrize("name", CHAPTERS)
def test_an_exercise_asks_for_code_and_its_check_output_is_folded(name):
    cells = _cells(name)
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    assert re.search(r"\*\*Exercise \d+\.\d+\.\*\* \*\(Write code\.\)\*", text), f"{name}: no code-writing exercise"
    solutions = [i for i, c in enumerate(cells) if c.cell_type == "code" and c.source.startswith("# Exercise ")]
    assert solutions, f"{name}: no stored reference solution"
    check = cells[solutions[-1] + 1]
    assert check.source.startswith("# The answers, checked by the package"), f"{name}: the check must follow"
    assert "hide-output" in _tags(check), f"{name}: the check's output prints the answers; fold it (hide-output)"


@pytest.mark.parametrize("name", CHAPTERS)
def test_the_chapter_ends_with_a_folded_reproducibility_note(name):
    cells = _cells(name)
    code = [c for c in cells if c.cell_type == "code"]
    assert "remove-cell" in _tags(code[0]), f"{name}: the version cell is still in the reading path"
    assert "hide-output" in _tags(code[-1]), f"{name}: the checked numbers are not folded"
    note = cells[-2]
    assert note.cell_type == "markdown" and note.source.startswith("## Reproducibility"), f"{name}: no note before the check"
    assert ":class: dropdown" in note.source and "{glue:text}`versions`" in note.source
    assert "Numbers checked by nbval" not in "\n".join(c.source for c in cells if c.cell_type == "markdown")

"""The chapters are committed executed, error-free and checkable; a raising notebook fails the book build.

The cells marked ``# NBVAL_CHECK_OUTPUT`` must print what the committed notebook stores: ``make test`` checks that on
the book build's execution of every chapter (the build runs them anyway; ``pytest --nbval-lax notebooks/X.ipynb``
is the same check for one chapter while editing), and with nbval under every other kernel set, so that another
CPU's float kernels cannot change them. The other tests check what nbval cannot: that the stored outputs (what a
notebook viewer shows) are complete and free of errors.
"""

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from kernel_runs import other_kernel_sets

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# The three chapters built on cegppo_edu.plots.figures: interactive figures are their point.
VIZ_CHAPTERS = ("01_clipping_quadrants", "02_gradient_flow", "03_entropy_dynamics_bandit")
PLOTLY_JSON = "application/vnd.plotly.v1+json"


def _code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part.get("chapters", [])]
    return files


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_fully_executed_without_errors(path):
    cells = _code_cells(path)
    counts = [c.execution_count for c in cells]
    assert None not in counts, f"{path.name}: cells never executed; run make notebooks"
    assert counts == list(range(1, len(cells) + 1)), f"{path.name}: executed out of order: {counts}"
    for cell in cells:
        for out in cell.outputs:
            assert out.output_type != "error", f"{path.name}: {out.ename}: {out.evalue}"
            assert out.get("name") != "stderr" or "Traceback" not in out.text, f"{path.name}: traceback on stderr"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_conventions(path):
    cells = _code_cells(path)
    first = "".join(o.get("text", "") for o in cells[0].outputs)
    assert "cegppo_edu" in first and "torch" in first and "plotly" in first, "first cell must print versions"
    checks = [c for c in cells if "# NBVAL_CHECK_OUTPUT" in c.source]
    assert checks, f"{path.name}: no cell marked # NBVAL_CHECK_OUTPUT"
    assert checks[-1] is cells[-1], f"{path.name}: the last code cell must be the checked one"
    assert any(o.output_type == "stream" and o.text.strip() for o in checks[-1].outputs)
    has_plotly = any(PLOTLY_JSON in o.get("data", {}) for c in cells for o in c.outputs)
    if has_plotly or path.stem in VIZ_CHAPTERS:
        assert "setup_notebook()" in "".join(c.source for c in cells), "figures need viz.setup_notebook()"


MAX_NOTEBOOK_BYTES = 500_000


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_figure_is_stored_once_and_the_notebook_stays_small(path):
    """The committed outputs hold each figure once, as plotly JSON (``make notebooks`` sets
    ``plots.style.STORE_ONCE``); the book makes its ``text/html`` divs when it re-executes the chapters."""
    figures = 0
    for cell in _code_cells(path):
        for out in cell.outputs:
            data = out.get("data", {})
            if PLOTLY_JSON in data:
                figures += 1
                assert "text/html" not in data, f"{path.name}: a figure stored twice (JSON and html); run make notebooks"
            assert "application/vnd.jupyter.widget-view+json" not in data, \
                f"{path.name}: a widget output needs a kernel and CDN scripts; keep widgets out of stored outputs"
    if path.stem in VIZ_CHAPTERS:
        assert figures >= 3
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{path.name}: {path.stat().st_size:,} bytes"


def test_every_notebook_is_a_chapter_of_the_book():
    toc = _toc_files()
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in toc, f"{path.name} is missing from _toc.yml"
    for entry in toc:
        assert (ROOT / f"{entry}.md").exists() or (ROOT / f"{entry}.ipynb").exists(), f"_toc.yml lists missing {entry}"


def _tiny_book(root: Path, cell_source: str) -> None:
    root.mkdir()
    (root / "_config.yml").write_text(
        'title: "tiny"\nonly_build_toc_files: true\nexecute:\n  execute_notebooks: "force"\n  timeout: 60\n')
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapter\n")
    (root / "intro.md").write_text("# Intro\n\nA tiny book.\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Chapter"), nbformat.v4.new_code_cell(cell_source)]
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nbformat.write(nb, root / "chapter.ipynb")


def _build(root: Path) -> subprocess.CompletedProcess:
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    return subprocess.run([str(jupyter_book), "build", str(root), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_book_build_fails_when_a_notebook_cell_raises(tmp_path):
    """The strict build (`-W -n --keep-going`, as `make book` runs it) turns a raising cell into a failure;
    the same book with a cell that does not raise builds (so the test can tell the two apart)."""
    _tiny_book(tmp_path / "bad", 'raise RuntimeError("boom from a chapter")')
    bad = _build(tmp_path / "bad")
    assert bad.returncode != 0, bad.stdout[-2000:] + bad.stderr[-2000:]
    assert "mystnb.exec" in bad.stderr  # the warning -W turned into the failure: notebook execution failed
    report = tmp_path / "bad" / "_build" / "html" / "reports" / "chapter.err.log"
    assert "boom from a chapter" in report.read_text()

    _tiny_book(tmp_path / "good", 'print("fine")')
    good = _build(tmp_path / "good")
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    assert (tmp_path / "good" / "_build" / "html" / "chapter.html").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kernel", other_kernel_sets())
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_checked_outputs_do_not_depend_on_the_float_kernels(kernel_set_runs, kernel, path):
    """Every ``# NBVAL_CHECK_OUTPUT`` cell prints the same under another kernel set: its numbers are rounded past
    the kernels' noise or are verdicts of a tolerance check (``cegppo_edu.experiments.reproducibility``). nbval runs
    each chapter once per kernel set, beside that set's committed-run prefixes (``kernel_runs``); cells tagged
    ``nbval-skip`` are left out there (the book build runs them)."""
    done = kernel_set_runs[kernel].notebooks.get(path.name)
    assert done is not None, f"{path.name} was not run under kernel set {kernel}"
    assert done["returncode"] == 0, f"nbval of {path.name} under kernel set {kernel}:\n{done['output']}"


def _nbval(tmp_path, name: str, checked_source: str, printed: str) -> subprocess.CompletedProcess:
    """nbval (``--nbval-lax``) on a two-cell notebook: a cell tagged ``nbval-skip`` that raises if it runs and
    defines ``slow``, then a checked cell stored as printing ``printed``."""
    skipped = nbformat.v4.new_code_cell("slow = 1\nraise RuntimeError('the skipped cell ran')", execution_count=1)
    skipped.metadata["tags"] = ["nbval-skip"]
    checked = nbformat.v4.new_code_cell(f"# NBVAL_CHECK_OUTPUT\n{checked_source}", execution_count=2,
                                        outputs=[nbformat.v4.new_output("stream", name="stdout", text=printed)])
    nb = nbformat.v4.new_notebook(cells=[skipped, checked])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nbformat.write(nb, tmp_path / name)
    return subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider", name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_cell_tagged_nbval_skip_is_not_run_and_a_checked_cell_that_needs_it_fails(tmp_path):
    """The marker for a chapter's slow cells under the other kernel sets (docs/DESIGN.md, Testing): nbval leaves a
    cell tagged ``nbval-skip`` out (it would raise), and a checked cell that reads what that cell makes fails, so a
    wrong tag cannot pass unseen."""
    independent = _nbval(tmp_path, "independent.ipynb", "print(1 + 1)", "2\n")
    assert independent.returncode == 0, independent.stdout[-2000:]
    needs_it = _nbval(tmp_path, "needs_it.ipynb", "print(slow)", "1\n")
    assert needs_it.returncode != 0 and "NameError" in needs_it.stdout, needs_it.stdout[-2000:]


BOOK_EXECUTED = ROOT / "_build" / "jupyter_execute" / "notebooks"


def checked_outputs(cells) -> list[list[str]]:
    """The text nbval compares of each ``# NBVAL_CHECK_OUTPUT`` cell: its streams and text/plain results."""
    out = []
    for cell in cells:
        if cell.cell_type == "code" and "# NBVAL_CHECK_OUTPUT" in cell.source:
            out.append([o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", "")
                        for o in cell.outputs])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_book_build_prints_the_committed_checked_outputs(path):
    """nbval's check on this machine, made from the book build's execution (``make test`` builds the book first)
    instead of executing every chapter a second time: the executed chapter is this source, and its checked cells
    print what the committed notebook stores."""
    executed = BOOK_EXECUTED / path.name
    assert executed.exists(), f"{executed} is missing: build the book first (make book), as make test does"
    newest = max(f.stat().st_mtime for f in [path, *(ROOT / "cegppo_edu").rglob("*.py")])
    assert executed.stat().st_mtime >= newest, f"{executed} is older than the package or the chapter: make book"
    committed, built = _cells(path), nbformat.read(executed, as_version=4).cells
    assert [c.source for c in built] == [c.source for c in committed], \
        f"{executed} was built from another version of {path.name}: rebuild the book"
    expected = checked_outputs(committed)
    assert expected, f"{path.name}: no checked cell"
    assert checked_outputs(built) == expected, f"{path.name}: a checked cell prints something else than committed"


# --------------------------------------------------------------------------------------------------
# How a chapter reads (issue "the book, read as a learner reads it")
# --------------------------------------------------------------------------------------------------
CAPTION = re.compile(r"^\*\*Figure (\d+)\.(\d+)\.\*\* ")
TAKEAWAY = re.compile(r"\*Takeaway:\*\s+(.+)", re.S)
SENTENCE_END = re.compile(r"[.!?]\s+(?=[A-Z(])")
MAX_OPEN_LINES = 35  # a literalinclude longer than this must sit in a dropdown
METHOD_IDS = re.compile(r"(?<![\w/.-])(grpo|dapo|gppo|ce_gppo|cispo|ppo_clip)(?![\w/.-])")


def _chapter(path) -> int:
    return int(path.stem[:2])


def _shows_figure(cell) -> bool:
    """A stored plotly figure (JSON) or a live figure (HTML with a plotly div)."""
    return any(PLOTLY_JSON in o.get("data", {}) or "plotly-graph-div" in o.get("data", {}).get("text/html", "")
               for o in cell.get("outputs", []))


def _cells(path):
    return nbformat.read(path, as_version=4).cells


def _includes(markdown: str) -> list[tuple[str, str, bool]]:
    """(file, pyobject, inside a dropdown) for every literalinclude of a markdown cell."""
    out, depth_dropdown = [], False
    for block in re.split(r"\n(?=:::|```)", markdown):
        if block.startswith(":::{dropdown}") or block.startswith(":::{admonition}") and ":class: dropdown" in block:
            depth_dropdown = True
        elif block.startswith(":::") and not block.startswith(":::{"):
            depth_dropdown = False
        match = re.match(r"```\{literalinclude\} (\S+)\n(?:.*\n)*?:pyobject: (\S+)", block)
        if match:
            out.append((match.group(1), match.group(2), depth_dropdown))
    return out


def _object_lines(relative: str, name: str) -> int:
    import ast

    tree = ast.parse((ROOT / "notebooks" / relative).read_text())
    for part in name.split("."):
        tree = next(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part)
    return tree.end_lineno - tree.lineno + 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_figure_is_numbered_captioned_and_followed_by_one_takeaway(path):
    cells, expected = _cells(path), 1
    for index, cell in enumerate(cells):
        if cell.cell_type != "code" or not _shows_figure(cell):
            continue
        figures = sum(PLOTLY_JSON in o.get("data", {}) or "plotly-graph-div" in o.get("data", {}).get("text/html", "")
                      for o in cell.outputs)
        assert figures == 1, f"{path.name} cell {index}: {figures} figures in one cell (one caption each)"
        after = cells[index + 1] if index + 1 < len(cells) else None
        caption = CAPTION.match(after.source) if after is not None and after.cell_type == "markdown" else None
        assert caption, f"{path.name} cell {index}: the figure is not followed by '**Figure {_chapter(path)}.{expected}.**'"
        assert (int(caption.group(1)), int(caption.group(2))) == (_chapter(path), expected), \
            f"{path.name}: figure {caption.group(0)!r} where Figure {_chapter(path)}.{expected} was due"
        paragraph = after.source.split("\n\n")[0]
        takeaway = TAKEAWAY.search(paragraph)
        assert takeaway, f"{path.name}: Figure {_chapter(path)}.{expected} has no '*Takeaway:*' in its caption"
        sentences = [s for s in SENTENCE_END.split(takeaway.group(1).strip()) if s.strip()]
        assert len(sentences) == 1, f"{path.name}: Figure {_chapter(path)}.{expected}'s takeaway is {len(sentences)} sentences"
        expected += 1
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    for number in re.findall(rf"Figure {_chapter(path)}\.(\d+)", text):
        assert int(number) < expected, f"{path.name}: the text names Figure {_chapter(path)}.{number}, which does not exist"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_is_folded_and_a_short_version_comes_first(path):
    cells = _cells(path)
    for index, cell in enumerate(cells):
        if cell.cell_type == "code":
            assert "hide-input" in cell.metadata.get("tags", []), f"{path.name} cell {index}: code not folded (hide-input)"
    first_figure = next(i for i, c in enumerate(cells) if c.cell_type == "code" and _shows_figure(c))
    includes = [(i, *inc) for i, c in enumerate(cells) if c.cell_type == "markdown" for inc in _includes(c.source)]
    assert includes, f"{path.name}: no code shown with literalinclude"
    first, file, name, folded = includes[0]
    assert first < first_figure and not folded, f"{path.name}: the first code shown must come before the figures, open"
    assert _object_lines(file, name) <= MAX_OPEN_LINES, f"{path.name}: the first code shown ({name}) is long"
    for _, other, other_name, other_folded in includes:
        lines = _object_lines(other, other_name)
        assert other_folded or lines <= MAX_OPEN_LINES, f"{path.name}: {other_name} ({lines} lines) must be in a dropdown"
    if _chapter(path) <= 4:  # chapters 1-4 open with a teaching version (cegppo_edu.teaching); 4 with lm_rl_step
        assert file == "../cegppo_edu/teaching.py", f"{path.name}: open with the teaching version, not {file}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_chapter_ends_with_predictions_and_checked_exercises(path):
    cells = _cells(path)
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    assert "## You can now predict" in text and "## Try this" in text, f"{path.name}: no predictions or exercises"
    exercises = text.split("## Try this", 1)[1]
    numbers = re.findall(rf"\*\*Exercise {_chapter(path)}\.(\d+)\.\*\*", exercises)
    assert len(numbers) >= 2 and numbers == [str(k) for k in range(1, len(numbers) + 1)], f"{path.name}: {numbers}"
    answers = exercises.count(":::{admonition} Answer\n:class: dropdown")
    assert answers == len(numbers), f"{path.name}: {len(numbers)} exercises, {answers} folded answers"
    checks = [c for c in cells if c.cell_type == "code" and c.source.startswith("# The answers, checked by the package")]
    assert len(checks) == 1 and checks[0].source.count("assert") >= len(numbers), \
        f"{path.name}: the answers need one checking cell with an assert per exercise"
    printed = "".join(o.get("text", "") for o in checks[0].outputs)
    for k in range(1, len(numbers) + 1):
        assert f"{_chapter(path)}.{k} " in printed, f"{path.name}: the check prints nothing for exercise {_chapter(path)}.{k}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_clean_and_name_methods_by_their_labels(path):
    for index, cell in enumerate(_code_cells(path)):
        for out in cell.outputs:
            text = out.get("text", "") + out.get("data", {}).get("text/plain", "")
            assert out.get("name") != "stderr", f"{path.name} code cell {index} wrote to stderr: {out.text[:300]}"
            for bad in ("np.float64(", "np.int64(", "/tmp/", "array("):
                assert bad not in text, f"{path.name} code cell {index} prints {bad!r}: {text[:300]}"
            page = out.get("data", {}).get("text/html", "")  # the visible text: no scripts, styles or tags
            shown = re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S))
            figure = out.get("data", {}).get(PLOTLY_JSON)
            if figure:
                names = [t.get("name") or "" for t in figure["data"]]
                layout = figure.get("layout", {})
                titles = [(layout.get("title") or {}).get("text") or ""]
                for slider in layout.get("sliders", []):
                    titles += [s.get("label", "") for s in slider["steps"]]
                    titles += [s["args"][1].get("title.text", "") for s in slider["steps"] if len(s["args"]) > 1]
                shown += " ".join(names + titles + [a.get("text", "") for a in layout.get("annotations", [])])
            assert not METHOD_IDS.search(shown), \
                f"{path.name} code cell {index} shows method id {METHOD_IDS.search(shown).group(0)!r}, not its label"

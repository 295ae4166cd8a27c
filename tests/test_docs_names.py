"""README.md and docs/DESIGN.md cannot drift from the code: every path, module, function and method they name in
backticks exists, and the README's ``--method`` list is the registry's (``losses.METHODS``)."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

from cegppo_edu.lm import metrics
from cegppo_edu.losses import METHODS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/DESIGN.md")
# Backticked things that look like paths but name no file of the repository, each with the reason.
NOT_REPO_PATHS = {
    "_static/": "DESIGN says not to name a folder so",
    "myst.yml": "Jupyter Book 2's file, which DESIGN says is not used",
    "text/html": "a MIME type",
    "eval.json": "what cegppo eval writes",
    "summary.txt": "what the regeneration runner writes beside the runs",
    "run.json": "what a run writes in its folder",
}
# Names in README's section on the rented GPU (owned by the GPU chapter's engineer) that are wrong and await their fix
# there, with what they should say. An entry is kept only while README still names it (the last test), so a fix
# forces its removal here.
GENERATED = ("runs/", "RUN/", "_build/", ".venv", "<", "OUT/")  # made by a command, not committed
FILE_SUFFIXES = (".py", ".md", ".ipynb", ".toml", ".yml", ".sh", ".js", ".json", ".txt", ".jsonl", ".csv")


def _tracked() -> list[str]:
    return subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


TRACKED = _tracked()
TRACKED_NAMES = {Path(f).name for f in TRACKED}
TRACKED_DIRS = {str(p) + "/" for f in TRACKED for p in Path(f).parents if str(p) != "."}
PACKAGE_MODULES = {f[:-3].replace("/", ".").removesuffix(".__init__") for f in TRACKED
                   if f.startswith("cegppo_edu/") and f.endswith(".py")}
BY_SHORT_NAME: dict[str, list[str]] = {}
for _module in PACKAGE_MODULES:
    BY_SHORT_NAME.setdefault(_module.split(".")[-1], []).append(_module)


def backticked(doc: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", (ROOT / doc).read_text())


def is_path(token: str) -> bool:
    return bool(re.fullmatch(r"[\w./-]+", token)) and (token.endswith("/") or token.endswith(FILE_SUFFIXES))


def path_exists(token: str) -> bool:
    """A path from the root, or from the package (the package map's ``lm/steer.py``), or a file's bare name."""
    if "/" not in token.rstrip("/"):
        return token in TRACKED_NAMES or token in {Path(d).name + "/" for d in TRACKED_DIRS}
    return any(f"{base}{token}" in TRACKED or f"{base}{token}" in TRACKED_DIRS for base in ("", "cegppo_edu/",
                                                                                          "cegppo_edu/gpu/"))


def dotted_name_exists(token: str) -> bool | None:
    """True or False for a name of the package (``losses.gradient_weight``, ``cegppo_edu.lm.trainer``,
    ``Trainer.train_step``); None for a name that is not the package's (``torch.compile``)."""
    parts = token.split(".")
    if parts[0] == "cegppo_edu":
        starts = [parts]
    elif parts[0] in BY_SHORT_NAME or f"cegppo_edu.{parts[0]}" in PACKAGE_MODULES:
        starts = [f"cegppo_edu.{'.'.join(parts)}".split(".")] + [m.split(".") + parts[1:]
                                                               for m in BY_SHORT_NAME.get(parts[0], [])]
    elif parts[0][:1].isupper() and len(parts) == 2:  # Class.method: a class the package defines
        starts = [m.split(".") + parts for m in PACKAGE_MODULES if f"class {parts[0]}" in _module_source(m)]
        if not starts:
            return None
    else:
        return None
    return any(_resolves(candidate) for candidate in starts)


def _module_source(module: str) -> str:
    return (ROOT / (module.replace(".", "/") + ".py")).read_text() if (ROOT / (module.replace(".", "/") + ".py")) \
        .exists() else ""


def _resolves(parts: list[str]) -> bool:
    """The longest importable prefix (a module that needs an extra not installed here counts if its file exists),
    then attributes."""
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        if name not in PACKAGE_MODULES and name != "cegppo_edu":
            continue
        if i == len(parts):
            return True
        obj = importlib.import_module(name)
        if len(parts) == i + 1 and not hasattr(obj, parts[i]):  # `trainer.close`: a method of the module's class
            return any(isinstance(c, type) and c.__module__ == name and hasattr(c, parts[i]) for c in vars(obj).values())
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def names_to_check(doc: str):
    for token in backticked(doc):
        token = token.split("(")[0].strip()
        if not token or token in NOT_REPO_PATHS or token.startswith(GENERATED):
            continue
        if "/" in token and metrics.rows_for(token.replace("{", "").split("/{")[0]) or token.startswith(
                ("entropy/", "loss/", "steer/")):
            continue  # a metrics key (tests/test_metrics_reference.py checks those against the runs)
        if is_path(token):
            yield token, "path", path_exists(token)
        elif re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+", token):
            found = dotted_name_exists(token)
            if found is not None:
                yield token, "name", found


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_and_name_the_doc_gives_exists(doc):
    checked = list(names_to_check(doc))
    assert len(checked) > 20, f"{doc}: only {len(checked)} names found; is the extraction broken?"
    missing = [f"{kind} {token}" for token, kind, ok in checked if not ok]
    assert not missing, f"{doc} names what does not exist: {missing}"


def test_readme_method_list_is_the_registry():
    text = (ROOT / "README.md").read_text()
    sentence = re.search(r"`--method` takes every loss in the registry \(([^)]*)\)", text)
    assert sentence, "README lost its sentence listing --method's choices"
    listed = re.findall(r"`(\w+)`", sentence.group(1))
    assert sorted(listed) == sorted(METHODS), f"README lists {sorted(listed)}, the registry has {sorted(METHODS)}"


def test_design_lists_every_objective_of_the_registry():
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    row = re.search(r"one per objective \(([^)]*)\)", text)
    assert row, "DESIGN lost the losses.py row listing the objectives"
    listed = set(re.findall(r"`(\w+)`", row.group(1)))
    functions = {m.loss.__name__ for m in METHODS.values()}
    assert listed == functions, f"DESIGN lists {sorted(listed)}, the registry's losses are {sorted(functions)}"


def test_tables_have_as_many_cells_as_their_header():
    for doc in DOCS:
        header = None
        for number, line in enumerate((ROOT / doc).read_text().splitlines(), 1):
            if not line.startswith("|"):
                header = None
                continue
            cells = len(re.split(r"(?<!\\)\|", line.strip().strip("|")))
            header = header or cells
            assert cells == header and line.rstrip().endswith("|"), \
                f"{doc}:{number}: {cells} cells in a table of {header} columns, or no closing '|'"


def test_design_layout_names_folders_that_exist():
    block = re.search(r"## Layout.*?```\n(.*?)```", (ROOT / "docs" / "DESIGN.md").read_text(), re.S).group(1)
    named = [word for line in block.splitlines() for word in line.split()[:1] if word.endswith("/")]
    named += [word for word in block.split()[:9] if "." in word]  # the first line's files
    assert len(named) >= 6
    missing = [name for name in named if not path_exists(name)]
    assert not missing, f"DESIGN's layout names what does not exist: {missing}"


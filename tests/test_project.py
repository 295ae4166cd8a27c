"""The project's own consistency: environment.yml matches pyproject, `import cegppo_edu` stays light."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name where they differ


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return name.lower(), spec.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("test", "book", "data"):  # what `make test` installs
        wanted += [r for r in project["optional-dependencies"][extra] if not r.startswith("cegppo-edu")]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    entries = [d for d in env["dependencies"] if isinstance(d, str) and not d.startswith("python")]
    entries += [d for d in env["dependencies"] if isinstance(d, dict) for d in d.get("pip", []) if d != "-e ."]
    conda = dict(_split(d) for d in entries)
    for requirement in wanted:
        name, spec = _split(requirement)
        conda_name = CONDA_NAMES.get(name, name)
        assert conda_name in conda, f"{name} is in pyproject.toml but not in environment.yml"
        assert conda[conda_name] == spec, f"{name}: pyproject says {spec!r}, environment.yml {conda[conda_name]!r}"


def test_import_does_not_pull_gpu_only_packages():
    code = ("import sys, pkgutil, importlib, cegppo_edu\n"
            "for m in pkgutil.iter_modules(cegppo_edu.__path__):\n"
            "    if m.name not in ('integrations', 'cli', '__main__'):\n"
            "        importlib.import_module('cegppo_edu.' + m.name)\n"
            "bad = [m for m in ('vllm', 'verl', 'ray') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme.split("\n\n")[1] and "make book" in readme.split("\n\n")[1]
    assert "make test" in (ROOT / ".ci" / "run").read_text()

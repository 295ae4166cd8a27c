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


def _readme_commands() -> list[str]:
    """The commands of the README's first code block (before any comment)."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def test_readme_top_commands_are_make_targets_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert commands[:2] == ["make book", "make test"]
    for command in commands:
        target = command.split()[1]
        dry = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert dry.returncode == 0, f"README's `{command}` is no make target: {dry.stderr}"
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.strip().startswith("#")]
    assert "make test" in ci, "CI must run the README's test command itself"

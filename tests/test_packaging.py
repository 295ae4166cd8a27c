"""The package as a user installs it: a wheel built from the checkout, installed into a fresh virtual environment
outside the checkout, runs the GPU preset's smoke mode and the toy bandit with nothing but what it ships."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args, **kw):
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, working folder): the wheel installed alone; its dependencies (torch, transformers, ...)
    come from this environment's site-packages through a .pth line, so no multi-GB download is repeated. Only the
    wheel's own copy of cegppo_edu is importable there: this environment reaches the checkout through an
    editable-install finder, whose .pth file is not processed for a directory added by another .pth file."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"  # a copy, so that the build's own files (build/, *.egg-info) stay out of the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv*", "_build", ".cache", "build", "runs",
                                                                "*.egg-info", "notebooks", "__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--quiet", "-w", str(tmp / "dist")])
    wheel, = (tmp / "dist").glob("cegppo_edu-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)])
    work = tmp / "work"  # outside the checkout: nothing can be read from it by a relative path
    work.mkdir()
    return python, work, wheel


@pytest.mark.slow
def test_wheel_ships_the_smoke_data_and_no_tests(installed):
    _, _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("cegppo_edu/gpu/data/math/mathsub30k_verl.jsonl", "cegppo_edu/gpu/data/math/aime24_h4.jsonl",
                   "cegppo_edu/integrations/ce_gppo_trainer.yaml"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith("tests/")]


@pytest.mark.slow
def test_installed_wheel_imports_its_own_copy(installed):
    python, work, _ = installed
    where = _run([str(python), "-c", "import cegppo_edu; print(cegppo_edu.__file__)"], cwd=work).stdout.strip()
    assert str(ROOT) not in where and Path(python).parents[1] in Path(where).parents


@pytest.mark.slow
def test_installed_wheel_runs_the_gpu_smoke_mode_and_the_bandit(installed):
    python, work, _ = installed
    cegppo = str(Path(python).parent / "cegppo")
    # A wheel installed without extras: the data extra's readers (pyarrow, datasets) must not be needed.
    blocked = work / "no-extras"
    for module in ("pyarrow", "datasets"):
        (blocked / module).mkdir(parents=True, exist_ok=True)
        (blocked / module / "__init__.py").write_text(f"raise ImportError('{module} is not installed here')\n")
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(blocked)}
    _run([cegppo, "train", "--preset", "r1-distill-1.5b-1gpu", "--smoke", "--out", "smoke", "--no-progress"],
         cwd=work, env=env)
    steps = [json.loads(line) for line in (work / "smoke" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps] == [0, 1, 2, 3] and steps[-1]["responses/kept"] == 16
    _run([cegppo, "bandit", "--steps", "5", "--seeds", "2", "--out", "bandit"], cwd=work, env=env)
    history = json.loads((work / "bandit" / "history.json").read_text())
    assert history["steps"] == 5 and len(history["entropy"]) == 5

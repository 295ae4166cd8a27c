"""The one runner of the committed data (``experiments.regenerate``) builds exactly the configs the committed runs
were made with (the regeneration test in test_reproducibility.py trains one step of chapter 4's runs)."""

from __future__ import annotations

import json
import os

import pytest

from cegppo_edu.experiments import ROOT, data_path, regenerate
from cegppo_edu.lm.config import from_dict, to_dict


@pytest.mark.parametrize("job", sorted(regenerate.JOBS))
def test_every_committed_run_is_one_the_runner_makes_with_its_config(job):
    spec = regenerate.JOBS[job]
    folder = data_path(*spec.folder)
    runs = spec.runs()
    assert runs, job
    for run in runs:
        path = os.path.join(folder, run.kept, "config.json")
        assert os.path.exists(path), f"{job}: the runner makes {run.kept}, which is not committed"
        with open(path) as f:
            committed = to_dict(from_dict(json.load(f)))  # fields added since then at their defaults
        made = to_dict(run.config)
        differing = {k: (committed[k], v) for k, v in made.items() if committed[k] != v}
        assert not differing, f"{job} {run.kept}: (committed, runner) differ: {differing}"


def test_the_data_constant_is_the_repositorys_notebooks_data():
    assert os.path.isdir(data_path("ch04", "runs")) and data_path().startswith(ROOT)

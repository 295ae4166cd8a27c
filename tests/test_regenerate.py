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


def test_a_run_that_stops_before_its_last_step_is_not_kept(tmp_path, monkeypatch):
    """A worker told to stop (SIGTERM: the trainer finishes the step, checkpoints and returns) once had its partial
    run kept as if complete, and the runner then skipped it as done."""
    from cegppo_edu.lm.config import apply_overrides, get_preset
    from cegppo_edu.lm.trainer import Trainer

    config = apply_overrides(get_preset("tiny-arith"), {"steps": 3, "prompts_per_step": 2, "group_size": 2,
                                                        "max_new_tokens": 4, "eval_every": 0, "checkpoint_every": 0,
                                                        "warm_start_steps": 0})
    train = Trainer.train
    monkeypatch.setattr(Trainer, "train", lambda self, **kw: train(self, stop_after=1))
    run = regenerate.Run("tiny", config, "runs/tiny/seed0", lambda key: True)
    with pytest.raises(RuntimeError, match="tiny stopped at step 1 of 3: not kept"):
        regenerate.train_and_keep(run, str(tmp_path / "scratch"), str(tmp_path / "kept"))
    assert not (tmp_path / "kept").exists()
    monkeypatch.setattr(Trainer, "train", train)
    regenerate.train_and_keep(run, str(tmp_path / "scratch"), str(tmp_path / "kept"))
    assert [m["step"] for m in map(json.loads, open(tmp_path / "kept" / "metrics.jsonl"))] == [1, 2, 3]

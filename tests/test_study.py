"""Chapter 4's many-seed comparison (``cegppo_edu.experiments.study``): the claims' verdicts on constructed runs whose
answers are known, the task that does not saturate, and the committed runs and their summary."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from cegppo_edu.experiments import study
from cegppo_edu.lm.config import get_preset, validate
from cegppo_edu.lm.tasks import make_addition_task_from_config
from cegppo_edu.summaries import EQUAL, EQUIVALENCE_MARGIN, FAILS, FINAL_STEPS, HOLDS, seed_interval

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, study.DATA)


def constructed_log(entropy_final: float, accuracy: float, rng, entropy_start: float = 0.4, noise: float = 0.01,
                    steps: int = study.STEPS) -> list[dict]:
    """A run's log: entropy going linearly from ``entropy_start`` to ``entropy_final``, accuracy flat, plus noise."""
    log = [{"step": 0, study.ACCURACY: accuracy}]
    for step in range(1, steps + 1):
        record = {"step": step, study.ENTROPY: entropy_start + (entropy_final - entropy_start) * step / steps
                  + noise * rng.normal()}
        if step % 10 == 0:
            record[study.ACCURACY] = accuracy + noise * rng.normal()
        log.append(record)
    return log


def constructed_study(final_entropy, accuracy=lambda name: 0.3, seeds: int = 5, noise: float = 0.01,
                      start: float = 0.4) -> study.Study:
    """Every configuration, its final entropy given by ``final_entropy(name)`` (per seed: the same plus noise)."""
    rng = np.random.default_rng(0)
    runs = {name: [constructed_log(final_entropy(name), accuracy(name), rng, start, noise) for _ in range(seeds)]
            for name in study.CONFIGS}
    return study.Study(runs, tuple(range(seeds)))


def by_name(claims) -> dict:
    return {c.name: c for c in claims}


def paper_like(name: str) -> float:
    """Final entropies ordered as the paper says: GRPO lowest, DAPO above it, CE-GPPO stable (near the start 0.4),
    β1 lowering and β2 raising H."""
    spec = study.CONFIGS[name]
    if "beta1" in spec:
        return 0.35 - 0.1 * spec["beta1"] + 0.05 * spec["beta2"] + (0.1 if spec["beta1"] == 0 else 0.0)
    return {"grpo": 0.1, "dapo": 0.2}[spec["method"]]


def test_claims_hold_on_runs_ordered_as_the_paper_says():
    claims = by_name(study.claims(constructed_study(paper_like, accuracy=lambda n: 0.4 if n == study.CE_GPPO
                                                    else 0.3)))
    assert {name: c.verdict for name, c in claims.items()} == {name: HOLDS for name in claims}


def test_claims_fail_on_runs_ordered_against_the_paper():
    def against(name):  # every ordering reversed, and CE-GPPO's (0.5, 1), off the grid's corners, far from its start
        return 1.2 if name == study.CE_GPPO else 0.8 - paper_like(name)
    claims = by_name(study.claims(constructed_study(against, accuracy=lambda n: 0.2 if n == study.CE_GPPO
                                                    else 0.3)))
    assert {name: c.verdict for name, c in claims.items()} == {name: FAILS for name in claims}


def test_claims_are_not_resolved_when_the_seeds_disagree():
    claims = by_name(study.claims(constructed_study(lambda name: 0.3, noise=0.05, start=0.3)))
    assert all(c.verdict.startswith("not resolved at 5 seeds") for c in claims.values()), claims


def test_collapse_claims_name_beta1_and_the_learning_rate():
    def accuracy(name):  # β1 >= 0.5 at the chapter's lr collapses; at the lower lr nothing does
        spec = study.CONFIGS[name]
        return 0.05 if spec.get("beta1", 0.0) >= 0.5 and "lr" not in spec else 0.3
    verdicts = {c.name: c.verdict for c in study.lr_claims(constructed_study(paper_like, accuracy=accuracy))}
    assert verdicts["B10"] == verdicts["B11"] == verdicts["B12"] == HOLDS
    assert verdicts["B13"].startswith(("not resolved", EQUAL))  # equal accuracies at the lower lr
    assert verdicts["P4-lm-slow"] == verdicts["P9-slow"] == HOLDS  # paper_like: CE-GPPO above GRPO and above β1=1, β2=0.5


def test_b13_uses_the_equivalence_margin_where_equal_accuracies_are_an_answer():
    """At the lower lr GRPO and CE-GPPO (β1=1, β2=0.5) may end with the same accuracy: a difference inside
    ±EQUIVALENCE_MARGIN in every seed is "equal within", not "not resolved" or, for a hair below 0, "does not
    hold"."""
    low, high = f"{study.ce_gppo_name(1.0, 0.5)}_lr-{study.LOWER_LR:g}", f"grpo_lr-{study.LOWER_LR:g}"
    s = constructed_study(paper_like, accuracy=lambda name: 0.3, noise=0.0)
    for i, (a, b) in enumerate(zip(s.runs[high], s.runs[low])):
        for m_a, m_b in zip(a, b):
            if study.ACCURACY in m_a:
                m_a[study.ACCURACY], m_b[study.ACCURACY] = 0.200, 0.2005 + 0.0005 * i  # GRPO a hair below
    verdict = {c.name: c for c in study.lr_claims(s)}["B13"].verdict
    assert verdict == f"{EQUAL} ±{EQUIVALENCE_MARGIN:g}", verdict


def test_predictor_claim_needs_every_configuration_to_meet_the_targets():
    rng = np.random.default_rng(1)
    s = constructed_study(paper_like)
    for name, logs in s.runs.items():
        for log in logs:
            for m in log[10::10]:
                measured = rng.normal(-0.05, 0.03)
                m["entropy/param_pred/measured"] = measured
                for form in ("step", "trapezoid", "phase"):
                    m[f"entropy/param_pred/{form}"] = measured * (1 + 0.01 * rng.normal())
    assert study.predictor_claim(s).verdict == HOLDS
    for log in s.runs["dapo"]:  # one configuration whose predictions are unrelated to the change
        for m in log[10::10]:
            m["entropy/param_pred/trapezoid"] = rng.normal(-0.05, 0.03)
    claim = study.predictor_claim(s)
    assert claim.verdict == FAILS and f"in {len(s.runs) - 1} of {len(s.runs)}" in claim.detail


def linear_in_beta(name: str) -> float:
    spec = study.CONFIGS[name]
    return 0.35 - 0.1 * spec["beta1"] + 0.05 * spec["beta2"] if "beta1" in spec else 0.3


def test_beta_contrast_reads_the_right_corner_of_the_grid():
    ramp = np.mean(np.arange(study.STEPS - FINAL_STEPS + 1, study.STEPS + 1)) / study.STEPS  # the final window of a linear ramp
    high, low = study.beta_contrast(constructed_study(linear_in_beta, noise=0.0), axis=1)  # β2: 2 against 0.5
    assert np.allclose(high - low, ramp * 0.05 * (study.BETA2S[-1] - study.BETA2S[0]), atol=1e-9)
    high, low = study.beta_contrast(constructed_study(linear_in_beta, noise=0.0), axis=0)  # β1: 1 against 0
    assert np.allclose(high - low, ramp * -0.1 * (study.BETA1S[-1] - study.BETA1S[0]), atol=1e-9)


def test_a_run_collapses_when_its_accuracy_falls_below_half_its_start():
    s = constructed_study(paper_like, accuracy=lambda n: 0.3, noise=0.0)
    s.runs["grpo"][2][50][study.ACCURACY] = 0.14  # step 50 of seed 2: below half of 0.3
    assert study.collapsed(s, "grpo").tolist() == [False, False, True, False, False]
    assert study.collapsed(s, "dapo").sum() == 0


def test_series_refuses_seeds_logged_at_different_steps():
    s = constructed_study(paper_like)
    del s.runs["dapo"][1][20][study.ENTROPY]
    with pytest.raises(ValueError, match="dapo"):
        s.series("dapo", study.ENTROPY)


def test_seed_interval_is_the_student_t_interval():
    values = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]])  # seeds × steps
    mean, low, high = seed_interval(values)
    assert mean.tolist() == [2.0, 2.0]
    assert high[0] - mean[0] == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-6)  # t(0.975, 2) · s / √n
    assert low[1] == high[1] == 2.0


# ------------------------------------------------------------------------------ the task and the configs
def test_held_out_problems_are_unseen_by_chapter_4s_warm_start_and_by_the_train_split():
    config = study.warm_start_config()
    task = study.make_task(config)
    chapter = {p.question for p in make_addition_task_from_config(get_preset("tiny-arith")).train}
    heldout = {p.question for p in task.heldout}
    assert len(heldout) == config.n_heldout
    assert not heldout & chapter
    assert not heldout & {p.question for p in task.train}
    assert any(len(p.question) == len("123+456=") for p in task.heldout)  # 3-digit problems are in it


def test_every_configuration_is_a_valid_run_config_on_the_same_problems():
    configs = [study.run_config(name, seed) for name in study.CONFIGS for seed in study.SEEDS]
    assert {validate(c).task for c in configs} == {study.TASK["task"]}
    assert len({(c.method, c.beta1, c.beta2, c.lr, c.seed) for c in configs}) == len(study.CONFIGS) * len(study.SEEDS)
    assert {c.data_seed for c in configs} == {0}
    with pytest.raises(ValueError, match="ce_gppo_b1-7"):
        study.run_config("ce_gppo_b1-7_b2-1", 0)


# ------------------------------------------------------------------------------ the committed runs
@pytest.fixture(scope="module")
def committed():
    return study.load(DATA)


def test_committed_summary_is_what_the_code_computes_from_the_committed_runs(committed):
    with open(os.path.join(DATA, "summary.txt")) as f:
        kept = [line for line in f.read().splitlines() if not line.startswith("regenerated ")]
    assert kept == study.summary_lines(committed)


def test_the_task_does_not_saturate_for_any_configuration(committed):
    """No run comes near accuracy 1; the runs that do not collapse also stay clear of 0 (a collapse is a method
    failing, which the chapter reports, not the task saturating)."""
    for name in study.CONFIGS:
        _, accuracy = committed.series(name, study.ACCURACY)
        assert accuracy.max() < 0.5, name
        healthy = ~study.collapsed(committed, name)
        assert healthy.sum() == 0 or accuracy[healthy].min() > 0.05, name
    assert sum(study.collapsed(committed, name).sum() == 0 for name in study.CONFIGS) >= 5


def test_committed_configs_are_the_studys_configs(committed):
    import json

    from cegppo_edu.lm.config import to_dict

    from cegppo_edu.lm.config import TrainConfig

    defaults = to_dict(TrainConfig())
    for name in study.CONFIGS:
        for seed in study.SEEDS:
            with open(os.path.join(DATA, study.run_folder(name, seed), "config.json")) as f:
                kept = json.load(f)
            config = to_dict(study.run_config(name, seed))
            assert kept == {k: config[k] for k in kept}, (name, seed)
            # a field added after the runs were made is at its default in them (it did not exist, so it acted so)
            assert {k: config[k] for k in config if k not in kept} == {k: defaults[k] for k in config if k not in kept}


def test_claims_are_named_by_their_scoreboard_rows(committed):
    """The one ID scheme: study's claims carry the rows of book/scoreboard.md, and the chapter prints them as they are."""
    s = committed
    names = [c.name for c in study.claims(s) + study.lr_claims(s) + [study.predictor_claim(s)]]
    rows = set(re.findall(r"^\| ([PBS][\w-]*) \|", open(os.path.join(ROOT, "book", "scoreboard.md")).read(), re.M))
    assert len(names) == len(set(names)) == 14 and set(names) <= rows, set(names) - rows

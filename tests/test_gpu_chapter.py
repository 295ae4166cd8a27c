"""Chapter 6 integration: the R1-Distill presets, their smoke mode (train and eval on a CPU), the evaluation
metrics, the report's evaluation table, and that the book states the preset's real values."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cegppo_edu
from cegppo_edu.lm import config as cfg
from cegppo_edu.losses import get_method
from cegppo_edu.gpu import evaluate
from cegppo_edu.plots import report
from cegppo_edu.advantages import zero_variance_groups
from cegppo_edu.lm.interfaces import Rollout
from cegppo_edu.gpu.math_data import MathProblem
from cegppo_edu.gpu.math_reward import MathReward
from cegppo_edu.cli import main as cegppo
from cegppo_edu.lm.trainer import Trainer
from cegppo_edu.lm.run_dir import read_metrics, strip_timings

ROOT = Path(__file__).resolve().parents[1]
PRESET = "r1-distill-1.5b-1gpu"
GPU_PRESETS = (PRESET, "r1-distill-1.5b-1gpu-48gb")


# ------------------------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", GPU_PRESETS)
def test_gpu_presets_take_the_losses_own_defaults(name):
    """The preset sets no second copy of ε or β: its loss keywords are the loss function's signature defaults."""
    c = cfg.get_preset(name)
    defaults = get_method(c.method).defaults
    assert cfg.loss_kwargs(c) == {**defaults, "agg": "token-mean"}
    assert all(getattr(c, k) is None for k in ("eps_low", "eps_high", "beta1", "beta2"))


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_gpu_smoke_mode_reads_data_that_ships_with_the_package(name):
    """Smoke mode must work from an installed wheel: its problems live inside cegppo_edu, not in tests/."""
    smoke = cfg.get_preset(name, smoke=True)
    package = Path(cegppo_edu.__file__).resolve().parent
    for path in (smoke.data_path, smoke.eval_data_path):
        assert package in Path(path).resolve().parents, path
    task = cfg.resolve("task", smoke.task)(smoke)
    assert len(task.train) >= smoke.prompts_per_step and len(task.heldout) >= 1


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_gpu_smoke_model_has_positions_for_its_longest_sequence(name):
    """The tiny model of smoke mode is built for its longest prompt plus response (else transformers warns on
    every generate call past max_position_embeddings, in chapter 6's output too)."""
    from cegppo_edu.lm import setup

    smoke = cfg.get_preset(name, smoke=True)
    model, tokenizer = setup.model_and_tokenizer(smoke, torch.device("cpu"), None)
    encode = setup.make_prompt_encoder(smoke, tokenizer)
    task = cfg.resolve("task", smoke.task)(smoke)
    train_longest = max(len(encode(p.question)) for p in task.train + task.heldout) + smoke.max_new_tokens
    from cegppo_edu.gpu import math_data
    from cegppo_edu.gpu.presets import SMOKE_MATH_DATA
    from cegppo_edu.gpu.prompts import encode_r1_prompt

    benchmarks = [math_data.load_problems(evaluate.benchmark_source(n, SMOKE_MATH_DATA))
                  for n in math_data.parse_benchmarks("aime24,aime25,math500")]
    eval_longest = max(len(encode_r1_prompt(p.question, tokenizer)) for ps in benchmarks for p in ps) + \
        evaluate.SMOKE_MAX_NEW_TOKENS
    assert max(train_longest, eval_longest) <= model.config.max_position_embeddings == smoke.tiny_max_positions


@pytest.mark.parametrize("field, value", [("micro_batch_tokens", -1), ("mini_batches", 0),
                                          ("vllm_gpu_memory_utilization", 1.5), ("reward_workers", 0),
                                          ("eval_top_p", 0.0), ("max_prompt_tokens", 0)])
def test_gpu_preset_rejects_bad_fields_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        cfg.apply_overrides(cfg.get_preset(PRESET), {field: value})
    with pytest.raises(ValueError, match=field):
        cfg.register_preset("bad-preset", cfg.TrainConfig(**{**cfg.to_dict(cfg.get_preset(PRESET)), field: value}))
    assert "bad-preset" not in cfg.PRESETS


def _book_preset_table() -> dict[str, list[str]]:
    """The machine-checked table of book/gpu_recipe.md: field -> one value per preset column."""
    text = (ROOT / "book" / "gpu_recipe.md").read_text()
    block = re.search(r"<!-- preset-values:start -->(.*?)<!-- preset-values:end -->", text, re.S)
    assert block, "book/gpu_recipe.md lost its preset-values block"
    lines = [ln for ln in block.group(1).strip().splitlines() if ln.startswith("|")]
    header = [h.strip().strip("`") for h in lines[0].strip("|").split("|")]
    assert header[1:] == list(GPU_PRESETS)
    rows = {}
    for line in lines[2:]:
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_gpu_book_states_the_presets_real_values():
    rows = _book_preset_table()
    assert {"prompts_per_step", "group_size", "max_new_tokens", "mini_batches", "micro_batch_tokens", "steps",
            "vllm_gpu_memory_utilization", "lr", "max_prompt_tokens", "eval_every", "eval_samples"} <= set(rows)
    for field, texts in rows.items():
        for name, text in zip(GPU_PRESETS, texts):
            stated = cfg._parse_value(field, text.replace(",", ""))
            actual = getattr(cfg.get_preset(name), field)
            assert stated == actual, f"book/gpu_recipe.md says {field}={text} for {name}; config.py has {actual}"


# ------------------------------------------------------------------------------------------------ smoke train
@pytest.mark.slow  # processes killed and restarted: seconds each (make test runs it)
def test_gpu_smoke_train_end_to_end_and_resume(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    args = ["--preset", PRESET, "--smoke", "--no-progress"]
    assert cegppo(["train", *args, "--out", str(straight)]) == 0
    metrics = read_metrics(str(straight))
    steps = [m for m in metrics if m["step"] > 0]
    assert [m["step"] for m in steps] == [1, 2, 3]
    for m in steps:
        for key in ("reward/mean", "entropy/mean", "loss", "entropy/after_update", "response/length_mean"):
            assert math.isfinite(m[key]), key
        assert m["update/optimizer_steps"] == 2 and m["responses/kept"] == 16
    assert all(m["reward/mean"] == -1.0 for m in steps)  # a random model never closes </think>
    evals = [m["eval/accuracy"] for m in metrics if "eval/accuracy" in m]
    assert evals == [0.0, 0.0, 0.0]  # steps 0, 2 and the last; a random model never closes </think>
    assert (straight / "checkpoints" / "step_000003" / "COMPLETE").exists()
    assert json.loads((straight / "config.json").read_text())["sampler"] == "hf"
    # Pre-empted after step 2, resumed: the same metrics as the straight run.
    assert cegppo(["train", *args, "--out", str(split), "--steps", "2"]) == 0
    assert cegppo(["train", *args, "--out", str(split), "--steps", "3", "--resume"]) == 0
    assert strip_timings(read_metrics(str(split))) == strip_timings(metrics)


def test_gpu_dynamic_sampling_filter_drops_constant_groups(tmp_path):
    rewards = torch.tensor([1, 1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1], dtype=torch.float32)
    assert zero_variance_groups(rewards, 4).view(-1, 4)[:, 0].tolist() == [True, False, True, False]

    def constructed_reward(texts, answers):  # the same 4 groups of 4 at every call, whatever the texts
        return rewards[:len(texts)].tolist() if len(texts) == 16 else [-1.0] * len(texts)
    config = cfg.apply_overrides(cfg.get_preset(PRESET, smoke=True),
                                 {"drop_zero_variance": True, "eval_every": 0, "steps": 1})
    trainer = Trainer(config, str(tmp_path), reward_fn=constructed_reward, progress=False)
    m = trainer.train_step()
    assert m["groups/kept_frac"] == 0.5 and m["responses/kept"] == 8
    assert m["ZA/count"] == 0 and m["tokens"] > 0 and math.isfinite(m["loss"])
    assert m["grad_norm/mean"] > 0  # the mixed groups carry a gradient


# ------------------------------------------------------------------------------------------------ evaluation
def test_gpu_avg_and_pass_at_k():
    correct = np.array([[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=bool)
    assert evaluate.avg_at_k(correct) == pytest.approx((0.25 + 1.0 + 0.0) / 3)
    assert evaluate.pass_at_k(correct) == pytest.approx(2 / 3)


class ScriptedSampler:
    """Returns fixed responses: problem i's j-th sample is ``texts[i][j]``."""

    def __init__(self, texts):
        self.texts = texts

    def generate(self, prompt_ids, n, max_new_tokens, temperature=1.0, top_p=1.0, seed=None):
        texts = [t for row in self.texts for t in row]
        return Rollout(prompt_ids=[p for p in prompt_ids for _ in range(n)], response_ids=[[1, 2]] * len(texts),
                       response_logp=[[0.0, 0.0]] * len(texts), truncated=[False] * len(texts), texts=texts)


def test_gpu_evaluate_benchmark_grades_with_math_verify():
    problems = [MathProblem("one half?", "\\frac{1}{2}"), MathProblem("seven?", "7")]
    texts = [["x</think>The answer is \\boxed{0.5}.", "</think>\\boxed{\\frac{2}{4}}", "no end \\boxed{1/2}"],
             ["</think>\\boxed{8}", "</think>\\boxed{7}", "</think>\\boxed{7}"]]
    with MathReward(workers=0) as reward:
        summary, rows = evaluate.evaluate_benchmark(problems, [[1], [2]], ScriptedSampler(texts), reward, samples=3,
                                                    temperature=0.6, top_p=0.95, max_new_tokens=8, seed=0)
    assert rows[0]["correct"] == [True, True, False] and rows[0]["outcomes"][2] == "no_think_end"
    assert rows[1]["correct"] == [False, True, True]
    assert summary["avg@3"] == pytest.approx(4 / 6) and summary["pass@3"] == 1.0 and summary["problems"] == 2


def test_gpu_eval_smoke_writes_avg_at_k(tmp_path, capsys):
    out = tmp_path / "eval"
    result = evaluate.run_eval(None, "aime24,math500", samples=3, out=str(out), smoke=True)
    assert "sampler hf" in capsys.readouterr().out
    saved = json.loads((out / "eval.json").read_text())
    assert saved == json.loads(json.dumps(result)) and saved["smoke"] and saved["sampler"] == "hf"
    for name in ("aime24", "math500"):
        bench = saved["benchmarks"][name]
        assert bench["problems"] == 4 and bench["k"] == 3
        assert bench["avg@3"] == bench["pass@3"] == 0.0  # a random model never closes </think>
        lines = (out / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) == 4 and all(len(json.loads(ln)["correct"]) == 3 for ln in lines)
    again = evaluate.run_eval(None, "aime24,math500", samples=3, out=str(tmp_path / "again"), smoke=True,
                              verbose=False)
    assert [again["benchmarks"][n]["mean_length"] for n in ("aime24", "math500")] == \
        [saved["benchmarks"][n]["mean_length"] for n in ("aime24", "math500")]  # same seed, same samples


@pytest.mark.parametrize("argv, message", [
    (["--bench", "aime24,gsm8k"], "aime24, aime25, math500"),
    (["--samples", "0"], "samples=0"),
    (["--temperature", "-0.1"], "temperature=-0.1"),
    (["--top-p", "0"], "top_p=0.0"),
    (["--top-p", "1.5"], "top_p=1.5"),
    (["--max-new-tokens", "0"], "max_new_tokens=0"),
])
def test_gpu_eval_rejects_bad_input(tmp_path, capsys, argv, message):
    assert cegppo(["eval", "--smoke", "--out", str(tmp_path / "e"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_gpu_report_puts_eval_next_to_the_papers_numbers(tmp_path):
    evaluate.run_eval(None, "aime24", samples=2, out=str(tmp_path / "e"), smoke=True, verbose=False)
    rows = evaluate.eval_table_rows([evaluate.read_eval(str(tmp_path / "e"))])
    authors = [r for r in rows if r["source"].startswith("reported by the authors")]
    assert [r["run"] for r in authors] == list(evaluate.PAPER_RESULTS)
    for column in ("aime24", "aime25", "math500"):  # each column read from its own position in the paper's rows
        index = evaluate.PAPER_COLUMNS.index(column)
        assert [r[column.upper()] for r in authors] == [v[index] for v in evaluate.PAPER_RESULTS.values()]
    assert rows[-1]["source"].startswith("ours:") and "SMOKE" in rows[-1]["source"]
    assert math.isnan(rows[-1]["AIME25"])  # not evaluated, not invented
    parser = __import__("argparse").ArgumentParser()
    report.add_cli(parser.add_subparsers())
    args = parser.parse_args(["report", "--eval", str(tmp_path / "e"), "--out", str(tmp_path / "r.html")])
    assert args.func(args) == 0
    page = (tmp_path / "r.html").read_text()
    assert "reported by the authors" in page and "SMOKE" in page


@pytest.mark.parametrize("page", ["book/gpu_recipe.md", "book/paper_in_brief.md"])
def test_gpu_book_pages_state_the_authors_table_the_package_prints(page):
    """The 1.5B results table appears on two book pages and in ``evaluate.PAPER_RESULTS``: all three agree,
    and each row's Avg is the mean of its five benchmarks (as the paper's README defines it)."""
    text = (ROOT / page).read_text()
    header = next(ln for ln in text.splitlines() if ln.startswith("| method | AIME24"))
    lines = text.splitlines()
    start = lines.index(header) + 2
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[start:start + len(evaluate.PAPER_RESULTS)]]
    for row, values in zip(rows, evaluate.PAPER_RESULTS.values(), strict=True):
        assert tuple(float(v) for v in row[1:]) == values, (page, row)
        assert values[-1] == pytest.approx(sum(values[:-1]) / 5, abs=0.06), row


def test_gpu_cli_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "cegppo_edu", "--help"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    for command in ("bandit", "train", "report", "eval"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command


# ------------------------------------------------------------------------------ first contact with a rented GPU
def test_eval_table_puts_each_rows_cap_and_protocol_beside_the_authors():
    """The authors validate at 16,384 tokens with their prompt and grader; a row at 8,192 is not comparable."""
    ours = {"model": "m", "sampler": "hf", "device": "cpu", "samples": 4, "temperature": 0.6, "top_p": 0.95,
            "max_new_tokens": 8192, "protocol": "model-card", "benchmarks": {"aime24": {"avg": 0.25}}}
    rows = evaluate.eval_table_rows({"run": ours})
    paper = [r for r in rows if r["source"] == evaluate.PAPER_SOURCE]
    assert paper and all(r["cap"] == 16384 and r["protocol"] == "authors" for r in paper)
    assert rows[-1]["cap"] == 8192 and rows[-1]["protocol"] == "model-card" and rows[-1]["AIME24"] == 25.0
    assert evaluate.MAX_NEW_TOKENS == {"model-card": 8192, "authors": 16384}
    assert evaluate.EVAL_DEFAULTS["protocol"] == "model-card"


def test_eval_with_the_authors_protocol_records_it(tmp_path):
    result = evaluate.run_eval(None, "aime24", samples=2, out=str(tmp_path), smoke=True, limit=2, verbose=False,
                               protocol="authors", reward_workers=0)
    assert result["protocol"] == "authors"
    with pytest.raises(ValueError, match="protocol='x'"):
        evaluate.run_eval(None, "aime24", out=str(tmp_path), smoke=True, protocol="x")


def test_vllm_memory_check_names_free_memory_and_what_fits():
    from cegppo_edu.gpu.vllm_sampler import check_gpu_memory
    gib = 2**30
    check_gpu_memory(0.5, free_total=(41 * gib, 80 * gib))  # fits: nothing raised
    with pytest.raises(ValueError, match=r"0.85 asks vLLM for 68.0 GiB.*56.0 GiB are free.*trainer.close\(\).*0.70"):
        check_gpu_memory(0.85, free_total=(56 * gib, 80 * gib))


def test_a_colocated_vllm_sampler_checks_free_memory_before_it_starts(monkeypatch):
    from cegppo_edu.gpu import vllm_sampler
    monkeypatch.setattr(vllm_sampler, "check_vllm_version", lambda: "0.33.0")  # as on a GPU machine with vLLM
    monkeypatch.setattr(vllm_sampler, "require_cuda", lambda device: None)
    monkeypatch.setattr(vllm_sampler, "gpu_memory", lambda: (10 * 2**30, 80 * 2**30))
    monkeypatch.setattr(vllm_sampler, "VLLMSampler", lambda *a, **k: pytest.fail("started vLLM anyway"))
    with pytest.raises(ValueError, match="vllm_gpu_memory_utilization=0.5"):
        vllm_sampler.make_vllm_sampler(cfg.get_preset("r1-distill-1.5b-1gpu"))


def test_trainer_close_releases_the_model_and_optimizer(tmp_path):
    """Notebook 05 evaluates in the kernel that trained: the trainer's weights and AdamW state must go first."""
    import gc
    import weakref
    trainer = Trainer(cfg.get_preset("r1-distill-1.5b-1gpu", smoke=True), str(tmp_path), progress=False)
    model, optimizer = weakref.ref(trainer.model), weakref.ref(trainer.optimizer)
    trainer.close()
    gc.collect()
    assert model() is None and optimizer() is None
    assert trainer.reward_fn is None


def test_notebook_06_closes_the_trainer_before_it_evaluates():
    cells = ["".join(c["source"]) for c in json.loads(Path("notebooks/06_gpu_r1_distill_math.ipynb").read_text())[
        "cells"] if c["cell_type"] == "code"]
    closing = next(i for i, c in enumerate(cells) if "trainer.close()" in c)
    evaluating = next(i for i, c in enumerate(cells) if "evaluate.run_eval(" in c)
    assert closing < evaluating


def test_the_gpu_presets_ask_for_cuda_and_stop_at_once_without_it(tmp_path, monkeypatch):
    """A driver too old for torch's CUDA build makes torch.cuda.is_available() False: never a silent CPU run."""
    for name in GPU_PRESETS:
        assert cfg.get_preset(name).device == "cuda" and cfg.get_preset(name, smoke=True).device == "cpu"
    if torch.cuda.is_available():
        return
    monkeypatch.setattr("cegppo_edu.lm.setup.load_model_and_tokenizer",
                        lambda *a, **k: pytest.fail("loaded the model on a machine without CUDA"))
    with pytest.raises(ValueError, match=rf"device='cuda', but torch {re.escape(torch.__version__)}"):
        Trainer(cfg.get_preset("r1-distill-1.5b-1gpu"), str(tmp_path / "run"), progress=False)


def test_the_cuda_diagnosis_names_an_old_driver_and_the_fix():
    from cegppo_edu.lm.device import CudaStatus
    old = CudaStatus("2.14.0+cu132", "13.2", False, [], "550.54.15",
                     "The NVIDIA driver on your system is too old (found version 12040)")
    text = old.problem()
    assert "550.54.15" in text and "R580" in text and "CUDA 13.2" in text and "too old" in text
    assert "CPU-only build" in CudaStatus("2.13.0+cpu", None, False, [], None, "").problem()
    assert "no NVIDIA driver" in CudaStatus("2.14.0", "13.2", False, [], None, "").problem()
    assert CudaStatus("2.14.0", "13.2", True, ["H100"], "580.1", "").problem() == ""


def test_resume_decides_from_the_small_config_file_without_loading_the_state(tmp_path, monkeypatch):
    """At 1.5B the state file is 21 GB: the resume rules read run_config.json; only the trainer loads the state."""
    from cegppo_edu.lm import checkpoint as ckpt
    out = tmp_path / "run"
    assert cegppo(["train", "--preset", "r1-distill-1.5b-1gpu", "--smoke", "--out", str(out), "--no-progress",
                   "--steps", "2"]) == 0
    loads = []
    real = ckpt.load_state
    monkeypatch.setattr(ckpt, "load_state", lambda path: loads.append(path) or real(path))
    assert cegppo(["train", "--preset", "r1-distill-1.5b-1gpu", "--smoke", "--out", str(out), "--no-progress",
                   "--steps", "3", "--resume"]) == 0
    assert len(loads) == 1


# ------------------------------------------------------------------------------ cegppo preflight
def test_preflight_on_this_machine_fails_the_gpu_rows_and_says_why(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this check is of a machine without a GPU; on a GPU machine the rows pass")  # CI has none
    code = cegppo(["preflight", "--preset", "r1-distill-1.5b-1gpu", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines()[1:]}
    assert code == 1 and set(rows) == {"Python", "GPU and driver", "GPU memory", "vLLM", "disk",
                                       "Hub or local files", "grading pool"}
    assert "FAIL" in rows["GPU and driver"] and f"torch {torch.__version__}" in rows["GPU and driver"]
    assert " ok " in rows["grading pool"] and " ok " in rows["Python"]
    assert "failed: GPU and driver, GPU memory" in err


def test_preflight_arithmetic_for_the_1p5b_preset():
    from cegppo_edu.gpu import preflight
    config = cfg.get_preset("r1-distill-1.5b-1gpu")
    needed, how = preflight.gpu_memory_needed(config, 80 * 2**30)
    assert needed == int(0.5 * 80 * 2**30 + 12 * 1_777_088_000) and "vLLM's share" in how
    disk, how = preflight.disk_needed(config)
    assert disk == 2 * 12 * 1_777_088_000 + 2 * 1_777_088_000 and "2 checkpoints at once" in how


def test_preflight_takes_local_sources_and_names_missing_ones(tmp_path):
    from cegppo_edu.gpu import preflight
    model, data = tmp_path / "model", tmp_path / "train.jsonl"
    model.mkdir()
    data.write_text("{}\n")
    config = cfg.apply_overrides(cfg.get_preset("r1-distill-1.5b-1gpu"), {
        "model_path": str(model), "data_path": str(data), "eval_data_path": str(data)})
    unreachable = lambda repo: pytest.fail("asked the Hub although every source is local")  # noqa: E731
    assert preflight.check_sources(config, unreachable).verdict == preflight.OK
    import dataclasses
    missing = dataclasses.replace(config, data_path=str(tmp_path / "nope.jsonl"))  # (validation refuses it too)
    row = preflight.check_sources(missing, unreachable)
    assert row.verdict == preflight.FAIL and "nope.jsonl" in row.found
    assert cegppo(["preflight", "--set", f"data_path={tmp_path / 'nope.jsonl'}"]) == 2  # named before any check
    hub = preflight.check_sources(cfg.get_preset("r1-distill-1.5b-1gpu"), lambda repo: "no network")
    assert hub.verdict == preflight.FAIL and "no network" in hub.found and "--set model_path=" in hub.found

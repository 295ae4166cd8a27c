"""``cegppo eval``: avg@k (and pass@k) of a model on AIME24, AIME25 and MATH500, graded with math-verify.

For each benchmark every problem is sampled ``k`` times (``--samples``) with the R1-Distill prompt
(``prompts.encode_r1_prompt``) at the evaluation temperature / top-p, and each response is graded like a training
reward (``math_reward.MathReward``: the text after the last ``</think>``, gold first, bounded time). Then

    avg@k  = mean over problems of (correct responses / k)       (the paper's metric, the paper in brief §4 "validation")
    pass@k = fraction of problems with at least one correct response among the k

Outputs: ``OUT/eval.json`` (one entry per benchmark plus what produced the numbers: model, sampler, device,
sampling settings, versions, date) and ``OUT/<bench>.jsonl`` (one line per problem).

The sampler is vLLM when it can be imported and a GPU is present, else Hugging Face ``generate`` (the command
prints which). ``--smoke`` evaluates a tiny random Qwen2 (or ``--model``, loaded on the CPU) on the fixture
problems in ``cegppo_edu/gpu/data/math``: it checks the code path, its numbers say nothing about any real model.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import inspect
import json
import math
import os
import platform
import time
from typing import Sequence

import numpy as np

from . import math_data
from ..lm.config import TrainConfig
from ..lm.interfaces import check_sampling
from ..lm.run_dir import check_output_folder
from ..validation import Range, check_choice

EVAL_FILE = "eval.json"
SAMPLERS = ("auto", "hf", "vllm")
SMOKE_MAX_NEW_TOKENS = 16
# The response cap of each protocol (prompts.PROTOCOLS): the model card's is this project's training cap; the
# authors validate at 16,384 tokens (their scripts' val_response_length). Wrong R1-Distill answers run much longer
# than right ones, so a lower cap truncates (and fails) more of them: only the authors' cap gives numbers
# comparable with their table.
MAX_NEW_TOKENS = {"model-card": 8192, "authors": 16384}
AUTHORS_PROTOCOL = ("authors: the bare problem as the prompt, the whole response graded (math-verify's default "
                    "extraction), ≤ 16,384 new tokens")

# the paper in brief §5: the authors' README, DeepSeek-R1-Distill-Qwen-1.5B, in percent (AIME: avg@32). Not ours.
PAPER_SOURCE = ("reported by the authors (their README; DeepSeek-R1-Distill-Qwen-1.5B trained ≈1,000 steps on "
                "128 GPUs; AIME avg@32, T = 0.6, top_p = 0.95, ≤ 16,384 new tokens)")
PAPER_COLUMNS = ("aime24", "aime25", "hmmt25", "math500", "amc23", "avg")
PAPER_RESULTS = {
    "base model": (29.2, 24.1, 13.1, 86.0, 73.7, 45.2),
    "GRPO": (33.4, 28.1, 16.6, 88.3, 79.3, 49.1),
    "DAPO": (40.0, 28.4, 19.17, 90.0, 84.4, 52.4),
    "CE-GPPO (β1 = 0.5, β2 = 1)": (42.0, 33.9, 21.6, 91.0, 85.9, 54.9),
}


# ---------------------------------------------------------------------------------------------- metrics
def avg_at_k(correct: np.ndarray) -> float:
    """Mean correctness over the k samples of each problem, averaged over problems. ``correct``: (problems, k)."""
    correct = np.asarray(correct, dtype=float)
    return float(correct.mean()) if correct.size else float("nan")


def pass_at_k(correct: np.ndarray) -> float:
    """Fraction of problems with at least one correct sample among their k. ``correct``: (problems, k)."""
    correct = np.asarray(correct, dtype=bool)
    return float(correct.any(axis=1).mean()) if correct.size else float("nan")


# ---------------------------------------------------------------------------------------------- input
def check_settings(samples: int, temperature: float, top_p: float, max_new_tokens: int) -> None:
    """``ValueError`` naming the first bad sampling setting and its allowed range (the samplers' own check)."""
    check_sampling(samples, max_new_tokens, temperature, top_p, n_name="samples")


def benchmark_source(name: str, data_dir: str | None) -> str:
    """Where benchmark ``name`` is read from: the file(s) in ``data_dir`` named ``<name>*`` (json/jsonl/parquet),
    or the Hub dataset of ``math_data.HUB_SOURCES`` when ``data_dir`` is None."""
    if data_dir is None:
        return name
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir={data_dir!r} is not a folder")
    files = sorted(f for f in os.listdir(data_dir)
                   if f.startswith(name) and f.endswith(math_data.LOCAL_SUFFIXES))
    if not files:
        raise ValueError(f"data_dir={data_dir!r} holds no file for benchmark {name!r}: expected a name starting "
                         f"with {name!r} and ending in {', '.join(math_data.LOCAL_SUFFIXES)}")
    if len(files) > 1:
        raise ValueError(f"data_dir={data_dir!r} holds several files for benchmark {name!r}: {files}")
    return os.path.join(data_dir, files[0])


def resolve_model_path(path: str) -> str:
    """A run directory of ``cegppo train`` (it has ``checkpoints/``) stands for its newest complete checkpoint;
    anything else (a model folder, a Hub id) is used as given."""
    from ..lm.checkpoint import latest_checkpoint
    from ..lm.models import check_model_source

    if os.path.isdir(os.path.join(path, "checkpoints")):
        latest = latest_checkpoint(path)
        if latest is None:
            raise ValueError(f"model={path!r} is a run directory without a complete checkpoint")
        return latest
    check_model_source(path, "--model")
    return path


# ---------------------------------------------------------------------------------------------- sampler
def vllm_usable() -> bool:
    """vLLM can be imported and a CUDA GPU is present."""
    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def choose_sampler(sampler: str, smoke: bool) -> tuple[str, str]:
    """(``"vllm"`` or ``"hf"``, why). ``auto`` picks vLLM when usable; smoke mode is always HF on the CPU."""
    check_choice("sampler", sampler, SAMPLERS)
    if smoke:
        if sampler == "vllm":
            raise ValueError("sampler='vllm' cannot run with --smoke (smoke mode is CPU only)")
        return "hf", "smoke mode"
    if sampler != "auto":
        return sampler, "asked for"
    return ("vllm", "vLLM importable and a GPU present") if vllm_usable() else (
        "hf", "vLLM not importable or no GPU")


def build_hf(model_path: str | None, smoke: bool, seed: int, batch_sequences: int):
    """(HF sampler, tokenizer, device): the model in bf16 on a GPU, fp32 on the CPU; smoke without a model
    builds the tiny random Qwen2 of the smoke training preset."""
    import torch

    from ..lm.models import build_tiny_model_and_tokenizer, load_model_and_tokenizer
    from ..lm.rollout import HFSampler

    device = "cpu" if smoke or not torch.cuda.is_available() else "cuda"
    if model_path is None:
        from .presets import R1_DISTILL_SMOKE as s

        model, tokenizer = build_tiny_model_and_tokenizer(
            seed=seed, hidden_size=s["tiny_hidden_size"], num_layers=s["tiny_layers"], num_heads=s["tiny_heads"],
            num_kv_heads=s["tiny_kv_heads"], intermediate_size=s["tiny_intermediate_size"],
            max_positions=s["tiny_max_positions"])
    else:
        model, tokenizer = load_model_and_tokenizer(model_path, "bfloat16" if device == "cuda" else "float32", device)
    return HFSampler(model.to(device), tokenizer, max_batch_sequences=batch_sequences), tokenizer, device


# ---------------------------------------------------------------------------------------------- one benchmark
def _bench_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, 7, index]).generate_state(1)[0] & 0x7FFFFFFF)


def evaluate_benchmark(problems, prompt_ids, sampler, reward, *, samples: int, temperature: float, top_p: float,
                       max_new_tokens: int, seed: int, save_responses: bool = False) -> tuple[dict, list[dict]]:
    """Sample ``samples`` responses per problem, grade them; returns (summary, one row per problem)."""
    rollout = sampler.generate(prompt_ids, n=samples, max_new_tokens=max_new_tokens, temperature=temperature,
                               top_p=top_p, seed=seed)
    answers = [p.answer for p in problems for _ in range(samples)]  # prompt-major, like the rollout
    outcomes = reward.grade(rollout.texts, answers)
    correct = np.array([o == "correct" for o in outcomes]).reshape(len(problems), samples)  # (problems, k)
    lengths = np.array([len(r) for r in rollout.response_ids]).reshape(len(problems), samples)
    truncated = np.array(rollout.truncated).reshape(len(problems), samples)
    rows = []
    for i, problem in enumerate(problems):
        row = {"index": i, "problem": problem.question, "answer": problem.answer,
               "avg": float(correct[i].mean()), "correct": correct[i].tolist(),
               "outcomes": outcomes[i * samples:(i + 1) * samples], "lengths": lengths[i].tolist(),
               "truncated": truncated[i].tolist()}
        if save_responses:
            row["responses"] = rollout.texts[i * samples:(i + 1) * samples]
        rows.append(row)
    counts = {o: int(sum(1 for x in outcomes if x == o)) for o in sorted(set(outcomes))}
    summary = {"problems": len(problems), "k": samples, f"avg@{samples}": avg_at_k(correct),
               f"pass@{samples}": pass_at_k(correct), "avg": avg_at_k(correct), "pass": pass_at_k(correct),
               "mean_length": float(lengths.mean()), "truncated_frac": float(truncated.mean()), "outcomes": counts}
    return summary, rows


# ---------------------------------------------------------------------------------------------- the command
def run_eval(model: str | None, benches: str | Sequence[str] = "aime24,aime25,math500", *, samples: int = 32,
             temperature: float = 0.6, top_p: float = 0.95, max_new_tokens: int | None = None, out: str = "eval",
             smoke: bool = False, data_dir: str | None = None, seed: int = 0, sampler: str = "auto",
             batch_sequences: int = 64, gpu_memory_utilization: float = 0.85,
             reward_workers: int = TrainConfig.reward_workers, reward_timeout_s: float = TrainConfig.reward_timeout_s,
             limit: int | None = None, save_responses: bool = False, verbose: bool = True,
             protocol: str = "model-card") -> dict:
    """Evaluate ``model`` on ``benches`` and write ``out/eval.json`` and ``out/<bench>.jsonl``; returns the dict.

    The defaults are the authors' sampling settings (avg@32 at T = 0.6, top_p = 0.95); ``cegppo eval`` reads them
    from this signature (``EVAL_DEFAULTS``). ``protocol`` (``prompts.PROTOCOLS``) sets the prompt, the grading and
    the default response cap (``MAX_NEW_TOKENS``): ``"model-card"`` (this project's training setup, 8,192 tokens) or
    ``"authors"`` (the CE-GPPO authors': bare problem, whole response graded, 16,384 tokens), whose numbers are the
    ones to put next to theirs. Before a vLLM engine starts, the card must have the memory it will ask for
    (``vllm_sampler.check_gpu_memory``): in a process that still holds a trainer, call ``trainer.close()`` first."""
    from .. import __version__
    from .math_reward import MathReward
    from .prompts import PROTOCOLS, encode_r1_prompt

    check_choice("protocol", protocol, PROTOCOLS)
    names = math_data.parse_benchmarks(benches)
    max_new_tokens = max_new_tokens if max_new_tokens is not None else (
        SMOKE_MAX_NEW_TOKENS if smoke else MAX_NEW_TOKENS[protocol])
    check_settings(samples, temperature, top_p, max_new_tokens)
    Range(1, integer=True, none=True).check("limit", limit)
    # every setting named before a model is built or a benchmark downloaded
    Range(0, 64, integer=True, note="0 = grade in this process").check("reward_workers", reward_workers)
    Range(0.0, math.inf, low_open=True).check("reward_timeout_s", reward_timeout_s)
    Range(0.05, 0.95).check("gpu_memory_utilization", gpu_memory_utilization)
    check_output_folder(out)
    if model is None and not smoke:
        raise ValueError("model=None: give --model PATH (a model folder, a run directory or a Hub id)")
    if smoke and data_dir is None:
        from .presets import SMOKE_MATH_DATA

        data_dir = SMOKE_MATH_DATA
    model_path = resolve_model_path(model) if model is not None else None
    problems = {n: math_data.load_problems(benchmark_source(n, data_dir), limit=limit) for n in names}

    sampler_name, why = choose_sampler(sampler, smoke)
    t0 = time.perf_counter()
    if sampler_name == "vllm":  # vLLM loads the model itself; its context must hold the longest prompt
        from ..lm.models import load_tokenizer
        from .vllm_sampler import VLLMSampler, check_gpu_memory

        tokenizer, device = load_tokenizer(model_path), "cuda"
        longest = max(len(encode_r1_prompt(p.question, tokenizer, protocol=protocol))
                      for ps in problems.values() for p in ps)
        check_gpu_memory(gpu_memory_utilization, "--gpu-memory-utilization")
        engine = VLLMSampler(model_path, gpu_memory_utilization=gpu_memory_utilization,
                             max_model_len=longest + max_new_tokens, sleep_level=0, seed=seed)
    else:
        engine, tokenizer, device = build_hf(model_path, smoke, seed, batch_sequences)
    if verbose:
        print(f"cegppo eval: sampler {sampler_name} ({why}), device {device}, model "
              f"{model_path or 'tiny random Qwen2 (smoke)'}", flush=True)
    os.makedirs(out, exist_ok=True)
    result = {"model": model_path or "tiny random Qwen2 (smoke)", "smoke": smoke, "sampler": sampler_name,
              "device": device, "device_name": _device_name(device), "samples": samples,
              "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed,
              "protocol": protocol,
              "data": {n: benchmark_source(n, data_dir) for n in names}, "date": datetime.date.today().isoformat(),
              "versions": _versions(__version__), "benchmarks": {}}
    with MathReward(timeout_s=reward_timeout_s, workers=reward_workers, protocol=protocol) as reward:
        for index, name in enumerate(names):
            ids = [encode_r1_prompt(p.question, tokenizer, protocol=protocol) for p in problems[name]]
            t_bench = time.perf_counter()
            summary, rows = evaluate_benchmark(problems[name], ids, engine, reward, samples=samples,
                                               temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                               seed=_bench_seed(seed, index), save_responses=save_responses)
            summary["seconds"] = round(time.perf_counter() - t_bench, 3)
            result["benchmarks"][name] = summary
            with open(os.path.join(out, f"{name}.jsonl"), "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
            if verbose:
                print(f"  {name:8s} {summary['problems']:4d} problems  avg@{samples} {summary['avg']:.4f}  "
                      f"pass@{samples} {summary['pass']:.4f}  ({summary['seconds']:.1f} s)", flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    with open(os.path.join(out, EVAL_FILE), "w") as f:
        json.dump(result, f, indent=1)
    return result


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine()


def _versions(own: str) -> dict:
    import importlib.metadata as md

    versions = {"cegppo-edu": own, "python": platform.python_version()}
    for package in ("torch", "transformers", "vllm", "math-verify"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return versions


# ---------------------------------------------------------------------------------------------- reading back
def read_eval(path: str) -> dict:
    """An ``eval.json``: the file itself, or found in a folder, its ``eval/`` sub-folder (a run directory)."""
    for candidate in (path, os.path.join(path, EVAL_FILE), os.path.join(path, "eval", EVAL_FILE)):
        if os.path.isfile(candidate):
            with open(candidate) as f:
                return json.load(f)
    raise ValueError(f"no {EVAL_FILE} at {path!r} (nor in {path}/{EVAL_FILE} or {path}/eval/{EVAL_FILE})")


def find_eval(run_dir: str) -> str | None:
    """The path of a run directory's ``eval.json`` (``RUN/eval.json`` or ``RUN/eval/eval.json``), if any."""
    for candidate in (os.path.join(run_dir, EVAL_FILE), os.path.join(run_dir, "eval", EVAL_FILE)):
        if os.path.isfile(candidate):
            return candidate
    return None


def describe(result: dict) -> str:
    """What produced an ``eval.json``: model, sampler, card, k, sampling settings; smoke runs say so."""
    what = (f"ours: {result['model']} — {result['sampler']} on {result.get('device_name') or result['device']}, "
            f"avg@{result['samples']}, T = {result['temperature']}, top_p = {result['top_p']}, "
            f"≤ {result['max_new_tokens']:,} new tokens, {result.get('protocol', 'model-card')} protocol, "
            f"{result.get('date', '')}")
    if result.get("smoke"):
        what += " — SMOKE: tiny random model on made-up fixture problems, says nothing about any real model"
    return what


def eval_table_rows(results: dict[str, dict] | Sequence[dict] = (), columns: Sequence[str] = ("aime24", "aime25",
                    "math500"), include_paper: bool = True) -> list[dict]:
    """Rows for a table of the authors' reported numbers and ours (percent, avg@k), each row labelled with its
    source, its response cap and its protocol (only rows with the authors' cap and protocol are comparable with
    theirs). ``results``: eval.json dicts (a dict maps a run label to one)."""
    rows = []
    if include_paper:
        for method, values in PAPER_RESULTS.items():
            by_column = dict(zip(PAPER_COLUMNS, values))
            rows.append({"source": PAPER_SOURCE, "run": method, "cap": MAX_NEW_TOKENS["authors"],
                         "protocol": "authors", **{c.upper(): by_column.get(c, float("nan")) for c in columns}})
    items = results.items() if isinstance(results, dict) else ((r["model"], r) for r in results)
    for label, result in items:
        bench = result["benchmarks"]
        rows.append({"source": describe(result), "run": label, "cap": result["max_new_tokens"],
                     "protocol": result.get("protocol", "model-card"),
                     **{c.upper(): 100.0 * bench[c]["avg"] if c in bench else float("nan") for c in columns}})
    return rows


EVAL_DEFAULTS = {n: p.default for n, p in inspect.signature(run_eval).parameters.items()
                 if p.default is not inspect.Parameter.empty}
EVAL_DESCRIPTION = """\
Sample --samples responses per problem and report avg@k (mean correctness) and pass@k per
benchmark in OUT/eval.json, one line per problem in OUT/<bench>.jsonl. vLLM when it is
importable and a GPU is present, else Hugging Face generate.

example:
  cegppo eval --model runs/r1 --bench aime24,aime25 --samples 32 --protocol authors --out runs/r1/eval
  cegppo eval --smoke --bench aime24,math500 --samples 4 --out /tmp/eval"""


def add_cli(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("eval", help="avg@k of a model on AIME24 / AIME25 / MATH500 (math-verify grading)",
                                   description=EVAL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder, run directory (its newest checkpoint) or Hub id")
    d = EVAL_DEFAULTS
    parser.add_argument("--bench", default=d["benches"], help=f"comma-separated, from {', '.join(math_data.BENCHMARKS)}")
    parser.add_argument("--samples", type=int, default=d["samples"], help=f"k: responses per problem (default {d['samples']})")
    parser.add_argument("--temperature", type=float, default=d["temperature"],
                        help=f"default {d['temperature']} (the authors')")
    parser.add_argument("--top-p", type=float, default=d["top_p"], help=f"default {d['top_p']} (the authors')")
    parser.add_argument("--protocol", choices=("model-card", "authors"), default=d["protocol"],
                        help="model-card (default): problem + 'Please reason step by step...', grade after "
                             "</think>, 8,192 tokens; authors: the CE-GPPO authors' bare-problem prompt and "
                             "whole-response grading at 16,384 tokens (use it to compare with their table)")
    parser.add_argument("--max-new-tokens", type=int,
                        help="response cap (default: the protocol's, 8192 or 16384; smoke 16)")
    parser.add_argument("--out", required=True, help="output folder (eval.json, <bench>.jsonl)")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU, tiny random model (or --model), fixture problems: checks the code path only")
    parser.add_argument("--data-dir", help="local benchmark files named <bench>*.json/.jsonl/.parquet "
                                           "(default: the Hub; smoke: cegppo_edu/gpu/data/math)")
    parser.add_argument("--limit", type=int, help="first N problems of each benchmark only")
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument("--sampler", choices=SAMPLERS, default=d["sampler"])
    parser.add_argument("--batch-sequences", type=int, default=d["batch_sequences"],
                        help="HF sampler: sequences per generate call")
    parser.add_argument("--gpu-memory-utilization", type=float, default=d["gpu_memory_utilization"],
                        help="vLLM's share of the card")
    parser.add_argument("--reward-workers", type=int, default=d["reward_workers"], help="math-verify grading processes")
    parser.add_argument("--save-responses", action="store_true", help="keep response texts in <bench>.jsonl")
    parser.set_defaults(func=run_cli)
    return parser


def run_cli(args) -> int:
    run_eval(args.model, args.bench, samples=args.samples, temperature=args.temperature, top_p=args.top_p,
             max_new_tokens=args.max_new_tokens, out=args.out, smoke=args.smoke, data_dir=args.data_dir,
             seed=args.seed, sampler=args.sampler, batch_sequences=args.batch_sequences,
             gpu_memory_utilization=args.gpu_memory_utilization, reward_workers=args.reward_workers,
             limit=args.limit, save_responses=args.save_responses, protocol=args.protocol)
    print(f"wrote {os.path.join(args.out, EVAL_FILE)}")
    return 0

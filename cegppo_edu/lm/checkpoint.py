"""Atomic checkpoints: a directory counts only once it is complete.

Layout: ``OUT/checkpoints/step_000050/`` holding the model and tokenizer (``save_pretrained``),
``trainer_state.pt`` (optimizer, scheduler, every RNG state, step, config, metrics-file offset) and a
``COMPLETE`` marker holding the step and the run id (``run_dir.RUN_FILE``). Writing goes to
``OUT/checkpoints/.tmp-step_000050-<pid>/``; every file is fsync-ed, the marker is written last, then one
``os.replace`` renames the directory and the parent directory is fsync-ed. A crash at any moment leaves either the
previous complete checkpoint or the new one, never half of one; a failed write (a full disk) removes its
temporary directory at once and says so; leftover ``.tmp-*`` directories of a killed process are removed on the
next resume. Rotation (``keep``) orders checkpoints by step and only ever deletes the run's own.

For tests, ``CEGPPO_CHECKPOINT_SLEEP=step:seconds`` sleeps inside the write of that step's checkpoint (after
the files, before the marker and rename) and announces it on stderr, so a test can SIGKILL the process there.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import sys
import time

import numpy as np
import torch

from .run_dir import CHECKPOINT_DIR, NoSpaceError

COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.pt"
PREFIX = "step_"


def checkpoint_root(out_dir: str) -> str:
    return os.path.join(out_dir, CHECKPOINT_DIR)


def _fsync_tree(path: str) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_states() -> dict:
    """Every global RNG the trainer may touch: python, numpy, torch CPU and CUDA."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _test_sleep(step: int) -> None:
    spec = os.environ.get("CEGPPO_CHECKPOINT_SLEEP", "")
    if spec:
        at, _, seconds = spec.partition(":")
        if int(at) == step:
            print(f"checkpoint-write-in-progress step={step}", file=sys.stderr, flush=True)
            time.sleep(float(seconds))


def save_checkpoint(out_dir: str, step: int, model, tokenizer, state: dict, keep: int = 2, run_id: str = "",
                    needed_bytes: int = 0) -> str:
    """Write ``step``'s checkpoint atomically; keep the run's newest ``keep`` complete ones. Returns its path.

    A write that fails (a full disk: ``os error 28``, ``iostream error``) leaves no temporary directory behind and
    raises ``NoSpaceError`` naming the folder and about how many MB a checkpoint needs (``needed_bytes``).
    """
    from .models import save_model_and_tokenizer

    root = checkpoint_root(out_dir)
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"{PREFIX}{step:06d}")
    tmp = os.path.join(root, f".tmp-{PREFIX}{step:06d}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_model_and_tokenizer(model, tokenizer, tmp)
        torch.save({**state, "step": step, "run_id": run_id, "rng": rng_states()}, os.path.join(tmp, STATE_FILE))
        _fsync_tree(tmp)
        _test_sleep(step)
        with open(os.path.join(tmp, COMPLETE), "w") as f:
            f.write(f"{step} {run_id}".strip())
            f.flush()
            os.fsync(f.fileno())
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and _disk_full(err, root, needed_bytes):
            raise NoSpaceError(root, needed_bytes, shutil.disk_usage(root).free,
                               kept=latest_checkpoint(out_dir, run_id)) from err
        raise
    if os.path.exists(final):  # a re-run over an old directory: move it aside first (replace needs an empty target)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in complete_checkpoints(out_dir, run_id)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _disk_full(err: Exception, root: str, needed_bytes: int) -> bool:
    """A write error caused by a full disk: ENOSPC anywhere in the chain, the texts safetensors and torch give
    it, or (torch's ``iostream error`` names no cause) less free space than a checkpoint needs."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if "os error 28" in str(err) or "No space left" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return shutil.disk_usage(root).free < needed_bytes


def checkpoint_step(path: str) -> int:
    return int(os.path.basename(path)[len(PREFIX):])


def checkpoint_run_id(path: str) -> str:
    """The run id written in a checkpoint's marker ("" for a checkpoint older than run ids)."""
    with open(os.path.join(path, COMPLETE)) as f:
        parts = f.read().split()
    return parts[1] if len(parts) > 1 else ""


def complete_checkpoints(out_dir: str, run_id: str | None = None) -> list[str]:
    """Complete checkpoint directories, oldest step first; only those of ``run_id`` when it is given."""
    root = checkpoint_root(out_dir)
    if not os.path.isdir(root):
        return []
    found = [os.path.join(root, d) for d in os.listdir(root)
             if d.startswith(PREFIX) and d[len(PREFIX):].isdigit() and os.path.exists(os.path.join(root, d, COMPLETE))]
    if run_id is not None:
        found = [p for p in found if checkpoint_run_id(p) == run_id]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(out_dir: str, run_id: str | None = None) -> str | None:
    found = complete_checkpoints(out_dir, run_id)
    return found[-1] if found else None


def remove_incomplete(out_dir: str) -> None:
    root = checkpoint_root(out_dir)
    if os.path.isdir(root):
        for d in os.listdir(root):
            if d.startswith(".tmp-"):
                shutil.rmtree(os.path.join(root, d), ignore_errors=True)


def load_state(path: str) -> dict:
    return torch.load(os.path.join(path, STATE_FILE), weights_only=False)

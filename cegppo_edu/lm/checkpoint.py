"""Atomic checkpoints: a directory counts only once it is complete.

Layout: ``OUT/checkpoints/step_000050/`` holding the model and tokenizer (``save_pretrained``),
``trainer_state.pt`` (optimizer, scheduler, every RNG state, step, config, metrics-file offset) and a
``COMPLETE`` marker holding the step and the run id (``run_dir.RUN_FILE``). Writing goes to
``OUT/checkpoints/.tmp-step_000050-<pid>/``; every file is fsync-ed, the marker is written last, then one
``os.replace`` renames the directory and the parent directory is fsync-ed. A crash at any moment leaves either the
previous complete checkpoint or the new one, never half of one; a failed write (a full disk) removes its
temporary directory at once and says so; leftover ``.tmp-*`` directories of a killed process are removed on the
next resume. Rotation (``keep``) orders checkpoints by step and only ever deletes the run's own; it deletes the
oldest *before* writing the new one (``checkpoints_at_peak``: ``keep`` on disk at once, never ``keep + 1``), but
never the last complete one.

For tests, ``CEGPPO_CHECKPOINT_SLEEP=step:seconds`` sleeps inside the write of that step's checkpoint (after
the files, before the marker and rename) and announces it on stderr, so a test can SIGKILL the process there.
"""

from __future__ import annotations

import errno
import json
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
RUN_CONFIG_FILE = "run_config.json"  # the run's TrainConfig, readable without loading the state (21 GB at 1.5B)
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
    """Write ``step``'s checkpoint atomically; keep the run's newest ``keep`` complete ones (the oldest go first,
    see ``kept_while_writing``). Returns its path.

    A write that fails (a full disk: ``os error 28``, ``iostream error``) leaves no temporary directory behind and
    raises ``NoSpaceError`` naming the folder and about how many MB a checkpoint needs (``needed_bytes``).
    """
    from .models import save_model_and_tokenizer

    root = checkpoint_root(out_dir)
    os.makedirs(root, exist_ok=True)
    _delete_oldest(out_dir, run_id, kept_while_writing(keep))  # room first: at most keep on disk at once
    final = os.path.join(root, f"{PREFIX}{step:06d}")
    tmp = os.path.join(root, f".tmp-{PREFIX}{step:06d}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_model_and_tokenizer(model, tokenizer, tmp)
        torch.save({**state, "step": step, "run_id": run_id, "rng": rng_states()}, os.path.join(tmp, STATE_FILE))
        if "config" in state:
            with open(os.path.join(tmp, RUN_CONFIG_FILE), "w") as f:
                json.dump(state["config"], f, indent=1)
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
    _delete_oldest(out_dir, run_id, keep)
    return final


def kept_while_writing(keep: int) -> int:
    """Complete checkpoints left on disk while a new one is written: the newest ``keep`` − 1, and never fewer than
    one, so that a write that fails (a full disk, a pre-emption) always leaves a checkpoint to resume from."""
    return max(keep - 1, 1)


def checkpoints_at_peak(keep: int) -> int:
    """The most checkpoints of a run on disk at once: those kept while writing, plus the one being written. With
    ``keep=2`` that is 2, not 3: the oldest goes before the new one is written (a 1.5B checkpoint is 21 GB)."""
    return kept_while_writing(keep) + 1


def room_needed(out_dir: str, run_id: str | None, keep: int, checkpoint_bytes: int) -> tuple[int, int]:
    """``(bytes, checkpoints)``: the free disk a run still needs for its checkpoints at their peak, given the
    complete checkpoints of ``run_id`` that ``out_dir`` already holds (a resume; they count toward the peak)."""
    present = len(complete_checkpoints(out_dir, run_id)) if run_id is not None else 0
    missing = max(checkpoints_at_peak(keep) - present, 0)
    return missing * checkpoint_bytes, missing


def _delete_oldest(out_dir: str, run_id: str, keep: int) -> None:
    """Delete the run's complete checkpoints beyond its newest ``keep`` (only ever the run's own)."""
    for old in complete_checkpoints(out_dir, run_id)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


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


def load_config_dict(path: str) -> dict:
    """The run's config as saved in checkpoint ``path``: its small ``run_config.json``, so that deciding whether
    a resume may go ahead never reads the optimizer state (checkpoints older than that file: from the state)."""
    small = os.path.join(path, RUN_CONFIG_FILE)
    if os.path.exists(small):
        with open(small) as f:
            return json.load(f)
    return load_state(path)["config"]

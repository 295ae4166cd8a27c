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
import hashlib
import json
import os
import pickle
import random
import shutil
import sys
import time

import numpy as np
import torch

from .run_dir import CHECKPOINT_DIR, NoSpaceError

COMPLETE = "COMPLETE"
MANIFEST = "MANIFEST.json"  # every file's size and SHA-256, written before COMPLETE and checked on resume
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
        _write_manifest(tmp)
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


# ------------------------------------------------------------------------------ verified, safe loading
class CheckpointError(ValueError):
    """A checkpoint that cannot be used: damaged, incomplete, or holding more than tensors and plain data."""


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _checkpoint_files(folder: str) -> list[str]:
    """The files a checkpoint's manifest covers: all of them but the manifest and the marker (relative paths)."""
    found = []
    for root, _, files in os.walk(folder):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel not in (MANIFEST, COMPLETE):
                found.append(rel)
    return sorted(found)


def _write_manifest(folder: str) -> None:
    """``MANIFEST.json``: size and SHA-256 of every file (reading a 21 GB checkpoint back costs ~15 s at 1.5B)."""
    entries = {rel: {"bytes": os.path.getsize(os.path.join(folder, rel)),
                     "sha256": _file_digest(os.path.join(folder, rel))} for rel in _checkpoint_files(folder)}
    with open(os.path.join(folder, MANIFEST), "w") as f:
        json.dump(entries, f, indent=1)


REQUIRED_FILES = (STATE_FILE, "config.json")  # a checkpoint without these cannot resume, manifest or not


def verify_checkpoint(path: str) -> str:
    """"" when checkpoint ``path`` is whole (its manifest's every file present with its size and SHA-256, no file
    more), else what is wrong. A checkpoint from before manifests is checked for its required files only."""
    missing = [name for name in REQUIRED_FILES if not os.path.isfile(os.path.join(path, name))]
    if missing:
        return f"{', '.join(missing)} missing"
    manifest = os.path.join(path, MANIFEST)
    if not os.path.exists(manifest):
        return ""
    try:
        with open(manifest) as f:
            entries = json.load(f)
    except (OSError, ValueError) as err:
        return f"{MANIFEST} unreadable ({err})"
    for rel, entry in entries.items():
        file = os.path.join(path, rel)
        if not os.path.isfile(file):
            return f"{rel} missing"
        if os.path.getsize(file) != entry["bytes"]:
            return f"{rel} has {os.path.getsize(file):,} bytes, {entry['bytes']:,} were written (cut off?)"
        if _file_digest(file) != entry["sha256"]:
            return f"{rel} differs from what was written (its SHA-256 does not match: damaged bytes)"
    extra = sorted(set(_checkpoint_files(path)) - set(entries))
    return f"files not written with it: {', '.join(extra)}" if extra else ""


def latest_good_checkpoint(out_dir: str, run_id: str | None = None, say=None) -> str | None:
    """The newest complete checkpoint of ``run_id`` that verifies (``verify_checkpoint``); each damaged newer one
    is skipped and named through ``say`` (default: stderr). None when there is none."""
    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    for path in reversed(complete_checkpoints(out_dir, run_id)):
        problem = _verified(path)
        if not problem:
            return path
        say(f"checkpoint {path} is damaged ({problem}): skipped, trying the one before it")
    return None


_VERIFIED: dict[tuple[str, float], str] = {}  # (path, marker mtime) -> problem: verify a 21 GB checkpoint once


def _verified(path: str) -> str:
    key = (os.path.realpath(path), os.path.getmtime(os.path.join(path, COMPLETE)))
    if key not in _VERIFIED:
        _VERIFIED[key] = verify_checkpoint(path)
    return _VERIFIED[key]


def _numpy_rng_types() -> list:
    """What numpy's RNG state (a uint32 array in a tuple) pickles through: the only non-torch objects a genuine
    trainer state holds."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_state(path: str) -> dict:
    """The trainer state of checkpoint ``path``, loaded with ``weights_only=True``: tensors, plain containers and
    numbers, and numpy's RNG arrays only. A pickle that would construct anything else (and could run code) is
    refused with ``CheckpointError``; a checkpoint is a file a user may have downloaded."""
    file = os.path.join(path, STATE_FILE)
    try:
        with torch.serialization.safe_globals(_numpy_rng_types()):
            return torch.load(file, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else ""
        raise CheckpointError(f"refused to load {file}: it holds objects other than tensors and plain data, which "
                              f"loading would have to run as code ({first[:200]}). Was it made by cegppo train?") from None


def load_config_dict(path: str) -> dict:
    """The run's config as saved in checkpoint ``path``: its small ``run_config.json``, so that deciding whether
    a resume may go ahead never reads the optimizer state (checkpoints older than that file: from the state)."""
    small = os.path.join(path, RUN_CONFIG_FILE)
    if os.path.exists(small):
        with open(small) as f:
            return json.load(f)
    return load_state(path)["config"]

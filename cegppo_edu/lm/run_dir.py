"""One run per folder: what a run folder holds, the checks made before any work, and the rules that keep a run
from being overwritten, mixed with another, or silently changed.

A run folder (``cegppo train --out OUT``) holds ``run.json`` (the run's identity: a random id and how it was
started), ``config.json`` (its full config), ``metrics.jsonl`` (one line per step), ``warm_start.jsonl`` and
``checkpoints/`` (see ``checkpoint``). Every checkpoint carries the run id, so rotation and resume only ever
touch the run's own checkpoints.

- ``check_output_folder``: before any work, the folder must be a folder (or creatable) and writable.
- ``prepare_fresh``: a fresh run into a folder that holds a run is refused (``--resume`` continues it, a new
  ``--out`` starts elsewhere, ``overwrite=True`` / ``--overwrite`` deletes it first).
- ``check_free_space``: enough free disk for the run's checkpoints at their peak (``checkpoint.room_needed``),
  said in MB, before the first minute of work.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shutil
import tempfile
import uuid
import warnings
from typing import Sequence

RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
WARM_START_FILE = "warm_start.jsonl"
CHECKPOINT_DIR = "checkpoints"
RUN_FILES = (RUN_FILE, CONFIG_FILE, METRICS_FILE, WARM_START_FILE)
LOCK_FILE = ".lock"  # held (flock) by the one process writing the run
TIMING_PREFIX = "time/"  # metric keys of wall-clock times: the only ones that differ between identical runs


class NoSpaceError(OSError):
    """The disk under a run folder is too full for what the run must write (errno ENOSPC)."""

    def __init__(self, path: str, needed_bytes: int, free_bytes: int | None = None, kept: str | None = None,
                 checkpoints: int = 1, what: str = "a checkpoint"):
        text = (f"no space left on {path}: {what} needs about {_mb(needed_bytes // checkpoints)} MB"
                if what == "a checkpoint" else f"no space left on {path} to write {what} ({needed_bytes:,} bytes)")
        if checkpoints > 1:
            text += (f", and this run will hold {checkpoints} more at once (the ones keep_checkpoints keeps while a "
                     f"new one is written): {_mb(needed_bytes)} MB in all")
        if free_bytes is not None:
            text += f", {_mb(free_bytes)} MB are free"
        if kept:
            text += f"; the last complete checkpoint {kept} is kept"
        super().__init__(errno.ENOSPC, text)

    def __str__(self) -> str:
        return self.strerror


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f}" if n < 10 * 2**20 else f"{n / 2**20:,.0f}"


def check_output_folder(out_dir: str) -> None:
    """Raise ``ValueError`` naming ``out_dir`` and the reason unless it is (or can become) a writable folder whose
    run files are not symbolic links (a linked ``metrics.jsonl`` would truncate and append to its target)."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir!r} is a file, not a folder: give a folder for the run")
    linked = [name for name in (*RUN_FILES, CHECKPOINT_DIR, LOCK_FILE) if os.path.islink(os.path.join(out_dir, name))]
    if linked:
        raise ValueError(f"--out {out_dir!r} holds symbolic links where a run writes its own files ({', '.join(linked)}):"
                         f" a run never writes through a link; remove them or give another --out")
    try:
        os.makedirs(out_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {out_dir!r}: {err.strerror or err}") from None


def holds_run(out_dir: str) -> bool:
    """True when ``out_dir`` holds logged steps, checkpoints or a run identity."""
    metrics = os.path.join(out_dir, METRICS_FILE)
    checkpoints = os.path.join(out_dir, CHECKPOINT_DIR)
    return (os.path.exists(os.path.join(out_dir, RUN_FILE))
            or (os.path.exists(metrics) and os.path.getsize(metrics) > 0)
            or (os.path.isdir(checkpoints) and bool(os.listdir(checkpoints))))


def open_no_follow(path: str, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (O_NOFOLLOW), naming it."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link: a run never writes through one") from None
        raise


# ------------------------------------------------------------------------------ one live writer per folder
_HELD: dict[str, int] = {}  # real path of a run folder -> the lock's descriptor, in this process


def lock_run_folder(out_dir: str) -> str:
    """Make this process the one writer of ``out_dir`` (an exclusive ``flock`` on ``OUT/.lock`` holding its pid);
    raise ``ValueError`` naming the other process when one holds it. The kernel releases the lock when its
    process ends, however it ends, so a crashed run never leaves it stuck. A second trainer in the same process
    (a notebook cell run again) takes the lock over. Returns the folder's key for ``unlock_run_folder``."""
    import fcntl

    check_output_folder(out_dir)
    key = os.path.realpath(out_dir)
    if key in _HELD:
        return key
    path = os.path.join(out_dir, LOCK_FILE)
    fd = open_no_follow(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ValueError(f"{out_dir!r} is being written by another cegppo run (pid {holder}): one run per folder at "
                         f"a time. Wait for it to finish or stop it (Ctrl-C saves a checkpoint), or give another "
                         f"--out") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _HELD[key] = fd
    return key


def unlock_run_folder(key: str | None) -> None:
    fd = _HELD.pop(key, None) if key else None
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


def clear_run(out_dir: str) -> None:
    """Delete the run files and checkpoints of ``out_dir`` (what ``--overwrite`` asks for); nothing else."""
    for name in RUN_FILES:
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            os.remove(path)
    shutil.rmtree(os.path.join(out_dir, CHECKPOINT_DIR), ignore_errors=True)


def prepare_fresh(out_dir: str, overwrite: bool = False) -> None:
    """Before a fresh run: refuse a folder that holds a run, unless ``overwrite`` (then delete that run)."""
    if not holds_run(out_dir):
        return
    if not overwrite:
        raise ValueError(f"{out_dir!r} already holds a run ({describe_run(out_dir)}). To continue it, add "
                         f"--resume; to start a new run, give a new --out; to delete it and start again, add "
                         f"--overwrite")
    clear_run(out_dir)


def describe_run(out_dir: str) -> str:
    metrics = os.path.join(out_dir, METRICS_FILE)
    steps = 0
    if os.path.exists(metrics):
        with open(metrics, "rb") as f:
            steps = sum(1 for line in f if line.strip())
    checkpoints = os.path.join(out_dir, CHECKPOINT_DIR)
    n_ckpt = len([d for d in os.listdir(checkpoints) if not d.startswith(".")]) if os.path.isdir(checkpoints) else 0
    return f"{steps} logged lines in {METRICS_FILE}, {n_ckpt} checkpoints"


def adopt_run_identity(out_dir: str, run_ids: list[str]) -> str | None:
    """A folder whose ``run.json`` was lost: when its complete checkpoints all carry one run id, write ``run.json``
    again with that id (so ``--resume`` continues them) and return it; None when there is no single id."""
    if len(set(run_ids)) != 1 or not run_ids[0]:
        return None
    write_json_atomic(os.path.join(out_dir, RUN_FILE), {
        "run_id": run_ids[0], "restored": "run.json was missing; its run id was read from the run's checkpoints",
        "restored_at": datetime.datetime.now().isoformat(timespec="seconds")})
    return run_ids[0]


def holds_logged_work(out_dir: str) -> bool:
    """True when ``out_dir`` holds logged RL steps or checkpoints (what a resume must never lose); a folder with
    only a run identity and a warm start's log (a run stopped during its warm start) holds none."""
    metrics = os.path.join(out_dir, METRICS_FILE)
    checkpoints = os.path.join(out_dir, CHECKPOINT_DIR)
    return ((os.path.exists(metrics) and os.path.getsize(metrics) > 0)
            or (os.path.isdir(checkpoints) and any(not d.startswith(".") for d in os.listdir(checkpoints))))


def new_run_identity(out_dir: str, **how) -> str:
    """Write ``run.json`` with a new random run id (and how the run was started); return the id."""
    run_id = uuid.uuid4().hex[:16]
    write_json_atomic(os.path.join(out_dir, RUN_FILE),
                      {"run_id": run_id, "started": datetime.datetime.now().isoformat(timespec="seconds"), **how})
    return run_id


def read_run_identity(out_dir: str) -> dict:
    """``run.json`` of ``out_dir``, or ``{}`` for a folder written before run identities existed."""
    path = os.path.join(out_dir, RUN_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def write_json_atomic(path: str, value) -> None:
    """Write JSON to ``path`` atomically (``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(value, indent=1))


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: a reader sees the old or the new file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def checkpoint_bytes(model) -> int:
    """About what one checkpoint takes on disk: the weights, AdamW's two moments (fp32) and ~1 MB of tokenizer
    and trainer state."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    moments = 2 * sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    return weights + moments + 2**20


def check_free_space(out_dir: str, needed_bytes: int, checkpoints: int = 1) -> None:
    """Raise ``NoSpaceError`` unless the disk under ``out_dir`` has ``needed_bytes`` free (room for ``checkpoints``
    checkpoints: ``checkpoint.room_needed`` counts them for a run's peak)."""
    free = shutil.disk_usage(out_dir).free
    if free < needed_bytes:
        raise NoSpaceError(out_dir, needed_bytes, free, checkpoints=checkpoints)


# ------------------------------------------------------------------------------ reading what a run wrote
def read_metrics(path: str) -> list[dict]:
    """The JSONL metrics of a run directory (or file), one dict per line.

    A cut-off last line (a run killed while writing it) is skipped with a warning; any other line that is not a
    JSON object raises ``ValueError`` naming the file and the line number.
    """
    path = os.path.join(path, METRICS_FILE) if os.path.isdir(path) else path
    with open(path, "rb") as f:
        pieces = f.read().split(b"\n")
    records = []
    for number, piece in enumerate(pieces, 1):
        if not piece.strip():
            continue
        try:
            record = json.loads(piece)
            if not isinstance(record, dict):
                raise ValueError(f"a {type(record).__name__}, not an object")
            if not isinstance(record.get("step"), int) or isinstance(record.get("step"), bool):
                raise ValueError(f"its step is {record.get('step')!r}, not a whole number")
        except ValueError as err:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            if number == len(pieces):  # no newline after it: the write of this line never finished
                warnings.warn(f"{path}:{number}: the last line is cut off (the run stopped while writing it); "
                              f"skipped", stacklevel=2)
                continue
            raise ValueError(f"{path}:{number}: not a JSON line ({getattr(err, 'msg', err)}): "
                             f"{piece[:60].decode(errors='replace')!r}") from None
        records.append(record)
    return records


def strip_timings(metrics: Sequence[dict]) -> list[dict]:
    """Metrics without the wall-clock fields: what must be identical between a resumed and a straight run."""
    return [{k: v for k, v in m.items() if not k.startswith(TIMING_PREFIX)} for m in metrics]


# --------------------------------------------------------------------------------------------------
# Committed data: what the regeneration scripts of notebooks/data/ keep of a run
# --------------------------------------------------------------------------------------------------
def keep_run(scratch: str, dest: str, keep_key) -> None:
    """Copy the run in ``scratch`` to ``dest`` as committed data: its ``metrics.jsonl`` with only the keys
    ``keep_key`` accepts, and its ``config.json``. The folder appears whole or not at all (written beside it, then
    renamed into place)."""
    partial = dest + ".partial"
    os.makedirs(partial, exist_ok=True)
    with open(os.path.join(partial, METRICS_FILE), "w") as f:
        f.writelines(json.dumps({k: v for k, v in m.items() if keep_key(k)}) + "\n" for m in read_metrics(scratch))
    shutil.copy(os.path.join(scratch, CONFIG_FILE), partial)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)


def write_summary(folder: str, lines: list[str], regenerated: str = "") -> str:
    """Write ``folder/summary.txt`` (atomically): ``lines``, then the "regenerated ..." lines of the summary it replaces (the
    times of earlier regenerations stay on record), then ``regenerated`` if given. Returns the text."""
    path = os.path.join(folder, "summary.txt")
    if os.path.exists(path):
        with open(path) as f:
            lines = lines + [line for line in f.read().splitlines() if line.startswith("regenerated ")]
    text = "\n".join(lines + ([regenerated] if regenerated else [])) + "\n"
    write_text_atomic(path, text)
    return text


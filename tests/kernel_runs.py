"""Everything that must agree across CPUs, run once per other float-kernel set this CPU has: the committed runs'
prefixes (``test_reproducibility.py``) and the chapters' ``# NBVAL_CHECK_OUTPUT`` cells (``test_notebooks.py``).

The work, per kernel set: one job of prefixes, and nbval over every chapter (``notebooks/*.ipynb``, by glob: a new
chapter is in without a change here; the result is read per chapter), each a subprocess on one torch thread, two
at a time (a 2-core machine runs both at full speed). The native kernel set is not among
them: the in-process tests and nbval's check of the book build's execution already run it.

Where and when: a folder holds one session's results. ``make test`` empties it and starts the tasks at its very
start, in the background (``python tests/kernel_runs.py start DIR``), so that they run beside the book build and
the other tests instead of before them; the ``kernel_set_runs`` fixture (``conftest.py``) then waits for them
(``KERNEL_SETS_DIR=DIR``). Without that variable pytest starts them when its collection ends, only those the
selected tests read, in the session's temporary folder (once under pytest-xdist too: the first worker claims the
folder, the others wait). Results are read only when the
sources are still those the tasks started from (``fingerprint``); otherwise the tests fail and say so. Nothing is
kept from one session to the next.

A cell tagged ``nbval-skip`` (nbval's own tag) is not run by nbval, under any kernel set, but the book build runs
it: tag only cells that no checked cell needs (a slow live demonstration, a model load, a figure). A tag on a cell
that a checked cell needs makes nbval fail (the missing name, or a changed output), under every kernel set and in
``pytest --nbval-lax notebooks/X.ipynb``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from cegppo_edu.experiments import ROOT
from cegppo_edu.experiments import reproducibility as repro
from cegppo_edu.experiments import study

RUNS = os.path.join(ROOT, "notebooks", "data", "ch04", "runs")
# chapter 4's runs, the run that validates the parameter-space entropy predictor (regenerate ch04-predictor), and
# three of the many-seed study's 55 (regenerate ch04-seeds): other seeds, methods and β than the runs above
COMMITTED = [f"runs/{run}" for run in sorted(os.listdir(RUNS))] + ["predictor/chapter"] + [
    f"seeds/{study.run_folder(name, seed)}" for name, seed in (("grpo", 1), (study.CE_GPPO, 2),
                                                               (study.ce_gppo_name(1.0, 0.5), 3))] + [
    # chapter 7's controllers (regenerate ch07): each one's state carries from step to step
    f"../ch07/runs/{name}/seed{seed}" for name, seed in (("ce_gppo-predictive-constant", 0),
                                                         ("ce_gppo-pi-decaying", 1),
                                                         ("grpo-entropy_bonus-constant", 2))]

PREFIXES = """
import json, sys, tempfile, torch
from cegppo_edu.experiments import reproducibility as repro
from cegppo_edu.lm.run_dir import read_metrics
root, runs = sys.argv[1], sys.argv[2:]
out = {"capability": torch.backends.cpu.get_cpu_capability(), "runs": {}}
for run in runs:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = repro.rerun_prefix(f"{root}/notebooks/data/ch04/{run}", root, tmp, steps=repro.PREFIX_STEPS)
    committed = read_metrics(f"{root}/notebooks/data/ch04/{run}/metrics.jsonl")
    tolerant = repro.compare_with_committed(fresh, committed)
    exact = repro.compare_with_committed(fresh, committed, rtol=0.0, atol=0.0)
    out["runs"][run] = {"ok": tolerant.ok, "text": str(tolerant), "bitwise": exact.ok}
warm = {which: repro.check_committed_warm_start(root, which=which) for which in repro.WARM_STARTS}
out["warm_start"] = {which: str(a) for which, a in warm.items()}
out["warm_start_ok"] = all(a.ok for a in warm.values())
print(json.dumps(out))
"""
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
WORKERS = 2
PREFIX_TIMEOUT, NOTEBOOK_TIMEOUT = 900, 1200  # seconds, per task
# What the tasks read: a change to any of it while they run makes their results unusable (``fingerprint``).
SOURCES = ("cegppo_edu", "notebooks")
IGNORED = ("__pycache__", ".ipynb_checkpoints")


def other_kernel_sets() -> list[str]:
    """This CPU's kernel sets except the native one (the rest of the suite runs that)."""
    native = torch.backends.cpu.get_cpu_capability().lower()
    return [k for k in repro.kernel_sets() if repro.KERNEL_SETS[k].get("ATEN_CPU_CAPABILITY") != native]


def notebooks() -> list[str]:
    """Every chapter, by file name (the glob of ``test_notebooks.NOTEBOOKS``)."""
    return sorted(path.name for path in Path(ROOT, "notebooks").glob("*.ipynb"))


def tasks(names: list[str]) -> list[tuple[str, str]]:
    """(kernel set, "prefixes" or a chapter's file name): what the tests read. ``run`` makes them in one nbval
    process per kernel set (every chapter, about 120 CPU-seconds on this 2-core machine) and one prefix job per set
    (about 55), the nbval runs first, so that two workers end close together."""
    return [(name, what) for name in names for what in ["prefixes", *notebooks()]]


def fingerprint() -> str:
    """A hash of every file the tasks read (the package, the chapters and their committed data, this file) and of
    the interpreter and torch that run them."""
    digest = hashlib.sha256(f"{sys.prefix} {torch.__version__}".encode())
    files = [Path(__file__)] + [p for top in SOURCES for p in sorted(Path(ROOT, top).rglob("*"))
                                if p.is_file() and not any(part in IGNORED for part in p.parts)]
    for path in files:
        digest.update(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------ running the tasks
def _task_file(folder: str, name: str, what: str) -> str:
    return os.path.join(folder, f"{name}--{what}.json")


def _execute(command: list[str], env: dict, timeout: int, running: dict) -> tuple[int, str, str, float]:
    """Run ``command`` in its own process group (``running`` holds it meanwhile, for ``_stop``)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    running[process.pid] = process
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        returncode = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        returncode, stderr = -9, f"timed out after {timeout} s\n{stderr}"
    finally:
        running.pop(process.pid, None)
    return returncode, stdout, stderr, round(time.perf_counter() - started, 1)


def run_prefixes(name: str, running: dict) -> dict:
    env = {**repro.kernel_env(name), **ONE_THREAD}
    returncode, stdout, stderr, seconds = _execute([sys.executable, "-c", PREFIXES, ROOT, *COMMITTED], env,
                                                   PREFIX_TIMEOUT, running)
    result = {"kernel_set": name, "task": "prefixes", "returncode": returncode, "seconds": seconds}
    try:
        result["prefixes"], result["error"] = json.loads(stdout.strip().splitlines()[-1]), ""
    except (IndexError, ValueError):
        result["prefixes"], result["error"] = {}, f"exit status {returncode}\n{stdout[-1000:]}\n{stderr[-3000:]}"
    return result


def run_nbval(name: str, chapters: list[str], running: dict) -> dict[str, dict]:
    """nbval over ``chapters`` under kernel set ``name``: one pytest process (a start-up costs about 3 CPU-seconds;
    each chapter gets its own kernel anyway), each chapter's outcome read from the failures it names."""
    env = {**repro.kernel_env(name), **ONE_THREAD}
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-rfE", "-p", "no:cacheprovider",
               *(f"notebooks/{chapter}" for chapter in chapters)]
    returncode, stdout, stderr, seconds = _execute(command, env, NOTEBOOK_TIMEOUT * len(chapters), running)
    failed = set(re.findall(r"^(?:FAILED|ERROR) notebooks/([^:\s]+\.ipynb)", stdout, re.M))
    unexplained = returncode != 0 and (returncode != 1 or not failed)  # a crash, a timeout, a usage error
    sections = re.split(r"\n(?=_{3,} )", stdout)
    out = {}
    for chapter in chapters:
        bad = unexplained or chapter in failed
        text = "".join(s for s in sections if s.startswith("_") and chapter in s.splitlines()[0])
        out[chapter] = {"kernel_set": name, "task": chapter, "returncode": 1 if bad else 0, "seconds": seconds,
                        "output": (text[-6000:] + stdout[-1500:] + stderr[-1500:]) if bad else ""}
    return out


def _groups(todo: list) -> list[tuple[str, list[str]]]:
    """The processes that run ``todo``: per kernel set one nbval run over its chapters, then its prefix job."""
    names = list(dict.fromkeys(name for name, _ in todo))
    chapters = [(name, [what for n, what in todo if n == name and what != "prefixes"]) for name in names]
    return [(name, whats) for name, whats in chapters if whats] + [(name, ["prefixes"]) for name in names
                                                                   if [name, "prefixes"] in [list(t) for t in todo]]


def _stop(running: dict) -> None:
    for pid in list(running):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    """Running (a zombie, e.g. a runner that ended before its starter reaped it, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def run(folder: str, todo: list, while_alive: int | None = None) -> None:
    """Run every task into ``folder`` (one JSON per task, then ``done.json``); stop, leaving no task behind, when
    this process is told to or process ``while_alive`` has ended (the make or pytest that waits for the results)."""
    running: dict = {}

    def stop(*_):
        _stop(running)
        os._exit(1)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if while_alive:
        def watch():
            while _alive(while_alive):
                time.sleep(2)
            stop()
        threading.Thread(target=watch, daemon=True).start()

    def one(group):
        name, whats = group
        done = {"prefixes": run_prefixes(name, running)} if whats == ["prefixes"] else run_nbval(name, whats, running)
        for what, result in done.items():
            path = _task_file(folder, name, what)
            with open(path + ".tmp", "w") as f:
                json.dump(result, f)
            os.replace(path + ".tmp", path)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:  # the work is in the subprocesses
        list(pool.map(one, _groups(todo)))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the tasks and what they waited for (the kernels)
    with open(os.path.join(folder, "done.json.tmp"), "w") as f:
        json.dump({"tasks": len(todo), "cpu_seconds": round(children.ru_utime + children.ru_stime, 1)}, f)
    os.replace(os.path.join(folder, "done.json.tmp"), os.path.join(folder, "done.json"))


def start(folder: str, while_alive: int, fresh: bool = False, only: list | None = None) -> bool:
    """Claim ``folder`` and start the tasks (``only`` those, else all) in a background process; False if another
    process had claimed it. ``fresh`` empties it first (``make test``: no result outlives the run that made it)."""
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)
    try:
        os.mkdir(os.path.join(folder, "claim"))  # atomic: one claimant
    except FileExistsError:
        return False
    names, sources = other_kernel_sets(), fingerprint()
    todo = [list(t) for t in tasks(names) if only is None or tuple(t) in {tuple(o) for o in only}]
    log = open(os.path.join(folder, "runner.log"), "w")
    runner = subprocess.Popen([sys.executable, os.path.abspath(__file__), "run", folder, "--while-alive",
                               str(while_alive), json.dumps(todo)], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                              stderr=log)
    info = {"pid": runner.pid, "while_alive": while_alive, "kernel_sets": names, "tasks": todo, "fingerprint": sources}
    with open(os.path.join(folder, "started.json.tmp"), "w") as f:
        json.dump(info, f)
    os.replace(os.path.join(folder, "started.json.tmp"), os.path.join(folder, "started.json"))
    return True


# ------------------------------------------------------------------------------ reading the results
@dataclass
class KernelSetRun:
    prefixes: dict  # PREFIXES' JSON: capability, per run ok/text/bitwise, warm starts
    prefix_error: str  # stderr's tail when the prefix job failed, else ""
    notebooks: dict  # chapter file name -> {"returncode", "output"} of nbval under this kernel set


class KernelSetsUnusable(RuntimeError):
    """The tasks died, or the sources changed while they ran."""


def wait(folder: str, poll: float = 1.0) -> dict[str, KernelSetRun]:
    """The results in ``folder`` once its tasks are done (started by ``start``, here or in another process)."""
    started = os.path.join(folder, "started.json")
    deadline = time.monotonic() + 120
    while not os.path.exists(started):  # claimed by another worker that is still writing started.json
        if time.monotonic() > deadline:
            raise KernelSetsUnusable(f"{folder} was claimed but its tasks never started")
        time.sleep(poll)
    info = json.loads(Path(started).read_text())
    while not os.path.exists(os.path.join(folder, "done.json")):
        if not _alive(info["pid"]):
            if os.path.exists(os.path.join(folder, "done.json")):
                break
            log = Path(folder, "runner.log").read_text()[-3000:]
            raise KernelSetsUnusable(f"the kernel-set runner (pid {info['pid']}) ended before its tasks:\n{log}")
        time.sleep(poll)
    if info["fingerprint"] != fingerprint():
        raise KernelSetsUnusable("the package, a chapter or its data changed while the kernel-set tasks ran from "
                                 f"{folder}: their results are not those of these sources; run the tests again")
    out = {}
    for name in info["kernel_sets"]:
        done = {what: json.loads(Path(_task_file(folder, n, what)).read_text()) for n, what in info["tasks"] if n == name}
        prefix = done.pop("prefixes", {"prefixes": {}, "error": "the prefixes were not among this session's tasks"})
        out[name] = KernelSetRun(prefix["prefixes"], prefix["error"], done)
    return out


def of_a_running_session(folder: str) -> bool:
    """``folder``'s tasks were started for a make or pytest that is still running (not left by an earlier one)."""
    try:
        info = json.loads(Path(folder, "started.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(info.get("while_alive")) and _alive(info["while_alive"])


def results(folder: str, only: list | None = None) -> dict[str, KernelSetRun]:
    """This session's results in ``folder``: started by make test, by another xdist worker or by this process
    (``conftest.pytest_collection_finish``), or, when none did, now (``only`` those tasks, else all)."""
    start(folder, while_alive=os.getpid(), only=only)  # a no-op when someone claimed it
    return wait(folder)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("start", help="empty FOLDER and start every task there in the background")
    go.add_argument("folder")
    go.add_argument("--while-alive", type=int, required=True,
                    help="stop when this process ends (make test passes its own pid: $$PPID in a recipe)")
    body = sub.add_parser("run", help="(internal) run the tasks in the foreground")
    body.add_argument("folder")
    body.add_argument("--while-alive", type=int)
    body.add_argument("tasks", help="JSON list of [kernel set, task]")
    args = parser.parse_args(argv)
    if args.command == "start":
        start(os.path.abspath(args.folder), args.while_alive, fresh=True)
        print(f"kernel-set tasks started in {args.folder}: {', '.join(other_kernel_sets())}")
    else:
        run(args.folder, json.loads(args.tasks), args.while_alive)


if __name__ == "__main__":
    main()

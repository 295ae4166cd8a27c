"""The math reward of the GPU chapter: +1 if math-verify judges the final answer equal to the gold answer,
−1 otherwise (the paper in brief §4, "reward"). It implements ``interfaces.RewardFn``.

What is graded: only the text after the last ``</think>`` (the reasoning may try many candidate answers);
a response whose reasoning never closed (truncated at the length cap) scores −1 without being parsed. Of
that text only the last ``max_answer_chars`` characters are sent to the grader: the boxed answer sits at the
end, and a bounded input keeps a pathological response from costing more than its time budget.

How it is graded: ``verify(parse(gold), parse(prediction))`` with the gold answer FIRST (the comparison is
asymmetric). A bare LaTeX gold answer (``\\frac{1}{\\sqrt{2}}``) parses to nothing, so it is wrapped as
``$...$``. Predictions use the reward-oriented ``LatexExtractionConfig`` recommended by math-verify's README
(REFERENCES.md) and no ``ExprExtractionConfig``: the latter hands strings to SymPy's ``parse_expr``, which
evaluates Python, and model output is untrusted.

Time bound, in two layers:

1. Inside a worker process the grader runs on that process's main thread, where math-verify's own SIGALRM
   time limits work (``inner_timeout_s`` each for parse gold / parse prediction / verify). They stop most slow
   SymPy calls cleanly and keep the worker. Off the main thread (``workers=0`` called from a thread) SIGALRM
   would raise, so they are switched off there.
2. The parent enforces ``timeout_s`` per answer, wall clock, from the moment the answer is handed to an idle
   worker. An answer over budget scores −1 and the pool is replaced (its processes are killed): a thread-based
   timeout could not stop a hung SymPy call, a process can be killed. A worker that dies (segfault, memory
   limit) costs its answer one retry, then −1.

Workers start with the ``forkserver`` method where available (else ``spawn``), never ``fork``: the trainer
process holds CUDA state that a forked child must not inherit. Each worker caps its address space at
``memory_limit_mb`` so that an answer like ``10^{10^{10}}`` fails with MemoryError instead of exhausting the
machine. The cap is relative (``address_space_cap``): what the worker has mapped after start-up plus
``memory_limit_mb``, because a worker inherits what ``__main__`` imported (torch, under the ``cegppo`` command;
its CUDA build maps several GB).

``protocol="authors"`` grades as the CE-GPPO authors' code does instead (``grade_response_authors``): the whole
response, math-verify's default extraction. It is an option for parity with their numbers, not the default:
its expression parser evaluates text with SymPy (it still runs only inside the capped, timed workers).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import threading
import time
import warnings
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Sequence

from .prompts import answer_section
from ..lm.config import TrainConfig
from ..validation import POSITIVE, POSITIVE_INT, Range, check_choice

# Outcomes of grading one response. Only CORRECT earns the positive reward.
CORRECT, WRONG, NO_ANSWER, NO_THINK_END, BAD_GOLD, TIMEOUT, CRASHED, ERROR = (
    "correct", "wrong", "no_answer", "no_think_end", "bad_gold", "timeout", "crashed", "error")
OUTCOMES = (CORRECT, WRONG, NO_ANSWER, NO_THINK_END, BAD_GOLD, TIMEOUT, CRASHED, ERROR)

_QUIET_LOGGERS = ("math_verify", "latex2sympy2_extended")  # they log whole inputs on timeout (up to 1 MB)


def wrap_gold(gold: str) -> str:
    """A bare LaTeX gold answer parses to nothing in math-verify: put it in math mode, unless it already is."""
    gold = str(gold).strip()
    if "$" in gold or "\\boxed" in gold or "\\(" in gold or "\\[" in gold:
        return gold
    return f"${gold}$"


def gold_extraction_config():
    from math_verify import LatexExtractionConfig
    return [LatexExtractionConfig()]


def prediction_extraction_config():
    """The reward-oriented configuration of math-verify's README: boxed answers first, no un-anchored
    extraction, no malformed-operator or "nits" repairs, and no Python-evaluating expression parser."""
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import LatexExtractionConfig
    normalization = NormalizationConfig(basic_latex=True, units=True, malformed_operators=False, nits=False,
                                        boxed="all", equations=False)
    return [LatexExtractionConfig(normalization_config=normalization, boxed_match_priority=0,
                                  try_extract_without_anchor=False)]


def grade_answer(answer: str, gold: str, inner_timeout_s: int | None) -> str:
    """Grade one answer section against its gold answer; returns one of ``OUTCOMES``.

    math-verify's SIGALRM limits are used only on the main thread (elsewhere ``signal`` raises).
    """
    from math_verify import parse, verify
    limit = inner_timeout_s if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(wrap_gold(gold), extraction_config=gold_extraction_config(), parsing_timeout=limit)
        if not gold_parsed:
            return BAD_GOLD
        pred_parsed = parse(answer, extraction_config=prediction_extraction_config(),
                            extraction_mode="first_match", parsing_timeout=limit)
        if not pred_parsed:
            return NO_ANSWER
        return CORRECT if verify(gold_parsed, pred_parsed, timeout_seconds=limit) else WRONG
    except Exception:  # noqa: BLE001 - any failure of the grader is a wrong answer, never a crash of training
        return ERROR


def address_space_bytes() -> int | None:
    """This process's mapped address space (Linux ``VmSize``, what ``RLIMIT_AS`` counts), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def address_space_cap(headroom_mb: int, mapped_bytes: int | None) -> int | None:
    """The ``RLIMIT_AS`` of a worker: what it has mapped already plus ``headroom_mb`` for grading.

    Relative, not absolute: a forkserver worker inherits whatever ``__main__`` imported (under the ``cegppo``
    console script that is torch; its CUDA build maps several GB of libraries), so an absolute cap of a few GB
    could sit below what the worker has mapped before it grades anything (the pool then breaks at start-up), or
    just above it (large parses then fail and score −1). None where the mapped size cannot be read (no cap)."""
    if mapped_bytes is None:
        return None
    return mapped_bytes + headroom_mb * 2**20


def grade_response_authors(response: str, gold: str, inner_timeout_s: int | None) -> str:
    """The CE-GPPO authors' grading, restated (their verl fork at Kwai-Klear/CE-GPPO, commit 10558fe,
    ``verl/utils/reward_score/math_dapo.py``: ``compute_score(is_use_math_verify=True)``, the path their training
    data ``math_longcot_math_verify`` and their AIME files take). Returns one of ``OUTCOMES``.

    It differs from ``grade_answer`` in three ways: the WHOLE response is parsed, reasoning included (no split at
    ``</think>``, so a response whose reasoning never closed is graded too); math-verify's default extraction
    (LaTeX and plain expressions, any match) is used, whose expression parser hands text to SymPy; and the
    prediction's extracted string is first compared with the gold string as it is, then ``verify`` checks it
    against ``\\boxed{gold}``. Fewer than two parse results (no answer found) is wrong.
    """
    from math_verify import parse, verify
    limit = inner_timeout_s if threading.current_thread() is threading.main_thread() else None
    try:
        parsed = parse(response, parsing_timeout=limit)  # default extraction: LaTeX and expressions
        if len(parsed) < 2:
            return NO_ANSWER
        if parsed[1] == str(gold):
            return CORRECT
        gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=limit)
        return CORRECT if verify(gold_parsed, parsed, timeout_seconds=limit) else WRONG
    except Exception:  # noqa: BLE001 - as theirs: a failure of the grader is a wrong answer
        return ERROR


# How a response is graded: the R1-Distill model card's convention (this project's default: only the text after
# </think>, boxed answers, no Python-evaluating parser) or the CE-GPPO authors' (grade_response_authors).
GRADERS = {"model-card": grade_answer, "authors": grade_response_authors}


def _exit_with_parent(owner_pid: int, interval_s: float = 1.0) -> None:
    """A worker's watchdog thread: end the worker once the process that owns the pool is gone or the worker's own
    parent changed (the forkserver exits when its owner dies). A trainer killed with SIGKILL runs no clean-up, and
    its grading workers would otherwise live on (one held 264 MB)."""
    parent = os.getppid()
    while True:
        time.sleep(interval_s)
        try:
            os.kill(owner_pid, 0)
            gone = os.getppid() != parent
        except ProcessLookupError:
            gone = True
        except PermissionError:  # a process of another user took the pid: the owner is gone
            gone = True
        if gone:
            os._exit(0)


def _worker_init(memory_limit_mb: int | None, owner_pid: int | None = None) -> None:
    """Runs once in each worker: end with the owner, quiet loggers, cap memory growth, warm up math-verify."""
    if owner_pid is not None:
        threading.Thread(target=_exit_with_parent, args=(owner_pid,), daemon=True, name="exit-with-owner").start()
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")
    grade_answer("\\boxed{1}", "1", None)  # imports math-verify and builds its parsers, outside any budget
    limit = address_space_cap(memory_limit_mb, address_space_bytes()) if memory_limit_mb else None
    if limit:
        try:
            import resource
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):  # not on this platform: the parent's timeout still holds
            pass


def _address_space_limit() -> int:
    """A worker's ``RLIMIT_AS`` soft limit in bytes (-1: none); for tests and the pre-flight check."""
    import resource
    return resource.getrlimit(resource.RLIMIT_AS)[0]


def _ping() -> int:
    import os
    return os.getpid()


def _default_start_method() -> str:
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


class MathReward:
    """``RewardFn`` for math: ``reward(responses, answers) -> [+1.0 | -1.0, ...]``.

    Args:
        timeout_s: wall-clock budget per answer, enforced by the parent (the pool is replaced when exceeded).
        workers: worker processes; 0 grades inline in the calling thread (tests and debugging only: then the
            time bound is math-verify's SIGALRM limit on the main thread, and none elsewhere).
        inner_timeout_s: math-verify's own limit per parse / verify call inside a worker (integer seconds);
            default ``max(1, int(timeout_s) // 4)`` so that the three calls finish before the hard limit.
        max_answer_chars: only this many trailing characters of the answer section are graded.
        memory_limit_mb: how much each worker's address space may grow while grading, above what it has mapped
            after start-up (``address_space_cap``; None: no cap).
        start_method: ``"forkserver"`` or ``"spawn"`` (``"fork"`` is refused: CUDA state must not be forked).
        correct_reward, wrong_reward: the two reward values (the paper in brief §4: +1 and −1).
        grade_fn: the function a worker runs, ``(answer, gold, inner_timeout_s) -> outcome``; a top-level,
            picklable function. Default: the protocol's (``GRADERS``); tests replace it to simulate a hung grader.
        protocol: ``"model-card"`` (grade the text after the last ``</think>``; this project's default) or
            ``"authors"`` (the CE-GPPO authors' grading of the whole response: ``grade_response_authors``).

    After each call, ``last_outcomes`` holds one outcome per response and ``last_stats`` their counts plus
    ``pool_restarts``: log them, a rising ``timeout`` or ``bad_gold`` count is worth a look.
    """

    def __init__(self, timeout_s: float = TrainConfig.reward_timeout_s, workers: int = TrainConfig.reward_workers,
                 inner_timeout_s: int | None = None,
                 max_answer_chars: int = 8192, memory_limit_mb: int | None = 4096,
                 start_method: str | None = None, correct_reward: float = 1.0, wrong_reward: float = -1.0,
                 grade_fn: Callable[[str, str, int | None], str] | None = None,
                 startup_timeout_s: float = 120.0, protocol: str = "model-card"):
        POSITIVE.check("timeout_s", timeout_s)
        Range(0, 64, integer=True, note="0 = grade in this process").check("workers", workers)
        POSITIVE_INT.check("max_answer_chars", max_answer_chars)
        Range(1, none=True).check("inner_timeout_s", inner_timeout_s)
        check_choice("protocol", protocol, tuple(GRADERS))
        start_method = start_method or _default_start_method()
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start_method={start_method!r} is not allowed: use 'forkserver' or 'spawn'")
        self.timeout_s = float(timeout_s)
        self.workers = workers
        self.inner_timeout_s = inner_timeout_s if inner_timeout_s is not None else max(1, int(timeout_s) // 4)
        self.max_answer_chars = max_answer_chars
        self.memory_limit_mb = memory_limit_mb
        self.start_method = start_method
        self.correct_reward, self.wrong_reward = float(correct_reward), float(wrong_reward)
        self.protocol = protocol
        self.grade_fn = grade_fn if grade_fn is not None else GRADERS[protocol]
        self.startup_timeout_s = startup_timeout_s
        self.pool_restarts = 0
        self.last_outcomes: list[str] = []
        self.last_stats: dict[str, int] = {}
        self._pool: cf.ProcessPoolExecutor | None = None
        if workers > 0:
            self._start_pool()

    # ----------------------------------------------------------------------------------------------- pool
    def _start_pool(self) -> None:
        self._pool = cf.ProcessPoolExecutor(max_workers=self.workers,
                                            mp_context=mp.get_context(self.start_method),
                                            initializer=_worker_init,
                                            initargs=(self.memory_limit_mb, os.getpid()))
        # One ping per worker makes the pool start every process now, so that start-up (imports, warm-up)
        # is never charged to an answer's time budget.
        pings = [self._pool.submit(_ping) for _ in range(self.workers)]
        done, not_done = cf.wait(pings, timeout=self.startup_timeout_s)
        if not_done:
            self.close()
            raise RuntimeError(f"the grading pool did not start within {self.startup_timeout_s} s")
        for ping in done:
            ping.result()  # re-raises a failed initializer

    def _kill_pool(self) -> None:
        """Stop the pool now, hung workers included (``shutdown`` alone would wait for them forever)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())  # no public API before Python 3.14
        if hasattr(pool, "kill_workers"):
            pool.kill_workers()
        for process in processes:
            if process.is_alive():
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.join(timeout=5)

    def _restart_pool(self) -> None:
        self._kill_pool()
        self.pool_restarts += 1
        self._start_pool()

    def close(self) -> None:
        """Shut the pool down (idempotent). Also called by ``with MathReward(...) as reward:``."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self._kill_pool()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # ----------------------------------------------------------------------------------------- grading
    def __call__(self, responses: Sequence[str], answers: Sequence[str]) -> list[float]:
        outcomes = self.grade(responses, answers)
        return [self.correct_reward if o == CORRECT else self.wrong_reward for o in outcomes]

    def grade(self, responses: Sequence[str], answers: Sequence[str]) -> list[str]:
        """One outcome (see ``OUTCOMES``) per response."""
        if len(responses) != len(answers):
            raise ValueError(f"len(responses)={len(responses)} differs from len(answers)={len(answers)}")
        outcomes: list[str | None] = [None] * len(responses)
        jobs = []
        for i, (response, gold) in enumerate(zip(responses, answers, strict=True)):
            # the authors' protocol grades the whole response; the model card's the text after </think>
            section = str(response) if self.protocol == "authors" else answer_section(str(response))
            if section is None:
                outcomes[i] = NO_THINK_END
            else:
                jobs.append((i, section[-self.max_answer_chars:], str(gold)))
        restarts_before = self.pool_restarts
        graded = self._grade_inline(jobs) if self.workers == 0 else self._grade_in_pool(jobs)
        for i, outcome in graded.items():
            outcomes[i] = outcome
        self.last_outcomes = list(outcomes)
        counts = collections.Counter(outcomes)
        self.last_stats = {name: counts.get(name, 0) for name in OUTCOMES}
        self.last_stats["pool_restarts"] = self.pool_restarts - restarts_before
        return self.last_outcomes

    def _grade_inline(self, jobs) -> dict[int, str]:
        return {i: self.grade_fn(answer, gold, self.inner_timeout_s) for i, answer, gold in jobs}

    def _grade_in_pool(self, jobs) -> dict[int, str]:
        """At most ``workers`` answers in flight, so each one starts on an idle worker when submitted and its
        deadline (submission + ``timeout_s``) measures its own grading time only.

        A dying worker breaks the whole pool, and every answer in flight fails with it: which one killed it is
        unknown. Those answers are graded again one at a time (``solo``), so a second crash is surely the
        answer's own (scored ``CRASHED``) and an innocent answer is never charged for its neighbour's crash.
        """
        if self._pool is None:
            self._start_pool()
        pending = collections.deque(jobs)
        solo: collections.deque = collections.deque()  # answers lost in a crash: retried alone
        in_flight: dict[cf.Future, tuple[tuple, float]] = {}
        results: dict[int, str] = {}
        crashes: collections.Counter = collections.Counter()
        while pending or solo or in_flight:
            if solo and not in_flight:
                batch = [solo.popleft()]
            elif not solo:
                batch = [pending.popleft() for _ in range(min(len(pending), self.workers - len(in_flight)))]
            else:  # wait for the answers in flight before a solo retry
                batch = []
            for job in batch:
                try:
                    future = self._pool.submit(self.grade_fn, job[1], job[2], self.inner_timeout_s)
                except BrokenProcessPool:  # a worker died while idle: replace the pool, submit again
                    self._restart_pool()
                    future = self._pool.submit(self.grade_fn, job[1], job[2], self.inner_timeout_s)
                in_flight[future] = (job, time.monotonic() + self.timeout_s)
            next_deadline = min(deadline for _, deadline in in_flight.values())
            cf.wait(in_flight, timeout=max(0.0, next_deadline - time.monotonic()),
                    return_when=cf.FIRST_COMPLETED)
            broken = False
            for future in [f for f in in_flight if f.done()]:
                job, _ = in_flight.pop(future)
                try:
                    results[job[0]] = future.result()
                except BrokenProcessPool:  # a worker died: grade its answers again, alone, on a fresh pool
                    broken = True
                    crashes[job[0]] += 1
                    if crashes[job[0]] > 1:
                        results[job[0]] = CRASHED
                    else:
                        solo.append(job)
            now = time.monotonic()
            expired = [f for f, (_, deadline) in in_flight.items() if deadline <= now]
            if expired or broken:
                for future in expired:
                    job, _ = in_flight.pop(future)
                    results[job[0]] = TIMEOUT
                for job, _ in in_flight.values():  # innocent answers lost with the pool: grade them again
                    pending.appendleft(job)
                in_flight.clear()
                self._restart_pool()
        return results


def make_math_reward(config, protocol: str = "model-card") -> MathReward:
    """Factory for the trainer's reward registry (``config.reward = "math_verify"``)."""
    return MathReward(timeout_s=config.reward_timeout_s, workers=config.reward_workers,
                      correct_reward=config.reward_correct, wrong_reward=config.reward_wrong, protocol=protocol)


def make_authors_math_reward(config) -> MathReward:
    """``config.reward = "math_verify_authors"``: the CE-GPPO authors' grading (``grade_response_authors``)."""
    return make_math_reward(config, protocol="authors")

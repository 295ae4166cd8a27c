"""Time the token bandit (cegppo_edu.toy.bandit): one 300-step × 8-seed simulation (target <= 0.25 s on a 2-core
CPU) and the 5×5 (β1, β2) sweep of the chapter's slider figure (target <= 3 s), each against the same call of the
code before the speed work (``baseline.BEFORE_SPEED_WORK``, imported from git history) in the same process,
alternating the two, medians over repeats. Also checks that both give bitwise the same history, and times the
vectorised simulator against the plain per-seed autograd loop (``simulate_loop``).

Last, the floor that eager PyTorch sets here: the aten operations one SGD update dispatches (counted with a
``TorchDispatchMode``), the time of one cheap operation on the same small tensors, and what the run's sequential
updates cost at least with that many operations (the updates of a step depend on each other, so they cannot be
batched).

With ``--compiled``, also the one way left to go under that floor without writing kernels: the SGD update wrapped
in ``torch.compile`` (it needs a C++ compiler), its first run (compiling) and then its runs against eager ones.

Usage: python benchmarks/bench_bandit.py [--repeats 5] [--loop-steps 5] [--threads 2] [--baseline REV] [--compiled]
Wall and CPU seconds are both printed: on a machine shared with other jobs wall time grows with the load.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

import baseline
from cegppo_edu import __version__
from cegppo_edu.toy import bandit
from cegppo_edu.toy.bandit import simulate, simulate_loop, sweep
from torch.utils._python_dispatch import TorchDispatchMode

BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def alternate(new, old, repeats: int) -> dict:
    """Median wall and CPU seconds of ``new`` and ``old``, called in turn (which goes first alternates too)."""
    times = {"new": [], "old": []}
    for i in range(repeats):
        for name in (("new", "old") if i % 2 == 0 else ("old", "new")):
            times[name].append(timed(new if name == "new" else old))
    return {name: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts))
            for name, ts in times.items()}


def differences(a, b) -> dict:
    """The History fields where ``a`` and ``b`` differ, with their largest absolute difference (empty: bitwise equal)."""
    return {k: float(np.nanmax(np.abs(v - getattr(b, k)))) for k, v in vars(a).items()
            if isinstance(v, np.ndarray) and not np.array_equal(v, getattr(b, k), equal_nan=True)}


def report(label: str, result: dict, target: float) -> None:
    (new_wall, new_cpu), (old_wall, old_cpu) = result["new"], result["old"]
    print(f"{label}: median {new_wall:.3f} s wall ({new_cpu:.3f} s CPU), before {old_wall:.3f} s wall "
          f"({old_cpu:.3f} s CPU): {old_wall / new_wall:.1f}x faster in wall time, {old_cpu / new_cpu:.1f}x in CPU "
          f"time; target <= {target} s -> {'met' if new_wall <= target else 'NOT met'} (load average "
          f"{os.getloadavg()[0]:.2f})")


class _CountOps(TorchDispatchMode):
    """Counts the aten operations dispatched inside it."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def eager_floor(steps: int = 300, seeds: int = 8, repeats: int = 2000) -> str:
    """One SGD update of the default toy (``bandit._sgd_update``, CE-GPPO): aten operations, its time, the time of
    one cheap operation on tensors of its size, and the least the run's ``steps × updates`` updates can cost."""
    cfg = bandit.make_toy()
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(seeds, cfg.positions, cfg.vocab, generator=gen, dtype=torch.float64)
    tok = torch.randint(cfg.vocab, (seeds, cfg.positions, cfg.minibatch), generator=gen)
    a = torch.randn(seeds, 1, cfg.minibatch, generator=gen, dtype=torch.float64)
    old = torch.log_softmax(z, -1).gather(-1, tok) + 0.1
    weight = bandit._weight_fn("ce_gppo", bandit.resolve_hyper("ce_gppo"), None, seeds)
    update = lambda: bandit._sgd_update(z, tok, a, a / (cfg.minibatch * cfg.positions), old, weight, cfg.lr)  # noqa
    with bandit._small_tensors():
        with _CountOps() as counter:
            update()
        cheap = lambda: torch.add(old, 1.0)  # noqa: E731
        per_update, per_op = (statistics.median(timed(f)[0] for _ in range(repeats)) for f in (update, cheap))
    updates = steps * cfg.minibatches * cfg.epochs
    return (f"one SGD update ({seeds} seeds): {counter.count} aten operations, {per_update * 1e6:.0f} us; one cheap "
            f"operation on its tensors: {per_op * 1e6:.1f} us; the run's {updates} sequential updates cost at least "
            f"{updates * counter.count * per_op:.2f} s at {counter.count} operations each "
            f"({updates * per_update:.2f} s as measured)")


def compiled_update(repeats: int) -> str:
    """``simulate(steps=300, seeds=8)`` with ``bandit._sgd_update`` under ``torch.compile`` against eager: the first
    run's time (it compiles) and the medians of ``repeats`` runs of each, alternated."""
    eager_update = bandit._sgd_update
    compiled = torch.compile(eager_update)
    run = lambda: simulate("ce_gppo", steps=300, seeds=8)  # noqa: E731
    try:
        bandit._sgd_update = compiled
        first = timed(run)[0]
        times = {"compiled": [], "eager": []}
        for _ in range(repeats):
            for name, update in (("compiled", compiled), ("eager", eager_update)):
                bandit._sgd_update = update
                times[name].append(timed(run)[0])
    finally:
        bandit._sgd_update = eager_update
    med = {k: statistics.median(v) for k, v in times.items()}
    return (f"torch.compile of the SGD update: first run {first:.1f} s (compiling), then {med['compiled']:.3f} s "
            f"against eager {med['eager']:.3f} s (eager / compiled = {med['eager'] / med['compiled']:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads outside the simulator")
    parser.add_argument("--baseline", default=baseline.BEFORE_SPEED_WORK, help="git revision to compare with")
    parser.add_argument("--compiled", action="store_true",
                        help="also time the update under torch.compile (needs a C++ compiler; ~20 s to compile)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    before = baseline.import_module(args.baseline, "toy.bandit")
    print(f"cegppo-edu {__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.2f}; baseline {args.baseline}")
    simulate(steps=5), before.simulate(steps=5)  # warm-up: imports, allocator

    diff = differences(simulate("ce_gppo", steps=300, seeds=8), before.simulate("ce_gppo", steps=300, seeds=8))
    # Since 8512371 the entropy of float64 logits is computed in float64 (it was float32): the recorded entropies
    # differ from the baseline's by float32 rounding, every other field is bitwise the same.
    print(f"simulate(steps=300, seeds=8) against {args.baseline}: "
          + ("bitwise the same history" if not diff else "bitwise the same but " + ", ".join(
              f"{k} (within {v:.1e})" for k, v in diff.items())))
    report("simulate 300 steps x 8 seeds", alternate(lambda: simulate("ce_gppo", steps=300, seeds=8),
                                                     lambda: before.simulate("ce_gppo", steps=300, seeds=8),
                                                     args.repeats), 0.25)
    report("sweep 5x5 (beta1, beta2), 300 steps x 8 seeds each",
           alternate(lambda: sweep(BETAS, BETAS, steps=300, seeds=8),
                     lambda: before.sweep(BETAS, BETAS, steps=300, seeds=8), max(1, args.repeats // 2)), 3.0)

    n = args.loop_steps
    vec = statistics.median(timed(lambda: simulate("ce_gppo", steps=n, seeds=8))[0] for _ in range(args.repeats))
    loop = statistics.median(timed(lambda: simulate_loop("ce_gppo", steps=n, seeds=8))[0]
                             for _ in range(max(1, args.repeats // 2)))
    print(f"{n} steps x 8 seeds: vectorised {vec:.3f} s, per-seed autograd loop {loop:.2f} s, "
          f"ratio loop/vectorised = {loop / vec:.0f}x")
    print(eager_floor())
    if args.compiled:
        print(compiled_update(args.repeats))


if __name__ == "__main__":
    main()

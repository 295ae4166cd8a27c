"""Time the token bandit (cegppo_edu.toy.bandit): one 300-step × 8-seed simulation, the 5×5 (β1, β2) sweep of
the chapter's slider figure, and the vectorised simulator against the plain per-seed autograd loop
(``simulate_loop``) measured in the same run on the same machine.

Usage: python benchmarks/bench_bandit.py [--repeats 5] [--loop-steps 5] [--threads 2]
The per-seed loop is about two orders of magnitude slower, so the ratio is measured on a shorter run
(--loop-steps steps, 8 seeds) and both simulators run exactly that configuration.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from cegppo_edu import __version__
from cegppo_edu.toy.bandit import simulate, simulate_loop, sweep

BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def median_time(fn, repeats: int) -> tuple[float, list[float], float]:
    """Median wall-clock seconds of ``repeats`` calls, all of them, and the median CPU seconds (on a machine
    shared with other jobs, wall time grows with the load and CPU time much less)."""
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), times, statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads outside the simulator")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"cegppo-edu {__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.2f}")
    simulate(steps=5)  # warm-up: imports, allocator

    one, times, cpu = median_time(lambda: simulate("ce_gppo", steps=300, seeds=8), args.repeats)
    print(f"simulate 300 steps x 8 seeds: median {one:.3f} s over {args.repeats} runs "
          f"(min {min(times):.3f}, max {max(times):.3f}; CPU {cpu:.3f} s); target < 1 s")

    grid, times, grid_cpu = median_time(lambda: sweep(BETAS, BETAS, steps=300, seeds=8), args.repeats // 2 + 1)
    print(f"sweep 5x5 (beta1, beta2), 300 steps x 8 seeds each: median {grid:.2f} s over {len(times)} runs "
          f"(CPU {grid_cpu:.2f} s); target < 30 s")
    separate, _, _ = median_time(
        lambda: [simulate("ce_gppo", b1, b2, steps=300, seeds=8) for b1 in BETAS for b2 in BETAS], 1)
    print(f"the same 25 runs as separate simulate calls: {separate:.2f} s (1 run); "
          f"ratio separate/batched sweep = {separate / grid:.1f}x")

    n = args.loop_steps
    vec, _, _ = median_time(lambda: simulate("ce_gppo", steps=n, seeds=8), args.repeats)
    loop, _, _ = median_time(lambda: simulate_loop("ce_gppo", steps=n, seeds=8), max(1, args.repeats // 2))
    print(f"{n} steps x 8 seeds: vectorised {vec:.3f} s, per-seed autograd loop {loop:.2f} s, "
          f"ratio loop/vectorised = {loop / vec:.0f}x")


if __name__ == "__main__":
    main()

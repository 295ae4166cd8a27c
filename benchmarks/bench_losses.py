"""Benchmark the foundation: CE-GPPO's cost against PPO-clip's, and chunked entropy's memory against direct.

Prints medians and ratios measured in the same run (absolute CPU times mean little on a shared machine):
  1. forward + backward of ``ce_gppo`` vs ``ppo_clip`` on (B, T) float32 — target ratio <= 1.3;
  2. peak memory of ``entropy_from_logits`` (chunked) vs a direct softmax entropy on (T, V) logits —
     target <= 1/8. Each memory measurement runs in a fresh subprocess and reads its peak RSS.

    python benchmarks/bench_losses.py [--batch 256] [--tokens 4096] [--vocab 151936] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from cegppo_edu.losses import ce_gppo, ppo_clip


def time_fwd_bwd(loss_fns, logp, old_logp, adv, mask, repeats):
    """Median forward+backward time of each loss; the losses take turns so that drift hits both alike."""
    times = {fn.__name__: [] for fn in loss_fns}
    for _ in range(repeats + 1):  # the first round warms up and is dropped
        for fn in loss_fns:
            x = logp.clone().requires_grad_(True)
            start = time.perf_counter()
            fn(x, old_logp, adv, mask).backward()
            times[fn.__name__].append(time.perf_counter() - start)
    return {name: statistics.median(t[1:]) for name, t in times.items()}


MEMORY_PROBE = """
import json, resource, sys, torch
from cegppo_edu.entropy import entropy_from_logits
tokens, vocab, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(2)
logits = torch.randn(tokens, vocab, generator=torch.Generator().manual_seed(0))  # the same logits in both probes
def rss_kib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4
before = rss_kib()
if mode == 'direct':
    p = torch.softmax(logits, -1)
    h = -(p * torch.log_softmax(logits, -1)).sum(-1)
else:
    h = entropy_from_logits(logits)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print(json.dumps({'extra_peak_mib': (peak - before) / 1024, 'mean_entropy': h.mean().item()}))
"""


def peak_memory(tokens, vocab, mode):
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tokens), str(vocab), mode],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, args.tokens)
    old_logp = torch.log(torch.rand(shape, generator=gen) * 0.99 + 0.01)
    logp = old_logp + 0.3 * torch.randn(shape, generator=gen)  # ~40 % of tokens outside [0.8, 1.2]
    adv = torch.randn(args.batch, generator=gen)
    mask = torch.ones(shape)
    medians = time_fwd_bwd([ppo_clip, ce_gppo], logp, old_logp, adv, mask, args.repeats)
    t_ppo, t_ce = medians["ppo_clip"], medians["ce_gppo"]
    print(f"forward+backward on (B={args.batch}, T={args.tokens}) float32, median of {args.repeats}:")
    print(f"  ppo_clip {t_ppo * 1e3:8.1f} ms   ce_gppo {t_ce * 1e3:8.1f} ms   ratio ce_gppo/ppo_clip = "
          f"{t_ce / t_ppo:.2f}  (target <= 1.3)")

    direct = peak_memory(args.tokens, args.vocab, "direct")
    chunked = peak_memory(args.tokens, args.vocab, "chunked")
    assert abs(direct["mean_entropy"] - chunked["mean_entropy"]) < 1e-3, (direct, chunked)
    print(f"entropy of (T={args.tokens}, V={args.vocab}) float32 logits, extra peak memory:")
    print(f"  direct {direct['extra_peak_mib']:8.0f} MiB   chunked {chunked['extra_peak_mib']:8.0f} MiB   ratio = "
          f"{chunked['extra_peak_mib'] / direct['extra_peak_mib']:.3f}  (target <= 0.125)")


if __name__ == "__main__":
    main()

"""Cost of SuperLoss on top of cross-entropy: forward + backward, eager and compiled.

For each batch shape, times one training-step loss — forward and backward with respect to logits
that require grad — of ``SuperLoss(nn.CrossEntropyLoss(reduction="none"))`` (τ = running EMA, the
default; mean reduction) and of ``nn.CrossEntropyLoss()`` alone, eagerly and under
``torch.compile``. The two contestants run in turn within each repeat, so a slow moment of the
machine hits both; the ratio is the median over repeats of the per-repeat ratio.

    python benchmarks/superloss_speed.py [--repeats 30] [--no-compile] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from superloss import SuperLoss

SHAPES = ((4096, 1000), (256, 10))


def make_step(criterion: Callable[..., torch.Tensor], logits: torch.Tensor, target: torch.Tensor):
    def step() -> None:
        logits.grad = None
        criterion(logits, target).backward()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}; float32, {args.repeats} interleaved repeats, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    print()
    header = (
        f"{'batch x classes':<16} {'mode':<9} {'CE ms':>8} {'SuperLoss(CE) ms':>17} "
        f"{'ratio':>7} {'CE best':>8} {'SL best':>8} {'best ratio':>11}"
    )
    print(header)
    print("-" * len(header))
    modes = ["eager"] if args.no_compile else ["eager", "compiled"]
    # Every eager measurement comes before the first compilation: Inductor's kernels bring their
    # own OpenMP thread pool, whose spinning threads would slow eager ops down on a 2-core machine.
    for mode in modes:
        for batch, classes in SHAPES:
            logits = torch.randn(batch, classes, requires_grad=True)
            target = torch.randint(0, classes, (batch,))
            cross_entropy: Callable[..., torch.Tensor] = nn.CrossEntropyLoss()
            super_loss: Callable[..., torch.Tensor] = SuperLoss(
                nn.CrossEntropyLoss(reduction="none")
            )
            if mode == "compiled":
                cross_entropy = torch.compile(cross_entropy, dynamic=False)
                super_loss = torch.compile(super_loss, dynamic=False)
            contestants = {
                "ce": make_step(cross_entropy, logits, target),
                "sl": make_step(super_loss, logits, target),
            }
            for step in contestants.values():  # warm-up, compilation included
                for _ in range(3):
                    step()
            times: dict[str, list[float]] = {name: [] for name in contestants}
            for _ in range(args.repeats):
                for name, step in contestants.items():
                    start = time.perf_counter()
                    step()
                    times[name].append(time.perf_counter() - start)
            ce, sl = times["ce"], times["sl"]
            ratio = statistics.median(s / c for s, c in zip(sl, ce, strict=True))
            print(
                f"{f'{batch} x {classes}':<16} {mode:<9} {statistics.median(ce) * 1e3:>8.3f} "
                f"{statistics.median(sl) * 1e3:>17.3f} {ratio:>6.2f}x {min(ce) * 1e3:>8.3f} "
                f"{min(sl) * 1e3:>8.3f} {min(sl) / min(ce):>10.2f}x"
            )
    print()
    print("times in ms, medians over the repeats; ratio: median of the per-repeat ratios")
    print("SuperLoss(CE) / CE; best: the fastest repeat of each (the least disturbed).")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()

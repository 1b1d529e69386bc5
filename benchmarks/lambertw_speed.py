"""Speed and accuracy of ``superloss.lambertw`` against ``scipy.special.lambertw``.

Times W₀ on one million values (float32 and float64; median and best of several interleaved
repeats) and measures the largest relative error of both against mpmath, evaluated at the exact
input values, on a sample of a few thousand points that includes the branch point.

    python benchmarks/lambertw_speed.py [--size 1000000] [--repeats 15] [--sample 3000] \
        [--threads N] [--compile]

Needs scipy and mpmath (``pip install -e ".[dev]"``).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import mpmath
import numpy as np
import scipy
import scipy.special
import torch

from superloss import lambertw

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def inputs(size: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Half uniform on [−1/e, 10] (where SuperLoss evaluates W), half log-uniform on [1e-3, 1e3]."""
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand(size // 2, generator=generator, dtype=torch.float64) * (10 + 1 / math.e)
    uniform -= 1 / math.e
    log_uniform = 10 ** (
        torch.rand(size - size // 2, generator=generator, dtype=torch.float64) * 6 - 3
    )
    x = torch.cat([uniform, log_uniform]).to(dtype)
    return x.clamp_min(torch.tensor(-1 / math.e, dtype=dtype).item())


def accuracy_sample(x: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` points drawn from ``x`` plus the branch point and its neighbourhood."""
    dtype = x.dtype
    branch = torch.tensor(-1 / math.e, dtype=dtype)
    near = [branch]
    for _ in range(20):
        near.append(torch.nextafter(near[-1], torch.ones_like(branch)))
    offsets = torch.logspace(-15, -1, 30, dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    picked = x[torch.randint(0, x.numel(), (count,), generator=generator)]
    finfo = torch.finfo(dtype)
    extremes = torch.tensor([finfo.max, 1e30, finfo.tiny, -finfo.tiny, 0.0], dtype=dtype)
    sample = torch.cat([torch.stack(near), (-1 / math.e + offsets).to(dtype), extremes, picked])
    return sample[sample >= branch]


def reference(x: torch.Tensor) -> np.ndarray:
    """mpmath W₀ at the exact input values; the rounded branch point means −1 (W at −1/e)."""
    branch = torch.tensor(-1 / math.e, dtype=x.dtype).item()
    values = []
    with mpmath.workprec(113):
        for value in x.double().tolist():
            if value == branch:
                values.append(-1.0)
            else:
                values.append(float(mpmath.lambertw(mpmath.mpf(value)).real))
    return np.array(values)


def max_relative_error(result: np.ndarray, expected: np.ndarray) -> tuple[float, int]:
    """Largest relative error over the finite results, and how many results are NaN."""
    result = result.astype(np.float64)
    nan = np.isnan(result)
    with np.errstate(divide="ignore", invalid="ignore"):
        error = np.abs(result - expected) / np.abs(expected)
    error = np.where(result == expected, 0.0, error)
    return float(np.max(error[~nan])), int(nan.sum())


def scipy_lambertw(x: np.ndarray) -> np.ndarray:
    return scipy.special.lambertw(x).real.astype(x.dtype)


def time_interleaved(
    functions: dict[str, Callable[[], object]], repeats: int
) -> dict[str, list[float]]:
    """Run each function once per round, rounds repeated: a slow moment hits every contestant."""
    for function in functions.values():
        function()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sample", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile(lambertw) (one kernel)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, scipy {scipy.__version__}, numpy {np.__version__}, "
        f"mpmath {mpmath.__version__}; load average {os.getloadavg()[0]:.2f} at start"
    )
    print(
        f"{args.size:,} values per call, {args.repeats} interleaved repeats; error sample: "
        f"{args.sample} points + the branch point neighbourhood"
    )
    print()
    header = (
        f"{'dtype':<8} {'implementation':<24} {'median ms':>10} {'best ms':>9} "
        f"{'speed-up':>9} {'max rel. error':>15} {'NaN':>4}"
    )
    print(header)
    print("-" * len(header))
    for dtype_name, dtype in DTYPES.items():
        x = inputs(args.size, dtype)
        contestants: dict[str, Callable[[torch.Tensor], object]] = {
            "superloss.lambertw": lambertw,
            "scipy.special.lambertw": lambda t: scipy_lambertw(t.numpy()),
        }
        if args.compile:
            compiled = torch.compile(lambertw, fullgraph=True, dynamic=False)
            contestants["lambertw, torch.compile"] = compiled
        times = time_interleaved(
            {name: partial(function, x) for name, function in contestants.items()}, args.repeats
        )
        sample = accuracy_sample(x, args.sample)
        expected = reference(sample)
        errors = {
            name: max_relative_error(np.asarray(function(sample), dtype=np.float64), expected)
            for name, function in contestants.items()
        }
        scipy_times = times["scipy.special.lambertw"]
        for name, measured in times.items():
            # Speed-up over scipy: the median of the per-repeat ratios (paired, same moment).
            speedup = statistics.median(s / m for s, m in zip(scipy_times, measured, strict=True))
            error, nan = errors[name]
            print(
                f"{dtype_name:<8} {name:<24} {statistics.median(measured) * 1e3:>10.2f} "
                f"{min(measured) * 1e3:>9.2f} {speedup:>8.2f}x {error:>15.2e} {nan:>4}"
            )
    print()
    print("speed-up: scipy's time over this one's, median of the per-repeat ratios.")
    print("NaN: results that are NaN on the sample (all of it lies in the domain); scipy gives NaN")
    print("at float64(−1/e), which superloss.lambertw maps to the branch point, W = −1.")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()

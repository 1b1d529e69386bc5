"""SuperLoss's fixed cost per call: ATen operations and time against cross-entropy, small to large.

One training-step loss — forward, then backward into logits that require grad — of
``SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau=...)`` (mean reduction, λ = 1) against
``nn.CrossEntropyLoss()`` alone, at batch × classes 32×10, 256×10, 1024×100 and 4096×1000, eager and
under ``torch.compile`` (``fullgraph=True``), in float32 and under bfloat16 autocast.

- **ops**: the top-level ATen operations one forward + backward dispatches, counted with
  ``torch.profiler`` (an operation called by another ATen operation is not counted again). Each
  costs its dispatch on the CPU and is (at least) one kernel launch on a GPU. Also given: all ATen
  operations, nested ones included.
- **time**: the contestants take turns within each repeat (the order alternates), each running
  ``calls`` steps; ``x CE`` is the median over repeats of SuperLoss's time over CE's in the same
  repeat, in wall time and in process CPU time (steadier on a shared machine).

    python benchmarks/small_batch.py [--threads N] [--repeats 15] [--taus ema,log_classes,ema-auto,ema-normalized]
        [--shapes 32x10,256x10,...] [--no-compile] [--no-amp] [--device cpu|cuda] [--quick]
        [--layers] [--compiled-kernel]

``--layers`` also times SuperLoss layer by layer (CPU): CE with ``reduction="none"`` and a
separate mean, then the autograd Function, then the module with τ = log C, EMA, EMA + automatic λ.
``--compiled-kernel`` asks whether a ``torch.compile``-generated kernel, called from eager code,
would cut that cost on the CPU (:func:`compiled_kernel`).

Targets (CPU, eager, float32, τ = EMA): at 256×10, at most 40 operations and 2.0× CE; at
4096×1000, at most 1.1× CE.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

# step_overhead.py sits next to this file: python puts this folder first on sys.path.
import step_overhead
import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from superloss import SuperLoss
from superloss.functional import _SuperLoss, reduced_and_confidence

SHAPES = ((32, 10), (256, 10), (1024, 100), (4096, 1000))
TAUS = ("ema",)
TARGET_OPS = 40  # at 256×10, eager, float32, τ = EMA
TARGET_RATIO_SMALL = 2.0  # the same
TARGET_RATIO_LARGE = 1.1  # at 4096×1000


def make_criterion(name: str, classes: int) -> nn.Module:
    """``ce``, ``superloss-<tau>`` (λ = 1) or ``superloss-<tau>-auto`` (the automatic λ; also
    ``-auto-hold``); a ``-normalized`` suffix adds ``normalize=True``; ``log_classes`` uses the
    number of classes."""
    if name == "ce":
        return nn.CrossEntropyLoss()
    normalized = name.endswith("-normalized")
    tau, _, lam = name.removeprefix("superloss-").removesuffix("-normalized").partition("-")
    extra: dict[str, Any] = {"num_classes": classes} if tau == "log_classes" else {}
    if normalized:
        extra["normalize"] = True
    if lam:
        extra["lam"] = lam
    return SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau=tau, **extra)


def make_step(
    criterion: Callable[..., Tensor], logits: Tensor, target: Tensor, amp: bool
) -> Callable[[], None]:
    def step() -> None:
        logits.grad = None
        with step_overhead.autocast(logits.device, amp):
            loss = criterion(logits, target)
        loss.backward()

    return step


def count_ops(step: Callable[[], None], device: torch.device) -> tuple[int, int, int | None]:
    """(top-level ATen operations, all ATen operations, GPU kernels) of one call of ``step``.

    An ATen operation called by another is not top-level. Kernels are counted on CUDA only (None
    elsewhere): the launches a step costs.
    """
    for _ in range(3):
        step()
    step_overhead.synchronize(device)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as trace:
        step()
        step_overhead.synchronize(device)
    events = trace.events()
    aten = [event for event in events if event.name.startswith("aten::")]

    def top_level(event: Any) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return False
            parent = parent.cpu_parent
        return True

    kernels = None
    if device.type == "cuda":
        kernels = sum(1 for event in events if event.device_type == torch.autograd.DeviceType.CUDA)
    return sum(1 for event in aten if top_level(event)), len(aten), kernels


@dataclass
class Row:
    shape: tuple[int, int]
    mode: str  # eager | compiled
    precision: str  # float32 | bf16 autocast
    contestant: str
    ops: int
    all_ops: int
    kernels: int | None  # CUDA kernels (None off CUDA)
    us: float  # median wall µs per call
    ratio_wall: float
    ratio_cpu: float


def calls_for(batch: int, classes: int, device: torch.device) -> int:
    """Calls per timed block: a few milliseconds of work."""
    if device.type != "cpu":
        return 50
    return max(5, min(200, 2_000_000 // (batch * classes)))


def measure(
    device: torch.device,
    shapes: Sequence[tuple[int, int]],
    taus: Sequence[str],
    modes: Sequence[str],
    precisions: Sequence[bool],
    repeats: int,
    backend: str,
) -> list[Row]:
    rows = []
    # Every eager measurement comes before the first compilation: Inductor's kernels bring their
    # own OpenMP thread pool, whose spinning threads would slow eager ops down on a small machine.
    for mode in modes:
        for amp in precisions:
            for batch, classes in shapes:
                torch.manual_seed(0)
                logits = torch.randn(batch, classes, device=device, requires_grad=True)
                target = torch.randint(0, classes, (batch,), device=device)
                names = ["ce", *(f"superloss-{tau}" for tau in taus)]
                steps = {}
                for name in names:
                    criterion: Callable[..., Tensor] = make_criterion(name, classes).to(device)
                    if mode == "compiled":
                        criterion = torch.compile(
                            criterion, fullgraph=True, dynamic=False, backend=backend
                        )
                    steps[name] = make_step(criterion, logits, target, amp)
                ops = {name: count_ops(step, device) for name, step in steps.items()}
                calls = calls_for(batch, classes, device)
                for contestant in names[1:]:  # each against CE, the two taking turns
                    pair = {"ce": steps["ce"], contestant: steps[contestant]}
                    times = step_overhead.time_interleaved(
                        pair,
                        repeats=repeats,
                        warmup=max(3, calls // 10),
                        calls_per_repeat=calls,
                        device=device,
                    )
                    for name in (["ce"] if contestant == names[1] else []) + [contestant]:
                        samples = times[name]
                        rows.append(
                            Row(
                                (batch, classes),
                                mode,
                                "bf16 autocast" if amp else "float32",
                                name,
                                *ops[name],
                                1e6 * statistics.median(sample[0] for sample in samples),
                                *step_overhead.median_ratio(samples, times["ce"]),
                            )
                        )
    return rows


def layers(batch: int, classes: int, repeats: int) -> str:
    """Where SuperLoss's time goes, layer by layer, each layer against fused CE in one process.

    CE with ``reduction="none"`` and a separate mean; then SuperLoss's autograd Function on it (σ*,
    the values, the reduction and its backward) with a constant τ; then the module with τ = log C,
    with τ = EMA, and with the automatic λ. Eager, float32, on the CPU.
    """
    from superloss.functional import super_loss_parts

    torch.manual_seed(0)
    logits = torch.randn(batch, classes, requires_grad=True)
    target = torch.randint(0, classes, (batch,))
    per_sample = nn.CrossEntropyLoss(reduction="none")
    tau = torch.tensor(math.log(classes), dtype=torch.float64)
    losses: dict[str, Callable[[], Tensor]] = {
        "ce": lambda: nn.functional.cross_entropy(logits, target),
        "ce none + mean": lambda: per_sample(logits, target).mean(),
        "+ autograd Function": lambda: super_loss_parts(
            per_sample(logits, target), tau, 1.0, "mean"
        )[0],
    }
    for name in ("superloss-log_classes", "superloss-ema", "superloss-ema-auto"):
        module = make_criterion(name, classes)
        losses[f"module {name.removeprefix('superloss-')}"] = partial(module, logits, target)

    steps = {name: backward_step(logits, loss) for name, loss in losses.items()}
    title = f"Layers at {batch} x {classes} (eager, float32, CPU): us per call, x fused CE"
    return timed_table(title, steps, batch * classes, repeats, width=24)


def backward_step(logits: Tensor, loss: Callable[[], Tensor]) -> Callable[[], None]:
    """One training-step loss: ``loss()`` forward, then backward into ``logits``."""

    def step() -> None:
        logits.grad = None
        loss().backward()

    return step


def timed_table(
    title: str, calls: dict[str, Callable[[], None]], size: int, repeats: int, width: int
) -> str:
    """The calls timed in turns on the CPU: µs per call and the ratio to the ``ce`` call's time."""
    per_repeat = calls_for(size, 1, torch.device("cpu"))
    times = step_overhead.time_interleaved(
        calls,
        repeats=repeats,
        warmup=per_repeat,
        calls_per_repeat=per_repeat,
        device=torch.device("cpu"),
    )
    lines = [title]
    for name, samples in times.items():
        micros = 1e6 * statistics.median(sample[0] for sample in samples)
        ratio = step_overhead.median_ratio(samples, times["ce"])[0]
        lines.append(f"  {name:<{width}} {micros:9.1f} {ratio:7.2f}")
    return "\n".join(lines)


class _CompiledBody(torch.autograd.Function):
    """SuperLoss's autograd Function with its forward — σ*, the values and the reduction — run by
    one ``torch.compile``-generated kernel called from eager code (``--compiled-kernel``)."""

    body: Callable[..., tuple[Tensor, Tensor]] | None = None

    @staticmethod
    def forward(
        ctx: Any, working: Tensor, tau: Tensor, lam: float, reduction: str
    ) -> tuple[Tensor, Tensor]:
        assert _CompiledBody.body is not None
        result, sigma = _CompiledBody.body(working, tau, lam, reduction)
        ctx.save_for_backward(sigma)
        ctx.mark_non_differentiable(sigma)
        ctx.set_materialize_grads(False)
        ctx.mean_count = sigma.numel() if reduction == "mean" else 0
        return result, sigma

    backward = _SuperLoss.backward


def compiled_kernel(batch: int, classes: int, repeats: int, backend: str = "inductor") -> str:
    """Whether a kernel that ``torch.compile`` generates, called from eager code, cuts SuperLoss's
    per-call cost on the CPU: the fixed cost of a compiled call (a one-operation function) against
    the operation eager; SuperLoss's forward body eager (the float32 table) and compiled (one fused
    loop), under no_grad; and CE against the module with τ = EMA eager, with its Function's body
    compiled, and compiled whole on CE's per-sample losses (autograd through the compiled graph).
    Compilation is not timed; every contestant runs in the same process after it.
    """
    import superloss.loss

    torch.manual_seed(0)
    logits = torch.randn(batch, classes, requires_grad=True)
    target = torch.randint(0, classes, (batch,))
    per_sample = nn.CrossEntropyLoss(reduction="none")
    losses = per_sample(logits, target).detach()
    tau = torch.tensor(math.log(classes), dtype=torch.float64)

    def add_one(x: Tensor) -> Tensor:
        return x + 1.0

    def compiled(function: Callable[..., Any]) -> Any:
        return torch.compile(function, fullgraph=True, dynamic=False, backend=backend)

    compiled_add = compiled(add_one)
    _CompiledBody.body = compiled(reduced_and_confidence)
    with torch.no_grad():  # the same numbers both ways (the compiled graph: the elementwise plan)
        for eager, fused in zip(
            reduced_and_confidence(losses, tau, 1.0, "mean"),
            _CompiledBody.body(losses, tau, 1.0, "mean"),
            strict=True,
        ):
            torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-6)
    eager_module = make_criterion("superloss-ema", classes)
    patched_module = make_criterion("superloss-ema", classes)
    compiled_module = compiled(SuperLoss(tau="ema"))
    eager_parts = superloss.loss.super_loss_parts

    def with_compiled_body() -> Tensor:
        superloss.loss.super_loss_parts = _CompiledBody.apply  # type: ignore[assignment]
        try:
            return patched_module(logits, target)  # type: ignore[no-any-return]
        finally:
            superloss.loss.super_loss_parts = eager_parts

    step_of = partial(backward_step, logits)

    def no_grad(call: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                call()

        return run

    calls_ = {
        "x + 1 eager": no_grad(partial(add_one, losses)),
        "x + 1 compiled": no_grad(partial(compiled_add, losses)),
        "body eager": no_grad(partial(reduced_and_confidence, losses, tau, 1.0, "mean")),
        "body compiled": no_grad(partial(_CompiledBody.body, losses, tau, 1.0, "mean")),
        "ce": step_of(lambda: nn.functional.cross_entropy(logits, target)),
        "module ema": step_of(partial(eager_module, logits, target)),
        "module ema, body compiled": step_of(with_compiled_body),
        "module compiled on CE none": step_of(lambda: compiled_module(per_sample(logits, target))),
    }
    for call in calls_.values():  # compiles what is compiled, outside the clocks
        call()
    title = (
        f"Compiled kernels called from eager code at {batch} x {classes} (float32, CPU): "
        "us per call, x fused CE (forward + backward)"
    )
    return timed_table(title, calls_, batch * classes, repeats, width=28)


def format_table(rows: Sequence[Row]) -> str:
    header = (
        f"{'batch x classes':<15} {'mode':<8} {'precision':<13} {'loss':<21} {'ops':>4} "
        f"{'all ops':>7} {'kernels':>7} {'us/call':>9} {'x CE wall':>9} {'x CE cpu':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        shape = f"{row.shape[0]} x {row.shape[1]}"
        kernels = "-" if row.kernels is None else str(row.kernels)
        lines.append(
            f"{shape:<15} {row.mode:<8} {row.precision:<13} {row.contestant:<21} {row.ops:>4} "
            f"{row.all_ops:>7} {kernels:>7} {row.us:>9.1f} {row.ratio_wall:>9.2f} "
            f"{row.ratio_cpu:>8.2f}"
        )
    return "\n".join(lines)


def verdicts(rows: Sequence[Row]) -> list[str]:
    lines = []
    for row in rows:
        if (row.mode, row.precision, row.contestant) != ("eager", "float32", "superloss-ema"):
            continue
        if row.shape == (256, 10):
            ok = row.ops <= TARGET_OPS and row.ratio_wall <= TARGET_RATIO_SMALL
            lines.append(
                f"256 x 10: {row.ops} ops (target <= {TARGET_OPS}), x{row.ratio_wall:.2f} CE wall, "
                f"x{row.ratio_cpu:.2f} CPU time (target <= {TARGET_RATIO_SMALL}): "
                + ("met" if ok else "NOT met")
            )
        if row.shape == (4096, 1000):
            ok = row.ratio_wall <= TARGET_RATIO_LARGE
            lines.append(
                f"4096 x 1000: x{row.ratio_wall:.2f} CE wall, x{row.ratio_cpu:.2f} CPU time "
                f"(target <= {TARGET_RATIO_LARGE}): " + ("met" if ok else "NOT met")
            )
    return lines


def parse_shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for item in text.split(","):
        batch, _, classes = item.strip().partition("x")
        shapes.append((int(batch), int(classes)))
    return shapes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--taus",
        default=",".join(TAUS),
        help="thresholds of the SuperLoss rows (λ = 1); TAU-auto: with the automatic λ",
    )
    parser.add_argument("--shapes", default=",".join(f"{b}x{c}" for b, c in SHAPES))
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--no-amp", action="store_true", help="float32 only")
    parser.add_argument(
        "--compile-backend", default=None, help="default inductor; aot_eager with --quick on CPU"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 2 repeats")
    parser.add_argument(
        "--layers", action="store_true", help="also time SuperLoss layer by layer at each shape"
    )
    parser.add_argument(
        "--compiled-kernel",
        action="store_true",
        help="also time SuperLoss with its forward body compiled, called from eager code (CPU)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("small_batch: --device cuda but no CUDA device is available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shapes = parse_shapes(args.shapes)
    repeats = args.repeats
    if args.quick:
        shapes, repeats = [(8, 3)], 2
    taus = [tau.strip() for tau in args.taus.split(",") if tau.strip()]
    modes = ["eager"] if args.no_compile else ["eager", "compiled"]
    precisions = [False] if args.no_amp else [False, True]
    print(
        f"small_batch: {platform.machine()}, {os.cpu_count()} CPUs, device {device}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; {repeats} "
        f"repeats; load average {os.getloadavg()[0]:.2f} at start"
    )
    backend = args.compile_backend or (
        "aot_eager" if args.quick and device.type == "cpu" else "inductor"
    )
    rows = measure(device, shapes, taus, modes, precisions, repeats, backend)
    print(format_table(rows))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.quick:
        print("quick: a smoke run, too small to judge the targets")
    else:
        for line in verdicts(rows):
            print(line)
    if args.layers and device.type == "cpu":
        for batch, classes in shapes:
            print(layers(batch, classes, repeats))
    if args.compiled_kernel and device.type == "cpu":
        for batch, classes in shapes:  # last: compiling brings Inductor's thread pool
            print(compiled_kernel(batch, classes, repeats, backend))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What SuperLoss adds to a training step: CE vs SuperLoss(CE) vs the scipy path, per model.

A step is forward, loss, backward and an SGD step (momentum 0.9) on a fixed batch of random inputs
and labels already on the device. Configurations:

- ``ce``: ``nn.CrossEntropyLoss()``, the reference;
- ``superloss``: ``SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau="log_classes",
  num_classes=10)`` (λ = 1; ``--tau ema`` or ``global`` for a running threshold, ``ema-auto`` and
  the like for the automatic λ);
- ``superloss+tracker``: the same, then ``ConfidenceTracker.update(indices, σ, ℓ)`` after the step;
- ``scipy``: σ the way public implementations compute it — the detached loss is copied to the host
  (``.cpu().numpy()``), ``scipy.special.lambertw`` runs there, σ is copied back to the device and
  the same SL formula is applied. On CUDA that is a device → host copy and a synchronisation a step.

Models: ``cnn`` (the suite's small CNN, 1×28×28 inputs, batch 128) and ``resnet18`` (the suite's
CIFAR ResNet-18, 3×32×32 inputs, batch 256), 10 classes; ``--models mlp`` adds the suite's MNIST MLP
(batch 128), a model small enough for the loss's own cost to show. ``--batch 32,128,1024`` runs
every model at each of those batch sizes instead.

Timing: every configuration has its own model (same seed). One repeat runs ``--steps`` steps of
each configuration in turn, the order rotating between repeats, so that drifts in machine speed hit
all alike. Reported: the median step time over repeats, and the ratio to CE — the median over
repeats of (this configuration's time / CE's time in the same repeat) — in wall time and, on CPU,
in process CPU time (steadier on a shared machine). The "loss alone" columns time only the loss's
forward and backward on a fixed (batch × 10) logits tensor, many calls per repeat: a far less noisy
measure of what the loss adds, shown as a share of CE's step; after the table, what SuperLoss and
the scipy path each add to a step in µs (loss alone minus CE's loss alone).

    python benchmarks/step_overhead.py [--device cpu|cuda] [--models cnn,resnet18] [--repeats 20]
        [--warmup 3] [--steps N] [--batch B1,B2] [--tau log_classes|ema|global|ema-auto]
        [--threads N]
        [--compile] [--amp] [--breakdown] [--quick]

``--compile`` wraps model + loss in ``torch.compile`` (their backward is compiled with them; the
optimizer step and the tracker update stay eager);
``--amp`` runs forward and loss under bfloat16 autocast (SuperLoss computes σ in float32; bf16 needs
no gradient scaler). ``--breakdown`` adds the cost of SuperLoss's parts (Lambert W, σ, threshold,
bookkeeping) at the step's batch size. ``--quick`` is a smoke run with tiny sizes (for the tests).

Target (CPU, eager): SuperLoss adds at most 3% to the step.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superloss import SuperLoss
from superloss.bench.models.cnn import cnn
from superloss.bench.models.mlp import mlp
from superloss.bench.models.resnet import resnet18

try:  # the tracker is a newer part of the package
    from superloss.tracking import ConfidenceTracker
except ImportError:  # pragma: no cover - older checkouts
    ConfidenceTracker = None  # type: ignore[assignment,misc]

CLASSES = 10
TARGET = 1.03  # SuperLoss's step at most 3% slower than CE's (CPU, eager)
# The MLP, whose step is as short as a loss's fixed cost: SuperLoss at most 5% slower, 8% with the
# tracker.
MLP_TARGETS = {"superloss": 1.05, "superloss+tracker": 1.08}
CONFIGURATIONS = ("ce", "superloss", "superloss+tracker", "scipy")
REFERENCE = "ce"
SUPERLOSS_TAU = "log_classes"  # a constant τ, like the scipy path's; --tau changes it


@dataclass(frozen=True)
class Workload:
    """A model and the shape of its batch."""

    name: str
    build: Callable[[tuple[int, ...], int], nn.Module]
    input_shape: tuple[int, ...]
    batch: int
    dataset_size: int  # N of the tracker: the training-set size of the matching real dataset
    cpu_steps: int  # steps per timed block on CPU: about a second of work


WORKLOADS = {
    "cnn": Workload("cnn", cnn, (1, 28, 28), 128, 60_000, 2),
    "resnet18": Workload("resnet18", resnet18, (3, 32, 32), 256, 50_000, 1),
    # Not in the default set: the suite's MNIST model, small enough for the loss itself to show.
    "mlp": Workload("mlp", mlp, (1, 28, 28), 128, 60_000, 50),
}
DEFAULT_MODELS = "cnn,resnet18"


def available_configurations() -> tuple[str, ...]:
    """The configurations this checkout can run (the tracker and scipy are optional)."""
    names = ["ce", "superloss"]
    if ConfidenceTracker is not None:
        names.append("superloss+tracker")
    try:
        import scipy.special  # noqa: F401

        names.append("scipy")
    except ImportError:  # pragma: no cover - scipy is a dev dependency
        pass
    return tuple(names)


class ScipySuperLoss(nn.Module):
    """SuperLoss(CE) with σ from ``scipy.special.lambertw`` on the host, as public code does it.

    Same formula as :class:`superloss.SuperLoss` with a constant τ; σ makes a round trip
    device → host → device every call, and the clamp at −2/e is the textbook one.
    """

    def __init__(self, tau: float, lam: float = 1.0) -> None:
        super().__init__()
        self.tau, self.lam = tau, lam

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        import numpy as np
        import scipy.special

        loss = F.cross_entropy(logits, targets, reduction="none")
        half_beta = 0.5 * torch.clamp((loss.detach() - self.tau) / self.lam, min=-2.0 / math.e)
        w = scipy.special.lambertw(half_beta.cpu().numpy()).real
        sigma = torch.from_numpy(np.exp(-w).astype(np.float32)).to(loss.device)
        return ((loss - self.tau) * sigma + self.lam * torch.log(sigma) ** 2).mean()


def make_criterion(configuration: str, tau: str = SUPERLOSS_TAU) -> nn.Module:
    if configuration == "ce":
        return nn.CrossEntropyLoss()
    if configuration in ("superloss", "superloss+tracker"):
        tau, _, lam = tau.partition("-")  # TAU-auto: the automatic λ
        extra: dict[str, Any] = {"num_classes": CLASSES} if tau == "log_classes" else {}
        if lam:
            extra["lam"] = lam
        return SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau=tau, **extra)
    if configuration == "scipy":
        return ScipySuperLoss(math.log(CLASSES))
    raise ValueError(f"unknown configuration {configuration!r}; expected one of {CONFIGURATIONS}")


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on any device when ``amp`` (no gradient scaler needed)."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def make_optimizer(parameters: Any, variant: str = "default") -> Any:
    """SGD with momentum; ``variant``: ``default`` (torch's choice), ``foreach``, ``fused`` or
    ``for-loop`` (``foreach=False``)."""
    options: dict[str, Any] = {
        "default": {},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
        "for-loop": {"foreach": False},
    }[variant]
    return torch.optim.SGD(parameters, lr=0.01, momentum=0.9, **options)


@dataclass
class TrainingStep:
    """One configuration's training step on a fixed random batch; call it to run one step."""

    run: Callable[[], None]
    model: nn.Module
    criterion: nn.Module


def make_step(
    workload: Workload,
    configuration: str,
    device: torch.device,
    *,
    batch: int | None = None,
    compile: bool = False,
    amp: bool = False,
    optimizer: str = "default",
    seed: int = 0,
    tau: str = SUPERLOSS_TAU,
) -> TrainingStep:
    """A training step: forward, loss, backward, SGD step (+ tracker update for ``+tracker``)."""
    batch = workload.batch if batch is None else batch
    torch.manual_seed(seed)
    model = workload.build(workload.input_shape, CLASSES).to(device).train()
    criterion = make_criterion(configuration, tau).to(device)
    sgd = make_optimizer(model.parameters(), optimizer)
    inputs = torch.randn(batch, *workload.input_shape, device=device)
    targets = torch.randint(0, CLASSES, (batch,), device=device)

    def forward_loss(x: Tensor, y: Tensor) -> Tensor:
        loss: Tensor = criterion(model(x), y)
        return loss

    loss_of = torch.compile(forward_loss) if compile else forward_loss
    tracker = None
    if configuration == "superloss+tracker":
        if ConfidenceTracker is None:
            raise RuntimeError("superloss+tracker needs superloss.tracking.ConfidenceTracker")
        tracker = ConfidenceTracker(workload.dataset_size, device=device)
    # The batch's dataset indices: a slice of a fixed permutation, on the device like the batch.
    order = torch.randperm(workload.dataset_size, device=device)
    position = 0

    def run() -> None:
        nonlocal position
        sgd.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = loss_of(inputs, targets)
        loss.backward()
        sgd.step()
        if tracker is not None:
            indices = order[position : position + batch]
            position = (position + batch) % (workload.dataset_size - batch)
            tracker.update(indices, criterion.last_confidence, criterion.last_loss)

    return TrainingStep(run, model, criterion)


def make_loss_call(
    configuration: str,
    device: torch.device,
    batch: int,
    amp: bool = False,
    compile: bool = False,
    tau: str = SUPERLOSS_TAU,
) -> Callable[[], None]:
    """The loss alone: forward and backward of the criterion on fixed (batch × 10) logits."""
    torch.manual_seed(0)
    criterion: Callable[..., Tensor] = make_criterion(configuration, tau).to(device)
    if compile:
        criterion = torch.compile(criterion)
    logits = torch.randn(batch, CLASSES, device=device, requires_grad=True)
    targets = torch.randint(0, CLASSES, (batch,), device=device)

    def call() -> None:
        logits.grad = None
        with autocast(device, amp):
            loss = criterion(logits, targets)
        loss.backward()

    return call


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rotations(names: Sequence[str], repeats: int) -> Iterator[list[str]]:
    for repeat in range(repeats):
        shift = repeat % len(names)
        yield [*names[shift:], *names[:shift]]


def time_interleaved(
    calls: dict[str, Callable[[], None]],
    *,
    repeats: int,
    warmup: int,
    calls_per_repeat: int,
    device: torch.device,
) -> dict[str, list[tuple[float, float]]]:
    """Seconds per call, (wall, process CPU), for each repeat; the order rotates between repeats."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    synchronize(device)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for names in _rotations(list(calls), repeats):
        for name in names:
            call = calls[name]
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls_per_repeat):
                call()
            synchronize(device)
            elapsed = (time.perf_counter() - wall, time.process_time() - cpu)
            times[name].append((elapsed[0] / calls_per_repeat, elapsed[1] / calls_per_repeat))
    return times


def median_ratio(
    samples: list[tuple[float, float]], reference: list[tuple[float, float]]
) -> tuple[float, float]:
    """Median over repeats of sample / reference, in wall and in CPU time."""
    return (
        statistics.median(s[0] / r[0] for s, r in zip(samples, reference, strict=True)),
        statistics.median(s[1] / r[1] for s, r in zip(samples, reference, strict=True)),
    )


@dataclass
class Row:
    """One line of the table."""

    model: str
    batch: int
    configuration: str
    step_ms: float  # median wall time of a step
    ratio_wall: float  # median per-repeat ratio to CE
    ratio_cpu: float | None  # the same in process CPU time (CPU device only)
    loss_us: float | None  # median wall time of the loss's forward + backward alone
    loss_added_pct: float | None  # (loss alone − CE's loss alone) / CE's step, in percent
    loss_added_us: float | None = None  # loss alone − CE's loss alone


def measure(
    workload: Workload,
    device: torch.device,
    *,
    configurations: Sequence[str] | None = None,
    batch: int | None = None,
    repeats: int = 20,
    warmup: int = 3,
    steps: int | None = None,
    compile: bool = False,
    amp: bool = False,
    loss_calls: int = 200,
    tau: str = SUPERLOSS_TAU,
) -> list[Row]:
    """Time each configuration's training step and loss alone; one Row per configuration."""
    configurations = list(configurations or available_configurations())
    if REFERENCE not in configurations:
        configurations.insert(0, REFERENCE)
    batch = workload.batch if batch is None else batch
    if steps is None:
        steps = default_steps(workload, device, batch)
    step_calls = {
        name: make_step(workload, name, device, batch=batch, compile=compile, amp=amp, tau=tau).run
        for name in configurations
    }
    step_times = time_interleaved(
        step_calls, repeats=repeats, warmup=warmup, calls_per_repeat=steps, device=device
    )
    loss_times: dict[str, list[tuple[float, float]]] = {}
    if loss_calls > 0:
        loss_only = {
            name: make_loss_call(name, device, batch, amp, compile, tau)
            for name in configurations
            if name != "superloss+tracker"  # the tracker runs after the step, not in the loss
        }
        loss_times = time_interleaved(
            loss_only,
            repeats=repeats,
            warmup=max(warmup, 3),
            calls_per_repeat=loss_calls,
            device=device,
        )
    reference_step = statistics.median(t[0] for t in step_times[REFERENCE])
    reference_loss = statistics.median(t[0] for t in loss_times[REFERENCE]) if loss_times else None
    rows = []
    for name in configurations:
        wall_ratio, cpu_ratio = median_ratio(step_times[name], step_times[REFERENCE])
        loss_us = added = added_us = None
        if name in loss_times and reference_loss is not None:
            loss_seconds = statistics.median(t[0] for t in loss_times[name])
            loss_us = 1e6 * loss_seconds
            added = 100 * (loss_seconds - reference_loss) / reference_step
            added_us = 1e6 * (loss_seconds - reference_loss)
        rows.append(
            Row(
                workload.name,
                batch,
                name,
                1e3 * statistics.median(t[0] for t in step_times[name]),
                wall_ratio,
                cpu_ratio if device.type == "cpu" else None,
                loss_us,
                added,
                added_us,
            )
        )
    return rows


def default_steps(workload: Workload, device: torch.device, batch: int | None = None) -> int:
    """Steps per timed block: about a second of CPU work, or plenty of GPU kernels."""
    if device.type != "cpu":
        return 20
    batch = workload.batch if batch is None else batch
    return max(1, round(workload.cpu_steps * workload.batch / batch))


def format_table(rows: Sequence[Row]) -> str:
    header = (
        f"{'model':<9} {'batch':>5}  {'configuration':<18} {'step ms':>9} {'x CE wall':>9} "
        f"{'x CE cpu':>8} {'loss alone us':>13} {'loss adds':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        cpu = "-" if row.ratio_cpu is None else f"{row.ratio_cpu:.3f}"
        loss_us = "-" if row.loss_us is None else f"{row.loss_us:.0f}"
        added = "-" if row.loss_added_pct is None else f"{row.loss_added_pct:+.3f}%"
        lines.append(
            f"{row.model:<9} {row.batch:>5}  {row.configuration:<18} {row.step_ms:>9.2f} "
            f"{row.ratio_wall:>9.3f} {cpu:>8} {loss_us:>13} {added:>9}"
        )
    return "\n".join(lines)


# -- breakdown: what each part of SuperLoss costs ---------------------------------------------------


def breakdown(device: torch.device, batch: int, calls: int = 500, repeats: int = 15) -> str:
    """Median µs per call of SuperLoss's parts at ``batch`` losses, and what they add to CE.

    Forward + backward on (batch × 10) logits of: CE; CE per sample then ``.mean()``; the
    functional ``super_loss`` on CE per sample (no module); the module ``SuperLoss(CE)``. Forward
    alone, on the detached per-sample losses: ``lambertw``, ``confidence`` (β, clamp, W, exp) and
    ``super_loss_with_confidence`` (σ and the SL values). The differences between rows say what
    each layer costs.
    """
    from superloss.functional import confidence, super_loss, super_loss_with_confidence
    from superloss.lambertw import lambertw

    torch.manual_seed(0)
    tau = math.log(CLASSES)
    logits = torch.randn(batch, CLASSES, device=device, requires_grad=True)
    targets = torch.randint(0, CLASSES, (batch,), device=device)
    losses = F.cross_entropy(logits, targets, reduction="none").detach()
    half_beta = torch.clamp(0.5 * (losses - tau), min=-1 / math.e)
    module = SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau="log_classes", num_classes=10)
    module.to(device)

    def backward_of(make: Callable[[], Tensor]) -> Callable[[], None]:
        def call() -> None:
            logits.grad = None
            make().backward()

        return call

    def per_sample() -> Tensor:
        return F.cross_entropy(logits, targets, reduction="none")

    parts: dict[str, Callable[[], Any]] = {
        "ce": backward_of(lambda: F.cross_entropy(logits, targets)),
        "ce_mean": backward_of(lambda: per_sample().mean()),
        "functional": backward_of(lambda: super_loss(per_sample(), tau, 1.0)),
        "module": backward_of(lambda: module(logits, targets)),
        "lambertw": lambda: lambertw(half_beta),
        "confidence": lambda: confidence(losses, tau, 1.0),
        "with_confidence": lambda: super_loss_with_confidence(losses, tau, 1.0),
    }
    times = time_interleaved(
        parts, repeats=repeats, warmup=20, calls_per_repeat=calls, device=device
    )
    us = {name: 1e6 * statistics.median(t[0] for t in times[name]) for name in parts}
    shares = (
        ("CE per sample + .mean() instead of CE", us["ce_mean"] - us["ce"]),
        (f"lambertw of {batch} float32 values", us["lambertw"]),
        ("rest of sigma: beta, clamp, exp", us["confidence"] - us["lambertw"]),
        ("SL values (l - tau)*sigma + lam*W^2", us["with_confidence"] - us["confidence"]),
        (
            "autograd of SL + reduction",
            us["functional"] - us["ce_mean"] - us["with_confidence"],
        ),
        ("module: threshold, checks, .last_* records", us["module"] - us["functional"]),
    )
    lines = [
        f"SuperLoss's parts at batch {batch}: us per call, median of {repeats} repeats x {calls}",
        f"  {'CE fwd+bwd (reference)':<46} {us['ce']:8.1f}",
        f"  {'SuperLoss(CE) module fwd+bwd':<46} {us['module']:8.1f}",
        f"  {'SuperLoss adds, of which:':<46} {us['module'] - us['ce']:+8.1f}",
        *(f"    {name:<44} {value:+8.1f}" for name, value in shares),
    ]
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"of {', '.join(WORKLOADS)}")
    parser.add_argument(
        "--configurations",
        default=",".join(CONFIGURATIONS),
        help=f"of {', '.join(CONFIGURATIONS)} (ce is always run: the reference)",
    )
    parser.add_argument("--repeats", type=int, default=20, help="interleaved timed repeats")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per configuration")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steps per timed block (default: 10 cnn, 1 resnet18 on CPU; 20 on CUDA)",
    )
    parser.add_argument(
        "--batch",
        default=None,
        help="batch sizes, comma-separated, each run for every model (default: the model's own)",
    )
    parser.add_argument(
        "--tau",
        default=SUPERLOSS_TAU,
        choices=tuple(
            f"{tau}{lam}" for lam in ("", "-auto") for tau in ("log_classes", "ema", "global")
        ),
        help="SuperLoss's threshold (default log_classes, a constant like the scipy path's); "
        "TAU-auto: with the automatic λ instead of λ = 1",
    )
    parser.add_argument(
        "--loss-calls", type=int, default=200, help="loss-alone calls per repeat (0: skip)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile model + loss")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--breakdown", action="store_true", help="time SuperLoss's parts too")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: batch 8, 2 repeats, 1 warm-up step"
    )
    return parser


def run(args: argparse.Namespace) -> list[Row]:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("step_overhead: --device cuda but no CUDA device is available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in models if name not in WORKLOADS]
    if unknown:
        raise SystemExit(
            f"step_overhead: unknown model(s) {unknown}; expected of {list(WORKLOADS)}"
        )
    wanted = [name.strip() for name in args.configurations.split(",") if name.strip()]
    possible = available_configurations()
    for name in wanted:
        if name not in CONFIGURATIONS:
            raise SystemExit(f"step_overhead: unknown configuration {name!r}")
        if name not in possible:
            print(f"skipped: {name} (not available in this environment)")
    configurations = [name for name in wanted if name in possible]
    batches: list[int | None] = (
        [int(size) for size in args.batch.split(",") if size.strip()] if args.batch else [None]
    )
    repeats, warmup, steps = args.repeats, args.warmup, args.steps
    loss_calls = args.loss_calls
    if args.quick:
        repeats, warmup, steps, loss_calls = 2, 1, 1, min(loss_calls, 5)
        batches = [size or 8 for size in batches]
    mode = ("compiled" if args.compile else "eager") + (
        ", bf16 autocast" if args.amp else ", float32"
    )
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(
        f"Training-step overhead: device {device}{threads}, {mode}, torch {torch.__version__}; "
        f"{repeats} repeats, warm-up {warmup} steps; SuperLoss tau={args.tau}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    rows: list[Row] = []
    for name in models:
        workload = WORKLOADS[name]
        for batch in batches:
            rows += measure(
                workload,
                device,
                configurations=configurations,
                batch=batch,
                repeats=repeats,
                warmup=warmup,
                steps=steps,
                compile=args.compile,
                amp=args.amp,
                loss_calls=loss_calls,
                tau=args.tau,
            )
    print(format_table(rows))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.quick:
        print("quick: a smoke run, too small to judge the target")
    else:
        for line in verdicts(rows):
            print(line)
    if args.breakdown:
        sizes = {size or WORKLOADS[name].batch for name in models for size in batches}
        for batch_size in sorted(sizes):
            print()
            print(
                breakdown(
                    device,
                    batch_size,
                    calls=20 if args.quick else 500,
                    repeats=2 if args.quick else 15,
                )
            )
    return rows


def verdicts(rows: Sequence[Row]) -> list[str]:
    """The targets: the step ratio (3%; the MLP 5%, with the tracker 8%) and SuperLoss's added
    time per step against the scipy path's."""
    lines = []
    by_key = {(row.model, row.batch, row.configuration): row for row in rows}
    for row in rows:
        key = (row.model, row.batch)
        if row.configuration in ("superloss", "superloss+tracker"):
            target = TARGET
            if row.model == "mlp":
                target = MLP_TARGETS[row.configuration]
            verdict = "met" if row.ratio_wall <= target else "NOT met"
            lines.append(
                f"{row.model} b{row.batch}: {row.configuration} step / CE step = "
                f"{row.ratio_wall:.3f} (wall)"
                + ("" if row.ratio_cpu is None else f", {row.ratio_cpu:.3f} (CPU time)")
                + f"; target <= {target:.2f}: {verdict}"
            )
        scipy = by_key.get((*key, "scipy"))
        if row.configuration == "superloss" and scipy is not None:
            if row.loss_added_us is None or scipy.loss_added_us is None:
                continue
            verdict = "met" if row.loss_added_us <= scipy.loss_added_us else "NOT met"
            lines.append(
                f"{row.model} b{row.batch}: SuperLoss adds {row.loss_added_us:.0f} us a step, "
                f"the scipy path {scipy.loss_added_us:.0f} us; target <= scipy's: {verdict}"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())

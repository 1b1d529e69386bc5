"""Overhead of ConfidenceTracker.update on a small-CNN training step with SuperLoss.

A step: forward of a small CNN on a batch of 128 random 1×28×28 images (10 classes), SuperLoss over
cross-entropy, backward, SGD. The same step of the same model is timed without and with
``tracker.update(indices, σ, ℓ)``, in interleaved blocks (the order alternates) so that drifts in
machine speed hit both alike; the overhead is the median over block pairs of
(time with tracker / time without − 1), in wall time and in process CPU time (the latter is
steadier on a shared machine; on CUDA read wall time). ``--noise`` times the same way with the
tracker off in both arms, which gives the measurement's noise floor. Since on a busy machine that
floor can exceed the overhead itself, the time spent inside ``update`` during the tracked steps is
also measured directly (mean over all steps, flushes included) and reported as a share of a step.

    python benchmarks/tracker_overhead.py [--device cuda] [--blocks 15] [--steps 32] [--threads 1]

The tracker buffers 4096 observations (32 steps here) between flushes to its table; a block of 32
steps therefore holds one flush, so the per-block ratio includes its amortised cost.

Target: at most 2% overhead.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from superloss import ConfidenceTracker, SuperLoss

BATCH, CLASSES, DATASET_SIZE = 128, 10, 60_000


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, CLASSES),
    )


def make_step(device: torch.device) -> tuple[Callable[[bool], None], list[float]]:
    """One training setup: step(track) trains one batch, recording it if ``track``.

    Also returns [wall seconds, CPU seconds, calls] spent in ``tracker.update``, updated in place.
    """
    torch.manual_seed(0)
    model = small_cnn().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau="log_classes", num_classes=10)
    tracker = ConfidenceTracker(DATASET_SIZE, device=device)
    inputs = torch.randn(BATCH, 1, 28, 28, device=device)
    targets = torch.randint(0, CLASSES, (BATCH,), device=device)
    order = torch.randperm(DATASET_SIZE)  # indices come from the (CPU) data loader
    position = 0
    in_update = [0.0, 0.0, 0.0]

    def step(track: bool) -> None:
        nonlocal position
        indices = order[position : position + BATCH]
        position = (position + BATCH) % (DATASET_SIZE - BATCH)
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(inputs), targets)
        loss.backward()
        optimizer.step()
        if track:
            assert criterion.last_confidence is not None
            wall, cpu = time.perf_counter(), time.process_time()
            tracker.update(indices, criterion.last_confidence, criterion.last_loss)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            in_update[0] += time.perf_counter() - wall
            in_update[1] += time.process_time() - cpu
            in_update[2] += 1

    return step, in_update


def time_steps(step: Callable[[], None], steps: int, device: torch.device) -> tuple[float, float]:
    """Seconds a step: (wall, process CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def time_update_alone(device: torch.device, steps: int) -> tuple[float, float]:
    """Seconds an update (flushes included) with nothing else running: a warm-cache lower bound."""
    tracker = ConfidenceTracker(DATASET_SIZE, device=device)
    confidence = torch.rand(BATCH, device=device) * 2.7
    loss = torch.rand(BATCH, device=device) * 5
    order = torch.randperm(DATASET_SIZE)
    position = 0

    def step() -> None:
        nonlocal position
        tracker.update(order[position : position + BATCH], confidence, loss)
        position = (position + BATCH) % (DATASET_SIZE - BATCH)

    time_steps(step, steps, device)  # warm-up
    return time_steps(step, steps * 10, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--blocks", type=int, default=15, help="interleaved repeats")
    parser.add_argument("--steps", type=int, default=32, help="training steps per timed block")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--noise", action="store_true", help="tracker off in both arms (A/A)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    step, in_update = make_step(device)
    arms = {"without": False, "with": not args.noise}
    for track in arms.values():  # warm-up
        time_steps(lambda track=track: step(track), args.steps, device)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    for block in range(args.blocks):
        order = ("without", "with") if block % 2 == 0 else ("with", "without")
        for name in order:
            track = arms[name]
            times[name].append(time_steps(lambda track=track: step(track), args.steps, device))
    update_wall, update_cpu = time_update_alone(device, args.steps)
    calls = max(in_update[2], 1.0)

    print(
        f"device {device}, {torch.get_num_threads()} threads, batch {BATCH}, N = {DATASET_SIZE}, "
        f"{args.blocks} blocks of {args.steps} steps{' — A/A noise check' if args.noise else ''}"
    )
    for clock, column, update in (("wall", 0, update_wall), ("cpu", 1, update_cpu)):
        inside = in_update[column] / calls
        without = [sample[column] for sample in times["without"]]
        with_tracker = [sample[column] for sample in times["with"]]
        ratio = statistics.median(w / b for w, b in zip(with_tracker, without, strict=True))
        base, tracked_median = statistics.median(without), statistics.median(with_tracker)
        print(
            f"{clock:>4}: step {1e3 * base:.3f} ms without, {1e3 * tracked_median:.3f} ms with"
            f" tracker; ratio (median over blocks) {ratio:.4f} ({100 * (ratio - 1):+.2f}%)\n"
            f"      inside training, update takes {1e3 * inside:.3f} ms a step"
            f" = {100 * inside / base:.2f}% of a step; alone (warm) {1e3 * update:.3f} ms"
        )


if __name__ == "__main__":
    main()

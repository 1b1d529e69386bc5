"""The automatic λ through one of the suite's own runs: λ per training step, summarised per epoch.

``experiments/auto_lambda_trace.py`` traces λ in a small loop of its own; this script runs the
suite's classification run unchanged (``superloss.bench.runner``) and reads λ and τ from every
SuperLoss module's training calls through a global forward hook, then prints, every ``--every``
epochs, the clean test and noisy validation accuracy with the median (and range) of that epoch's λ,
and the two groups the automatic λ reads at the epoch's end (the high group's share, each group's
mean ± standard deviation).

    python experiments/auto_lambda_suite_trace.py --dataset digits --noise 0.4
    python experiments/auto_lambda_suite_trace.py --dataset digits --noise 0.4 --lowest-factor 1e-6
    python experiments/auto_lambda_suite_trace.py --dataset digits --noise 0.4 --lam auto-hold
    python experiments/auto_lambda_suite_trace.py --dataset digits --noise 0 --lam auto-hold --lr 0.02
    python experiments/auto_lambda_suite_trace.py --dataset digits --noise 0.6 --lam auto-hold --normalize
    python experiments/auto_lambda_suite_trace.py --dataset mnist --train-size 10000 --noise 0.8 \\
        --lam auto-hold --normalize --every 1 --steps 80

``--lowest-factor`` sets the automatic λ's floor in units of S (the shipped floor is 1/(2e));
``--lam auto-hold`` traces the held λ (``SuperLoss(lam="auto-hold")``) and its held ratio q*.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
from typing import Any

import torch
from torch import nn

from superloss import SuperLoss
from superloss.auto_lambda import AutoLambda
from superloss.bench import runner
from superloss.bench.presets import Sweep


def describe_groups(means: list[float]) -> str:
    """The high group's share and each group's mean ± std from the running means
    [1, ℓ, ℓ², h, hℓ, hℓ²]."""
    total, sum_, squares, high, high_sum, high_squares = means
    low = total - high
    parts = [f"high share {high / total:.3f}"]
    for name, count, first, second in (
        ("low", low, sum_ - high_sum, squares - high_squares),
        ("high", high, high_sum, high_squares),
    ):
        if count <= 0:
            parts.append(f"{name} empty")
            continue
        mean = first / count
        parts.append(f"{name} {mean:.2f} ± {math.sqrt(max(second / count - mean * mean, 0.0)):.2f}")
    return "  ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--noise-type", default="symmetric")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--lowest-factor", type=float, default=None)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument(
        "--steps", type=int, default=0, help="also print the first N training steps one by one"
    )
    parser.add_argument("--lam", choices=("auto", "auto-hold"), default="auto")
    parser.add_argument("--lr", type=float, default=None, help="the learning rate (the preset's)")
    parser.add_argument(
        "--normalize", action="store_true", help="SuperLoss(normalize=True); prints m too"
    )
    args = parser.parse_args()
    if args.lowest_factor is not None:
        AutoLambda.lowest_factor = args.lowest_factor  # every AutoLambda of this process
    settings = {"noise_type": args.noise_type, "train_size": args.train_size}
    sweep = Sweep("classification", args.dataset, ("superloss",), (args.noise,), 1, settings)
    config = dataclasses.replace(
        sweep.configs()[0],
        seed=args.seed,
        method_params={"lam": args.lam, **({"normalize": True} if args.normalize else {})},
    )
    if args.lr is not None:
        config = dataclasses.replace(config, lr=args.lr)
    steps: list[tuple[float, float]] = []
    groups: list[str] = []
    batches: list[str] = []

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(module, SuperLoss) and module.training and module.last_lam is not None:
            steps.append((float(module.last_lam), float(module.last_tau)))  # type: ignore[arg-type]
            assert module.auto_lambda is not None
            state = module.auto_lambda
            held = f"  held q* {float(state.held):.4f}" if state.hold else ""
            scale = module.confidence_scale
            mean = f"  m {float(scale.mean):.3f}" if scale is not None else ""
            groups.append(describe_groups(state.statistics.tolist()) + held + mean)
            if len(batches) < args.steps:
                loss, confidence = module.last_loss, module.last_confidence
                assert loss is not None and confidence is not None
                batches.append(
                    f"batch loss {float(loss.mean()):.3f} ± {float(loss.std()):.3f}, below tau "
                    f"{float((loss < module.last_tau).float().mean()):.2f}, mean sigma "
                    f"{float(confidence.mean()):.3f}"
                )

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = runner.run(config).as_dict()
    finally:
        handle.remove()
    for step, batch in enumerate(batches):
        lam, tau = steps[step]
        print(f"step {step + 1:4d}: lambda {lam:.4f}  tau {tau:.3f}  {batch}  {groups[step]}")
    per_epoch = len(steps) // config.epochs
    print(f"{config.dataset}, {config.noise_type} noise {config.noise}, seed {config.seed}: "
          f"{per_epoch} steps per epoch")  # fmt: skip
    for epoch in [*range(0, config.epochs, args.every), config.epochs - 1]:
        lams = [lam for lam, _ in steps[epoch * per_epoch : (epoch + 1) * per_epoch]]
        entry = result["history"][epoch]
        print(
            f"epoch {epoch + 1:3d}: test {entry['accuracy']:5.1f}  noisy validation "
            f"{entry['val_accuracy']:5.1f}  lambda median {statistics.median(lams):.4f} "
            f"[{min(lams):.4f}, {max(lams):.4f}]  tau {steps[(epoch + 1) * per_epoch - 1][1]:.3f}"
            f"  {groups[(epoch + 1) * per_epoch - 1]}"
        )
    print(f"selected {result['selected']['accuracy']:.2f}, final {result['final']['accuracy']:.2f}")


if __name__ == "__main__":
    main()

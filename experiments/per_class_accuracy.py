"""Which classes a classification run of the suite learned: the final model's clean test accuracy
per class, and the training step at which SuperLoss's automatic λ started weighing (its
``wait``), with the per-class accuracy of the model at that step.

The run is the suite's own (``superloss bench classification`` with the same settings, through
:func:`superloss.bench.engine.fit`), seed by seed; the start is read from the automatic λ's
``started`` buffer after every training step, and the model is evaluated then (in eval mode,
without gradients: the run's own trajectory is unchanged). Written to trace SuperLoss around a
bounded base loss under heavy noise, where seeds ended with whole classes at 0 % (docs/results.md,
"0.5.0"):

    python experiments/per_class_accuracy.py --base gce --noise 0.6 --seeds 10
    python experiments/per_class_accuracy.py --dataset mnist --train-size 10000 --base gce \
        --noise 0.4
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from superloss.auto_lambda import AutoLambda
from superloss.bench import engine
from superloss.bench.config import RunConfig
from superloss.bench.presets import DATASET_DEFAULTS
from superloss.bench.tasks.base import StepOutput, TaskData
from superloss.bench.tasks.classification import Classification


def per_class_accuracy(predicted: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Accuracy (%) of ``predicted`` on each class present in ``targets``, in class order."""
    return [
        100.0 * float((predicted[targets == c] == c).float().mean())
        for c in range(int(targets.max()) + 1)
    ]


def evaluate_per_class(task: Classification, model: nn.Module, data: TaskData) -> list[float]:
    """``model``'s clean test accuracy per class, in eval mode and without gradients; the model's
    mode is restored."""
    training = model.training
    model.eval()
    with torch.no_grad():
        predicted = task.predict(model, data.test_inputs).argmax(1)
    model.train(training)
    return per_class_accuracy(predicted, data.test_targets)


def run_traced(config: RunConfig) -> tuple[list[float], list[float], dict[str, float], int | None]:
    """One run of ``config``: the accuracy per class of its model when the automatic λ started
    weighing (empty if it never did) and at the end, its record's selected and final accuracy,
    and that training step (1-based; None: never, or no automatic λ that waits)."""
    task = Classification(config)
    data = task.prepare()
    trainers: list[engine.Trainer] = []
    build_trainer = engine.build_trainer
    seen = 0
    started: int | None = None
    at_start: list[float] = []

    def keep_trainer(*args: Any) -> engine.Trainer:
        trainers.append(build_trainer(*args))
        return trainers[-1]

    def observe(indices: torch.Tensor, output: StepOutput) -> None:
        nonlocal seen, started
        seen += 1
        trainer = trainers[-1]
        waits = [m for m in trainer.method.modules() if isinstance(m, AutoLambda) and m.wait]
        if started is None and any(bool(m.started) for m in waits):
            started = seen
            at_start.extend(evaluate_per_class(task, trainer.model, data))

    engine.build_trainer = keep_trainer  # type: ignore[assignment]
    try:
        model, record = engine.fit(config, task, data, observer=observe)
    finally:
        engine.build_trainer = build_trainer
    accuracy = {"selected": record.selected["accuracy"], "final": record.final["accuracy"]}
    at_end = evaluate_per_class(task, model, data)
    return at_start, at_end, accuracy, started


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument(
        "--base", default="task", help="the superloss method's base: task, gce, sce"
    )
    parser.add_argument("--noise", type=float, default=0.6)
    parser.add_argument("--noise-type", default="symmetric")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    for seed in range(args.seeds):
        config = RunConfig(
            dataset=args.dataset,
            method="superloss",
            method_params={"base": args.base},
            noise=args.noise,
            noise_type=args.noise_type,
            seed=seed,
            train_size=args.train_size,
            **DATASET_DEFAULTS.get(args.dataset, {}),
        )
        at_start, at_end, accuracy, started = run_traced(config)
        lost = [c for c, a in enumerate(at_end) if a == 0.0]
        print(
            f"seed {seed}: selected {accuracy['selected']:.2f}, final {accuracy['final']:.2f}, "
            f"weighting started at step {started}; classes at 0 % at the end: {lost or 'none'}",
            flush=True,
        )
        print("  per class at the start:", " ".join(f"{a:.1f}" for a in at_start) or "—")
        print("  per class at the end:  ", " ".join(f"{a:.1f}" for a in at_end))


if __name__ == "__main__":
    main()

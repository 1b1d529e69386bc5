"""The task contract, used by the one training loop in ``runner.py``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from superloss.bench.config import RunConfig
from superloss.bench.methods.base import Method


@dataclass
class TaskData:
    """Noisy training/validation targets, clean test targets, and which training targets were corrupted."""

    train_inputs: Tensor
    train_targets: Tensor
    corrupted: Tensor  # bool, one per training sample
    val_inputs: Tensor
    val_targets: Tensor
    test_inputs: Tensor
    test_targets: Tensor
    input_shape: tuple[int, ...]
    outputs: int
    num_classes: int | None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_train(self) -> int:
        return int(self.train_inputs.shape[0])


class Task:
    """A task: ``prepare`` (data with noise), ``base_loss`` (per sample), ``evaluate`` (metrics).

    Task-specific options (e.g. regression's base loss) are declared by ``add_arguments`` on the
    command line and travel in ``RunConfig.task_params``.
    """

    name: ClassVar[str]
    metric: ClassVar[str]  # the primary metric, reported in tables and plots
    higher_is_better: ClassVar[bool] = True
    default_methods: ClassVar[str] = "plain,superloss"  # the command line's --methods default
    default_noise_type: ClassVar[str] = "symmetric"  # the command line's --noise-type default
    default_noise: ClassVar[str] = "0,0.2,0.4,0.6"  # the command line's --noise default
    # The names --methods takes when the task runs its own approaches (see ``run``) rather than one
    # registered method per run; None: the registered methods.
    methods: ClassVar[tuple[str, ...] | None] = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the task's own command-line options (their values go to ``task_params``)."""

    def task_params(self, args: argparse.Namespace) -> dict[str, Any]:
        """The task's options from parsed arguments; raise ValueError on a bad value."""
        return {}

    def run(
        self, config: RunConfig, on_epoch: Callable[[int, dict[str, float]], None] | None = None
    ) -> dict[str, Any] | None:
        """The whole run's result record, for a task whose run is not one training run of the
        runner's loop (it trains through ``runner.fit`` itself); None, the default: the runner
        trains ``config`` with ``config.method``."""
        return None

    def make_base_loss(self, config: RunConfig) -> Callable[[Tensor, Tensor], Tensor]:
        """The per-sample base loss for ``config`` (methods wrap or replace it)."""
        return self.base_loss

    def prepare(self, config: RunConfig) -> TaskData:
        raise NotImplementedError

    def base_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> dict[str, float]:
        raise NotImplementedError

    def training_loss(
        self, model: nn.Module, method: Method, inputs: Tensor, targets: Tensor, indices: Tensor
    ) -> Tensor:
        """The scalar loss of one training batch; tasks with their own model plumbing override it."""
        loss: Tensor = method(model(inputs), targets, indices)
        return loss

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Tensor, batch_size: int = 1024) -> Tensor:
        return torch.cat(
            [model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
        )

"""The method contract: one training loss per batch, from the model's outputs and the batch's targets.

A method is built with a :class:`MethodContext` (the task's per-sample base loss, number of classes,
training-set size, epochs) and its hyper-parameters. ``defaults`` lists every hyper-parameter with its
value, set before any result was seen; the class docstring says where each value comes from. The command
line exposes each as ``--METHOD-PARAM`` (``--superloss-lam 0.25``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from superloss.bench.registry import METHODS


@dataclass
class MethodContext:
    task: str
    base_loss: Callable[[Tensor, Tensor], Tensor]  # per-sample loss of the task, e.g. CE (none)
    num_classes: int | None
    num_train: int
    epochs: int


class Method(nn.Module):
    defaults: ClassVar[dict[str, Any]] = {}
    # Tasks the method applies to; None means any task (it only uses the base per-sample loss).
    tasks: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, context: MethodContext, **params: Any) -> None:
        super().__init__()
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"unknown hyper-parameter(s) {sorted(unknown)} for {type(self).__name__}; "
                f"expected {sorted(self.defaults)}"
            )
        self.context = context
        self.params = {**self.defaults, **params}
        # The last batch's per-sample weights (σ for SuperLoss), for histograms and tracking.
        self.sample_weights: Tensor | None = None
        # The last batch's per-sample losses, detached: the task's base loss ℓ where the method sets
        # it (SuperLoss does), otherwise the method's own per-sample loss.
        self.sample_losses: Tensor | None = None

    def per_sample(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> Tensor:
        """The per-sample training losses of the batch (weights applied)."""
        raise NotImplementedError

    def forward(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> Tensor:
        self.sample_losses = None
        losses = self.per_sample(outputs, targets, indices)
        if self.sample_losses is None:
            self.sample_losses = losses.detach()
        return losses.sum() / max(losses.numel(), 1)

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch (0-based)."""

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimizers of the method's own parameters, stepped by the loop after the model's."""
        return []


def build_method(name: str, context: MethodContext, params: dict[str, Any]) -> Method:
    cls = METHODS.get(name)
    if cls.tasks is not None and context.task not in cls.tasks:
        raise ValueError(f"method {name!r} applies to {', '.join(cls.tasks)}, not {context.task!r}")
    method = cls(context, **params)
    assert isinstance(method, Method)
    return method

"""``ce`` / ``plain``: the task's plain per-sample loss (cross-entropy for classification), averaged.

Registered under both names: ``ce`` reads naturally for classification, ``plain`` for other tasks.
"""

from __future__ import annotations

from torch import Tensor

from superloss.bench.methods.base import METHODS, Method, MethodOutput


@METHODS.register("ce", "plain")
class PlainLoss(Method):
    name = "ce"

    def forward(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> MethodOutput:
        return MethodOutput(self.context.base_loss(outputs, targets))

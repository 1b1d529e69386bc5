"""``ce`` / ``plain``: the task's plain per-sample loss (cross-entropy for classification), averaged.

Registered under both names: ``ce`` reads naturally for classification, ``plain`` for other tasks.
"""

from __future__ import annotations

from torch import Tensor

from superloss.bench.methods.base import Method
from superloss.bench.registry import METHODS


@METHODS.register("plain")
@METHODS.register("ce")
class PlainLoss(Method):
    def per_sample(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> Tensor:
        return self.context.base_loss(outputs, targets)

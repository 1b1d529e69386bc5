"""``superloss``: SuperLoss on the task's per-sample loss.

Hyper-parameters, fixed before any result was seen:
- ``lam`` = 0.25: the value a public CIFAR-100 reimplementation uses, and the one of an earlier quick
  check on digits/MNIST with an MLP (see shared notes); the paper tunes λ per dataset.
- ``tau`` = "auto": log C for classification (the paper's constant threshold, the loss of a uniform
  prediction), an exponential moving average elsewhere (the loss scale is not known in advance).
  Any number, "ema" or "global" may be given instead.
- ``ema_past_weight`` = 0.9 (every public implementation).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from superloss.bench.methods.base import Method, MethodContext
from superloss.bench.registry import METHODS
from superloss.loss import SuperLoss


@METHODS.register("superloss")
class SuperLossMethod(Method):
    defaults: ClassVar[dict[str, Any]] = {"lam": 0.25, "tau": "auto", "ema_past_weight": 0.9}

    def __init__(self, context: MethodContext, **params: Any) -> None:
        super().__init__(context, **params)
        tau = self.params["tau"]
        if tau == "auto":
            tau = "log_classes" if context.num_classes else "ema"
        self.criterion = SuperLoss(
            tau=tau,
            lam=float(self.params["lam"]),
            reduction="none",
            num_classes=context.num_classes if tau == "log_classes" else None,
            ema_past_weight=float(self.params["ema_past_weight"]),
        )

    last_tau: Tensor | None = None

    def per_sample(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> Tensor:
        losses: Tensor = self.criterion(self.context.base_loss(outputs, targets))
        self.sample_weights = self.criterion.last_confidence
        self.sample_losses = self.criterion.last_loss
        self.last_tau = self.criterion.last_tau
        return losses

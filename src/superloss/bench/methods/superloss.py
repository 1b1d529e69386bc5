"""``superloss``: SuperLoss on the task's per-sample loss."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from superloss.bench.methods.base import METHODS, Method, MethodContext, MethodOutput
from superloss.bench.options import option
from superloss.loss import SuperLoss


@dataclass(frozen=True)
class SuperLossHyperParameters:
    lam: float | str = option(
        0.25,
        "regularisation λ; a public CIFAR-100 reimplementation's, and an earlier digits/MNIST "
        "check's; auto: SuperLoss's own choice",
        choices=("auto",),
        low=0.0,
        low_open=True,
    )
    tau: float | str = option(
        "auto",
        "threshold: a number, ema, global, log_classes, or auto (log C for classification, else ema)",
        choices=("auto", "log_classes", "ema", "global"),
    )
    ema_past_weight: float = option(
        0.9, "weight of the past τ in the EMA; every public implementation", low=0.0, high=1.0,
        high_open=True,
    )  # fmt: skip


@METHODS.register("superloss")
class SuperLossMethod(Method):
    """SuperLoss (:class:`superloss.SuperLoss`) on the task's per-sample loss.

    Hyper-parameters, fixed before any result was seen:
        lam: 0.25, the value a public CIFAR-100 reimplementation uses, and the one of an earlier
            quick check on digits/MNIST with an MLP (see shared notes); the paper tunes λ per dataset.
            "auto" hands the choice to :class:`superloss.SuperLoss`, where the core offers it
            (:meth:`check` asks the core before any run).
        tau: "auto": log C for classification (the paper's constant threshold, the loss of a uniform
            prediction), an exponential moving average elsewhere (the loss scale is not known in
            advance). Any number, "ema" or "global" may be given instead.
        ema_past_weight: 0.9 (every public implementation).
    """

    name = "superloss"
    hyper_parameters = SuperLossHyperParameters

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> Any:
        """The declaration's checks, then SuperLoss's own: it refuses what it cannot take."""
        hparams = super().check(params)
        tau = "ema" if isinstance(hparams.tau, str) else hparams.tau
        try:
            SuperLoss(tau=tau, lam=hparams.lam, ema_past_weight=hparams.ema_past_weight)
        except ValueError as error:
            raise ValueError(f"SuperLoss refuses {dict(params)}: {error}") from None
        return hparams

    def __init__(self, context: MethodContext, **params: Any) -> None:
        super().__init__(context, **params)
        tau = self.hparams.tau
        if tau == "auto":
            tau = "log_classes" if context.num_classes else "ema"
        self.criterion = SuperLoss(
            tau=tau,
            lam=self.hparams.lam if self.hparams.lam == "auto" else float(self.hparams.lam),
            reduction="none",
            num_classes=context.num_classes if tau == "log_classes" else None,
            ema_past_weight=float(self.hparams.ema_past_weight),
        )

    def forward(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> MethodOutput:
        losses: Tensor = self.criterion(self.context.base_loss(outputs, targets))
        return MethodOutput(
            losses,
            weights=self.criterion.last_confidence,
            task_losses=self.criterion.last_loss,
            tau=self.criterion.last_tau,
        )

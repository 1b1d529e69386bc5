"""``spl``: self-paced learning with hard weights, Kumar, Packer & Koller, NeurIPS 2010."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from superloss.bench.methods.base import METHODS, Method, MethodContext, MethodOutput
from superloss.bench.options import Grid, option


@dataclass(frozen=True)
class SPLHyperParameters:
    growth: float = option(
        1.3, "threshold factor per epoch; μ of Kumar, Packer & Koller (NeurIPS 2010)",
        low=0.0, low_open=True,
        grid=Grid(
            (1.1, 1.3, 1.5, 2.0),
            "μ = 1.3 of Kumar, Packer & Koller (NeurIPS 2010); 1.1 a slower, 1.5 and 2 faster "
            "schedules (at 2 every sample is in within a few epochs)",
        ),
    )  # fmt: skip
    start_fraction: float = option(
        0.5, "share selected at the start; half, as Kumar, Packer & Koller (NeurIPS 2010)",
        low=0.0, high=1.0,
    )  # fmt: skip


@METHODS.register("spl")
class SelfPacedLearning(Method):
    r"""Self-paced learning: train only on the samples whose loss is below a growing threshold.

    .. math::

        v_i = [\ell_i < \lambda_e], \qquad \tilde\ell_i = v_i\,\ell_i, \qquad
        \lambda_e = \lambda_0 \cdot \mathrm{growth}^{\,e}

    ℓ is the task's per-sample loss, e the 0-based epoch. λ₀ is the ``start_fraction`` quantile of
    the first training batch's losses (linear interpolation; the median by default), so about that
    fraction of the samples is selected at the start. It is kept as a buffer and set on the device,
    with no host synchronisation; it follows ``state_dict()``. The weights v (0. or 1.) are exposed
    as the output's ``weights``. Any task: only the base per-sample loss is used.

    Hyper-parameters, fixed before any result was seen (Kumar, Packer, Koller, "Self-Paced Learning
    for Latent Variable Models", NeurIPS 2010: K is initialised so that about half the samples are
    selected in the first iteration, and divided by μ = 1.3 at each iteration, i.e. the threshold
    1/K is multiplied by 1.3):
        growth: 1.3 (μ), applied once per epoch here (the paper grows it once per outer iteration).
        start_fraction: 0.5 (half the samples selected at the start).

    Example:
        >>> import torch
        >>> from superloss.bench.methods.base import MethodContext
        >>> context = MethodContext("regression", lambda o, t: (o - t) ** 2, None, 10, 3)
        >>> spl = SelfPacedLearning(context)
        >>> spl(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.zeros(4), torch.arange(4)).losses
        tensor([1., 4., 0., 0.])
        >>> spl.threshold()
        tensor(6.5000)
    """

    name = "spl"
    hyper_parameters = SPLHyperParameters
    tasks = None

    initial_threshold: Tensor

    def __init__(self, context: MethodContext, **params: Any) -> None:
        super().__init__(context, **params)
        self.growth = float(self.hparams.growth)
        self.start_fraction = float(self.hparams.start_fraction)
        self.epoch = 0
        # NaN until the first batch sets it.
        self.register_buffer("initial_threshold", torch.tensor(math.nan))

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def threshold(self) -> Tensor:
        """λ₀·growth^epoch; NaN before the first batch."""
        return self.initial_threshold * self.growth**self.epoch

    def forward(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> MethodOutput:
        losses = self.context.base_loss(outputs, targets)
        detached = losses.detach()
        if detached.numel() > 0:
            first = torch.quantile(detached.flatten().double(), self.start_fraction)
            start = torch.where(
                torch.isnan(self.initial_threshold),
                first.to(self.initial_threshold),
                self.initial_threshold,
            )
            self.initial_threshold.copy_(start)
        selected = (detached < self.threshold()).to(losses.dtype)
        return MethodOutput(selected * losses, weights=selected)

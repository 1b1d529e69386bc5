"""``spl``: self-paced learning with hard weights, Kumar, Packer & Koller, NeurIPS 2010."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from superloss.bench.methods.base import Method, MethodContext
from superloss.bench.registry import METHODS


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
    as ``sample_weights``. Any task: only the base per-sample loss is used.

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
        >>> spl.per_sample(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.zeros(4), torch.arange(4))
        tensor([1., 4., 0., 0.])
        >>> spl.threshold()
        tensor(6.5000)
    """

    defaults: ClassVar[dict[str, Any]] = {"growth": 1.3, "start_fraction": 0.5}
    tasks = None

    initial_threshold: Tensor

    def __init__(self, context: MethodContext, **params: Any) -> None:
        super().__init__(context, **params)
        self.growth = float(self.params["growth"])
        self.start_fraction = float(self.params["start_fraction"])
        if not (math.isfinite(self.growth) and self.growth > 0):
            raise ValueError(
                f"spl growth must be a finite number > 0, got {self.params['growth']!r}"
            )
        if not 0.0 <= self.start_fraction <= 1.0:
            raise ValueError(
                f"spl start_fraction must be in [0, 1], got {self.params['start_fraction']!r}"
            )
        self.epoch = 0
        # NaN until the first batch sets it.
        self.register_buffer("initial_threshold", torch.tensor(math.nan))

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def threshold(self) -> Tensor:
        """λ₀·growth^epoch; NaN before the first batch."""
        return self.initial_threshold * self.growth**self.epoch

    def per_sample(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> Tensor:
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
        self.sample_weights = selected
        return selected * losses

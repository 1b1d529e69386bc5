"""Thresholds τ for SuperLoss: a constant, an exponential moving average, or the global mean.

A running threshold is fed, once per training step, the statistics [Σℓ, n] of the batch's finite,
detached losses. Under ``torch.distributed`` those two numbers are all-reduced (summed) in
:func:`batch_statistics` — the one collective of the package — so every rank holds the same τ, equal
to the single-process τ over the union of the ranks' batches. Non-finite losses never enter the
statistics, so one NaN batch cannot poison τ for the rest of training; an empty batch leaves τ
unchanged.

State lives in buffers (float64 running sums), so ``state_dict``/``load_state_dict`` resume τ
exactly and ``.to(device)`` moves it. Nothing here reads a value back to the host.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "ConstantThreshold",
    "EMAThreshold",
    "GlobalMeanThreshold",
    "Threshold",
    "batch_statistics",
]


def _statistics_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def distributed_world_size() -> int:
    """Number of processes in the default group, 1 when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def batch_statistics(loss: Tensor, sync: bool = True) -> Tensor:
    """[Σℓ, n] over the finite elements of the detached ``loss``, summed over processes if ``sync``.

    Every rank must call this in the same steps when ``sync`` is on and torch.distributed is
    initialised, even with an empty batch (its contribution is [0, 0]).
    """
    detached = loss.detach().reshape(-1)
    stats_dtype = _statistics_dtype(detached.device)
    finite = torch.isfinite(detached)
    total = torch.where(finite, detached, torch.zeros_like(detached)).sum(dtype=stats_dtype)
    stats = torch.stack([total, finite.sum().to(stats_dtype)])
    if sync and distributed_world_size() > 1:
        dist.all_reduce(stats, op=dist.ReduceOp.SUM)
    return stats


def _mean_or(stats: Tensor, fallback: Tensor) -> Tensor:
    """Σℓ / n, or ``fallback`` where n = 0."""
    return torch.where(stats[1] > 0, stats[0] / stats[1].clamp_min(1.0), fallback)


class Threshold(nn.Module):
    """Base class: ``forward(stats, update)`` returns τ for this batch as a 0-dim tensor."""

    running: bool = True  # whether the threshold needs batch statistics

    def forward(self, stats: Tensor, update: bool) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class ConstantThreshold(Threshold):
    """A fixed τ, e.g. log C for cross-entropy over C classes (the loss of a uniform prediction)."""

    running = False
    tau: Tensor

    def __init__(self, value: float) -> None:
        super().__init__()
        self.register_buffer("tau", torch.tensor(float(value), dtype=torch.float64))

    def forward(self, stats: Tensor | None = None, update: bool = False) -> Tensor:
        return self.tau

    def extra_repr(self) -> str:
        return f"tau={self.tau.item():.6g}"


class EMAThreshold(Threshold):
    """τ ← past_weight·τ + (1 − past_weight)·mean(ℓ), initialised to the first batch's mean.

    ``past_weight`` is the weight kept by the previous τ (0.9 in every public implementation, i.e.
    the newest batch contributes 10%). Until the first training batch, τ is the current batch's
    mean.
    """

    tau: Tensor
    initialized: Tensor

    def __init__(self, past_weight: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= past_weight < 1.0:
            raise ValueError(
                "ema_past_weight must be in [0, 1) (the weight of the previous τ), "
                f"got {past_weight}"
            )
        self.past_weight = float(past_weight)
        self.register_buffer("tau", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, stats: Tensor, update: bool) -> Tensor:
        batch_mean = _mean_or(stats, self.tau)
        if not update:
            return torch.where(self.initialized, self.tau, batch_mean)
        blended = self.past_weight * self.tau + (1.0 - self.past_weight) * batch_mean
        updated = torch.where(self.initialized, blended, batch_mean)
        # An empty (or all non-finite) batch keeps τ bit for bit: blending τ with itself may round.
        self.tau.copy_(torch.where(stats[1] > 0, updated, self.tau))
        self.initialized.logical_or_(stats[1] > 0)
        return self.tau

    def extra_repr(self) -> str:
        return f"past_weight={self.past_weight}"


class GlobalMeanThreshold(Threshold):
    """τ = the mean of every finite loss seen in training so far (this batch included)."""

    total: Tensor
    count: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("total", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(0.0, dtype=torch.float64))

    def forward(self, stats: Tensor, update: bool) -> Tensor:
        if update:
            self.total.add_(stats[0])
            self.count.add_(stats[1])
            return _mean_or(torch.stack([self.total, self.count]), self.total)
        seen = torch.stack([self.total, self.count])
        return torch.where(self.count > 0, _mean_or(seen, self.total), _mean_or(stats, self.total))

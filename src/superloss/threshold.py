"""Thresholds τ for SuperLoss: a constant, an exponential moving average, or the global mean.

A running threshold is fed, once per training step, the statistics vector of the batch's finite,
detached losses: its slots ``SUM`` (Σℓ) and ``COUNT`` (n). The vector is built in one place,
:func:`finite_sums`, and under ``torch.distributed`` all-reduced (summed) in one place,
:func:`batch_statistics` — the one collective of the package — so every rank holds the same τ, equal
to the single-process τ over the union of the ranks' batches. Further per-sample quantities summed
over the batch can join the same vector and the same collective (``finite_sums(loss, *more)``
appends their sums after ``COUNT``). Non-finite losses never enter the statistics, so one NaN batch
cannot poison τ for the rest of training; an empty batch leaves τ unchanged.

State lives in buffers (float64 running sums), so ``state_dict``/``load_state_dict`` resume τ
exactly and ``.to(device)`` moves it; ``.half()``, ``.to(dtype)`` and autocast leave its dtype
alone. Nothing here reads a value back to the host.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from superloss.lambertw import _is_compiling, _scalar
from superloss.scalar_math import on_host

__all__ = [
    "COUNT",
    "SUM",
    "ConstantThreshold",
    "EMAThreshold",
    "GlobalMeanThreshold",
    "RunningState",
    "Threshold",
    "batch_statistics",
    "finite_sums",
]

# Slots of the statistics vector.
SUM, COUNT = 0, 1


def statistics_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def check_past_weight(value: float, name: str, previous: str) -> float:
    """``value`` as a float if it is a moving average's weight of the past, in [0, 1).

    Raises:
        ValueError: naming ``name`` and what the weight keeps (``previous``).
    """
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"{name} must be in [0, 1) (the weight of the previous {previous}), got {value}"
        )
    return float(value)


def distributed_world_size() -> int:
    """Number of processes in the default group, 1 when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


# The rows [ℓ, 1 + 0·ℓ] of a batch are one multiply-add with these columns: the second row is 1
# where ℓ is finite and NaN where it is not (0·±∞ = NaN), the first is ℓ itself.
_ROW_SCALE = ((1.0,), (0.0,))
_ROW_OFFSET = ((0.0,), (1.0,))
_ROW_CONSTANTS: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}


def _row_constants(like: Tensor) -> tuple[Tensor, Tensor]:
    key = (like.device, like.dtype)
    constants = _ROW_CONSTANTS.get(key)
    if constants is None:
        scale, offset = (
            torch.tensor(values, dtype=like.dtype, device=like.device)
            for values in (_ROW_SCALE, _ROW_OFFSET)
        )
        constants = _ROW_CONSTANTS[key] = (scale, offset)
    return constants


def finite_sums(loss: Tensor, *quantities: Tensor) -> Tensor:
    """[Σℓ, n, Σq₁, …]: Σℓ and n over the elements where ℓ is finite, each Σq over those where
    ℓ and q are finite; in float64 (float32 on MPS, which has no float64).

    ``loss`` is detached; each quantity has its shape. Three tensor operations for the loss alone,
    whatever its size.
    """
    flat = loss.reshape(-1) if loss.dim() != 1 else loss
    dtype = statistics_dtype(flat.device)
    if _is_compiling():
        # Inductor fuses either form into one loop. With this one, the graph's own loss values (a
        # cross-entropy before it, say) stay bit for bit those of eager mode; the form below made
        # some of them differ by an ulp there.
        finite = torch.isfinite(flat)
        sums = [torch.where(finite, flat, 0.0).sum(dtype=dtype), finite.sum().to(dtype)]
        for quantity in quantities:
            quantity = quantity.reshape(-1)
            kept = finite & torch.isfinite(quantity)
            sums.append(torch.where(kept, quantity, 0.0).sum(dtype=dtype))
        return torch.stack(sums)
    scale, offset = _row_constants(flat)
    rows = torch.addcmul(offset, scale, flat)  # [ℓ, 1 or NaN]
    if quantities:
        more = torch.stack([quantity.reshape(-1) for quantity in quantities]) * rows[COUNT]
        rows = torch.cat([rows, more])
    return rows.nan_to_num_(0.0, 0.0, 0.0).sum(1, dtype=dtype)


def all_reduce_statistics(stats: Tensor) -> Tensor:
    """Sum ``stats`` over the processes of an initialised torch.distributed (in place)."""
    if distributed_world_size() > 1:
        dist.all_reduce(stats, op=dist.ReduceOp.SUM)
    return stats


def batch_statistics(loss: Tensor, sync: bool = True) -> Tensor:
    """[Σℓ, n] over the finite elements of the detached ``loss``, summed over processes if ``sync``.

    Every rank must call this in the same steps when ``sync`` is on and torch.distributed is
    initialised, even with an empty batch (its contribution is [0, 0]).
    """
    stats = finite_sums(loss.detach() if loss.requires_grad else loss)
    return all_reduce_statistics(stats) if sync else stats


def _mean_or(stats: Tensor, fallback: Tensor) -> Tensor:
    """Σℓ / n, or ``fallback`` where n = 0."""
    return torch.where(stats[COUNT] > 0, stats[SUM] / stats[COUNT].clamp_min(1.0), fallback)


class RunningState(nn.Module):
    """A module whose buffers are running statistics: they keep their dtype (float64) when the
    module is converted to another one (``.half()``, ``.to(torch.bfloat16)``, ``.float()``). Only
    device moves apply to them, so no digit of the state is lost."""

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> RunningState:
        before = dict(self._buffers)
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        for name, old in before.items():
            new = self._buffers[name]
            if old is not None and new is not None and new.dtype != old.dtype:
                # Converted to another dtype: keep the old values and dtype, on the new device.
                self._buffers[name] = old.to(device=new.device)
        return self


class Threshold(RunningState):
    """Base class: ``forward(stats, update)`` returns τ for this batch as a 0-dim tensor.

    Every threshold has a ``tau`` attribute, τ as it stands after the last update (a 0-dim float64
    tensor). Training never changes the tensor ``forward`` returns (a constant's is its buffer).
    The state keeps its dtype under ``.half()`` and the like (:class:`RunningState`).
    """

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
        return self.tau  # never updated by training: no copy needed

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
        self.past_weight = check_past_weight(past_weight, "ema_past_weight", "τ")
        self.register_buffer("tau", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, stats: Tensor, update: bool) -> Tensor:
        if not update:
            return torch.where(self.initialized, self.tau, _mean_or(stats, self.tau))
        if on_host(stats) and self.tau.device.type == "cpu":
            return self._update_on_host(stats)
        old, initialized = self.tau, self.initialized
        total, count = stats.unbind()[: COUNT + 1]
        mean = total / count  # NaN for an empty batch: then never selected
        seen = count > _scalar(0.0, count)
        # The formula as written, so that τ is the textbook EMA to the last bit.
        weight = self.past_weight
        blended = old * _scalar(weight, old) + mean * _scalar(1.0 - weight, mean)
        # An empty (or all non-finite) batch keeps τ bit for bit: blending τ with itself may round.
        tau = torch.where(seen, torch.where(initialized, blended, mean), old)
        old.copy_(tau)
        initialized.logical_or_(seen)
        return tau

    def _update_on_host(self, stats: Tensor) -> Tensor:
        """The update on Python floats (:mod:`superloss.scalar_math`): the same bits, and a copy
        of the new τ (the buffer moves on at the next update)."""
        values = stats.tolist()
        count = values[COUNT]
        buffers = self._buffers  # read directly: nn.Module.__getattr__ is slow
        tau: Tensor = buffers["tau"]  # type: ignore[assignment]
        if count > 0:
            mean = values[SUM] / count
            initialized: Tensor = buffers["initialized"]  # type: ignore[assignment]
            if bool(initialized):
                weight = self.past_weight
                mean = tau.item() * weight + mean * (1.0 - weight)
            else:
                initialized.fill_(True)
            tau.fill_(mean)
        return tau.clone()

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

    @property
    def tau(self) -> Tensor:
        """The mean of the finite losses seen in training so far (0 before any)."""
        return self.total / self.count.clamp_min(1.0)

    def forward(self, stats: Tensor, update: bool) -> Tensor:
        if update:
            total, count = stats.unbind()[: COUNT + 1]
            self.total.add_(total)
            self.count.add_(count)
            return self.tau
        seen = torch.stack([self.total, self.count])
        return torch.where(self.count > 0, _mean_or(seen, self.total), _mean_or(stats, self.total))

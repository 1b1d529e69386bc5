"""The running state's arithmetic on Python floats, where that gives the same bits for less.

τ's moving average and the automatic λ's groups are a handful of float64 scalars per step. As
0-dim tensors each operation on them costs its dispatch (microseconds on a CPU, a kernel launch on a
GPU); on the CPU in eager mode, reading a tensor's value is a memory read rather than a device
synchronisation, and the same arithmetic on Python floats — IEEE float64, each operation correctly
rounded, as the tensors' is — gives the same bits in a fraction of the time. (One exception: torch's
CPU square root is sometimes an ulp off the correctly rounded one, which ``math.sqrt`` returns; the
automatic λ's floor takes one, so λ can differ from the tensor path's by that ulp.)
:func:`on_host` says where the floats are used. Elsewhere (CUDA, MPS, graphs being compiled) the
state stays on its device and the tensor path runs, unchanged.

A formula written once serves both: it takes its few non-arithmetic operations from a namespace,
:data:`FLOATS` or :data:`TENSORS`, and uses ``+ − × /`` and comparisons, which both kinds of number
have.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
from torch import Tensor

from superloss.lambertw import _is_compiling

__all__ = ["FLOATS", "TENSORS", "on_host"]

_FLOAT64_TINY = torch.finfo(torch.float64).tiny


def on_host(stats: Tensor) -> bool:
    """Whether the running state may be updated on Python floats: a plain float64 statistics vector
    on the CPU, outside a graph being compiled (which needs tensor operations to trace). Tensor
    subclasses (fake tensors of a tracer, distributed tensors) keep the tensor path."""
    return (
        type(stats) is Tensor
        and stats.device.type == "cpu"
        and stats.dtype == torch.float64
        and not _is_compiling()
    )


class _Floats:
    """``tiny``, ``where``, ``clamp_min``, ``minimum``, ``div``, ``sqrt`` with torch's semantics,
    on Python floats."""

    @staticmethod
    def tiny(value: float) -> float:
        return _FLOAT64_TINY

    @staticmethod
    def where(condition: Any, value: Any, other: Any) -> Any:
        return value if condition else other

    @staticmethod
    def clamp_min(value: float, low: float) -> float:
        # A NaN on either side gives NaN, as with torch.clamp_min.
        return low if value < low or low != low else value

    @staticmethod
    def minimum(value: float, other: float) -> float:
        # NaN on either side gives NaN, as with torch.minimum.
        if value != value or other != other:
            return math.nan
        return value if value <= other else other

    @staticmethod
    def div(value: float, by: float) -> float:
        if by != 0.0:
            return value / by
        if value != value or value == 0.0:  # NaN / 0 and 0 / 0: NaN
            return math.nan
        return math.copysign(math.inf, value) * math.copysign(1.0, by)

    @staticmethod
    def sqrt(value: float) -> float:
        return math.sqrt(value) if value >= 0.0 else math.nan


class _Tensors:
    """The same operations on tensors."""

    where = staticmethod(torch.where)
    clamp_min = staticmethod(torch.clamp_min)
    minimum = staticmethod(torch.minimum)
    div = staticmethod(operator.truediv)  # a number ÷ a tensor too
    sqrt = staticmethod(torch.sqrt)

    @staticmethod
    def tiny(value: Tensor) -> float:
        return torch.finfo(value.dtype).tiny


FLOATS = _Floats()
TENSORS = _Tensors()

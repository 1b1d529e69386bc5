"""The principal branch W₀ of the Lambert W function for PyTorch tensors.

W₀(x) is the real solution w ≥ −1 of w·eʷ = x, defined for x ≥ −1/e. PyTorch has no Lambert W, and
calling ``scipy.special.lambertw`` from a training step costs a device → host copy and a
synchronisation. This implementation is pure tensor arithmetic with a fixed amount of work per
element:

1. Near the branch point the series W = Σ μ_k p^k, p = √(2(e·x + 1)), of Corless et al. (1996, "On
   the Lambert W function", eq. 4.22) is exact to the last bit (p < 0.1 with 15 terms in float64,
   p < 0.2 with 8 terms in float32); x + 1/e is computed with 1/e split into two floats, so no
   digit is lost when x is within a few ulps of −1/e.
2. Elsewhere, Winitzki's approximation (x ≥ −0.2; x itself for |x| < 0.01) or the same series
   (x < −0.2) gives a first guess within a few percent, refined by Fritsch, Shafer & Crowley's
   fourth-order iteration (CACM 16(2), 1973) — two steps in float64, one in float32 — which works
   in log space and so never overflows, up to the largest finite float.

No data-dependent control flow, no ``.item()``: the function runs under ``torch.compile``
(``fullgraph=True``) and on any device without a host synchronisation. On CPU, eager, a large input
is processed in blocks of 65536 elements so that the temporaries stay in cache.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["lambertw"]


def _branch_series_coefficients(count: int) -> tuple[float, ...]:
    """μ_k of W₀ = Σ μ_k p^k around the branch point, by the recurrence of Corless et al. (1996)."""
    mu = [Fraction(-1), Fraction(1)]
    alpha = [Fraction(2), Fraction(-1)]
    for k in range(2, count):
        alpha.append(sum((mu[j] * mu[k + 1 - j] for j in range(2, k)), Fraction(0)))
        mu.append(
            Fraction(k - 1, k + 1) * (mu[k - 2] / 2 + alpha[k - 2] / 4)
            - alpha[k] / 2
            - mu[k - 1] / (k + 1)
        )
    return tuple(float(m) for m in mu)


# 1/e as an unevaluated sum hi + lo per working dtype, so that x + 1/e keeps every digit near −1/e.
_INV_E_HI_64 = 0.36787944117144233
_INV_E_LO_64 = -1.2428753672788363e-17
_INV_E_HI_32 = torch.tensor(_INV_E_HI_64, dtype=torch.float32).item()
_INV_E_LO_32 = (_INV_E_HI_64 - _INV_E_HI_32) + _INV_E_LO_64


class _Plan(NamedTuple):
    """The fixed amount of work for one working dtype."""

    inv_e_hi: float
    inv_e_lo: float
    series: tuple[float, ...]  # μ_0 … μ_{n−1}: below series_limit, the first omitted term < ulp/10
    series_limit: float  # p below which the series is the answer: Fritsch's step loses ~eps/p there
    steps: int  # Fritsch steps: the first guess is within 4%, each step takes error e to ~e⁴


_PLANS = {
    torch.float64: _Plan(
        _INV_E_HI_64,
        _INV_E_LO_64,
        _branch_series_coefficients(15),
        0.1,
        2,
    ),
    torch.float32: _Plan(
        _INV_E_HI_32,
        _INV_E_LO_32,
        _branch_series_coefficients(8),
        0.2,
        1,
    ),
}
_SERIES_GUESS_BELOW = -0.2  # x below which the series is a better first guess than Winitzki's
_SMALL_X = 0.01  # |x| below which x is the first guess (within 1%)
_CPU_BLOCK = 65536  # elements per block on CPU: 512 KiB per float64 temporary

if hasattr(torch.compiler, "is_compiling"):
    _is_compiling = torch.compiler.is_compiling
else:  # torch < 2.3: the same test, imported only there (torch._dynamo is slow to import)
    from torch._dynamo import is_compiling as _is_compiling

# −1/e rounded to each floating dtype, as Python floats: that input stands for the branch point itself
# (W = −1). The SuperLoss clamp uses the same values (functional.py).
ROUNDED_BRANCH = {
    dtype: torch.tensor(-1.0 / math.e, dtype=dtype).item()
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
}
# Those rounded up, inside the domain (bfloat16): the working result there is not −1 by itself.
_ROUNDED_INSIDE = {dtype for dtype, value in ROUNDED_BRANCH.items() if -value < _INV_E_HI_64}


# The arithmetic below runs in place on its own intermediates where it can (fewer large
# allocations); ``x`` itself is never written to.


def _horner(p: Tensor, coefficients: tuple[float, ...]) -> Tensor:
    result = p * coefficients[-1]
    result.add_(coefficients[-2])
    for coefficient in reversed(coefficients[:-2]):
        result.mul_(p).add_(coefficient)
    return result


def _fritsch_step(w: Tensor, x: Tensor) -> Tensor:
    """One step of Fritsch, Shafer & Crowley (1973): fourth-order, computed in log space.

    z = log(x/w) − w,  q = 2(1+w)(1 + w + 2z/3),  w ← w·(1 + z(q − z) / ((1+w)(q − 2z))).
    """
    z = torch.div(x, w).log_().sub_(w)
    one_plus_w = w + 1.0
    q = torch.add(one_plus_w, z, alpha=2.0 / 3.0).mul_(one_plus_w).mul_(2.0)
    numerator = (q - z).mul_(z)
    denominator = torch.sub(q, z, alpha=2.0).mul_(one_plus_w)
    return torch.addcmul(w, w, numerator.div_(denominator))


def _lambertw_working(x: Tensor) -> Tensor:
    """W₀ of a float32 or float64 tensor, computed in that dtype.

    Inputs below −1/e give −1 (the series at p = 0); the caller turns them into NaN.
    """
    if x.device.type != "cpu" or x.numel() <= _CPU_BLOCK or _is_compiling():
        return _lambertw_elementwise(x)
    # On CPU, a large input goes through in blocks: each of the ~50 elementwise steps then works on
    # cache-sized temporaries instead of fresh multi-megabyte buffers (3× faster at 1e6 elements).
    # A compiled graph fuses the steps into one loop anyway.
    flat = x.reshape(-1)
    w = torch.empty_like(flat)
    for start in range(0, flat.numel(), _CPU_BLOCK):
        block = slice(start, start + _CPU_BLOCK)
        w[block] = _lambertw_elementwise(flat[block])
    return w.reshape(x.shape)


def _lambertw_elementwise(x: Tensor) -> Tensor:
    plan = _PLANS[x.dtype]
    distance_to_branch = (x + plan.inv_e_hi).add_(plan.inv_e_lo).clamp_min_(0.0)
    p = distance_to_branch.mul_(2.0 * math.e).sqrt_()
    series = _horner(p, plan.series)

    # Winitzki: W ≈ L·(1 − log(1 + L)/(2 + L)), L = log(1 + x). A first guess only, so log(1 + x)
    # stands in for log1p(x) (ten times slower on CPU); it loses x's digits when |x| is tiny, where
    # W ≈ x − x² makes x itself the better guess.
    big_l = x.clamp_min(-plan.inv_e_hi).add_(1.0).log_()
    winitzki = (big_l + 1.0).log_().div_(big_l + 2.0).neg_().add_(1.0).mul_(big_l)
    guess = torch.where(x.abs() < _SMALL_X, x, winitzki)
    w = torch.where(x < _SERIES_GUESS_BELOW, series, guess)
    for _ in range(plan.steps):
        w = _fritsch_step(w, x)
    w = torch.where(p < plan.series_limit, series, w)
    # NaN comes out where W = x: at ±0 (0/0 in the step) and at +inf (inf/inf in the first guess);
    # a NaN input stays NaN.
    return torch.where(torch.isnan(w), x, w)


def _lambertw_forward(x: Tensor) -> Tensor:
    working_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = _lambertw_working(x.to(working_dtype))
    rounded_branch = ROUNDED_BRANCH[x.dtype]
    if x.dtype in _ROUNDED_INSIDE:  # that value, too, stands for the branch point
        w = torch.where(x == rounded_branch, -1.0, w)
    w = torch.where(x < rounded_branch, math.nan, w)
    return w.to(x.dtype)


class _LambertW(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        w = _lambertw_forward(x)
        ctx.save_for_backward(w)
        return w

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor) -> Tensor:
        saved: tuple[Tensor, ...] = ctx.saved_tensors  # type: ignore[attr-defined]
        w = saved[0]
        # dW/dx = W / (x (1 + W)) = e^{-W} / (1 + W): the second form is finite at x = 0 (it is 1).
        return grad_output * torch.exp(-w) / (1.0 + w)


def lambertw(x: Tensor) -> Tensor:
    r"""Principal branch W₀ of the Lambert W function, elementwise.

    Solves :math:`w e^{w} = x` for the real :math:`w \ge -1`, defined on :math:`x \ge -1/e`.

    Special values: the input equal to :math:`-1/e` rounded to its dtype (``torch.tensor(-1/math.e,
    dtype=...)``) is taken to mean the branch point and gives exactly ``-1``
    (``scipy.special.lambertw`` gives NaN at ``float64(-1/e)``, which lies 1.2e-17 below the true
    branch point). Any smaller input gives NaN, as does NaN; ``W(+inf) = +inf``; ``W(0) = 0``.

    float16 and bfloat16 inputs are computed in float32 and rounded back. Accuracy against mpmath at
    the exact input: relative error below 1e-14 in float64 and 2e-6 in float32 over the whole
    domain.

    Gradient: :math:`dW/dx = W / (x (1 + W)) = e^{-W} / (1 + W)`, 1 at 0 and infinite at the branch
    point.

    Args:
        x: real floating tensor of any shape, dtype and device.

    Returns:
        Tensor of the same shape, dtype and device.

    Shape:
        - Input: :math:`(*)`
        - Output: :math:`(*)`

    Example:
        >>> import math, torch
        >>> from superloss import lambertw
        >>> lambertw(torch.tensor([0.0, 1.0, math.e], dtype=torch.float64))
        tensor([0.0000, 0.5671, 1.0000], dtype=torch.float64)
        >>> lambertw(torch.tensor(-1 / math.e, dtype=torch.float64))
        tensor(-1., dtype=torch.float64)
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"lambertw expects a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(
            "lambertw expects a real floating tensor (float16, bfloat16, float32 or float64), "
            f"got dtype {x.dtype}"
        )
    if x.dtype not in ROUNDED_BRANCH:
        raise TypeError(
            f"lambertw supports float16, bfloat16, float32 and float64, got dtype {x.dtype}"
        )
    result: Tensor = _LambertW.apply(x)
    return result

"""The principal branch W₀ of the Lambert W function for PyTorch tensors.

W₀(x) is the real solution w ≥ −1 of w·eʷ = x, defined for x ≥ −1/e. PyTorch has no Lambert W, and
calling ``scipy.special.lambertw`` from a training step costs a device → host copy and a synchronisation.
This implementation is pure tensor arithmetic with a fixed amount of work per element:

1. Near the branch point (p = √(2(e·x + 1)) < 0.3) the series W = Σ μ_k p^k of Corless et al. (1996,
   "On the Lambert W function", eq. 4.22) is exact to the last bit; x + 1/e is computed with 1/e split
   into two floats, so no digit is lost when x is within a few ulps of −1/e.
2. Elsewhere, Winitzki's approximation (x ≥ −0.25) or the same series (x < −0.25) gives a first guess
   within a few percent, refined by two steps of Fritsch, Shafer & Crowley's fourth-order iteration
   (CACM 16(2), 1973), which works in log space and so never overflows, up to the largest finite float.

No data-dependent Python control flow, no ``.item()``: the function runs under ``torch.compile``
(``fullgraph=True``) and on any device without a host synchronisation.
"""

from __future__ import annotations

import math
from fractions import Fraction

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


# 24 terms: at p < 0.3 the first omitted term is below 1e-18, well under float64's half-ulp of 1.
_SERIES = _branch_series_coefficients(24)
_SERIES_LIMIT = 0.3  # p below which the series is the answer; Fritsch's step would lose ~eps/p there
_SERIES_GUESS_BELOW = -0.25  # x below which the series is a better first guess than Winitzki's

# 1/e as an unevaluated sum hi + lo per working dtype, so that x + 1/e keeps every digit near −1/e.
_INV_E_HI_64 = 0.36787944117144233
_INV_E_LO_64 = -1.2428753672788363e-17
_INV_E_HI_32 = torch.tensor(_INV_E_HI_64, dtype=torch.float32).item()
_INV_E_LO_32 = (_INV_E_HI_64 - _INV_E_HI_32) + _INV_E_LO_64

# −1/e rounded to each floating dtype: that input stands for the branch point itself (W = −1).
_ROUNDED_BRANCH = {
    dtype: torch.tensor(-1.0 / math.e, dtype=dtype).item()
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
}


def _horner(p: Tensor, coefficients: tuple[float, ...]) -> Tensor:
    result = torch.full_like(p, coefficients[-1])
    for coefficient in reversed(coefficients[:-1]):
        result = result * p + coefficient
    return result


def _fritsch_step(w: Tensor, x: Tensor) -> Tensor:
    """One step of Fritsch, Shafer & Crowley (1973): fourth-order, computed in log space."""
    z = torch.log(x / w) - w
    one_plus_w = 1.0 + w
    q = 2.0 * one_plus_w * (one_plus_w + (2.0 / 3.0) * z)
    relative_step = (z / one_plus_w) * (q - z) / (q - 2.0 * z)
    return w * (1.0 + relative_step)


def _lambertw_working(x: Tensor) -> Tensor:
    """W₀ of a float32 or float64 tensor, computed in that dtype; inputs below −1/e give garbage."""
    if x.dtype == torch.float64:
        inv_e_hi, inv_e_lo = _INV_E_HI_64, _INV_E_LO_64
    else:
        inv_e_hi, inv_e_lo = _INV_E_HI_32, _INV_E_LO_32
    distance_to_branch = ((x + inv_e_hi) + inv_e_lo).clamp_min(0.0)
    p = torch.sqrt((2.0 * math.e) * distance_to_branch)
    series = _horner(p, _SERIES)

    log1p_x = torch.log1p(x.clamp_min(-inv_e_hi))
    winitzki = log1p_x * (1.0 - torch.log1p(log1p_x) / (2.0 + log1p_x))
    w = torch.where(x < _SERIES_GUESS_BELOW, series, winitzki)
    for _ in range(2):
        w = _fritsch_step(w, x)
    w = torch.where(p < _SERIES_LIMIT, series, w)
    # x = 0 (0/0 in the step) and x = +inf (inf − inf) are exact fixed points: W(0) = 0, W(inf) = inf.
    return torch.where((x == 0.0) | (x == math.inf), x, w)


def _lambertw_forward(x: Tensor) -> Tensor:
    working_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = _lambertw_working(x.to(working_dtype))
    rounded_branch = _ROUNDED_BRANCH[x.dtype]
    w = torch.where(x == rounded_branch, torch.full_like(w, -1.0), w)
    w = torch.where(x < rounded_branch, torch.full_like(w, math.nan), w)
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
        (w,) = ctx.saved_tensors  # type: ignore[attr-defined]
        # dW/dx = W / (x (1 + W)) = e^{-W} / (1 + W): the second form is finite at x = 0, where it is 1.
        return grad_output * torch.exp(-w) / (1.0 + w)


def lambertw(x: Tensor) -> Tensor:
    r"""Principal branch W₀ of the Lambert W function, elementwise.

    Solves :math:`w e^{w} = x` for the real :math:`w \ge -1`, defined on :math:`x \ge -1/e`.

    Special values: the input equal to :math:`-1/e` rounded to its dtype (``torch.tensor(-1/math.e,
    dtype=...)``) is taken to mean the branch point and gives exactly ``-1`` (``scipy.special.lambertw``
    gives NaN at ``float64(-1/e)``, which lies 1.2e-17 below the true branch point). Any smaller input
    gives NaN, as does NaN; ``W(+inf) = +inf``; ``W(0) = 0``.

    float16 and bfloat16 inputs are computed in float32 and rounded back. Accuracy against mpmath at the
    exact input: relative error below 1e-14 in float64 and 2e-6 in float32 over the whole domain.

    Gradient: :math:`dW/dx = W / (x (1 + W)) = e^{-W} / (1 + W)`, 1 at 0 and infinite at the branch point.

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
    if x.dtype not in _ROUNDED_BRANCH:
        raise TypeError(
            f"lambertw supports float16, bfloat16, float32 and float64, got dtype {x.dtype}"
        )
    result: Tensor = _LambertW.apply(x)
    return result

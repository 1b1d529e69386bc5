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

That plan is ~50 elementwise operations. A compiled graph fuses them into one loop, and float64
always uses it. Eager float32 (and float16/bfloat16, computed in float32) instead reads W from a
table, because there each operation costs its own dispatch (a kernel launch on a GPU) and at
SuperLoss's batch sizes that fixed cost is the whole cost:

3. −W is tabulated as a function of t = x + 1/e: a quadratic per bucket of t, the bucket read
   off t's float32 representation (its exponent and first 6 mantissa bits: 1/64 of an octave).
   The buckets shrink towards the branch point with t itself, so even there, where −W goes as
   1 − √(2e·t), a quadratic holds it within each. W = −1 exactly at the branch point (t = 0) and
   W(0) = 0 exactly (the bucket of x = 0 has its constant term 0). Two integer operations, one
   gather and three multiply-adds (``addcmul``) give −W within 6e-8 plus the rounding of t. The
   table (5 × 16384 coefficients) is interpolated at Chebyshev nodes from the series and the
   float64 plan, at its first use (SuperLoss, which adds 2λ/e to ℓ − τ, gets one per λ). W = −(−W)
   where |x| ≥ 1/4 and W = x·exp(−W) (the identity e^{−W} = W/x) where |x| < 1/4, which keeps
   W's relative accuracy down to the smallest subnormal x. Measured against mpmath: 1.8e-7 (the
   elementwise plan: 2.6e-7).

No data-dependent control flow, no ``.item()``: the function runs under ``torch.compile``
(``fullgraph=True``) and on any device without a host synchronisation. On CPU, eager, a large input
is processed in blocks of 65536 elements so that the temporaries stay in cache.
"""

from __future__ import annotations

import functools
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


def _scalar(value: float, like: Tensor) -> float | Tensor:
    """``value`` as a 0-dim tensor of ``like``'s dtype and device, made once and then reused.

    An eager elementwise operation given a Python number first wraps it in a new tensor and
    converts that to the other operand's dtype, which costs as much again as a small operation
    itself; a ready 0-dim tensor of the right dtype is taken as a scalar as it is. A graph being
    compiled gets the number.
    """
    if _is_compiling():
        return value
    return _cached_scalar(value, like.dtype, like.device)


@functools.lru_cache(maxsize=256)
def _cached_scalar(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


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
    if _is_compiling():  # one fused loop: the elementwise plan
        return _lambertw_elementwise(x)
    compute = _lambertw_table if x.dtype == torch.float32 else _lambertw_elementwise
    if x.device.type != "cpu" or x.numel() <= _CPU_BLOCK:
        return compute(x)
    # On CPU, a large input goes through in blocks: each elementwise step then works on cache-sized
    # temporaries instead of fresh multi-megabyte buffers (3× faster at 1e6 elements).
    flat = x.reshape(-1)
    w = torch.empty_like(flat)
    for start in range(0, flat.numel(), _CPU_BLOCK):
        block = slice(start, start + _CPU_BLOCK)
        w[block] = compute(flat[block])
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


# -- float32, eager: −W read from a table of the distance to the branch point ----------------------

# The table's variable is t = x + 1/e ≥ 0, or, for SuperLoss, s·t = (ℓ − τ) + s/e with s = 2λ: a
# table per stretch s, so that ℓ − τ is not divided by 2λ (a rounding) before 2λ/e is added. The
# bucket of a float32 t is the top bits of its representation after the sign: its exponent and the
# first 6 bits of its mantissa, i.e. 1/64 of an octave of t. −W is smooth in t within every bucket,
# even next to the branch point, where it goes as 1 − √(2e·t): the buckets shrink with t, each a
# fixed fraction of its distance to 0. Below the first bucket, 2⁻⁶⁰ in t (in float32 only t = 0
# is), −W = 1 to float32 precision; the highest buckets (exponent 255) hold ∞ and NaN.
_MANTISSA_BITS = 6
_BUCKET_SHIFT = 23 - _MANTISSA_BITS
_BUCKETS = 1 << (8 + _MANTISSA_BITS)
_INFINITE_BUCKET = 255 << _MANTISSA_BITS  # the bucket of t = ∞
_TABLE_DEGREE = 2
_SERIES_BELOW = 2.0**-10  # t below which the table is built from the branch-point series
_QUARTER = 0.25  # |x| below which W = x·e^{−W} keeps more relative accuracy than −(−W)


@functools.lru_cache(maxsize=64)
def _split_branch_offset(stretch: float) -> tuple[float, float]:
    """stretch/e as hi + lo, hi a float32: adding both in turn loses no digit next to −stretch/e."""
    offset = stretch / math.e
    hi = torch.tensor(offset, dtype=torch.float32).item()
    return hi, offset - hi


def _branch_distance(x: Tensor, stretch: float = 1.0) -> Tensor:
    """t = x + stretch/e of float32 x (not modified), 0 at and below the branch point −stretch/e."""
    hi, lo = _split_branch_offset(stretch)
    shifted = torch.add(x, _scalar(hi, x)).add_(_scalar(lo, x))
    return shifted.clamp_min_(0.0)


def _minus_w_of_distance(t: Tensor) -> Tensor:
    """−W(t − 1/e) of float64 t ≥ 0, to float64 precision (for building the table)."""
    # t − 1/e loses t's last digits only where t is tiny; the series in p = √(2e·t) takes over
    # there (p < 0.073 below t = 2⁻¹⁰: 15 terms are exact in float64).
    minus_w = -_lambertw_elementwise(t - 1 / math.e)
    near = t < _SERIES_BELOW
    p = torch.sqrt(2 * math.e * t[near])
    minus_w[near] = -_horner(p, _PLANS[torch.float64].series)
    return minus_w


@functools.lru_cache(maxsize=16)
def _float64_branch_table(stretch: float) -> Tensor:
    """−W in each bucket of stretch·t, interpolated in float64 at Chebyshev nodes;
    (degree + 3, buckets).

    Rows: offset and scale, u = t·scale + offset, then a_0 … a_degree, −W = Σ a_k u^k. From the
    first bucket on, u = (t − centre)/half-width ∈ [−1, 1] — except in the bucket of x = 0: there
    u = (t − t₀)/half-width with t₀ the float32 t of x = 0 (exact: the half-widths are powers of 2)
    and a_0 = 0, so that W(0) = 0 and σ*(τ) = 1 exactly. Below, u = 0 and −W = a_0 = 1: W = −1
    exactly at the branch point. For ∞ and NaN, u = t and −W = −u^degree: −∞, or NaN.
    """
    f64 = torch.float64
    degree = _TABLE_DEGREE
    # 2⁻⁶⁰ in t, a power of 2 whose reciprocal float32 holds.
    first_octave = max(-120, round(math.log2(stretch)) - 60)
    first = (127 + first_octave) << _MANTISSA_BITS
    bucket = torch.arange(first, _INFINITE_BUCKET, dtype=f64)
    per_octave = 1 << _MANTISSA_BITS
    octave = torch.exp2(torch.div(bucket, per_octave, rounding_mode="floor") - 127)
    half_width = octave / (2 * per_octave)
    centre = octave * (1 + bucket.remainder(per_octave) / per_octave) + half_width
    scale = 1 / half_width  # a power of 2
    offset = -centre * scale
    at_zero = _branch_distance(torch.zeros(1), stretch).item()
    zero = (int(torch.tensor(at_zero).view(torch.int32)) >> _BUCKET_SHIFT) - first
    offset[zero] = -at_zero * scale[zero]

    def minus_w(stretched: Tensor) -> Tensor:
        return _minus_w_of_distance(stretched / stretch)

    powers = torch.arange(degree + 1, dtype=f64)
    nodes = torch.cos((2 * powers + 1) * math.pi / (2 * degree + 2))  # u at Chebyshev nodes
    values = minus_w((nodes[None, :] - offset[:, None]) / scale[:, None])
    coefficients = torch.linalg.solve(nodes[:, None] ** powers, values.T).T
    # The bucket of x = 0: −W = u·h(u), h interpolated at Chebyshev nodes of its u-range, which
    # is [−1, 1] shifted by the distance from t₀ to the bucket's centre.
    lower = torch.arange(degree, dtype=f64)
    shift = offset[zero] + centre[zero] * scale[zero]
    u = torch.cos((2 * lower + 1) * math.pi / (2 * degree)) + shift
    h = minus_w((u - offset[zero]) / scale[zero]) / u
    coefficients[zero, 0] = 0.0
    coefficients[zero, 1:] = torch.linalg.solve(u[:, None] ** lower, h)

    rows = torch.zeros(degree + 3, _BUCKETS, dtype=f64)
    rows[2, :first] = 1.0
    rows[0, first:_INFINITE_BUCKET] = offset
    rows[1, first:_INFINITE_BUCKET] = scale
    rows[2:, first:_INFINITE_BUCKET] = coefficients.T
    rows[1, _INFINITE_BUCKET:] = 1.0
    rows[-1, _INFINITE_BUCKET:] = -1.0
    return rows


@functools.lru_cache(maxsize=32)
def _branch_table(device: torch.device, stretch: float) -> Tensor:
    """The table in float32 on ``device``: built at the first use (tens of milliseconds of float64
    work, not paid at import), then converted once per device."""
    return _float64_branch_table(stretch).to(device, torch.float32)


def _branch_log_sigma(distance: Tensor, stretch: float = 1.0) -> Tensor:
    """−W (= log σ in SuperLoss) from float32 stretch·t ≥ 0 (see :func:`_branch_distance`), eager:
    5 + degree operations.

    ``distance`` may be +∞ or NaN of either sign. The result may be written into its memory.
    """
    if distance.dim() != 1:  # the gather takes a vector of buckets
        return _branch_log_sigma(distance.reshape(-1), stretch).reshape(distance.shape)
    table = _branch_table(distance.device, stretch)
    # The sign bit is masked off: a NaN of either sign falls in the last bucket.
    bits = distance.view(torch.int32)
    bucket = bits.bitwise_right_shift(_scalar(_BUCKET_SHIFT, bits))
    bucket.bitwise_and_(_scalar(_BUCKETS - 1, bits))
    offset, scale, *coefficients = table.index_select(1, bucket).unbind()
    u = offset.addcmul_(distance, scale)
    result = coefficients[-1]
    for coefficient in reversed(coefficients[:-1]):
        result = coefficient.addcmul_(result, u)
    return result


def _lambertw_table(x: Tensor) -> Tensor:
    """W₀ of a float32 tensor by the table (see the module docstring)."""
    minus_w = _branch_log_sigma(_branch_distance(x))
    return torch.where(x.abs() < _QUARTER, x * torch.exp(minus_w), minus_w.neg_())


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

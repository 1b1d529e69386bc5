r"""SuperLoss as pure functions: the confidence σ* and the loss, for a given threshold τ.

For per-sample task losses ℓ (one element per sample, box or pair), threshold τ and regularisation
λ > 0 (Castells, Weinzaepfel & Revaud, "SuperLoss: A Generic Loss for Robust Curriculum Learning",
NeurIPS 2020):

.. math::

    \mathrm{SL}(\ell) = (\ell - \tau)\,\sigma^* + \lambda (\log \sigma^*)^2, \qquad
    \sigma^* = \exp\!\Big(-W_0\big(\tfrac12 \max(-\tfrac2e, \beta)\big)\Big), \quad
    \beta = \frac{\ell - \tau}{\lambda}.

σ* minimises SL in σ for fixed ℓ, so dSL/dℓ = σ* exactly (envelope theorem). σ* is therefore
computed from the detached loss and carries no gradient; the gradient that reaches the network is
σ*·∂ℓ/∂θ.

Non-finite losses give non-finite output elements (NaN), as torch's own losses do.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from superloss.lambertw import (
    ROUNDED_BRANCH,
    _branch_distance,
    _branch_log_sigma,
    _cached_scalar,
    _is_compiling,
    _lambertw_working,
)

__all__ = ["REDUCTIONS", "check_lam", "confidence", "super_loss"]

REDUCTIONS = ("none", "mean", "sum")
AUTO = "auto"  # lam="auto": λ read from the losses (superloss.auto_lambda)
# lam="auto-hold": the same, never relaxing once the groups have separated (SuperLoss only: it
# needs the history of the losses, which a single call does not have).
AUTO_HOLD = "auto-hold"


def check_loss(loss: Tensor) -> None:
    """Raise TypeError unless ``loss`` is a floating-point tensor."""
    if not isinstance(loss, Tensor):
        raise TypeError(
            f"expected the per-sample losses as a torch.Tensor, got {type(loss).__name__}"
        )
    if not loss.dtype.is_floating_point:
        raise TypeError(
            f"expected a floating-point tensor of per-sample losses, got dtype {loss.dtype}; "
            "convert it with .float() if the values really are losses"
        )


def check_lam(lam: float | str | Tensor, running: bool = False) -> None:
    """Raise ValueError unless ``lam`` is a finite number > 0, ``"auto"`` or a tensor (or, with
    ``running`` — the :class:`~superloss.SuperLoss` module, which keeps a history —
    ``"auto-hold"``)."""
    if isinstance(lam, Tensor) or lam == AUTO or (running and lam == AUTO_HOLD):
        return
    if lam == AUTO_HOLD:
        raise ValueError(
            "lam='auto-hold' needs the history of the losses: use the SuperLoss module "
            "(SuperLoss(lam='auto-hold')); a single call can take lam='auto'"
        )
    words = "'auto' or 'auto-hold'" if running else "'auto'"
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 < lam < math.inf:
        raise ValueError(
            f"lam must be a finite number > 0 (the regularisation weight λ) or {words}, got {lam!r}"
        )


def _resolve_lam(lam: float | str | Tensor, working: Tensor, tau: float | Tensor) -> float | Tensor:
    """λ as a constant of ``working``; ``"auto"``: read from this batch (:func:`batch_lambda`)."""
    if lam == AUTO:
        # Imported here: the automatic λ builds on τ's statistics (threshold.py), which come after
        # this module in the order the core is read.
        from superloss.auto_lambda import batch_lambda

        lam = batch_lambda(working, tau)
    return _as_constant(lam, working)  # type: ignore[arg-type]


def check_reduction(reduction: str) -> None:
    """Raise ValueError unless ``reduction`` is one of ``"none"``, ``"mean"``, ``"sum"``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce(values: Tensor, reduction: str) -> Tensor:
    """Reduce per-element values; the mean of an empty tensor is 0 (not NaN) and backpropagates."""
    # numel is static, so choosing on it is no host synchronisation; an empty batch sums to 0.
    if reduction == "none":
        return values
    if reduction == "sum" or values.numel() == 0:
        return values.sum()
    return values.mean()


def _working(loss: Tensor) -> Tensor:
    """Half-precision losses (e.g. under autocast) are computed in float32."""
    if loss.dtype in (torch.float16, torch.bfloat16):
        return loss.float()
    return loss


def _as_constant(value: float | Tensor, like: Tensor) -> float | Tensor:
    """τ or λ as a constant of the loss ``like``: detached and on its device.

    A 0-dim tensor is held in float64 (float32 on MPS), as a Python number is: each elementwise
    operation with the loss takes it as a scalar of the loss's dtype. Next to a 0-dim loss it would
    decide the result's dtype instead, so there, as a tensor with dimensions, it takes the loss's.
    """
    if not isinstance(value, Tensor):
        return value
    if like.dim() == 0 or value.dim() != 0:
        dtype = like.dtype
    else:
        dtype = torch.float32 if like.device.type == "mps" else torch.float64
    return value.detach().to(device=like.device, dtype=dtype)


def _log_confidence(difference: Tensor, lam: float | Tensor) -> Tensor:
    """log σ* = −W₀(½·max(−2/e, (ℓ − τ)/λ)) from the detached ``difference`` ℓ − τ (not modified).

    λ is a constant of the loss (see :func:`_as_constant`). The argument of W is never below the
    branch point, so lambertw's autograd wrapper and domain check are skipped.
    """
    if difference.dtype == torch.float32 and not _is_compiling():
        # The table of the distance to the branch point, which is 0 at and below it: the clamp
        # max(−2/e, β) comes with it. For a number λ, the table of (ℓ − τ) + 2λ/e.
        if isinstance(lam, Tensor):
            return _branch_log_sigma(_branch_distance(difference / (2 * lam)))
        stretch = 2.0 * lam
        return _branch_log_sigma(_branch_distance(difference, stretch), stretch)
    # (ℓ − τ)/(2λ) is ½·(ℓ − τ)/λ to the last bit: a factor 2 is exact. It is clamped to −1/e
    # rounded to the dtype, which lambertw maps to the branch point, −1, exactly.
    half_beta = difference / (2 * lam)
    w = _lambertw_working(half_beta.clamp_(min=ROUNDED_BRANCH[difference.dtype]))
    return w.neg_()


def confidence(loss: Tensor, tau: float | Tensor, lam: float | str | Tensor = 1.0) -> Tensor:
    r"""The SuperLoss confidence σ*(ℓ) = exp(−W₀(½·max(−2/e, (ℓ − τ)/λ))), without gradient.

    σ* is e (≈ 2.718) for every ℓ ≤ τ − 2λ/e, 1 at ℓ = τ, and decreases towards 0 (never reaching
    it) as ℓ grows: hard samples get small weights.

    Args:
        loss: per-sample losses ℓ, any shape, floating dtype (float16/bfloat16 computed in float32).
        tau: threshold τ, a number or a scalar tensor (treated as a constant).
        lam: regularisation λ > 0, finite; small λ sharpens the weighting, λ → ∞ gives σ* → 1.
            ``"auto"``: read from this batch's losses (:func:`superloss.auto_lambda.batch_lambda`).

    Returns:
        σ* with the shape of ``loss``, detached; float32 for half-precision input.

    Shape:
        - loss: :math:`(*)`
        - Output: :math:`(*)`

    Example:
        >>> import torch
        >>> from superloss.functional import confidence
        >>> confidence(torch.tensor([0.0, 1.0, 2.0, 11.0]), tau=1.0, lam=1.0)
        tensor([2.7183, 1.0000, 0.7035, 0.2653])
    """
    check_loss(loss)
    check_lam(lam)
    detached = _working(loss.detach())
    difference = detached - _as_constant(tau, detached)
    return _log_confidence(difference, _resolve_lam(lam, detached, tau)).exp_()


def _zero(like: Tensor) -> Tensor:
    """A 0-dim zero of ``like``'s dtype and device (made once, then reused; made anew in graphs)."""
    if _is_compiling():
        return torch.zeros((), dtype=like.dtype, device=like.device)
    return _cached_scalar(0.0, like.dtype, like.device)


def reduced_and_confidence(
    working: Tensor, tau: float | Tensor, lam: float | Tensor, reduction: str
) -> tuple[Tensor, Tensor]:
    """SuperLoss reduced as asked, and σ*, of a float32/float64 ``working`` loss, without autograd
    (the forward of :class:`_SuperLoss`); τ and λ are constants of the loss."""
    difference = working - tau
    log_sigma = _log_confidence(difference, lam)
    sigma = torch.exp(log_sigma)
    # (ℓ − τ)·σ* + λ(log σ*)², λ(log σ*)² = λW².
    values = difference.mul_(sigma)
    if isinstance(lam, Tensor):
        values += lam * log_sigma * log_sigma
    else:
        values.addcmul_(log_sigma, log_sigma, value=lam)
    return reduce(values, reduction), sigma


class _SuperLoss(torch.autograd.Function):
    """The reduced SuperLoss and σ* in one pass; the gradient is σ* (envelope theorem).

    σ* minimises SL for fixed ℓ, so dSL/dℓ = σ*: the backward is one multiplication, and the
    forward keeps no graph of its own.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        working: Tensor,
        tau: float | Tensor,
        lam: float | Tensor,
        reduction: str,
    ) -> tuple[Tensor, Tensor]:
        result, sigma = reduced_and_confidence(working, tau, lam, reduction)
        ctx.save_for_backward(sigma)
        ctx.mark_non_differentiable(sigma)
        ctx.set_materialize_grads(False)
        ctx.mean_count = sigma.numel() if reduction == "mean" else 0  # type: ignore[attr-defined]
        return result, sigma

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor | None, _: Tensor | None
    ) -> tuple[Tensor | None, None, None, None]:
        if grad is None:
            return None, None, None, None
        saved: tuple[Tensor, ...] = ctx.saved_tensors  # type: ignore[attr-defined]
        sigma = saved[0]
        count: int = ctx.mean_count  # type: ignore[attr-defined]
        if count:  # d mean / dℓ = σ*/n, in one operation: a multiply-add onto a 0-dim zero
            return torch.addcmul(_zero(sigma), sigma, grad, value=1.0 / count), None, None, None
        return sigma * grad, None, None, None


def super_loss_parts(
    working: Tensor, tau: float | Tensor, lam: float | Tensor, reduction: str = "none"
) -> tuple[Tensor, Tensor]:
    """SuperLoss reduced as asked, and σ*, of a float32/float64 ``working`` loss.

    τ and λ are constants of the loss (see :func:`_as_constant`). Shared by :func:`super_loss`
    and the module.
    """
    result: tuple[Tensor, Tensor] = _SuperLoss.apply(working, tau, lam, reduction)
    return result


def super_loss_with_confidence(
    loss: Tensor, tau: float | Tensor, lam: float | str | Tensor
) -> tuple[Tensor, Tensor]:
    """Unreduced SuperLoss and σ* together, σ* computed once."""
    check_loss(loss)
    check_lam(lam)
    working = _working(loss)
    return super_loss_parts(working, _as_constant(tau, working), _resolve_lam(lam, working, tau))


def super_loss(
    loss: Tensor,
    tau: float | Tensor,
    lam: float | str | Tensor = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""SuperLoss of per-sample losses: SL(ℓ) = (ℓ − τ)·σ* + λ·(log σ*)².

    The gradient with respect to ``loss`` is σ* (envelope theorem), so wrapping a task loss with it
    reweights every sample's gradient by its confidence.

    Args:
        loss: per-sample losses ℓ, any shape (one element per sample, box or pair), floating dtype.
            float16/bfloat16 are computed in float32 and the result is float32.
        tau: threshold τ, a number or a scalar tensor (treated as a constant), e.g. log C for
            cross-entropy over C classes.
        lam: regularisation λ > 0, finite; ``"auto"``: read from this batch's losses, split at
            their mean (:func:`superloss.auto_lambda.batch_lambda`; the module keeps running
            statistics instead).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. The mean of an empty tensor is 0.

    Returns:
        The loss, reduced as asked.

    Shape:
        - loss: :math:`(*)`
        - Output: scalar, or :math:`(*)` for ``reduction="none"``.

    Example:
        >>> import torch
        >>> from superloss.functional import super_loss
        >>> ell = torch.tensor([0.1, 2.3, 5.0], requires_grad=True)
        >>> value = super_loss(ell, tau=2.3, lam=1.0, reduction="sum")
        >>> value.backward()
        >>> ell.grad  # equals confidence(ell, 2.3, 1.0): e in the clamp region ℓ ≤ τ − 2λ/e
        tensor([2.7183, 1.0000, 0.5054])
    """
    check_reduction(reduction)
    check_loss(loss)
    check_lam(lam)
    working = _working(loss)
    constant_lam = _resolve_lam(lam, working, tau)
    return super_loss_parts(working, _as_constant(tau, working), constant_lam, reduction)[0]

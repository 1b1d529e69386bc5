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

from superloss.lambertw import ROUNDED_BRANCH, _lambertw_working

__all__ = ["REDUCTIONS", "confidence", "super_loss"]

REDUCTIONS = ("none", "mean", "sum")


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


def _check_lam(lam: float | Tensor) -> None:
    if not isinstance(lam, Tensor) and not 0 < lam < math.inf:
        raise ValueError(f"lam must be finite and > 0 (the regularisation weight λ), got {lam}")


def check_reduction(reduction: str) -> None:
    """Raise ValueError unless ``reduction`` is one of ``"none"``, ``"mean"``, ``"sum"``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce(values: Tensor, reduction: str) -> Tensor:
    """Reduce per-element values; the mean of an empty tensor is 0 (not NaN) and backpropagates."""
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    # numel is static, so this is no host synchronisation; max(…, 1) makes an empty batch give 0.
    return total / max(values.numel(), 1)


def _working(loss: Tensor) -> Tensor:
    """Half-precision losses (e.g. under autocast) are computed in float32."""
    if loss.dtype in (torch.float16, torch.bfloat16):
        return loss.float()
    return loss


def _as_constant(value: float | Tensor, like: Tensor) -> float | Tensor:
    if isinstance(value, Tensor):
        return value.detach().to(dtype=like.dtype, device=like.device)
    return value


def _lambert_of_loss(detached: Tensor, tau: float | Tensor, lam: float | Tensor) -> Tensor:
    """W₀(½·max(−2/e, (ℓ − τ)/λ)) of a detached loss in its working dtype, τ and λ constants.

    log σ* = −W. The argument carries no gradient and, clamped, is never below the branch point:
    lambertw's autograd wrapper and domain check are skipped.
    """
    # (ℓ − τ)/(2λ) is ½·(ℓ − τ)/λ to the last bit: a factor 2 is exact.
    half_beta = (detached - tau) / (2 * lam)
    # Clamp to −1/e rounded to the dtype: lambertw maps exactly that value to the branch point, −1.
    return _lambertw_working(half_beta.clamp_(min=ROUNDED_BRANCH[detached.dtype]))


def confidence(loss: Tensor, tau: float | Tensor, lam: float | Tensor = 1.0) -> Tensor:
    r"""The SuperLoss confidence σ*(ℓ) = exp(−W₀(½·max(−2/e, (ℓ − τ)/λ))), without gradient.

    σ* is e (≈ 2.718) for every ℓ ≤ τ − 2λ/e, 1 at ℓ = τ, and decreases towards 0 (never reaching
    it) as ℓ grows: hard samples get small weights.

    Args:
        loss: per-sample losses ℓ, any shape, floating dtype (float16/bfloat16 computed in float32).
        tau: threshold τ, a number or a scalar tensor (treated as a constant).
        lam: regularisation λ > 0, finite; small λ sharpens the weighting, λ → ∞ gives σ* → 1.

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
    _check_lam(lam)
    detached = _working(loss.detach())
    w = _lambert_of_loss(detached, _as_constant(tau, detached), _as_constant(lam, detached))
    return w.neg_().exp_()


def super_loss_with_confidence(
    loss: Tensor, tau: float | Tensor, lam: float | Tensor
) -> tuple[Tensor, Tensor]:
    """Unreduced SuperLoss and σ* together, σ* computed once (shared by function and module)."""
    check_loss(loss)
    _check_lam(lam)
    working = _working(loss)
    tau = _as_constant(tau, working)
    lam = _as_constant(lam, working)
    w = _lambert_of_loss(working.detach(), tau, lam)
    sigma = torch.neg(w).exp_()
    # λ(log σ*)² = λW²: no log of σ* needed. σ* is a constant here, so dSL/dℓ = σ* (envelope thm).
    weighted = (working - tau) * sigma
    if isinstance(lam, Tensor):
        return weighted + lam * w * w, sigma
    return torch.addcmul(weighted, w, w, value=lam), sigma


def super_loss(
    loss: Tensor,
    tau: float | Tensor,
    lam: float | Tensor = 1.0,
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
        lam: regularisation λ > 0, finite.
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
    values, _ = super_loss_with_confidence(loss, tau, lam)
    return reduce(values, reduction)

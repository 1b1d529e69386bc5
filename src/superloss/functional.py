r"""SuperLoss as pure functions: the confidence σ* and the loss, for a given threshold τ.

For per-sample task losses ℓ (one element per sample, box or pair), threshold τ and regularisation
λ > 0 (Castells, Weinzaepfel & Revaud, "SuperLoss: A Generic Loss for Robust Curriculum Learning",
NeurIPS 2020):

.. math::

    \mathrm{SL}(\ell) = (\ell - \tau)\,\sigma^* + \lambda (\log \sigma^*)^2, \qquad
    \sigma^* = \exp\!\Big(-W_0\big(\tfrac12 \max(-\tfrac2e, \beta)\big)\Big), \quad
    \beta = \frac{\ell - \tau}{\lambda}.

σ* minimises SL in σ for fixed ℓ, so dSL/dℓ = σ* exactly (envelope theorem). σ* is therefore computed
from the detached loss and carries no gradient; the gradient that reaches the network is σ*·∂ℓ/∂θ.

Non-finite losses give non-finite output elements (NaN), as torch's own losses do.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from superloss.lambertw import lambertw

__all__ = ["confidence", "super_loss", "REDUCTIONS"]

REDUCTIONS = ("none", "mean", "sum")


def check_loss(loss: Tensor) -> None:
    """Raise TypeError unless ``loss`` is a floating-point tensor."""
    if not isinstance(loss, Tensor):
        raise TypeError(f"expected the per-sample losses as a torch.Tensor, got {type(loss).__name__}")
    if not loss.dtype.is_floating_point:
        raise TypeError(
            f"expected a floating-point tensor of per-sample losses, got dtype {loss.dtype}; "
            "convert it with .float() if the values really are losses"
        )


def _check_lam(lam: float | Tensor) -> None:
    if not isinstance(lam, Tensor) and not lam > 0:
        raise ValueError(f"lam must be > 0 (the regularisation weight λ), got {lam}")


def check_reduction(reduction: str) -> None:
    """Raise ValueError unless ``reduction`` is one of ``"none"``, ``"mean"``, ``"sum"``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce(values: Tensor, reduction: str) -> Tensor:
    """Reduce per-element values; the mean of an empty tensor is 0 (not NaN) and still backpropagates."""
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


def _lambert_of_loss(loss: Tensor, tau: float | Tensor, lam: float | Tensor) -> Tensor:
    """W₀(½·max(−2/e, (ℓ − τ)/λ)) for the detached loss, in the working dtype. log σ* = −W."""
    detached = _working(loss.detach())
    beta = (detached - _as_constant(tau, detached)) / _as_constant(lam, detached)
    # Clamp to −1/e rounded to the dtype: lambertw maps exactly that value to the branch point, W = −1.
    branch_point = torch.tensor(-1.0 / math.e, dtype=detached.dtype).item()
    return lambertw(torch.clamp(0.5 * beta, min=branch_point))


def confidence(loss: Tensor, tau: float | Tensor, lam: float | Tensor = 1.0) -> Tensor:
    r"""The SuperLoss confidence σ*(ℓ) = exp(−W₀(½·max(−2/e, (ℓ − τ)/λ))), without gradient.

    σ* is e (≈ 2.718) for every ℓ ≤ τ − 2λ/e, 1 at ℓ = τ, and decreases towards 0 (never reaching it)
    as ℓ grows: hard samples get small weights.

    Args:
        loss: per-sample losses ℓ, any shape, floating dtype (float16/bfloat16 computed in float32).
        tau: threshold τ, a number or a scalar tensor (treated as a constant).
        lam: regularisation λ > 0; small λ sharpens the weighting, λ → ∞ gives σ* → 1.

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
    return torch.exp(-_lambert_of_loss(loss, tau, lam))


def super_loss_with_confidence(
    loss: Tensor, tau: float | Tensor, lam: float | Tensor
) -> tuple[Tensor, Tensor]:
    """Unreduced SuperLoss and σ* together, σ* computed once (shared by the function and the module)."""
    check_loss(loss)
    _check_lam(lam)
    w = _lambert_of_loss(loss, tau, lam)
    sigma = torch.exp(-w)
    working = _working(loss)
    # λ(log σ*)² = λW²: no log of σ* needed. σ* is a constant here, so dSL/dℓ = σ* (envelope theorem).
    values = (working - _as_constant(tau, sigma)) * sigma + _as_constant(lam, sigma) * w * w
    return values, sigma


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
        lam: regularisation λ > 0.
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
        >>> ell.grad  # equals confidence(ell, 2.3, 1.0)
        tensor([2.1258, 1.0000, 0.6148])
    """
    check_reduction(reduction)
    values, _ = super_loss_with_confidence(loss, tau, lam)
    return reduce(values, reduction)

r"""λ without tuning: SuperLoss's regularisation read from the losses it sees (``lam="auto"``).

λ sets the loss scale of SuperLoss's weighting: σ* depends on ℓ only through (ℓ − τ)/λ, so a fixed λ
means something different for every loss unit (logits, pixels, years) and every noise level. The
automatic λ reads that scale from the losses themselves.

**Mechanism.** Around τ, SuperLoss's log-confidence falls linearly,

.. math::

    \log\sigma^*(\ell) = -W_0\!\big(\tfrac{\ell-\tau}{2\lambda}\big) \approx -\frac{\ell-\tau}{2\lambda},

at the rate 1/(2λ). The losses of a training set with noisy labels form two groups: a low-loss one
(samples the model fits: mostly clean) and a high-loss one (samples it contradicts: mislabelled
or hard), which noisy-label methods model as a two-component mixture (DivideMix, Li et al., ICLR
2020, fits a two-Gaussian mixture to the losses). With each group summarised by its weight,
mean and variance (π_l, μ_l, v_l) and (π_h, μ_h, v_h), the posterior probability that a loss ℓ
belongs to the low group is a logistic function of the log-likelihood ratio

.. math::

    L(\ell) = \log \mathcal N(\ell; \mu_h, v_h) - \log \mathcal N(\ell; \mu_l, v_l), \qquad
    L'(\tau) = \frac{\tau - \mu_l}{v_l} + \frac{\mu_h - \tau}{v_h},

and where the two groups are equally likely, log P(low | ℓ) falls at the rate L'/2. The automatic λ
makes σ* fall around τ at that rate:

.. math::

    \lambda = 1 / L'(\tau),

each term counted only where τ lies on its side of the group's mean (a group beyond τ says nothing
about how fast confidence should fall at τ). Consequences:

- *scale-free*: multiplying every loss (and a running τ) by c > 0 multiplies μ by c, v by c²,
  hence λ by c — σ* is unchanged and SuperLoss is multiplied by c;
- *noise-adaptive*: λ is the spread of the groups measured against their distance from τ. A model
  that fits its clean samples and contradicts its mislabelled ones makes compact groups far on
  either side of τ: λ is small against that distance and the weighting sharp. When every loss lies
  near τ (early training), λ is of the order of their spread (a quarter of the standard deviation
  for one symmetric group cut in two), and σ* grades the losses within that spread. When τ lies
  above every loss (τ = log C once a model fits a clean training set), every σ* is at its cap e:
  the plain loss, scaled;
- no noise rate, validation set or hyper-parameter is needed.

λ is kept within [S/(2e), 10³·S], S the root mean square of ℓ − τ. Above, σ* is 1 to within 10⁻³
for losses within a few S of τ. Below, σ* would approach a step at τ: every loss above τ would get
no gradient, so a sample the model does not yet fit would never be learned — with a bounded base
loss such as GCE, whose own gradient vanishes on such samples, whole classes were left unlearned (the
two groups became "classes learned" and "classes not", compact, and 1/L'(τ) fell to 10⁻⁴·S; see
docs/results.md). The floor S/(2e) is where a loss one S above τ keeps a confidence of 1/e:
σ* = exp(−W₀(S/(2λ))) ≥ e⁻¹ ⇔ S/(2λ) ≤ W₀⁻¹(1) = e. It keeps σ* a graded weighting over the losses'
own spread, and is scale-free as S is.

**The groups.** A loss above the boundary b is in the high group. The statistics of both groups
(count, Σℓ, Σℓ² per group) are exponential moving averages of the per-batch means, with the
weight ``past_weight`` of the previous value (0.9, as τ's EMA), and b moves to the midpoint of the
two means after each update: one step of Lloyd's two-means algorithm per batch, which follows the
losses as training separates them. Before the first update everything is one group; a group left
empty sets b to the overall mean. The per-batch sums travel in τ's statistics vector
(:func:`superloss.threshold.finite_sums`): still one all-reduce per step under torch.distributed,
so every rank holds the same λ. Non-finite losses are left out.

The functional form (``super_loss(loss, tau, lam="auto")``) has no state: it splits the batch at its
own mean and reads λ from those two groups.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from superloss.threshold import (
    COUNT,
    SUM,
    RunningState,
    check_past_weight,
    finite_sums,
    statistics_dtype,
)

__all__ = ["AutoLambda", "batch_lambda", "lambda_from_groups"]

# The extra slots of the statistics vector, after τ's SUM and COUNT (finite_sums' order).
SQUARES, HIGH_COUNT, HIGH_SUM, HIGH_SQUARES = 2, 3, 4, 5
SLOTS = 6
# λ's range in units of the root mean square of ℓ − τ (module docstring).
LOWEST, HIGHEST = 0.5 / math.e, 1e3  # S/(2e): a loss S above τ keeps σ* ≥ 1/e


def group_quantities(loss: Tensor, boundary: Tensor | float) -> tuple[Tensor, ...]:
    """The per-element quantities whose sums, after Σℓ and n, the groups need: ℓ², h, h·ℓ, h·ℓ²,
    h = 1 where ℓ lies above ``boundary`` (the high group)."""
    high = (loss > boundary).to(loss.dtype)
    squares = loss * loss
    return squares, high, high * loss, high * squares


def lambda_from_groups(means: Tensor, tau: Tensor) -> Tensor:
    """λ = 1/L'(τ) from per-sample means [1, ℓ, ℓ², h, hℓ, hℓ²] of both groups (module docstring).

    ``means`` is float64 (or float32); the result is a 0-dim tensor of its dtype, always finite
    and > 0 when the losses' root mean square about τ is.
    """
    total, sum_, squares, high, high_sum, high_squares = means.unbind()
    low = total - high
    low_sum, low_squares = sum_ - high_sum, squares - high_squares
    tiny = torch.finfo(means.dtype).tiny
    mean_low = low_sum / low.clamp_min(tiny)
    mean_high = high_sum / high.clamp_min(tiny)
    var_low = (low_squares / low.clamp_min(tiny) - mean_low * mean_low).clamp_min(0.0)
    var_high = (high_squares / high.clamp_min(tiny) - mean_high * mean_high).clamp_min(0.0)
    tau = tau.to(means.dtype)
    # Root mean square of ℓ − τ: E[ℓ²] − 2τE[ℓ] + τ².
    count = total.clamp_min(tiny)
    scale = (squares / count - 2.0 * tau * sum_ / count + tau * tau).clamp_min(0.0).sqrt()
    lowest, highest = LOWEST * scale, HIGHEST * scale
    # (τ − μ)/v with v ≥ 0: a zero variance gives +inf, which the range below absorbs.
    low_term = torch.where(
        (low > 0) & (tau > mean_low), (tau - mean_low) / var_low, torch.zeros_like(tau)
    )
    high_term = torch.where(
        (high > 0) & (mean_high > tau), (mean_high - tau) / var_high, torch.zeros_like(tau)
    )
    slope = low_term + high_term
    lam = torch.where(slope * highest > 1.0, 1.0 / slope, highest)
    # Never 0, so that (ℓ − τ)/λ is defined even when every loss equals τ.
    return lam.clamp(min=lowest).clamp_min(torch.finfo(torch.float32).tiny)


def _means(stats: Tensor) -> Tensor:
    """The statistics vector [Σℓ, n, Σℓ², Σh, Σhℓ, Σhℓ²] as per-sample means [1, ℓ, ℓ², h, hℓ, hℓ²]."""
    count = stats[COUNT]
    ordered = torch.stack(
        [count, stats[SUM], stats[SQUARES], stats[HIGH_COUNT], stats[HIGH_SUM], stats[HIGH_SQUARES]]
    )
    return ordered / count.clamp_min(1.0)


def _next_boundary(means: Tensor) -> Tensor:
    """Lloyd's step: the midpoint of the two groups' means; the overall mean if a group is empty."""
    total, sum_, _, high, high_sum, _ = means.unbind()
    low = total - high
    tiny = torch.finfo(means.dtype).tiny
    midpoint = 0.5 * ((sum_ - high_sum) / low.clamp_min(tiny) + high_sum / high.clamp_min(tiny))
    overall = sum_ / total.clamp_min(tiny)
    return torch.where((low > 0) & (high > 0), midpoint, overall)


def batch_lambda(loss: Tensor, tau: Tensor | float) -> Tensor:
    """λ of one batch alone (the functional ``lam="auto"``): the batch split at its mean.

    Returns a 0-dim float64 tensor (float32 on MPS) on ``loss``'s device.
    """
    detached = loss.detach().reshape(-1)
    plain = finite_sums(detached)
    boundary = plain[SUM] / plain[COUNT].clamp_min(1.0)
    stats = finite_sums(detached, *group_quantities(detached, boundary.to(detached.dtype)))
    tau_tensor = torch.as_tensor(tau, dtype=stats.dtype, device=stats.device)
    return lambda_from_groups(_means(stats), tau_tensor)


class AutoLambda(RunningState):
    """The running state of SuperLoss's automatic λ (``SuperLoss(lam="auto")``; module docstring).

    Each training step, :meth:`quantities` gives the per-element quantities whose sums join τ's
    statistics vector (one all-reduce for both), and :meth:`forward` updates the two groups from that
    vector and returns λ for τ.

    Args:
        past_weight: the weight of the previous statistics in their moving average (default 0.9,
            τ's EMA).

    Attributes:
        statistics: (6,) float64 moving averages of the per-sample [1, ℓ, ℓ², h, hℓ, hℓ²].
        boundary: the loss above which a sample is in the high group (+inf before the first
            update).
        lam: λ as of the last call (a 0-dim float64 tensor; NaN before any).
        initialized: whether a training batch has been seen.
    """

    statistics: Tensor
    boundary: Tensor
    lam: Tensor
    initialized: Tensor

    def __init__(self, past_weight: float = 0.9) -> None:
        super().__init__()
        self.past_weight = check_past_weight(past_weight, "past_weight", "statistics")
        self.register_buffer("statistics", torch.zeros(SLOTS, dtype=torch.float64))
        self.register_buffer("boundary", torch.tensor(float("inf"), dtype=torch.float64))
        self.register_buffer("lam", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("initialized", torch.tensor(False))

    def quantities(self, loss: Tensor) -> tuple[Tensor, ...]:
        """ℓ², h, h·ℓ, h·ℓ² of the detached ``loss`` for the statistics vector, computed in the
        statistics' dtype (float64): ℓ² of a large float32 loss would overflow."""
        wide = loss.to(statistics_dtype(loss.device))
        return group_quantities(wide, self.boundary.to(wide.dtype))

    def forward(self, stats: Tensor, tau: Tensor, update: bool) -> Tensor:
        """λ for τ from the statistics vector [Σℓ, n, Σℓ², Σh, Σhℓ, Σhℓ²] of this batch.

        In training (``update``) the groups move first, then λ is read from them; otherwise λ is
        read from the groups as they stand (from this batch alone before any training batch).
        """
        batch = _means(stats).to(self.statistics.dtype)
        seen = stats[COUNT] > 0
        if update:
            weight = self.past_weight
            blended = self.statistics * weight + batch * (1.0 - weight)
            moved = torch.where(self.initialized, blended, batch)
            self.statistics.copy_(torch.where(seen, moved, self.statistics))
            self.initialized.logical_or_(seen)
            self.boundary.copy_(
                torch.where(self.initialized, _next_boundary(self.statistics), self.boundary)
            )
            means = self.statistics
        else:
            means = torch.where(self.initialized, self.statistics, batch)
        lam = lambda_from_groups(means, tau)
        self.lam.copy_(lam)
        return lam

    def extra_repr(self) -> str:
        return f"past_weight={self.past_weight}"

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

Measured (docs/results.md): with τ = log C (the suite's τ for cross-entropy) λ sits at the floor
below from the first epochs on, where S is dominated by the fitted samples' distance below τ — close
to log C/(2e) on clean and noisy data alike. It is not sharper under heavy noise, and around a
bounded base loss (GCE) it can still leave classes unlearned: there, a λ tuned on noisy validation
does better.

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
(:func:`group_sums`, in :func:`superloss.threshold.finite_sums`'s layout): still one all-reduce per
step under torch.distributed, so every rank holds the same λ. Non-finite losses are left out.

The functional form (``super_loss(loss, tau, lam="auto")``) has no state: it splits the batch at its
own mean and reads λ from those two groups.

**Holding λ** (``lam="auto-hold"``). Traced through training runs with mislabelled samples
(docs/results.md), 1/L'(τ) falls while the network fits its clean samples and then *rises*
again while it memorises the mislabelled ones: fitted mislabelled samples join the low group from
above and widen it, so the weighting loosens exactly when it should hold. ``"auto-hold"`` keeps
the sharpness the low group reached before that. With μ_l the low group's mean,

.. math::

    q_t = \frac{\lambda_t}{\tau - \mu_l}, \qquad q^* = \min_{s \le t} q_s, \qquad
    \lambda = \min\big(\lambda_t,\; q^*\,(\tau - \mu_l)\big),

λ_t = 1/L'(τ) without a floor, over training steps where the low group lies below τ (elsewhere
λ = λ_t). q is λ in units of the fitted samples' distance below τ — dimensionless, so the rule stays
scale-free — and for the low group's own term it is v_l/(τ − μ_l)², one over the squared number of
its standard deviations between its mean and τ: q* is the best separation that group has reached.
No time scale is involved. Only two groups that each have a spread set q* (a batch of one loss
would give λ_t = 0 and hold it there).

*The floor, after the hold, with a running τ only.* With a constant τ (a number, log C for
cross-entropy) S is mostly the fitted losses' distance below τ, not a spread: S/(2e) pins λ near
τ/(2e) whatever the noise (measured: 0.42–0.58 with τ = log 10, where the held λ is 0.1–0.2), so
there is none. With a running τ (``"ema"``, ``"global"``) S is the losses' spread about their
running mean and the floor keeps its reason: measured, a bounded base loss (GCE) with the hold and
no floor collapsed as before the floor existed; with it, it does as ``"auto"``. Cost, measured: on
clean data the first epochs look like noisy ones (a high group of samples not learned yet), q* is
set then, and with a constant τ a sharp λ made one small clean set (digits) unstable at the
learning rate tuned for cross-entropy (SuperLoss is concave in ℓ, d²SL/dℓ² = −1/(2λ) at τ: a step
that carries a fitted sample across τ takes its gradient away); at a smaller learning rate it was
stable, with λ below 10⁻⁴ once the fitted losses had collapsed near 0 — σ* a step at τ
(``SuperLoss(normalize=True)`` divides by the mean σ*, giving the plain loss's step size back:
measured, that removed the cost; :mod:`superloss.normalization`). And q* never
rises again, so a run whose losses change regime (a new task, a learning-rate restart) keeps the
sharpness of the earlier one — build a new module (or load a fresh state) then.
The held ratio ``held`` is a buffer (``state_dict``), moves in training only, and is computed from
the all-reduced statistics: the same on every rank, no extra collective.

**Waiting for the losses to leave τ** (``wait``; with a constant τ, both automatic modes, since
0.4.0; with any τ on request since 0.5.0). A constant τ is the loss of a chance prediction (log C
for cross-entropy), and an untrained network's losses all sit there: the two groups are then two
halves of the initial network's random spread, and 1/L'(τ) is as small as that spread is narrow
(traced at 80 % label noise on MNIST: λ = 0.036 at the second step, docs/results.md) — a sharp
weighting of noise, which at that noise rate locked the network onto its first guesses. So
nothing is weighed (λ at its ceiling 10³·S, σ* within 10⁻³ of 1 for losses within a few S of τ)
until the losses have left τ: until the low group's mean lies further below τ, in its own standard
deviations, than the lower half of one Gaussian centred on τ would,

.. math::

    \frac{\tau - \mu_l}{\sqrt{v_l}} > \frac{\sqrt{2/\pi}}{\sqrt{1 - 2/\pi}} \approx 1.32,

that is, once the losses below τ are more than the lower half of one group at chance. From that
training step on the weighting is as above, for good (``started``, a buffer in ``state_dict``, set
from the all-reduced statistics: the same on every rank); the hold's q* starts then too. The
criterion is a ratio of losses (scale-free) and involves no time scale. The functional form,
which has no state, does not wait.

*With a running τ* (``"ema"``, ``"global"``) :class:`~superloss.SuperLoss` does not wait by
default: τ follows the losses, and for a loss with units the plain loss's first steps already fit
what the weighting is for — measured (docs/results.md, "0.5.0"), waiting made digit-value
regression with L2 worse (MAE 0.82 → 1.30 at 40 % target noise, 3 seeds) and clean retrieval
worse (mAP −6.7). But a classifier starts at chance whatever its loss: around a bounded base
loss (GCE, SCE) with τ = EMA, the same weighting of the untrained network's spread left whole
classes unlearned, and waiting removed most of it (MNIST, SuperLoss on GCE at 40 % noise:
41.7 → 77.4 %, 3 seeds).
``SuperLoss(wait=True)`` asks for the wait with any τ (since 0.5.0; the suite sets it for
classification).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from superloss.lambertw import _is_compiling
from superloss.scalar_math import FLOATS, TENSORS, on_host
from superloss.threshold import (
    COUNT,
    SUM,
    RunningState,
    check_past_weight,
    finite_sums,
    statistics_dtype,
)

__all__ = ["AutoLambda", "batch_lambda", "lambda_from_groups"]

# The extra slots of the statistics vector, after τ's SUM and COUNT (finite_sums' order):
# Σℓ², Σhℓ, Σh, Σhℓ² — the rows [ℓ, 1, ℓ²] of the batch and the same times h.
SQUARES, HIGH_SUM, HIGH_COUNT, HIGH_SQUARES = 2, 3, 4, 5
SLOTS = 6
# The slots in the order of the groups' means [1, ℓ, ℓ², h, hℓ, hℓ²].
_MEANS_ORDER = (COUNT, SUM, SQUARES, HIGH_COUNT, HIGH_SUM, HIGH_SQUARES)
# [ℓ, 1, ℓ²] = (offset₁ + scale₁·ℓ)·(offset₂ + scale₂·ℓ), rows [ℓ·1, 1·1, ℓ·ℓ] with 1 = 1 + 0·ℓ
# (NaN where ℓ is not finite, as finite_sums' count row).
_FACTORS = (
    ((0.0,), (1.0,), (0.0,)),  # offset₁
    ((1.0,), (0.0,), (1.0,)),  # scale₁
    ((1.0,), (1.0,), (0.0,)),  # offset₂
    ((0.0,), (0.0,), (1.0,)),  # scale₂
)
_FACTOR_CONSTANTS: dict[tuple[torch.device, torch.dtype], tuple[Tensor, ...]] = {}
# λ's range in units of the root mean square of ℓ − τ (module docstring).
LOWEST, HIGHEST = 0.5 / math.e, 1e3  # S/(2e): a loss S above τ keeps σ* ≥ 1/e
NO_FLOOR = 0.0  # AutoLambda(floor=False); lam="auto-hold" with a constant τ (module docstring)
# wait: the low group's distance below τ, in its own standard deviations, beyond which the losses
# have left τ: that of the lower half of one Gaussian centred on τ, √(2/π)/√(1 − 2/π) (module
# docstring, "Waiting for the losses to leave τ").
LEFT_TAU = math.sqrt(2.0 / math.pi) / math.sqrt(1.0 - 2.0 / math.pi)
_FLOAT32_TINY = torch.finfo(torch.float32).tiny


def group_quantities(loss: Tensor, boundary: Tensor | float) -> tuple[Tensor, ...]:
    """The per-element quantities whose sums, after Σℓ and n, the groups need: ℓ², h·ℓ, h, h·ℓ²,
    h = 1 where ℓ lies above ``boundary`` (the high group)."""
    high = (loss > boundary).to(loss.dtype)
    squares = loss * loss
    return squares, high * loss, high, high * squares


def group_sums(loss: Tensor, boundary: Tensor) -> Tensor:
    """``finite_sums(ℓ, *group_quantities(ℓ, boundary))`` of the detached ``loss`` in the
    statistics' dtype (float64: ℓ² of a large float32 loss would overflow), to the same bits, in 9
    tensor operations rather than 18: the rows [ℓ, 1, ℓ²] as one product of two multiply-adds, the
    same times h, then one sum."""
    wide = loss.reshape(-1).to(statistics_dtype(loss.device))
    if _is_compiling():  # finite_sums' form for graphs
        return finite_sums(wide, *group_quantities(wide, boundary))
    key = (wide.device, wide.dtype)
    factors = _FACTOR_CONSTANTS.get(key)
    if factors is None:
        factors = _FACTOR_CONSTANTS[key] = tuple(
            torch.tensor(values, dtype=wide.dtype, device=wide.device) for values in _FACTORS
        )
    offset, scale, other_offset, other_scale = factors
    rows = torch.addcmul(offset, scale, wide) * torch.addcmul(other_offset, other_scale, wide)
    rows = torch.cat([rows, rows * (wide > boundary)])
    return rows.nan_to_num_(0.0, 0.0, 0.0).sum(1)


def lambda_from_groups(
    means: Any, tau: Any, math_: Any = TENSORS, lowest_factor: float = LOWEST
) -> Any:
    """λ = 1/L'(τ) from per-sample means [1, ℓ, ℓ², h, hℓ, hℓ²] of both groups (module docstring).

    ``means`` is a float64 (or float32) tensor and ``tau`` a 0-dim tensor: the result is a 0-dim
    tensor of ``means``' dtype. With ``math_=FLOATS`` both are Python floats (a sequence of six and
    a float) and so is the result, to the bit but for the square root (see
    :mod:`superloss.scalar_math`: an ulp at most). Always finite and > 0 when the losses' root mean
    square about τ is. ``lowest_factor``: the floor in units of that root mean square (the
    ablation in ``experiments/`` varies it).
    """
    low, high, mean_low, mean_high, var_low, var_high = _groups(means, math_)
    if isinstance(tau, Tensor):
        tau = tau.to(means.dtype)
    scale = rms_about(means, tau, math_)
    lowest, highest = lowest_factor * scale, HIGHEST * scale
    # (τ − μ)/v with v ≥ 0: a zero variance gives +inf, which the range below absorbs.
    low_term = math_.where((low > 0) & (tau > mean_low), math_.div(tau - mean_low, var_low), 0.0)
    high_term = math_.where(
        (high > 0) & (mean_high > tau), math_.div(mean_high - tau, var_high), 0.0
    )
    slope = low_term + high_term
    lam = math_.where(slope * highest > 1.0, math_.div(1.0, slope), highest)
    # Never 0, so that (ℓ − τ)/λ is defined even when every loss equals τ.
    return math_.clamp_min(math_.clamp_min(lam, lowest), _FLOAT32_TINY)


def rms_about(means: Any, tau: Any, math_: Any = TENSORS) -> Any:
    """S, the root mean square of ℓ − τ, from the per-sample means [1, ℓ, ℓ², …]:
    √(E[ℓ²] − 2τE[ℓ] + τ²)."""
    total, sum_, squares, *_ = _six(means)
    count = math_.clamp_min(total, math_.tiny(total))
    return math_.sqrt(math_.clamp_min(squares / count - 2.0 * tau * sum_ / count + tau * tau, 0.0))


def left_tau(means: Any, tau: Any, math_: Any = TENSORS) -> Any:
    """Whether the losses have left τ (``wait``; module docstring): two groups, and the low one's
    mean further below τ than LEFT_TAU of its standard deviations. A boolean (tensor)."""
    low, high, mean_low, _, var_low, _ = _groups(means, math_)
    distance = tau - mean_low
    return (low > 0) & (high > 0) & (distance > 0) & (distance * distance > LEFT_TAU**2 * var_low)


def held_lambda(
    lam: Any, means: Any, tau: Any, held: Any, update: bool, math_: Any = TENSORS
) -> tuple[Any, Any]:
    """``lam="auto-hold"`` (module docstring): (λ, q*) from the unfloored 1/L'(τ) ``lam``, the
    groups' means and the held ratio ``held`` (q*, +inf before any).

    In training (``update``) q* ← min(q*, q) first, q = λ/(τ − μ_l) from two groups that each have
    a spread, the low one below τ. Then λ = min(λ, q*·(τ − μ_l)) where the low group lies below τ,
    ``lam`` elsewhere.
    """
    low, high, mean_low, _, var_low, var_high = _groups(means, math_)
    distance = tau - mean_low
    usable = (low > 0) & (distance > 0)
    safe_distance = math_.where(usable, distance, 1.0)
    if update:
        # Only two groups with a spread each set the ratio: a batch of one loss, or of two values,
        # would give 1/L'(τ) = 0 and hold λ at 0 for good.
        measured = usable & (high > 0) & (var_low > 0) & (var_high > 0)
        held = math_.minimum(held, math_.where(measured, math_.div(lam, safe_distance), math.inf))
    capped = math_.where(usable, math_.minimum(lam, held * safe_distance), lam)
    return math_.clamp_min(capped, _FLOAT32_TINY), held


def _groups(means: Any, math_: Any) -> tuple[Any, ...]:
    """(n_l, n_h, μ_l, μ_h, v_l, v_h) from the per-sample means [1, ℓ, ℓ², h, hℓ, hℓ²]."""
    total, sum_, squares, high, high_sum, high_squares = _six(means)
    low = total - high
    low_sum, low_squares = sum_ - high_sum, squares - high_squares
    tiny = math_.tiny(total)
    mean_low = low_sum / math_.clamp_min(low, tiny)
    mean_high = high_sum / math_.clamp_min(high, tiny)
    var_low = math_.clamp_min(low_squares / math_.clamp_min(low, tiny) - mean_low * mean_low, 0.0)
    var_high = math_.clamp_min(
        high_squares / math_.clamp_min(high, tiny) - mean_high * mean_high, 0.0
    )
    return low, high, mean_low, mean_high, var_low, var_high


def _six(means: Any) -> Any:
    return means.unbind() if isinstance(means, Tensor) else means


def _means(stats: Any) -> Any:
    """The statistics vector [Σℓ, n, Σℓ², Σhℓ, Σh, Σhℓ²] as per-sample means [1, ℓ, ℓ², h, hℓ, hℓ²]
    (a tensor, or a list of Python floats from a list)."""
    if not isinstance(stats, Tensor):
        count = stats[COUNT]
        by = count if count > 1.0 else 1.0
        return [stats[slot] / by for slot in _MEANS_ORDER]
    ordered = torch.stack([stats[slot] for slot in _MEANS_ORDER])
    return ordered / stats[COUNT].clamp_min(1.0)


def _next_boundary(means: Any, math_: Any = TENSORS) -> Any:
    """Lloyd's step: the midpoint of the two groups' means; the overall mean if a group is empty."""
    total, sum_, _, high, high_sum, _ = _six(means)
    low = total - high
    tiny = math_.tiny(total)
    midpoint = 0.5 * (
        (sum_ - high_sum) / math_.clamp_min(low, tiny) + high_sum / math_.clamp_min(high, tiny)
    )
    overall = sum_ / math_.clamp_min(total, tiny)
    return math_.where((low > 0) & (high > 0), midpoint, overall)


def batch_lambda(loss: Tensor, tau: Tensor | float) -> Tensor:
    """λ of one batch alone (the functional ``lam="auto"``): the batch split at its mean.

    Returns a 0-dim float64 tensor (float32 on MPS) on ``loss``'s device.
    """
    detached = loss.detach().reshape(-1)
    plain = finite_sums(detached)
    boundary = plain[SUM] / plain[COUNT].clamp_min(1.0)
    stats = group_sums(detached, boundary)
    if on_host(stats) and not (isinstance(tau, Tensor) and tau.device.type != "cpu"):
        lam = lambda_from_groups(_means(stats.tolist()), float(tau), FLOATS)
        return torch.scalar_tensor(lam, dtype=stats.dtype)
    tau_tensor = torch.as_tensor(tau, dtype=stats.dtype, device=stats.device)
    result: Tensor = lambda_from_groups(_means(stats), tau_tensor)
    return result


class AutoLambda(RunningState):
    """The running state of SuperLoss's automatic λ (``SuperLoss(lam="auto")``; module docstring).

    Each training step, :meth:`batch_statistics` gives the batch's statistics vector, τ's slots
    first (one all-reduce for both), and :meth:`forward` updates the two groups from that vector
    and returns λ for τ.

    Args:
        past_weight: the weight of the previous statistics in their moving average (default 0.9,
            τ's EMA).
        hold: ``lam="auto-hold"``: λ never relaxes against the low group's distance below τ
            (module docstring, "Holding λ").
        floor: keep λ ≥ S/(2e) (default). With ``hold``, :class:`~superloss.SuperLoss` sets it
            for a running τ only.
        wait: weigh nothing (λ at its ceiling 10³·S, σ* within 10⁻³ of 1) until the losses have
            left τ, then as usual from that step on (module docstring); the hold starts then too.
            :class:`~superloss.SuperLoss` sets it for a constant τ, and with ``wait=True`` for
            any τ.

    Attributes:
        statistics: (6,) float64 moving averages of the per-sample [1, ℓ, ℓ², h, hℓ, hℓ²].
        boundary: the loss above which a sample is in the high group (+inf before the first
            update).
        lam: λ as of the last call (a 0-dim float64 tensor; NaN before any).
        initialized: whether a training batch has been seen.
        held: with ``hold``, q* = the smallest λ/(τ − μ_l) of the training steps so far (+inf
            before any); not registered otherwise.
        started: with ``wait``, whether the losses have left τ in a training step so far (False
            before); not registered otherwise. A state saved without it loads as started.
    """

    statistics: Tensor
    boundary: Tensor
    lam: Tensor
    initialized: Tensor
    held: Tensor  # registered with hold=True only
    started: Tensor  # registered with wait=True only
    lowest_factor: float = LOWEST  # λ's floor in units of S (module docstring)

    def __init__(
        self, past_weight: float = 0.9, hold: bool = False, floor: bool = True, wait: bool = False
    ) -> None:
        super().__init__()
        self.past_weight = check_past_weight(past_weight, "past_weight", "statistics")
        self.hold = bool(hold)
        self.wait = bool(wait)
        if not floor:
            self.lowest_factor = NO_FLOOR
        if self.hold:
            self.register_buffer("held", torch.tensor(math.inf, dtype=torch.float64))
        if self.wait:
            self.register_buffer("started", torch.tensor(False))
        self.register_buffer("statistics", torch.zeros(SLOTS, dtype=torch.float64))
        self.register_buffer("boundary", torch.tensor(float("inf"), dtype=torch.float64))
        self.register_buffer("lam", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("initialized", torch.tensor(False))

    def batch_statistics(self, loss: Tensor) -> Tensor:
        """The statistics vector [Σℓ, n, Σℓ², Σhℓ, Σh, Σhℓ²] of the detached ``loss`` (τ's slots
        first: one vector, one all-reduce for both), h from the current boundary."""
        return group_sums(loss, self.boundary)

    def forward(self, stats: Tensor, tau: Tensor, update: bool) -> Tensor:
        """λ for τ from the statistics vector [Σℓ, n, Σℓ², Σhℓ, Σh, Σhℓ²] of this batch.

        In training (``update``) the groups move first, then λ is read from them; otherwise λ is
        read from the groups as they stand (from this batch alone before any training batch).
        """
        if on_host(stats) and self.statistics.device.type == "cpu":
            return self._forward_on_host(stats, tau, update)
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
        wide_tau = tau.to(means.dtype) if isinstance(tau, Tensor) else tau
        if self.wait and update:
            self.started.logical_or_(self.initialized & left_tau(means, wide_tau))
        if self.hold:
            # The ratio is read from 1/L'(τ) itself; the floor, if any, comes after the hold.
            raw = lambda_from_groups(means, tau, TENSORS, NO_FLOOR)
            lam, held = held_lambda(raw, means, wide_tau, self.held, update)
            if update:
                # With wait, the hold starts with the weighting.
                self.held.copy_(torch.where(self.started, held, self.held) if self.wait else held)
            if self.lowest_factor > 0:
                lam = torch.maximum(lam, self.lowest_factor * rms_about(means, wide_tau))
        else:
            lam = lambda_from_groups(means, tau, TENSORS, self.lowest_factor)
        if self.wait:
            ceiling = (HIGHEST * rms_about(means, wide_tau)).clamp_min(_FLOAT32_TINY)
            lam = torch.where(self.started, lam, ceiling)
        self.lam.copy_(lam)
        result: Tensor = lam
        return result

    def _forward_on_host(self, stats: Tensor, tau: Tensor, update: bool) -> Tensor:
        """:meth:`forward` on Python floats (:mod:`superloss.scalar_math`): the same state to the
        bit, λ to an ulp (the square root of its floor)."""
        values = stats.tolist()
        batch = _means(values)
        initialized = bool(self.initialized)
        if update and values[COUNT] > 0:  # a batch with finite losses moves the groups
            if initialized:
                weight = self.past_weight
                past = self.statistics.tolist()
                batch = [a * weight + b * (1.0 - weight) for a, b in zip(past, batch, strict=True)]
            else:
                self.initialized.fill_(True)
            self.statistics.copy_(torch.tensor(batch, dtype=torch.float64))
            means = batch
        else:
            means = self.statistics.tolist() if initialized else batch
        if update and (initialized or values[COUNT] > 0):
            self.boundary.fill_(_next_boundary(means, FLOATS))
        started = bool(self.started) if self.wait else True
        if not started and update and (initialized or values[COUNT] > 0):  # the groups moved
            started = bool(left_tau(means, float(tau), FLOATS))
            if started:
                self.started.fill_(True)
        if self.hold:
            raw = lambda_from_groups(means, float(tau), FLOATS, NO_FLOOR)
            lam, held = held_lambda(raw, means, float(tau), float(self.held), update, FLOATS)
            if update and started:  # with wait, the hold starts with the weighting
                self.held.fill_(held)
            if self.lowest_factor > 0:
                floor = self.lowest_factor * rms_about(means, float(tau), FLOATS)
                lam = floor if lam < floor else lam
        else:
            lam = lambda_from_groups(means, float(tau), FLOATS, self.lowest_factor)
        if not started:
            ceiling = HIGHEST * rms_about(means, float(tau), FLOATS)
            lam = ceiling if ceiling > _FLOAT32_TINY else _FLOAT32_TINY
        self.lam.fill_(lam)
        return self.lam.clone()

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # A state saved before ``wait`` existed was already weighting: it loads as started.
        key = prefix + "started"
        if self.wait and key not in state_dict and prefix + "statistics" in state_dict:
            state_dict[key] = torch.tensor(True)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        hold = ", hold=True" if self.hold else ""
        floor = "" if self.lowest_factor > 0 else ", floor=False"
        wait = ", wait=True" if self.wait else ""
        return f"past_weight={self.past_weight}{hold}{floor}{wait}"

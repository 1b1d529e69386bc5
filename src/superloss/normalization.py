r"""SuperLoss with weights that average one: ``SuperLoss(normalize=True)``.

**Why.** SuperLoss's gradient is σ*·∂ℓ/∂θ, with σ* ∈ (0, e]: a sample below τ gets up to e times the
plain loss's step. With τ = log C (cross-entropy over C classes) *every* fitted sample is far below
τ, so on clean data the whole batch steps e times as far as the plain loss would at the same
learning rate — a learning rate tuned for the plain loss is then too large. SuperLoss is also
concave in ℓ (d²SL/dℓ² = dσ*/dℓ, −1/(2λ) at τ): with a sharp λ a step that carries a fitted sample
across τ takes its gradient away instead of pulling it back, and the larger the step, the more
samples are carried across (docs/results.md measures both: clean data became unstable with a sharp
automatic λ at the learning rate tuned for cross-entropy, and stable at a smaller one).

**What.** The loss is divided by the mean confidence m of the training batches,

.. math::

    \mathrm{SL}_\mathrm{n}(\ell_i) = \mathrm{SL}(\ell_i) / m, \qquad
    \text{gradient } \frac{\sigma^*_i}{m}\,\frac{\partial \ell_i}{\partial\theta},

so the weights σ*/m average one: the step has the plain loss's size whatever λ and τ, and only
its distribution over the samples changes (what SuperLoss is for). Weights normalised to a mean
of one per batch are the usual form of example reweighting (Ren et al., "Learning to Reweight
Examples for Robust Deep Learning", ICML 2018, normalise theirs per batch; Shu et al.,
Meta-Weight-Net, NeurIPS 2019, likewise), for the same reason: the learning rate keeps its meaning.
m is a constant to the gradient (a detached scale): σ*'s own gradient is untouched.

**m.** An exponential moving average (weight ``past_weight``, τ's 0.9) of the all-reduced mean σ*
of the training batches *before* this one: σ* is known only once τ and λ are, after the one
all-reduce of the step, so this batch's Σσ* and count travel in the *next* step's statistics
vector — still one collective per step, the same m on every rank, and the same m in one process
as in several with the same global batches. Before any training batch m = 1 (the paper's loss);
m is never below float32's smallest normal number. Elements whose loss is not finite are left out
(as τ leaves them out; an infinite loss has σ* = 0). Updated in training mode only; the buffers
(``pending``, ``mean``, ``initialized``) are in ``state_dict``, so a resumed run divides by the
same m.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from superloss.scalar_math import on_host
from superloss.threshold import RunningState, check_past_weight, finite_sums

__all__ = ["ConfidenceScale"]

SLOTS = 2  # [Σσ*, n] of the last training batch, after τ's and λ's slots in the step's vector
_FLOAT32_TINY = torch.finfo(torch.float32).tiny


class ConfidenceScale(RunningState):
    """The running mean confidence m that ``SuperLoss(normalize=True)`` divides by (module
    docstring).

    Each training step: :meth:`carried` gives last batch's [Σσ*, n] (this process's) to append
    to the step's statistics vector; after the all-reduce :meth:`forward` folds them into m and
    returns the divisor; :meth:`record` keeps this batch's [Σσ*, n] for the next step.

    Args:
        past_weight: the weight of the previous m in its moving average (default 0.9).

    Attributes:
        pending: (2,) float64 [Σσ*, n] of the last training batch on this process, not yet folded
            into m.
        mean: m, the moving average of the batches' mean σ* (NaN before any).
        initialized: whether m holds a batch's mean.
    """

    pending: Tensor
    mean: Tensor
    initialized: Tensor

    def __init__(self, past_weight: float = 0.9) -> None:
        super().__init__()
        self.past_weight = check_past_weight(past_weight, "past_weight", "mean confidence")
        self.register_buffer("pending", torch.zeros(SLOTS, dtype=torch.float64))
        self.register_buffer("mean", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("initialized", torch.tensor(False))

    def carried(self, dtype: torch.dtype) -> Tensor:
        """Last training batch's [Σσ*, n], in the statistics' ``dtype``."""
        return self.pending.to(dtype)

    def forward(self, carried: Tensor | None) -> Tensor | float:
        """The divisor m (1 before any training batch), after folding the all-reduced [Σσ*, n]
        ``carried`` into it (training; None: read only). A 0-dim float64 tensor, or a Python
        float where the state lives on the CPU outside a compiled graph (the same value: fewer
        tensor operations, each of which costs its dispatch)."""
        if on_host(self.mean) and (carried is None or on_host(carried)):
            return self._forward_on_host(carried)
        if carried is not None:
            count = carried[1].to(self.mean.dtype)
            seen = count > 0
            batch = carried[0].to(self.mean.dtype) / count.clamp_min(1.0)
            weight = self.past_weight
            moved = torch.where(
                self.initialized, self.mean * weight + batch * (1.0 - weight), batch
            )
            self.mean.copy_(torch.where(seen, moved, self.mean))
            self.initialized.logical_or_(seen)
        divisor = torch.where(self.initialized, self.mean, 1.0)
        return divisor.clamp_min(_FLOAT32_TINY)

    def _forward_on_host(self, carried: Tensor | None) -> float:
        """:meth:`forward` on Python floats: the same state, to the bit."""
        initialized = bool(self.initialized)
        mean = float(self.mean)
        if carried is not None:
            total, count = carried.tolist()
            if count > 0:
                batch = total / count
                weight = self.past_weight
                mean = mean * weight + batch * (1.0 - weight) if initialized else batch
                self.mean.fill_(mean)
                if not initialized:
                    self.initialized.fill_(True)
                initialized = True
        return max(mean, _FLOAT32_TINY) if initialized else 1.0

    def record(self, confidence: Tensor, loss: Tensor) -> None:
        """Keep this training batch's [Σσ*, n] for the next step's vector, over the elements whose
        (detached) ``loss`` is finite, as τ's statistics (an infinite loss has σ* = 0)."""
        kept = torch.where(torch.isfinite(loss), confidence.detach(), math.nan)
        self.pending.copy_(finite_sums(kept))

    def extra_repr(self) -> str:
        return f"past_weight={self.past_weight}"

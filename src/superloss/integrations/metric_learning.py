r"""SuperLoss as a pytorch-metric-learning (PML) reducer: any of its losses, per pair or triplet.

PML splits a loss into the per-element losses it computes (per positive pair, negative pair, triplet
or anchor) and a *reducer* that turns them into one number. :class:`SuperLossReducer` is such a
reducer: it applies SuperLoss to the per-element losses,

.. math::

    \mathrm{SL}(\ell_i) = (\ell_i - \tau)\,\sigma_i^* + \lambda (\log \sigma_i^*)^2,

and averages (or sums) the result, so every pair's or triplet's gradient is weighted by its
confidence σ*: pairs far harder than the rest — often wrong pairs made by noisy labels — count less.

Which threshold. The default is ``tau="ema"``, an exponential moving average of the batch-mean
element loss: pair and triplet losses have no natural constant (their scale depends on the distance,
the margins and how far training has gone), unlike cross-entropy's log C.

One reducer per loss term, so separate thresholds. A PML loss deep-copies the reducer it is given,
once per sub-loss when it has several (:class:`~pytorch_metric_learning.losses.ContrastiveLoss` has
``pos_loss`` and ``neg_loss``, combined by PML's ``MultipleReducers`` as the sum of the two reduced
terms). Each copy holds its own SuperLoss and τ, and that is wanted: the two terms measure
different things on different scales (``relu(d - pos_margin)`` over the few positive pairs,
``relu(neg_margin - d)`` over the many negative pairs, most of them zero), so one shared τ would be
set by the negatives alone and would judge every positive pair against them. With separate
thresholds a wrong positive pair is singled out among positives, a wrong negative pair among
negatives. A consequence of the copying: the instance passed as ``reducer=`` is not the one that
runs; read σ from the loss's own ``reducer`` (see the example).

What the value means. For λ → ∞, σ* → 1 and SL(ℓ) → ℓ − τ: the gradients are those of the mean
reduction, and the value is the mean minus τ. With ``nonzero_only=True`` only the elements with
a positive loss enter (SuperLoss and τ alike), as in PML's ``AvgNonZeroReducer``, the default
reducer of its contrastive and triplet losses; the default (``False``) treats every pair or triplet
as a sample, as PML's ``MeanReducer`` does.

Importing this module needs ``pytorch-metric-learning`` (the ``metric-learning`` extra); importing
:mod:`superloss` does not.

Example:
    >>> import torch
    >>> from pytorch_metric_learning.losses import ContrastiveLoss
    >>> from superloss.integrations.metric_learning import SuperLossReducer
    >>> loss_fn = ContrastiveLoss(pos_margin=0.0, neg_margin=1.0, reducer=SuperLossReducer(lam=1.0))
    >>> embeddings = torch.randn(16, 8, requires_grad=True)
    >>> labels = torch.arange(16) % 4
    >>> loss_fn(embeddings, labels).backward()
    >>> loss_fn.reducer.reducers["pos_loss"].last_confidence.shape  # one σ per positive pair
    torch.Size([48])
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from superloss.integrations import HoldsSuperLoss, requires_extra
from superloss.loss import SuperLoss

with requires_extra("metric_learning", "metric-learning"):
    from pytorch_metric_learning.reducers import BaseReducer

__all__ = ["SuperLossReducer"]

REDUCER_REDUCTIONS = ("mean", "sum")


class SuperLossReducer(HoldsSuperLoss, BaseReducer):  # type: ignore[misc]  # PML has no type information
    r"""A PML reducer applying SuperLoss to a loss's per-pair / per-triplet / per-element losses.

    Args:
        tau: the threshold τ: ``"ema"`` (default), ``"global"`` or a number (see
            :class:`superloss.SuperLoss`).
        lam: the regularisation λ > 0 (default 1).
        reduction: ``"mean"`` (default) or ``"sum"`` over the elements (a reducer returns one
            number).
        ema_past_weight: for ``tau="ema"``, the weight of the previous τ (default 0.9).
        nonzero_only: keep only the elements with a positive loss, as ``AvgNonZeroReducer`` does
            (default False: every element counts, as in ``MeanReducer``).
        sync_threshold: all-reduce τ's batch statistics under ``torch.distributed`` (default True).
            Every rank then calls the reducer in every step; a call without any pair (PML's zero
            loss) still takes part, with an empty batch.
        normalize: divide by the running mean confidence, so the weights average one
            (default False; see :class:`superloss.SuperLoss`).
        **kwargs: passed to PML's ``BaseReducer`` (``collect_stats``).

    Attributes:
        super_loss: the :class:`superloss.SuperLoss` module; its τ is in ``state_dict``.
        last_confidence: σ* of the last call, one per element kept (empty if the call had none), or
            None before the first call.
        last_tau: τ of the last call (0-dim tensor), or None.

    The reduction hooks (``element``, ``pos_pair``, ``neg_pair``, ``triplet``) all do the same: each
    PML sub-loss is one population of elements, with its own reducer copy and τ (module docstring).
    """

    def __init__(
        self,
        tau: float | str = "ema",
        lam: float = 1.0,
        reduction: str = "mean",
        ema_past_weight: float = 0.9,
        nonzero_only: bool = False,
        sync_threshold: bool = True,
        normalize: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if reduction not in REDUCER_REDUCTIONS:
            raise ValueError(
                f"reduction must be one of {REDUCER_REDUCTIONS} (a reducer returns one number), "
                f"got {reduction!r}"
            )
        self.super_loss = SuperLoss(
            tau=tau,
            lam=lam,
            reduction=reduction,
            ema_past_weight=ema_past_weight,
            sync_threshold=sync_threshold,
            normalize=normalize,
        )
        self.nonzero_only = bool(nonzero_only)

    def reduce_the_loss(
        self,
        losses: Any,
        loss_indices: Any,
        reduction_type: str,
        kwargs: dict[str, Any],
        embeddings: Tensor,
        labels: Tensor | None,
    ) -> Tensor:
        if self.input_is_zero_loss(losses):
            # No pair this step: an empty batch leaves τ as it is, keeps a distributed τ's
            # all-reduce in step with the other ranks, and makes σ of this call empty.
            self.super_loss(embeddings.new_zeros(0))
        result: Tensor = super().reduce_the_loss(
            losses, loss_indices, reduction_type, kwargs, embeddings, labels
        )
        return result

    def _super_loss(self, losses: Tensor) -> Tensor:
        if self.nonzero_only:
            losses = losses[losses > 0]
        result: Tensor = self.super_loss(losses)
        return result

    def element_reduction(self, losses: Tensor, *_: Any) -> Tensor:
        return self._super_loss(losses)

    def pos_pair_reduction(self, losses: Tensor, *_: Any) -> Tensor:
        return self._super_loss(losses)

    def neg_pair_reduction(self, losses: Tensor, *_: Any) -> Tensor:
        return self._super_loss(losses)

    def triplet_reduction(self, losses: Tensor, *_: Any) -> Tensor:
        return self._super_loss(losses)

    def extra_repr(self) -> str:
        return f"nonzero_only={self.nonzero_only}"

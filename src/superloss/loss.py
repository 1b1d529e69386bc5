"""``SuperLoss``: the module twin of :func:`superloss.functional.super_loss`, holding τ's state."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from superloss.auto_lambda import AutoLambda
from superloss.functional import (
    AUTO,
    AUTO_HOLD,
    _working,
    check_lam,
    check_loss,
    check_reduction,
    super_loss_parts,
)
from superloss.normalization import ConfidenceScale
from superloss.threshold import (
    ConstantThreshold,
    EMAThreshold,
    GlobalMeanThreshold,
    Threshold,
    all_reduce_statistics,
    batch_statistics,
    distributed_world_size,
    finite_sums,
    statistics_dtype,
)

__all__ = ["SuperLoss"]

THRESHOLDS = ("ema", "global", "log_classes")


def _build_threshold(
    tau: float | str, num_classes: int | None, ema_past_weight: float
) -> Threshold:
    if isinstance(tau, bool) or not isinstance(tau, (int, float, str)):
        raise ValueError(
            f"tau must be a number or one of {THRESHOLDS}, got {tau!r} ({type(tau).__name__})"
        )
    if num_classes is not None and tau != "log_classes":
        raise ValueError(f"num_classes is only used with tau='log_classes', got tau={tau!r}")
    if isinstance(tau, str):
        if tau == "ema":
            return EMAThreshold(ema_past_weight)
        if tau == "global":
            return GlobalMeanThreshold()
        if tau == "log_classes":
            if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
                raise ValueError(
                    f"tau='log_classes' needs num_classes, an int >= 2, got {num_classes!r}"
                )
            return ConstantThreshold(math.log(num_classes))
        raise ValueError(f"unknown threshold {tau!r}: expected a number or one of {THRESHOLDS}")
    if not math.isfinite(tau):
        raise ValueError(f"tau must be finite, got {tau}")
    return ConstantThreshold(float(tau))


class SuperLoss(nn.Module):
    r"""SuperLoss (Castells et al., NeurIPS 2020) on top of any per-sample loss.

    .. math::

        \mathrm{SL}(\ell) = (\ell - \tau)\,\sigma^* + \lambda (\log \sigma^*)^2, \qquad
        \sigma^* = \exp\!\Big(-W_0\big(\tfrac12
            \max(-\tfrac2e, \tfrac{\ell - \tau}{\lambda})\big)\Big)

    Each element of the per-sample loss (a sample, a box, a pair) is weighted by its confidence σ*:
    easy samples (ℓ < τ) up to e, hard ones down towards 0. The gradient reaching the network is
    σ*·∂ℓ/∂θ; σ* is computed from the detached loss, with no host synchronisation.

    Args:
        criterion: optional base criterion returning per-sample losses, e.g.
            ``nn.CrossEntropyLoss(reduction="none")``; ``forward`` then takes its arguments. One
            that reduces (``reduction`` other than ``"none"``) is refused. Without it, ``forward``
            takes the per-sample loss tensor itself.
        tau: the threshold τ: a number (e.g. ``math.log(C)`` for cross-entropy over C classes);
            ``"log_classes"`` with ``num_classes=C`` for that same log C; ``"ema"`` (default) — an
            exponential moving average of the batch-mean loss, initialised from the first batch;
            ``"global"`` — the mean of every loss seen in training.
        lam: the regularisation λ > 0 (default 1). Small λ sharpens the weighting; λ → ∞ gives the
            plain loss back. ``"auto"``: λ read from the losses seen in training, scale-free and
            noise-adaptive, no value to choose (:mod:`superloss.auto_lambda`): λ = 1/L'(τ), the
            inverse slope at τ of the log-likelihood ratio between a high-loss and a low-loss group
            of the losses, kept as running statistics (``auto_lambda``, in ``state_dict``).
            ``"auto-hold"``: the same λ, never allowed to relax against the low-loss group's
            distance below τ once it has been sharp, so that a network memorising mislabelled
            samples does not loosen its own weighting; its floor is kept with a running τ only
            (see :mod:`superloss.auto_lambda`). Sharp: with a learning rate tuned for the plain
            loss, clean training can swing; lower it then, or pass ``normalize=True``.
            With a constant τ both automatic modes weigh nothing until the losses have left τ
            (an untrained network's losses all sit at log C; :mod:`superloss.auto_lambda`).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. The mean of an empty batch is 0.
        num_classes: C for ``tau="log_classes"``.
        ema_past_weight: for ``tau="ema"``, the weight of the previous τ:
            τ ← ema_past_weight·τ + (1 − ema_past_weight)·mean(ℓ). In [0, 1); default 0.9. The
            running statistics of ``lam="auto"`` and ``normalize``'s m use the same weight.
        sync_threshold: under an initialised ``torch.distributed``, all-reduce the running
            threshold's (and the automatic λ's, and ``normalize``'s confidence sums) batch
            statistics once per training step so every rank holds the same τ, λ and m (default
            True). Every rank must then call the module in every training step, with an
            empty batch if need be.
        normalize: divide the loss by the running mean confidence m of the training batches, so
            that the weights σ*/m average one and a learning rate tuned for the plain loss keeps
            its meaning (default False: the paper's loss). SuperLoss weights fitted samples up to
            e (with τ = log C, every fitted sample): steps up to e times the plain loss's, which
            a sharp λ (``"auto-hold"``) turns into instability on clean data. m is an EMA
            (``ema_past_weight``) of the batches before this one, carried in the same all-reduce
            as τ's statistics (:mod:`superloss.normalization`). ``last_confidence`` stays σ*.
        wait: with ``lam="auto"`` or ``"auto-hold"``, weigh nothing until the losses have left τ
            (:mod:`superloss.auto_lambda`, "Waiting for the losses to leave τ"). None (default):
            with a constant τ only. True: with a running τ too — for a classifier, whose
            untrained losses are one group at chance whatever its loss and τ (measured: SuperLoss
            on GCE with τ = "ema", docs/results.md). Not for regression: a regressor's target
            noise shows from its first steps, and waiting lets it be fitted (measured there too).
            False: never. Ignored with a fixed λ.

    Running thresholds update only in training mode, from the finite elements of the detached loss.
    Non-finite losses are left out of τ and give non-finite (NaN) output elements of their own.

    Attributes:
        threshold: the τ module (its buffers are in ``state_dict``).
        last_confidence: σ* of the last call (detached, shape of the per-sample loss), or None.
        last_loss: the detached per-sample loss of the last call, or None.
        last_tau: τ used in the last call (0-dim tensor), or None.
        last_lam: λ used in the last call (0-dim tensor, or the number ``lam``), or None.
        auto_lambda: the :class:`~superloss.auto_lambda.AutoLambda` state with ``lam="auto"``
            or ``"auto-hold"``, else None.
        confidence_scale: the :class:`~superloss.normalization.ConfidenceScale` state with
            ``normalize=True``, else None.

    Shape:
        - per-sample loss: :math:`(*)`, any shape
        - Output: scalar, or :math:`(*)` for ``reduction="none"``

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from superloss import SuperLoss
        >>> criterion = SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau="log_classes",
        ...                       num_classes=10, lam=1.0)
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> loss = criterion(logits, torch.randint(0, 10, (8,)))
        >>> loss.backward()
        >>> criterion.last_confidence.shape
        torch.Size([8])
    """

    last_confidence: Tensor | None
    last_loss: Tensor | None
    last_tau: Tensor | None
    last_lam: Tensor | float | None

    def __init__(
        self,
        criterion: Callable[..., Tensor] | None = None,
        *,
        tau: float | str = "ema",
        lam: float | str = 1.0,
        reduction: str = "mean",
        num_classes: int | None = None,
        ema_past_weight: float = 0.9,
        sync_threshold: bool = True,
        normalize: bool = False,
        wait: bool | None = None,
    ) -> None:
        super().__init__()
        if wait is not None and not isinstance(wait, bool):
            raise TypeError(f"wait must be True, False or None, got {wait!r}")
        if criterion is not None:
            if not callable(criterion):
                raise TypeError(
                    f"criterion must be callable (e.g. nn.CrossEntropyLoss(reduction='none')), "
                    f"got {type(criterion).__name__}"
                )
            base_reduction = getattr(criterion, "reduction", "none")
            if base_reduction != "none":
                raise ValueError(
                    f"the base criterion reduces its loss (reduction={base_reduction!r}); "
                    "SuperLoss needs one loss per sample: "
                    f"pass {type(criterion).__name__}(reduction='none')"
                )
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True or False, got {normalize!r}")
        check_lam(lam, running=True)
        check_reduction(reduction)
        self.criterion = criterion
        self.threshold = _build_threshold(tau, num_classes, ema_past_weight)
        automatic = lam in (AUTO, AUTO_HOLD)
        self.auto_lambda: AutoLambda | None = None
        if automatic:
            # auto-hold keeps the floor S/(2e) with a running τ only (superloss.auto_lambda).
            hold = lam == AUTO_HOLD
            floor = not hold or self.threshold.running
            # It weighs nothing until the losses have left τ (superloss.auto_lambda): by default
            # with a constant τ (log C, the loss of a chance prediction) only; wait=True asks for
            # it with a running τ too (a classifier starts at chance whatever τ).
            wait = not self.threshold.running if wait is None else wait
            self.auto_lambda = AutoLambda(ema_past_weight, hold=hold, floor=floor, wait=wait)
        self.confidence_scale: ConfidenceScale | None = None
        if normalize:
            self.confidence_scale = ConfidenceScale(ema_past_weight)
        self.lam: float | str = str(lam) if automatic else float(lam)
        self.reduction = reduction
        self.sync_threshold = bool(sync_threshold)
        self.last_confidence = None
        self.last_loss = None
        self.last_tau = None
        self.last_lam = None

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        if self.criterion is not None:
            loss = self.criterion(*args, **kwargs)
        elif len(args) == 1 and not kwargs:
            loss = args[0]
        else:
            raise TypeError(
                "SuperLoss without a base criterion takes one tensor of per-sample losses; "
                "build it as SuperLoss(criterion) to pass the criterion's own arguments"
            )
        check_loss(loss)  # before τ's state is touched: bad input changes nothing
        detached = loss.detach()
        training = self.training
        scale: ConfidenceScale | None
        scale = self._modules.get("confidence_scale")  # type: ignore[assignment]
        tau, lam, carried = self._tau_and_lam(detached, scale if training else None)
        working = _working(loss)
        # τ and λ (float64) enter as scalars of the loss's dtype; next to a 0-dim loss, converted.
        constant_tau, constant_lam = tau, lam
        if working.dim() == 0:
            constant_tau = tau.to(working.dtype)
            constant_lam = lam.to(working.dtype) if isinstance(lam, Tensor) else lam
        result, sigma = super_loss_parts(working, constant_tau, constant_lam, self.reduction)
        if scale is not None:
            divisor = scale.forward(carried)
            if isinstance(divisor, Tensor):
                divisor = divisor.to(result.dtype)
            result = result / divisor
            if training:
                scale.record(sigma, detached)
        # Plain attributes (no parameter, buffer or module), set without nn.Module.__setattr__'s
        # bookkeeping, which costs as much as a tensor operation each. τ and λ are this batch's:
        # the running state moves on, these do not.
        for name, value in (
            ("last_confidence", sigma),
            ("last_loss", detached),
            ("last_tau", tau),
            ("last_lam", lam),
        ):
            object.__setattr__(self, name, value)
        return result

    def _tau_and_lam(
        self, detached: Tensor, scale: ConfidenceScale | None
    ) -> tuple[Tensor, float | Tensor, Tensor | None]:
        """τ and λ for this batch, their running state moved in training; with ``scale`` (in
        training, ``normalize=True``) also the all-reduced [Σσ*, n] of the last batch, carried in
        the same vector: one all-reduce per step."""
        training = self.training
        sync = self.sync_threshold and training
        # The submodules' forward is called directly: nn.Module.__call__'s hook machinery costs
        # as much as a tensor operation, twice a step, for modules nobody hooks.
        threshold: Threshold = self._modules["threshold"]  # type: ignore[assignment]
        auto_lambda: AutoLambda | None
        auto_lambda = self._modules.get("auto_lambda")  # type: ignore[assignment]
        carried = None
        if auto_lambda is not None:
            # τ's and λ's statistics in one vector: one all-reduce for both.
            stats: Tensor | None = auto_lambda.batch_statistics(detached)
            if scale is not None:
                stats, carried = _carry(stats, scale, sync, detached.device)
            elif sync:
                all_reduce_statistics(stats)  # type: ignore[arg-type]
            tau = threshold.forward(stats, update=training)  # type: ignore[arg-type]
            return tau, auto_lambda.forward(stats, tau, update=training), carried  # type: ignore[arg-type]
        plain = None
        if scale is not None:
            sums = finite_sums(detached) if threshold.running else None
            plain, carried = _carry(sums, scale, sync, detached.device)
        elif threshold.running:
            plain = batch_statistics(detached, sync=sync)
        tau = threshold.forward(plain, update=training)  # type: ignore[arg-type]
        return tau, self.lam, carried  # type: ignore[return-value]

    def extra_repr(self) -> str:
        normalize = ", normalize=True" if self.confidence_scale is not None else ""
        return (
            f"lam={self.lam}, reduction={self.reduction!r}, "
            f"sync_threshold={self.sync_threshold}{normalize}"
        )


def _carry(
    stats: Tensor | None, scale: ConfidenceScale, sync: bool, device: torch.device
) -> tuple[Tensor | None, Tensor]:
    """``stats`` with the last batch's [Σσ*, n] appended, all-reduced once if ``sync``; split
    back into (the statistics, or None without any, and the carried pair)."""
    dtype = stats.dtype if stats is not None else statistics_dtype(device)
    carried = scale.carried(dtype)
    if not sync or distributed_world_size() <= 1:  # nothing to reduce: no vector to build
        return stats, carried
    vector = carried if stats is None else torch.cat([stats, carried])
    all_reduce_statistics(vector)
    if stats is None:
        return None, vector
    return vector[: stats.numel()], vector[stats.numel() :]

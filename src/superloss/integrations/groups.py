r"""Per-box losses weighted per population: foreground and background boxes, each with its own rule.

A detector's box losses come from two populations whose losses differ by orders of magnitude (most
background boxes are easy), so a SuperLoss with one threshold τ for all of them would have τ set by
the background alone and would judge every foreground box against it, down-weighting them all — a
shift of the foreground/background balance, not a weighting of wrong boxes. :func:`two_groups` applies
one function (one SuperLoss, one τ) to the foreground boxes and another to the background boxes, and
puts their results back in box order. It is the rule of
:mod:`superloss.integrations.torchvision` and of the suite's detection task.

Needs only torch.

Example:
    >>> import torch
    >>> from superloss import SuperLoss
    >>> foreground = SuperLoss(tau="ema", reduction="none")
    >>> background = SuperLoss(tau="ema", reduction="none")
    >>> losses = torch.tensor([2.0, 0.01, 3.0, 0.02])
    >>> positive = torch.tensor([True, False, True, False])
    >>> def apply(criterion):
    ...     return lambda where: (criterion(losses[where]), criterion.last_confidence)
    >>> weighted, sigma = two_groups(losses, positive, apply(foreground), apply(background))
    >>> round(float(foreground.last_tau), 4), round(float(background.last_tau), 4)  # one τ each
    (2.5, 0.015)
    >>> sigma.shape
    torch.Size([4])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["GroupRule", "two_groups"]

# A population's rule: given the positions of its boxes, their weighted losses and per-box weights
# (None for a rule that records none).
GroupRule = Callable[[Tensor], tuple[Tensor, Tensor | None]]


def two_groups(
    losses: Tensor, positive: Tensor, foreground: GroupRule, background: GroupRule
) -> tuple[Tensor, Tensor | None]:
    """``foreground`` on the boxes where ``positive``, ``background`` on the others, in box order.

    Both rules are called in every step, with no box if need be, so that a threshold synced across
    processes stays in step on every rank.

    Args:
        losses: (B,) the per-box losses (their dtype and device shape the result).
        positive: (B,) bool, whether each box is foreground.
        foreground, background: each population's rule, given the positions (int64) of its boxes.

    Returns:
        The (B,) weighted losses, in the wider of the losses' and the foreground rule's dtype, and
        the (B,) weights in that dtype, or None if a rule recorded none.
    """
    groups = []
    for rule, selected in ((foreground, positive), (background, ~positive)):
        where = torch.where(selected)[0]
        values, weights = rule(where)
        groups.append((where, values, weights))
    dtype = torch.promote_types(losses.dtype, groups[0][1].dtype)
    weighted = losses.new_zeros(losses.shape, dtype=dtype)
    for where, values, _ in groups:
        weighted = weighted.index_put((where,), values.to(dtype))
    if any(recorded is None for _, _, recorded in groups):
        return weighted, None
    weights = torch.full(losses.shape, math.nan, dtype=dtype, device=losses.device)
    for where, _, recorded in groups:
        assert recorded is not None
        weights[where] = recorded.detach().to(dtype)
    return weighted, weights

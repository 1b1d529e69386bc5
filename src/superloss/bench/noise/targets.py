"""Target noise for regression: exactly round(p·n) continuous targets, chosen uniformly, corrupted.

- ``uniform``: each chosen target is replaced by a value drawn uniformly over the target range,
  taken as [min, max] of the clean targets given (digit values: [0, 9]; rotation angles: about
  [−45°, 45°]; ages: the youngest to the oldest). A replaced target may land close to its clean
  value; it still counts as corrupted.
- ``heavy-tailed``: each chosen target gets added Student-t noise with ν = 1 (a Cauchy variable)
  scaled by the standard deviation s of the clean targets: y + s·tan(π(u − ½)), u ~ U(0, 1). Its
  variance is infinite: most shifts are of the order of s, a few are hundreds of times larger.
  Under the ``l2`` base loss such a target can make SGD diverge (on ``digits`` at p = 0.4 with the
  dataset's defaults, every plain-l2 run of three seeds ended in NaN); ``l1`` and ``smooth-l1``
  bound each sample's gradient.

Both follow the noise-model contract of ``base.py`` and keep the dtype of the targets (pass float64
so that no shift is rounded away). They refuse integer class labels, which they would turn into
values that are not classes; label noise is ``symmetric`` or ``asymmetric``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from superloss.bench.noise.base import NOISES, NoiseContext, exact_count

TARGET_NOISE_TYPES = ("heavy-tailed", "uniform")


def _chosen(targets: Tensor, rate: float, generator: torch.Generator, noise: str) -> Tensor:
    """The indices of the round(rate·n) targets to corrupt, after checking the targets."""
    if not targets.is_floating_point() or targets.dim() != 1:
        raise ValueError(
            f"{noise!r} noise corrupts continuous targets (a 1-D float tensor, as in the "
            f"regression task), got a {tuple(targets.shape)} {targets.dtype} tensor; "
            "for class labels use 'symmetric' or 'asymmetric'"
        )
    count = exact_count(rate, targets.shape[0])
    return torch.randperm(targets.shape[0], generator=generator)[:count]


@NOISES.register("uniform")
def uniform(labels: Tensor, rate: float, context: NoiseContext) -> Tensor:
    chosen = _chosen(labels, rate, context.generator, "uniform")
    if chosen.numel() == 0:
        return labels
    low, high = labels.min(), labels.max()
    draws = torch.rand(chosen.shape[0], generator=context.generator, dtype=torch.float64)
    labels[chosen] = (low + (high - low) * draws).to(labels.dtype)
    return labels


@NOISES.register("heavy-tailed")
def heavy_tailed(labels: Tensor, rate: float, context: NoiseContext) -> Tensor:
    chosen = _chosen(labels, rate, context.generator, "heavy-tailed")
    if chosen.numel() == 0:
        return labels
    scale = labels.double().std() if labels.shape[0] > 1 else torch.tensor(1.0, dtype=torch.float64)
    draws = torch.rand(chosen.shape[0], generator=context.generator, dtype=torch.float64)
    cauchy = torch.tan(math.pi * (draws - 0.5))  # inverse CDF of the standard Cauchy
    labels[chosen] = (labels[chosen].double() + scale * cauchy).to(labels.dtype)
    return labels

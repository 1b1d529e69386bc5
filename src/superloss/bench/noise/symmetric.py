"""Symmetric (uniform) label noise.

Exactly round(p·n) training labels, chosen uniformly at random, are each replaced by a class drawn
uniformly from the C − 1 *other* classes, so the realised noise rate is p. (Many papers instead draw
the new label from all C classes, which leaves p/C of the picks unchanged: a realised rate of p − p/C.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from superloss.bench.noise.base import NOISES, NoiseContext, exact_count


@NOISES.register("symmetric")
def symmetric(labels: Tensor, rate: float, context: NoiseContext) -> Tensor:
    count = exact_count(rate, labels.shape[0])
    chosen = torch.randperm(labels.shape[0], generator=context.generator)[:count]
    shift = torch.randint(1, context.num_classes, (count,), generator=context.generator)
    labels[chosen] = (labels[chosen] + shift) % context.num_classes
    return labels

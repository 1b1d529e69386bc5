"""Asymmetric (class-dependent) label noise.

For each class c with a target t(c), exactly round(p·n_c) of its n_c samples, chosen uniformly, are
relabelled t(c). On cifar10 the mapping is the usual one of Patrini et al. (CVPR 2017): truck →
automobile, bird → airplane, deer → horse, cat ↔ dog (other classes never flip, so the rate over the
whole set is about p/2). Elsewhere c → c + 1 mod C, so every class flips and the realised rate is p.
"""

from __future__ import annotations

import torch
from torch import Tensor

from superloss.bench.noise.base import NOISES, NoiseContext, exact_count

CIFAR10_FLIPS = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def flip_targets(dataset: str, num_classes: int) -> dict[int, int]:
    if dataset == "cifar10":
        return dict(CIFAR10_FLIPS)
    return {c: (c + 1) % num_classes for c in range(num_classes)}


@NOISES.register("asymmetric")
def asymmetric(labels: Tensor, rate: float, context: NoiseContext) -> Tensor:
    clean = labels.clone()
    for source, target in flip_targets(context.dataset, context.num_classes).items():
        members = torch.nonzero(clean == source).flatten()
        order = torch.randperm(members.shape[0], generator=context.generator)
        labels[members[order[: exact_count(rate, members.shape[0])]]] = target
    return labels

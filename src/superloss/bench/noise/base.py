"""The noise-model contract: ``noise(labels, rate, context) -> noisy labels`` (``NoiseContext``).

It returns the noisy labels (a new tensor); the corrupted mask is ``noisy != clean``. Noise models
register in ``NOISES``, defined here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from superloss.bench.registry import Registry

NOISES: Registry[Callable[..., Tensor]] = Registry("noise type")


class NoiseContext(NamedTuple):
    """What a noise model may use besides the labels and the rate."""

    num_classes: int
    dataset: str
    generator: torch.Generator  # the only source of randomness: noise is seeded
    extra: dict[str, Tensor]  # alternative label sets or task data, e.g. CIFAR-N's human labels


def check_rate(rate: float) -> None:
    if not (isinstance(rate, (int, float)) and not isinstance(rate, bool)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"noise rate must be a number in [0, 1), got {rate!r}")


def apply_noise(
    noise_type: str,
    labels: Tensor,
    rate: float,
    *,
    num_classes: int,
    dataset: str,
    seed: int,
    extra: dict[str, Tensor] | None = None,
) -> Tensor:
    """Noisy copy of ``labels`` from the registered noise model, seeded by ``seed``."""
    check_rate(rate)
    generator = torch.Generator().manual_seed(seed)
    context = NoiseContext(num_classes, dataset, generator, extra or {})
    noisy = NOISES.get(noise_type)(labels.clone(), rate, context)
    assert isinstance(noisy, Tensor)
    return noisy


def exact_count(rate: float, population: int) -> int:
    """round(rate·population), with halves rounded up, so a rate is realised as closely as possible."""
    return math.floor(rate * population + 0.5)

"""The noise-model contract: ``noise(labels, rate, num_classes=, dataset=, generator=, extra=)``.

It returns the noisy labels (a new tensor); the corrupted mask is ``noisy != clean``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from superloss.bench.registry import NOISES


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
    noisy = NOISES.get(noise_type)(
        labels.clone(),
        rate,
        num_classes=num_classes,
        dataset=dataset,
        generator=generator,
        extra=extra or {},
    )
    assert isinstance(noisy, Tensor)
    return noisy


def exact_count(rate: float, population: int) -> int:
    """round(rate·population), with halves rounded up, so a rate is realised as closely as possible."""
    return math.floor(rate * population + 0.5)

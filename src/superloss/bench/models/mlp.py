"""A two-hidden-layer perceptron (256-256, ReLU) on the flattened input."""

from __future__ import annotations

import math

from torch import nn

from superloss.bench.models.base import MODELS

HIDDEN = 256


@MODELS.register("mlp")
def mlp(input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, outputs),
    )

"""Build a registered model for an input shape and a number of outputs."""

from __future__ import annotations

from torch import nn

from superloss.bench.registry import MODELS


def build_model(name: str, input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    model = MODELS.get(name)(input_shape, outputs)
    assert isinstance(model, nn.Module)
    return model

"""``MODELS``, the registry of model builders, and building one for an input shape and outputs."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from superloss.bench.registry import Registry

MODELS: Registry[Callable[[tuple[int, ...], int], nn.Module]] = Registry("model")


def build_model(name: str, input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    model = MODELS.get(name)(input_shape, outputs)
    assert isinstance(model, nn.Module)
    return model

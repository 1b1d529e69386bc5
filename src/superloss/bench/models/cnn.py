"""A small CNN for small images (C×H×W) or signals (C×L): three convolutions, global pooling, linear."""

from __future__ import annotations

from typing import Any

from torch import nn

from superloss.bench.models.base import MODELS


@MODELS.register("cnn")
def cnn(input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    conv: Any
    pool: Any
    norm: Any
    global_pool: Any
    if len(input_shape) == 3:
        conv, pool, norm, global_pool = (
            nn.Conv2d,
            nn.MaxPool2d,
            nn.BatchNorm2d,
            nn.AdaptiveAvgPool2d,
        )
    elif len(input_shape) == 2:
        conv, pool, norm, global_pool = (
            nn.Conv1d,
            nn.MaxPool1d,
            nn.BatchNorm1d,
            nn.AdaptiveAvgPool1d,
        )
    else:
        raise ValueError(f"cnn needs inputs shaped C×H×W or C×L, got {input_shape}")
    channels = input_shape[0]
    return nn.Sequential(
        conv(channels, 32, 3, padding=1),
        norm(32),
        nn.ReLU(),
        conv(32, 64, 3, padding=1),
        norm(64),
        nn.ReLU(),
        pool(2),
        conv(64, 128, 3, padding=1),
        norm(128),
        nn.ReLU(),
        global_pool(1),
        nn.Flatten(),
        nn.Linear(128, outputs),
    )

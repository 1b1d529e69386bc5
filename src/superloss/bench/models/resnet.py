"""ResNet-18 for 32×32 images (He et al., CVPR 2016), in its CIFAR form: a 3×3 stem and no max-pool."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from superloss.bench.models.base import MODELS


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, channels: int, outputs: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()
        )
        layers: list[nn.Module] = []
        width = 64
        for stage, stride in zip((64, 128, 256, 512), (1, 2, 2, 2), strict=True):
            layers += [BasicBlock(width, stage, stride), BasicBlock(stage, stage, 1)]
            width = stage
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(512, outputs)

    def forward(self, x: Tensor) -> Tensor:
        features = self.layers(self.stem(x))
        return self.head(F.adaptive_avg_pool2d(features, 1).flatten(1))


@MODELS.register("resnet18")
def resnet18(input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"resnet18 needs images shaped C×H×W, got {input_shape}")
    return ResNet18(input_shape[0], outputs)

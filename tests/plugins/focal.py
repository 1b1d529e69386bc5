"""A method in one file: the focal loss (Lin et al., ICCV 2017), for the "add a method" recipe."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from superloss.bench.methods.base import METHODS, Method, MethodOutput
from superloss.bench.options import option


@dataclass(frozen=True)
class FocalHyperParameters:
    gamma: float = option(2.0, "focusing exponent; Lin et al. (ICCV 2017), their best", low=0.0)


@METHODS.register("focal")
class FocalLoss(Method):
    r"""Focal loss: cross-entropy scaled by (1 − p_y)^γ, so well-classified samples count less.

    Hyper-parameters:
        gamma: 2, the value of Lin, Goyal, Girshick, He and Dollár (ICCV 2017).
    """

    name = "focal"
    hyper_parameters = FocalHyperParameters
    tasks = ("classification",)

    def forward(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> MethodOutput:
        cross_entropy = F.cross_entropy(outputs, targets, reduction="none")
        weight = (1.0 - (-cross_entropy).exp()) ** float(self.hparams.gamma)
        return MethodOutput(weight * cross_entropy, weights=weight.detach())

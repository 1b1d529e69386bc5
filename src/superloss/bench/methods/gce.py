"""``gce``: generalized cross-entropy (the L_q loss), Zhang & Sabuncu, NeurIPS 2018."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from superloss.bench.methods.base import METHODS, Method, MethodContext, MethodOutput
from superloss.bench.options import Grid, option


@dataclass(frozen=True)
class GCEHyperParameters:
    q: float = option(
        0.7,
        "exponent of p_y; Zhang & Sabuncu (NeurIPS 2018), every CIFAR and Fashion-MNIST run",
        low=0.0,
        high=1.0,
        low_open=True,
        grid=Grid(
            (0.1, 0.4, 0.7, 1.0),
            "Zhang & Sabuncu (NeurIPS 2018) study q over (0, 1]: 0.7 their value, 1 the MAE end, "
            "0.1 near cross-entropy, 0.4 between",
        ),
    )


@METHODS.register("gce")
class GeneralizedCrossEntropy(Method):
    r"""Generalized cross-entropy: the negative Box-Cox transform of the label's probability.

    .. math::

        \ell_i = \frac{1 - p_{i,y_i}^{\,q}}{q}, \qquad p_i = \mathrm{softmax}(z_i)

    q → 0 gives cross-entropy back, q = 1 the mean absolute error (up to a factor 2). The gradient
    is p_y^q times that of cross-entropy, so samples the model finds unlikely (often mislabelled)
    weigh less. Computed as −expm1(q·log p_y)/q, accurate for small losses.

    Hyper-parameters, fixed before any result was seen:
        q: 0.7, the value of Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep
            Neural Networks with Noisy Labels" (NeurIPS 2018), in every CIFAR and Fashion-MNIST
            experiment (the untruncated L_q loss; the truncated variant is not implemented here).

    Example:
        >>> import math, torch
        >>> from superloss.bench.methods.base import MethodContext
        >>> context = MethodContext("classification", lambda o, t: o, 2, 10, 1)
        >>> gce = GeneralizedCrossEntropy(context)
        >>> loss = gce(torch.zeros(1, 2), torch.tensor([0]), torch.arange(1)).losses
        >>> math.isclose(loss.item(), (1 - 0.5**0.7) / 0.7, rel_tol=1e-6)
        True
    """

    name = "gce"
    hyper_parameters = GCEHyperParameters
    tasks = ("classification",)

    def __init__(self, context: MethodContext, **params: Any) -> None:
        super().__init__(context, **params)
        self.q = float(self.hparams.q)

    def forward(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> MethodOutput:
        log_p_label = -F.cross_entropy(outputs, targets, reduction="none")
        return MethodOutput(-torch.expm1(self.q * log_p_label) / self.q)

"""``bootstrap``: hard bootstrapping, Reed et al., ICLR 2015 workshop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from superloss.bench.methods.base import METHODS, Method, MethodContext, MethodOutput
from superloss.bench.options import Grid, option


@dataclass(frozen=True)
class BootstrapHyperParameters:
    beta: float = option(
        0.8, "weight of the given label; Reed et al. (ICLR 2015 workshop), hard bootstrapping",
        low=0.0, high=1.0,
        grid=Grid(
            (0.6, 0.8, 0.9, 0.95),
            "Reed et al. (ICLR 2015 workshop): 0.8 hard, 0.95 soft bootstrapping; 0.6 and 0.9 "
            "on either side of the hard value (1 is plain cross-entropy)",
        ),
    )  # fmt: skip


@METHODS.register("bootstrap")
class HardBootstrap(Method):
    r"""Hard bootstrapping: cross-entropy against the label mixed with the model's top prediction.

    .. math::

        \ell_i = -\sum_k \big(\beta\,[k = y_i] + (1 - \beta)\,[k = \hat y_i]\big) \log p_{i,k}
               = \beta\,\mathrm{CE}(z_i, y_i) + (1 - \beta)\,\mathrm{CE}(z_i, \hat y_i)

    with p = softmax(z) and ŷ = argmax p, taken as a constant target (no gradient through it).

    Hyper-parameters, fixed before any result was seen:
        beta: 0.8, the hard-bootstrapping value of Reed, Lee, Anguelov, Szegedy, Erhan and
            Rabinovich, "Training Deep Neural Networks on Noisy Labels with Bootstrapping" (ICLR
            2015 workshop; soft bootstrapping uses 0.95), also that of ``boot_hard`` in the SCE
            authors' code.

    Example:
        >>> import math, torch
        >>> from superloss.bench.methods.base import MethodContext
        >>> context = MethodContext("classification", lambda o, t: o, 2, 10, 1)
        >>> logits = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4), argmax 1
        >>> loss = HardBootstrap(context)(logits, torch.tensor([0]), torch.arange(1)).losses
        >>> math.isclose(loss.item(), 0.8 * math.log(4) + 0.2 * math.log(4 / 3), rel_tol=1e-6)
        True
    """

    name = "bootstrap"
    hyper_parameters = BootstrapHyperParameters
    tasks = ("classification",)

    def __init__(self, context: MethodContext, **params: Any) -> None:
        super().__init__(context, **params)
        self.beta = float(self.hparams.beta)

    def forward(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> MethodOutput:
        log_probs = F.log_softmax(outputs, dim=1)
        predicted = log_probs.detach().argmax(dim=1)
        label_term = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
        predicted_term = -log_probs.gather(1, predicted.unsqueeze(1)).squeeze(1)
        return MethodOutput(self.beta * label_term + (1.0 - self.beta) * predicted_term)

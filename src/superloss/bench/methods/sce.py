"""``sce``: symmetric cross-entropy, Wang et al., ICCV 2019."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from superloss.bench.methods.base import METHODS, Method, MethodContext, MethodOutput
from superloss.bench.options import Grid, option

# The (α, β) pairs of the authors' code (train_models.py): its MNIST (0.01, 1), CIFAR-10 (0.1, 1)
# and CIFAR-100 (6, 0.1) commands, and its train() function's default (1, 1).
_PAIRS = (
    "(α, β) pairs of the authors' code: MNIST (0.01, 1), CIFAR-10 (0.1, 1), CIFAR-100 (6, 0.1), "
    "and its train() default (1, 1)"
)


@dataclass(frozen=True)
class SCEHyperParameters:
    alpha: float = option(
        0.1,
        "weight of CE; Wang et al. (ICCV 2019), their CIFAR-10 setting",
        low=0.0,
        grid=Grid((0.01, 0.1, 1.0, 6.0), _PAIRS),
    )
    beta: float = option(
        1.0,
        "weight of reverse CE; Wang et al. (ICCV 2019), their CIFAR-10 setting",
        low=0.0,
        grid=Grid((1.0, 1.0, 1.0, 0.1), _PAIRS),
    )
    one_hot_floor: float = option(
        1e-4, "clip of the one-hot label; the authors' code (loss.py)", low=0.0, high=1.0,
        low_open=True, high_open=True,
    )  # fmt: skip


@METHODS.register("sce")
class SymmetricCrossEntropy(Method):
    r"""Symmetric cross-entropy: cross-entropy plus the reverse one (label and prediction swapped).

    .. math::

        \ell_i = \alpha\,\mathrm{CE}_i + \beta\,\mathrm{RCE}_i, \qquad
        \mathrm{RCE}_i = -\sum_k p_{i,k} \log \tilde y_{i,k} = -A\,(1 - p_{i,y_i})

    with p = softmax(z) and ỹ the one-hot label clipped below at ``one_hot_floor``, so that
    log 0 becomes A = log(one_hot_floor). RCE is thus a bounded, MAE-like term, robust to noisy
    labels.

    Hyper-parameters, fixed before any result was seen (Wang, Ma, Chen, Luo, Yi, Bailey, "Symmetric
    Cross Entropy for Robust Learning with Noisy Labels", ICCV 2019, and their public code,
    github.com/YisenWang/symmetric_cross_entropy_for_noisy_labels):
        alpha: 0.1 and beta: 1.0, the paper's CIFAR-10 setting (the code's CIFAR-10 command; its
            MNIST command uses alpha 0.01, its CIFAR-100 one alpha 6.0 and beta 0.1).
        one_hot_floor: 1e-4, the clip of the one-hot label in the authors' code (``loss.py``:
            ``clip_by_value(y_true, 1e-4, 1.0)`` then a natural log), so A = ln 1e-4 ≈ −9.21. The
            paper writes "A = −4", which is log₁₀ 1e-4; the published numbers come from the code.

    The authors' code also clips p below at 1e-7 (inside the logarithm of CE and in RCE); here CE is
    computed from ``log_softmax`` and RCE from the exact p, which differ only where p < 1e-7.

    Example:
        >>> import math, torch
        >>> from superloss.bench.methods.base import MethodContext
        >>> context = MethodContext("classification", lambda o, t: o, 2, 10, 1)
        >>> sce = SymmetricCrossEntropy(context)
        >>> loss = sce(torch.zeros(1, 2), torch.tensor([0]), torch.arange(1)).losses
        >>> expected = 0.1 * math.log(2) - 1.0 * math.log(1e-4) * 0.5
        >>> math.isclose(loss.item(), expected, rel_tol=1e-6)
        True
    """

    name = "sce"
    hyper_parameters = SCEHyperParameters
    tasks = ("classification",)

    def __init__(self, context: MethodContext, **params: Any) -> None:
        super().__init__(context, **params)
        self.alpha = float(self.hparams.alpha)
        self.beta = float(self.hparams.beta)
        self.log_zero = math.log(float(self.hparams.one_hot_floor))  # A

    def forward(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> MethodOutput:
        log_probs = F.log_softmax(outputs, dim=1)
        log_p_label = log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
        cross_entropy = -log_p_label
        # Σ_{k≠y} p_k·(−A): the label's own term is p_y·log 1 = 0.
        reverse_cross_entropy = -self.log_zero * (1.0 - log_p_label.exp())
        return MethodOutput(self.alpha * cross_entropy + self.beta * reverse_cross_entropy)

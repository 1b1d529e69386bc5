"""``data-params``: Data Parameters, Saxena, Tuzel & DeCoste, NeurIPS 2019."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superloss.bench.methods.base import METHODS, Method, MethodContext, MethodOutput
from superloss.bench.options import Grid, option

CURRICULA = ("instance", "class", "joint")
_OFFICIAL = "the official code (github.com/apple/ml-data-parameters)"


@dataclass(frozen=True)
class DataParametersHyperParameters:
    curriculum: str = option(
        "instance",
        "what is learned; instance, as the official noisy CIFAR command",
        choices=CURRICULA,
    )
    init_class: float = option(
        1.0, "initial class σ; the README's class-level ImageNet command", low=0.0, low_open=True
    )
    init_instance: float = option(
        1.0, "initial instance σ; the official noisy CIFAR-100 command", low=0.0, low_open=True
    )
    lr_class: float = option(0.1, "class σ learning rate; the README's ImageNet command", low=0.0)
    lr_instance: float = option(
        0.2,
        "instance σ learning rate; the official noisy CIFAR-100 command",
        low=0.0,
        grid=Grid(
            (0.05, 0.1, 0.2, 0.4),
            f"0.2: {_OFFICIAL}'s noisy CIFAR-100 instance rate; 0.1: its class rate; 0.05 and "
            "0.4 halve and double the range (the instance curriculum, the default, learns no "
            "class σ, so the class rate is not tuned)",
        ),
    )
    wd_class: float = option(1e-4, "class σ weight decay; the README's ImageNet command", low=0.0)
    wd_instance: float = option(
        0.0, "instance σ weight decay; the official noisy CIFAR-100 command", low=0.0
    )
    momentum: float = option(
        0.9, f"momentum of both σ optimizers; {_OFFICIAL}", low=0.0, high=1.0, high_open=True
    )
    sigma_min: float = option(
        1 / 20, f"smallest σ; the clamp of {_OFFICIAL}", low=0.0, low_open=True
    )
    sigma_max: float = option(20.0, f"largest σ; the clamp of {_OFFICIAL}", low=0.0, low_open=True)


class SparseSGD(torch.optim.Optimizer):
    """SGD with momentum on the entries with a gradient; the others and their momentum stay put.

    Only the data parameters of the batch's samples and classes take part in a step. A dense
    optimizer would keep moving every other entry along its stale momentum (and decay it, with
    weight decay), which the official README says "will nullify the learnt curriculum". This
    follows the official ``SparseSGD`` (an entry with an exactly-zero gradient counts as absent,
    as there), plus the projection onto ``[min_value, max_value]`` that the official loop applies
    after each step. Masked arithmetic, no host synchronisation.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float,
        min_value: float = -math.inf,
        max_value: float = math.inf,
    ) -> None:
        if not lr >= 0 or not 0 <= momentum < 1:
            raise ValueError(
                f"need lr >= 0 and momentum in [0, 1), got lr={lr}, momentum={momentum}"
            )
        defaults = {"lr": lr, "momentum": momentum, "min_value": min_value, "max_value": max_value}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                touched = grad != 0
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param)
                buffer = state["momentum_buffer"]
                buffer.copy_(torch.where(touched, buffer * group["momentum"] + grad, buffer))
                param.copy_(torch.where(touched, param - group["lr"] * buffer, param))
                # The official loop projects every entry after each step.
                param.clamp_(group["min_value"], group["max_value"])
        return loss


@METHODS.register("data-params")
class DataParameters(Method):
    r"""Data Parameters: a learnable temperature per class and per training sample on the logits.

    .. math::

        \ell_i = \mathrm{CE}\big(z_i / \sigma_i,\ y_i\big), \qquad
        \sigma_i = \begin{cases}
            \sigma^{\mathrm{inst}}_i & \text{instance curriculum} \\
            \sigma^{\mathrm{class}}_{y_i} & \text{class curriculum} \\
            \sigma^{\mathrm{class}}_{y_i} + \sigma^{\mathrm{inst}}_i & \text{joint curriculum}
        \end{cases}

    Each σ is parameterised by its logarithm (``class_log_sigma``, ``instance_log_sigma``),
    learned by gradient descent along with the model by this method's own :class:`SparseSGD`
    (``optimizers()``), and projected onto [σ_min, σ_max] after each step. A large σ flattens the
    softmax and shrinks the sample's gradient: mislabelled samples learn large temperatures.
    Weight decay is an explicit L2 penalty ½·wd·Σ (log σ)² over the data parameters used in the
    batch (each occurrence counts), added to the batch-mean loss (the output's ``penalties``), not
    to the per-sample losses. σ is used in training only; the model is evaluated on its plain logits.
    Instance parameters are indexed by the training-set ``indices``.

    Hyper-parameters, fixed before any result was seen, from the official code
    (github.com/apple/ml-data-parameters) and its README's CIFAR-100 noisy-label command:
        curriculum: "instance". The official noisy CIFAR command learns instance parameters only
            ("since the noise present in the dataset is at instance level"); "class" and "joint"
            (σ_class + σ_inst, the paper's joint curriculum) are available.
        init_instance: 1.0, lr_instance: 0.2, wd_instance: 0.0: the noisy CIFAR-100 command
            (--init_inst_param 1.0 --lr_inst_param 0.2 --wd_inst_param 0.0).
        init_class: 1.0, lr_class: 0.1, wd_class: 1e-4: the README's class-level ImageNet command
            (the CIFAR command learns no class parameters). For the joint curriculum the README
            starts instance parameters at 0.001 so that σ starts near 1; set ``init_instance``.
        momentum: 0.9, both official data-parameter optimizers.
        sigma_min: 1/20, sigma_max: 20, the official clamp of both kinds in ``main_cifar.py``
            (log σ in [log 1/20, log 20]).

    The official script keeps the data parameters' learning rate constant while the model's
    decays; here the runner applies its schedule to every optimizer, this one included.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from superloss.bench.methods.base import MethodContext
        >>> context = MethodContext("classification", lambda o, t: o, 3, 5, 1)
        >>> method = DataParameters(context)
        >>> logits, labels = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([1])
        >>> loss = method(logits, labels, torch.tensor([4])).losses
        >>> torch.allclose(loss, F.cross_entropy(logits, labels, reduction="none"))  # σ = 1 at init
        True
    """

    name = "data-params"
    hyper_parameters = DataParametersHyperParameters
    tasks = ("classification",)

    def __init__(self, context: MethodContext, **params: Any) -> None:
        super().__init__(context, **params)
        p = self.hparams
        if context.num_classes is None:
            raise ValueError("data-params needs a classification task with a number of classes")
        self.curriculum: str = p.curriculum
        self.learn_class = self.curriculum in ("class", "joint")
        self.learn_instance = self.curriculum in ("instance", "joint")
        sigma_min, sigma_max = float(p.sigma_min), float(p.sigma_max)
        if not sigma_min <= sigma_max:
            raise ValueError(
                f"data-params needs 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}"
            )
        self.log_sigma_range = (math.log(sigma_min), math.log(sigma_max))
        # Parameters of the method, not of the model: only this method's optimizer steps them.
        self.class_log_sigma = nn.Parameter(
            torch.full((context.num_classes,), math.log(float(p.init_class))),
            requires_grad=self.learn_class,
        )
        self.instance_log_sigma = nn.Parameter(
            torch.full((context.num_train,), math.log(float(p.init_instance))),
            requires_grad=self.learn_instance,
        )
        self._optimizer: SparseSGD | None = None

    def _log_sigmas(self, targets: Tensor, indices: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """The batch's class and instance log σ (None for a kind the curriculum does not use)."""
        class_part = self.class_log_sigma[targets] if self.learn_class else None
        instance_part = self.instance_log_sigma[indices] if self.learn_instance else None
        return class_part, instance_part

    def sigma(self, targets: Tensor, indices: Tensor) -> Tensor:
        """σ_i of each sample of the batch."""
        class_part, instance_part = self._log_sigmas(targets, indices)
        sigma = torch.zeros(targets.shape, device=targets.device)
        if class_part is not None:
            sigma = sigma + class_part.exp()
        if instance_part is not None:
            sigma = sigma + instance_part.exp()
        return sigma

    def forward(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> MethodOutput:
        scaled = outputs / self.sigma(targets, indices).to(outputs.dtype).unsqueeze(1)
        losses = F.cross_entropy(scaled, targets, reduction="none")
        class_part, instance_part = self._log_sigmas(targets, indices)
        # The official code's explicit L2 on the batch's data parameters, in the log domain.
        penalties = tuple(
            0.5 * float(decay) * (part**2).sum()
            for part, decay in (
                (class_part, self.hparams.wd_class),
                (instance_part, self.hparams.wd_instance),
            )
            if part is not None and float(decay) > 0
        )
        return MethodOutput(losses, penalties=penalties)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """One :class:`SparseSGD` over the learned data parameters, built once (it holds state)."""
        if self._optimizer is not None:
            return [self._optimizer]
        low, high = self.log_sigma_range
        groups = []
        if self.learn_class:
            groups.append({"params": [self.class_log_sigma], "lr": float(self.hparams.lr_class)})
        if self.learn_instance:
            groups.append(
                {"params": [self.instance_log_sigma], "lr": float(self.hparams.lr_instance)}
            )
        self._optimizer = SparseSGD(
            groups, lr=0.0, momentum=float(self.hparams.momentum), min_value=low, max_value=high
        )
        return [self._optimizer]

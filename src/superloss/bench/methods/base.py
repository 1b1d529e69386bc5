"""The method contract: from the model's outputs and the batch's targets, a typed :class:`MethodOutput`.

A method is built with a :class:`MethodContext` (the task's per-sample base loss, number of classes,
training-set size, epochs) and its hyper-parameters. Each method declares its hyper-parameters once,
as a frozen dataclass of :func:`~superloss.bench.options.option` fields (name, type, default, valid
range or choices, and a one-line help saying where the value comes from), in
``hyper_parameters``; they are checked against that declaration when the method is built, and
the command line exposes each as ``--METHOD-PARAM`` (``--superloss-lam 0.25``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from superloss.bench.options import defaults_of, options_of, parse
from superloss.bench.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")


@dataclass
class MethodContext:
    task: str
    base_loss: Callable[[Tensor, Tensor], Tensor]  # per-sample loss of the task, e.g. CE (none)
    num_classes: int | None
    num_train: int
    epochs: int


class MethodOutput(NamedTuple):
    """What a method gives the training loop for one batch.

    Attributes:
        losses: the per-sample training losses, weights applied, with their graph.
        weights: the per-sample weights the method gave (σ for SuperLoss, 0/1 for self-paced
            learning), detached; None for a method that weighs nothing.
        task_losses: the task's own per-sample loss ℓ, detached, where the method computed it
            (SuperLoss does); :meth:`sample_losses` falls back on ``losses``.
        tau: the threshold of the batch (SuperLoss), or None.
        penalties: scalar terms added, in order, to the batch mean (Data Parameters' decay).
    """

    losses: Tensor
    weights: Tensor | None = None
    task_losses: Tensor | None = None
    tau: Tensor | None = None
    penalties: tuple[Tensor, ...] = ()

    def loss(self) -> Tensor:
        """The scalar to minimise: the mean of ``losses`` (0 for an empty batch), plus penalties."""
        loss = self.losses.sum() / max(self.losses.numel(), 1)
        for penalty in self.penalties:
            loss = loss + penalty
        return loss

    def sample_losses(self) -> Tensor:
        """Per-sample losses to track: ℓ where the method gave it, else its own losses, detached."""
        return self.task_losses if self.task_losses is not None else self.losses.detach()


@dataclass(frozen=True)
class NoHyperParameters:
    """A method without hyper-parameters."""


class Method(nn.Module):
    """A per-sample loss or a sample weighting; ``forward`` returns a :class:`MethodOutput`."""

    name: ClassVar[str]
    hyper_parameters: ClassVar[type[Any]] = NoHyperParameters
    defaults: ClassVar[dict[str, Any]] = {}  # derived from hyper_parameters
    # Tasks the method applies to; None means any task (it only uses the base per-sample loss).
    tasks: ClassVar[tuple[str, ...] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.defaults = defaults_of(cls.hyper_parameters)

    def __init__(self, context: MethodContext, **params: Any) -> None:
        super().__init__()
        self.context = context
        self.hparams: Any = parse(
            self.hyper_parameters,
            params,
            getattr(self, "name", type(self).__name__),
            noun="hyper-parameter",
        )
        self.params = {**self.defaults, **params}

    def forward(self, outputs: Tensor, targets: Tensor, indices: Tensor) -> MethodOutput:
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch (0-based)."""

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimizers of the method's own parameters, stepped by the loop after the model's."""
        return []

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> Any:
        """The parsed hyper-parameters; ValueError, one line, for values the method cannot take.

        Checked before any run (the command line calls it): against the declaration, and by an
        override, against what the method hands them to."""
        name = getattr(cls, "name", cls.__name__)
        return parse(cls.hyper_parameters, dict(params), name, noun="hyper-parameter")

    @classmethod
    def applies_to(cls, task: str) -> bool:
        return cls.tasks is None or task in cls.tasks

    @classmethod
    def hyper_parameter_help(cls) -> dict[str, str]:
        """Each hyper-parameter's one-line help (its meaning and where its default comes from)."""
        return {item.name: item.spec.help for item in options_of(cls.hyper_parameters)}


def build_method(name: str, context: MethodContext, params: dict[str, Any]) -> Method:
    cls = METHODS.get(name)
    if not cls.applies_to(context.task):
        assert cls.tasks is not None
        raise ValueError(f"method {name!r} applies to {', '.join(cls.tasks)}, not {context.task!r}")
    return cls(context, **params)

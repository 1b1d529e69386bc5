"""The task contract: data with noise, a per-sample loss, metrics. Used by the trainer (``engine.py``).

A task is a class, registered by name in ``TASKS``, and built per run from the config:
``TASKS.get(config.task)(config)``. It parses its options (``config.task_params``) once, into a typed
``options`` object (a frozen dataclass of :func:`~superloss.bench.options.option` fields, declared in
its ``Options``), and keeps the run's own state (e.g. regression's target centre and scale) on itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from superloss.bench.config import RunConfig
from superloss.bench.data.base import DATASETS
from superloss.bench.methods.base import METHODS, Method
from superloss.bench.models.base import MODELS
from superloss.bench.models.detector import DETECTORS
from superloss.bench.noise.base import NOISES
from superloss.bench.noise.boxes import BOX_NOISE_TYPES
from superloss.bench.noise.targets import TARGET_NOISE_TYPES
from superloss.bench.options import parse
from superloss.bench.registry import Registry

TASKS: Registry[type[Task]] = Registry("task")
_KINDS = {"dataset": "datasets", "model": "models", "noise_type": "noise_types"}


@dataclass
class TaskData:
    """Noisy training/validation targets, clean test targets, and which training targets were corrupted."""

    train_inputs: Tensor
    train_targets: Tensor
    corrupted: Tensor  # bool, one per training sample
    val_inputs: Tensor
    val_targets: Tensor
    test_inputs: Tensor
    test_targets: Tensor
    input_shape: tuple[int, ...]
    outputs: int
    num_classes: int | None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_train(self) -> int:
        return int(self.train_inputs.shape[0])


class StepOutput(NamedTuple):
    """What one training step of a task gives the trainer.

    Attributes:
        loss: the scalar to minimise.
        weights: one weight per training sample of the batch (σ for SuperLoss), detached, or None.
        losses: one loss per training sample of the batch, detached (the tracker's ℓ).
        tau: the method's threshold in this step, or None.
    """

    loss: Tensor
    weights: Tensor | None
    losses: Tensor
    tau: Tensor | None


@dataclass(frozen=True)
class NoOptions:
    """A task without options of its own."""


class Task:
    """A task: ``prepare`` (data with noise), ``base_loss`` (per sample), ``evaluate`` (metrics).

    Class attributes describe the task to the command line and the presets: its primary metric,
    defaults, its options (``Options``; their values travel in ``RunConfig.task_params``), and what
    it accepts (:meth:`choices`).
    """

    name: ClassVar[str]
    metric: ClassVar[str]  # the primary metric, reported in tables and plots
    higher_is_better: ClassVar[bool] = True
    Options: ClassVar[type[Any]] = NoOptions
    # True: task_params holds every option, defaults included; False: only those given.
    params_hold_defaults: ClassVar[bool] = False
    default_methods: ClassVar[str] = "plain,superloss"  # the command line's --methods default
    default_noise_type: ClassVar[str] = "symmetric"  # the command line's --noise-type default
    default_noise: ClassVar[str] = "0,0.2,0.4,0.6"  # the command line's --noise default
    # Training settings that replace the dataset's defaults (``presets.dataset_defaults``).
    training_defaults: ClassVar[Mapping[str, Any]] = {}
    noise_aliases: ClassVar[Mapping[str, str]] = {}  # --noise-type names that mean another
    # Options that change what the metric's numbers mean (their units): runs that differ in them
    # are reported in tables of their own.
    table_options: ClassVar[tuple[str, ...]] = ()
    # What the task takes (see ``choices``); None: the default for the kind.
    datasets: ClassVar[tuple[str, ...] | None] = None
    models: ClassVar[tuple[str, ...] | None] = None
    noise_types: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.options: Any = parse(self.Options, config.task_params, self.name)

    @classmethod
    def check(cls, config: RunConfig) -> None:
        """ValueError, saying what is expected, for a setting the task cannot run (before any data
        is loaded); its options are checked when it is built."""
        cls(config)

    @classmethod
    def choices(cls, kind: str) -> list[str]:
        """The registered names of ``kind`` ("dataset", "model", "noise_type", "method") that the
        task takes: those it declares (``datasets``, ``models``, ``noise_types``), else every
        dataset, every model but the detectors, the label-noise models (not the target or box
        ones); and every method that applies to the task."""
        if kind == "method":
            return [name for name, method in METHODS.entries() if method.applies_to(cls.name)]
        if kind not in _KINDS:
            raise ValueError(
                f"unknown kind {kind!r}; expected dataset, model, noise_type or method"
            )
        declared: tuple[str, ...] | None = getattr(cls, _KINDS[kind])
        if declared is not None:
            return list(declared)
        if kind == "dataset":
            return DATASETS.names()
        if kind == "model":
            return [name for name in MODELS.names() if name not in DETECTORS]
        others = (*TARGET_NOISE_TYPES, *BOX_NOISE_TYPES)
        return [name for name in NOISES.names() if name not in others]

    @classmethod
    def accepts(cls, kind: str, name: str) -> bool:
        """Whether the task takes ``name`` as its ``kind`` (see :meth:`choices`)."""
        return name in cls.choices(kind) or (name in cls.noise_aliases and kind == "noise_type")

    def prepare(self) -> TaskData:
        raise NotImplementedError

    def base_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> dict[str, float]:
        raise NotImplementedError

    def training_step(
        self, model: nn.Module, method: Method, inputs: Tensor, targets: Tensor, indices: Tensor
    ) -> StepOutput:
        """One training batch through the model and the method; tasks with their own model plumbing
        (detection) or per-pair losses (retrieval) override it."""
        output = method(model(inputs), targets, indices)
        return StepOutput(output.loss(), output.weights, output.sample_losses(), output.tau)

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Tensor, batch_size: int = 1024) -> Tensor:
        return torch.cat(
            [model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
        )


def build_task(config: RunConfig) -> Task:
    """The task of ``config``, built for this run: ``TASKS.get(config.task)(config)``."""
    return TASKS.get(config.task)(config)

"""The protocol contract: how the run of a config is carried out, from data to its record.

A task is data + loss + metrics; a protocol is an experiment around it. The ``training`` protocol
trains ``config.method`` on ``config.task`` once; ``noise-detection`` trains several times to rank the
classification task's training samples. Protocols are registered by name in ``PROTOCOLS`` and built
per run from the config (``PROTOCOLS.get(name)(config)``); the runner dispatches each config to its
protocol (:func:`experiment`).

What ``superloss bench NAME`` (and ``RunConfig.task``) names is an :class:`Experiment`: a task, run by
the ``training`` protocol, or a protocol with a command of its own (its ``task`` says on which task).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from superloss.bench.config import RunConfig
from superloss.bench.options import parse
from superloss.bench.record import RunRecord
from superloss.bench.registry import Registry, UnknownName
from superloss.bench.tasks.base import TASKS, NoOptions, Task, TaskData

EpochCallback = Callable[[int, dict[str, float]], None]
TRAINING = "training"

PROTOCOLS: Registry[type[Protocol]] = Registry("protocol")


class Protocol:
    """An experiment protocol: ``run()`` carries out the run of ``config`` and returns its record.

    A protocol with a command of its own (``task`` set) may declare the command's defaults and
    options as a task does; None falls back on the task's.
    """

    name: ClassVar[str]
    task: ClassVar[str | None] = None  # the task of its own command; None: run under each task's
    Options: ClassVar[type[Any]] = NoOptions  # its command's options (in RunConfig.task_params)
    params_hold_defaults: ClassVar[bool] = True
    # What --methods takes, when the protocol compares approaches of its own; None: the methods.
    approaches: ClassVar[tuple[str, ...] | None] = None
    metric: ClassVar[str | None] = None
    higher_is_better: ClassVar[bool | None] = None
    default_methods: ClassVar[str | None] = None
    default_noise: ClassVar[str | None] = None

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        # A protocol with a command of its own reads its options from task_params; under a task's
        # command, task_params are the task's.
        own = self.task is not None
        self.options: Any = parse(self.Options, config.task_params, self.name) if own else None

    @classmethod
    def check(cls, config: RunConfig) -> None:
        """ValueError, saying what is expected, for a config the protocol cannot run."""
        cls(config)

    def prepare(self) -> TaskData:
        """The run's data (the command line prepares it once before a sweep, to fail early)."""
        raise NotImplementedError

    def run(self, on_epoch: EpochCallback | None = None) -> RunRecord:
        raise NotImplementedError


@dataclass(frozen=True)
class Experiment:
    """What a name of ``superloss bench NAME`` runs: a protocol on a task, with its CLI defaults."""

    name: str
    task: type[Task]
    protocol: type[Protocol]

    @property
    def own_command(self) -> bool:
        """Whether the protocol, not the task, owns the command (its options, approaches, …)."""
        return self.protocol.task is not None

    def _pick(self, attribute: str) -> Any:
        value = getattr(self.protocol, attribute) if self.own_command else None
        return value if value is not None else getattr(self.task, attribute)

    @property
    def metric(self) -> str:
        return str(self._pick("metric"))

    @property
    def higher_is_better(self) -> bool:
        return bool(self._pick("higher_is_better"))

    @property
    def default_methods(self) -> str:
        return str(self._pick("default_methods"))

    @property
    def default_noise(self) -> str:
        return str(self._pick("default_noise"))

    @property
    def options(self) -> tuple[type[Any], bool]:
        """The command's options (a dataclass of options) and whether task_params holds defaults."""
        owner: Any = self.protocol if self.own_command else self.task
        return owner.Options, bool(owner.params_hold_defaults)

    def methods(self) -> list[str]:
        """What ``--methods`` takes: the protocol's approaches, or the task's methods."""
        if self.own_command and self.protocol.approaches is not None:
            return list(self.protocol.approaches)
        return self.task.choices("method")

    def check(self, config: RunConfig) -> None:
        """ValueError for a config this experiment cannot run (before any data is loaded)."""
        if self.own_command:
            self.protocol.check(config)
        else:
            self.task.check(config)


def experiment(name: str) -> Experiment:
    """The experiment that ``name`` (a command, a ``RunConfig.task``) runs; UnknownName if none."""
    if name in PROTOCOLS and PROTOCOLS.get(name).task is not None:
        protocol = PROTOCOLS.get(name)
        assert protocol.task is not None
        return Experiment(name, TASKS.get(protocol.task), protocol)
    try:
        return Experiment(name, TASKS.get(name), PROTOCOLS.get(TRAINING))
    except UnknownName:
        raise UnknownName(
            f"unknown task {name!r}; expected one of: {', '.join(experiment_names())}"
        ) from None


def experiment_names() -> list[str]:
    """Every name ``superloss bench`` takes: the tasks, and the protocols with a command."""
    own = [name for name, protocol in PROTOCOLS.entries() if protocol.task is not None]
    return sorted([*TASKS.names(), *own])

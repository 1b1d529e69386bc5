"""A protocol in one file: train the same run several times, for the "add a protocol" recipe."""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass

from superloss.bench.config import RunConfig
from superloss.bench.engine import fit
from superloss.bench.options import option
from superloss.bench.protocols.base import PROTOCOLS, EpochCallback, Protocol
from superloss.bench.record import RunRecord, Summary, build_record
from superloss.bench.tasks.base import TaskData, build_task


@dataclass(frozen=True)
class RepeatsOptions:
    repeats: int = option(2, "trainings of the run, each with its own model seed", low=1)


@PROTOCOLS.register("repeats")
class Repeats(Protocol):
    """The spread of a run over model initialisations: ``repeats`` trainings on the same data
    (the noise of the run's seed), model seeds seed·1000 + i; metric: the mean test accuracy."""

    name = "repeats"
    task = "classification"
    Options = RepeatsOptions
    metric = "accuracy"
    default_noise = "0.4"

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.inner = dataclasses.replace(self.config, task=self.task, task_params={})
        self.run_task = build_task(self.inner)

    def prepare(self) -> TaskData:
        return self.run_task.prepare()

    def run(self, on_epoch: EpochCallback | None = None) -> RunRecord:
        data = self.prepare()
        finals = []
        for repeat in range(self.options.repeats):
            seed = self.config.seed * 1000 + repeat
            _, trained = fit(dataclasses.replace(self.inner, seed=seed), self.run_task, data)
            finals.append(trained.final["accuracy"])
        metrics = {"accuracy": statistics.fmean(finals), "accuracy_std": statistics.pstdev(finals)}
        return build_record(
            self.config,
            [],
            Summary(dict(metrics), dict(metrics), dict(metrics)),
            realised_noise=data.info.get("realised_noise"),
        )

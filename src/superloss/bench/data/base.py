"""What every dataset loader returns, the helpers they share, and ``DATASETS``, their registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from superloss.bench.registry import Registry

DATASETS: Registry[Callable[..., Splits]] = Registry("dataset")


class DataUnavailable(RuntimeError):
    """A dataset that is not on this machine; the message says how to obtain it."""


@dataclass
class Splits:
    """Train / validation / test splits with clean labels; inputs float32, labels int64.

    ``extra_train_labels`` / ``extra_val_labels`` hold alternative label sets aligned with the train and
    validation inputs (e.g. CIFAR-10N's human annotations), by name.
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    extra_train_labels: dict[str, Tensor] = field(default_factory=dict)
    extra_val_labels: dict[str, Tensor] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def split_off(
    count: int, seed: int, *arrays: Tensor
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Split ``arrays`` (same first dimension) into (rest, held-out ``count`` rows), by a seeded shuffle."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(arrays[0].shape[0], generator=generator)
    held, rest = order[:count], order[count:]
    return tuple(a[rest] for a in arrays), tuple(a[held] for a in arrays)


def val_count(num_train: int, cap: int = 5000, fraction: float = 0.1) -> int:
    """How many training images are held out for validation: min(5,000, 10%) by default."""
    return min(cap, round(fraction * num_train))


def standardize(train: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Scale every split by the training inputs' global mean and standard deviation."""
    mean, std = train.mean(), train.std().clamp_min(1e-8)
    return tuple((x - mean) / std for x in (train, *others))


def check_root(root: str | None, dataset: str, how: str) -> Path:
    """The user-given data folder, or DataUnavailable saying how to obtain the data."""
    if root is None:
        raise DataUnavailable(f"dataset {dataset!r} needs --data-root: {how}")
    path = Path(root)
    if not path.is_dir():
        raise DataUnavailable(f"data folder {str(path)!r} for {dataset!r} does not exist: {how}")
    return path


def load_dataset(name: str, root: str | None, seed: int, train_size: int | None = None) -> Splits:
    """Load a registered dataset; ``train_size`` keeps the first rows of the (shuffled) training split."""
    splits = DATASETS.get(name)(root=root, seed=seed)
    assert isinstance(splits, Splits)
    if train_size is not None:
        if train_size > splits.x_train.shape[0]:
            raise ValueError(
                f"train_size {train_size} exceeds the {splits.x_train.shape[0]} training samples of {name}"
            )
        splits.x_train = splits.x_train[:train_size]
        splits.y_train = splits.y_train[:train_size]
        splits.extra_train_labels = {
            k: v[:train_size] for k, v in splits.extra_train_labels.items()
        }
    return splits

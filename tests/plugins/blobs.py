"""A dataset in one file: Gaussian blobs, for the "add a dataset" recipe."""

from __future__ import annotations

import torch

from superloss.bench.data.base import DATASETS, Splits, split_off

CLASSES, FEATURES, PER_CLASS = 4, 8, 90


@DATASETS.register("blobs")
def blobs(root: str | None = None, seed: int = 0) -> Splits:
    """Four Gaussian blobs in 8 dimensions; a fixed test third, validation drawn by the seed."""
    generator = torch.Generator().manual_seed(0)  # the data are the same for every run
    centres = 3.0 * torch.randn(CLASSES, FEATURES, generator=generator)
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    inputs = centres[labels] + torch.randn(len(labels), FEATURES, generator=generator)
    (pool_x, pool_y), (x_test, y_test) = split_off(len(labels) // 3, 0, inputs, labels)
    (x_train, y_train), (x_val, y_val) = split_off(len(pool_y) // 10, seed, pool_x, pool_y)
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, num_classes=CLASSES)

"""Datasets: one file each, registered by name. Nothing here downloads."""

from superloss.bench.data import cifar, digits, mnist, mnist1d, rotation, utkface  # noqa: F401
from superloss.bench.data.base import DATASETS, DataUnavailable, Splits, load_dataset

__all__ = ["DATASETS", "DataUnavailable", "Splits", "load_dataset"]

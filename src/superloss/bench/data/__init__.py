"""Datasets: one file each, registered by name. Nothing here downloads."""

from superloss.bench.data import cifar, digits, mnist, mnist1d, utkface  # noqa: F401
from superloss.bench.data.base import DataUnavailable, Splits, load_dataset

__all__ = ["DataUnavailable", "Splits", "load_dataset"]

"""Protocols: one file each, registered by name. A protocol carries out a run, from data to record."""

from superloss.bench.protocols import noise_detection, training  # noqa: F401
from superloss.bench.protocols.base import PROTOCOLS, Experiment, Protocol, experiment

__all__ = ["PROTOCOLS", "Experiment", "Protocol", "experiment"]

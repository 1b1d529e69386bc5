"""Label-noise models: one file each, registered by name. Each is seeded and returns new labels."""

from superloss.bench.noise import asymmetric, boxes, human, symmetric, targets  # noqa: F401
from superloss.bench.noise.base import NOISES, apply_noise, check_rate

__all__ = ["NOISES", "apply_noise", "check_rate"]

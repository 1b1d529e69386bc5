"""Models: one file each, registered by name: ``build(input_shape, outputs) -> nn.Module``."""

from superloss.bench.models import cnn, detector, mlp, resnet  # noqa: F401
from superloss.bench.models.base import MODELS, build_model

__all__ = ["MODELS", "build_model"]

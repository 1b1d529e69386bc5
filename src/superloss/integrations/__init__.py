"""Optional bridges to other libraries; each module imports its library only when it is imported.

- :mod:`superloss.integrations.lightning` — PyTorch Lightning 2.x (``superloss[lightning]``)
- :mod:`superloss.integrations.transformers` — Hugging Face ``Trainer`` (``superloss[transformers]``)
- :mod:`superloss.integrations.torchvision` — Faster R-CNN, RetinaNet (``superloss[detection]``)
- :mod:`superloss.integrations.metric_learning` — pytorch-metric-learning
  (``superloss[metric-learning]``)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor

from superloss.loss import SuperLoss

__all__ = ["HoldsSuperLoss", "requires_extra"]


@contextmanager
def requires_extra(integration: str, extra: str) -> Iterator[None]:
    """Turn a failed import of a framework into a one-line ImportError naming the extra to install.

    Wraps an integration's framework imports, which stay ordinary (typed) import statements::

        with requires_extra("lightning", "lightning"):
            import lightning.pytorch as pl
    """
    try:
        yield
    except ImportError as error:
        missing = error.name or "a dependency"
        reason = " ".join(str(error).split())  # one line, whatever the original message
        raise ImportError(
            f"superloss.integrations.{integration} could not import {missing} ({reason}); "
            f'install it with: pip install "superloss[{extra}]" '
            f'(from a checkout: pip install -e ".[{extra}]")'
        ) from error


class HoldsSuperLoss:
    """Mixin for a wrapper around a :class:`superloss.SuperLoss` kept as ``self.super_loss``."""

    super_loss: SuperLoss

    @property
    def last_confidence(self) -> Tensor | None:
        """σ* of the last call (see the wrapper for its shape), or None before the first."""
        return self.super_loss.last_confidence

    @property
    def last_tau(self) -> Tensor | None:
        """τ of the last call (0-dim tensor), or None before the first."""
        return self.super_loss.last_tau

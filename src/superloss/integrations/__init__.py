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

__all__ = ["requires_extra"]


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

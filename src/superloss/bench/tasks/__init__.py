"""Tasks: one file each, registered by name. A task turns a config into data, model, loss and metrics."""

from superloss.bench.tasks import (  # noqa: F401
    classification,
    detection,
    noise_detection,
    regression,
    retrieval,
)
from superloss.bench.tasks.base import Task, TaskData

__all__ = ["Task", "TaskData"]

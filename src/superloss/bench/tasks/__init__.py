"""Tasks: one file each, registered by name. A task turns a config into data, a loss and metrics."""

from superloss.bench.tasks import classification, detection, regression, retrieval  # noqa: F401
from superloss.bench.tasks.base import TASKS, StepOutput, Task, TaskData, build_task

__all__ = ["TASKS", "StepOutput", "Task", "TaskData", "build_task"]

"""A task in one file: is the digit even or odd? For the "add a task" recipe."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from superloss.bench.data import load_dataset
from superloss.bench.noise import apply_noise
from superloss.bench.tasks.base import TASKS, Task, TaskData


@TASKS.register("parity")
class Parity(Task):
    """The parity of each image's class, with noisy training labels; metric: clean test accuracy."""

    name = "parity"
    metric = "accuracy"
    default_methods = "ce,superloss"

    def prepare(self) -> TaskData:
        config = self.config
        splits = load_dataset(config.dataset, config.data_root, config.seed, config.train_size)
        clean = {"train": splits.y_train % 2, "val": splits.y_val % 2}
        noisy = {
            split: apply_noise(
                config.noise_type,
                labels,
                config.noise,
                num_classes=2,
                dataset=config.dataset,
                seed=2 * config.seed + (split == "val"),
            )
            for split, labels in clean.items()
        }
        corrupted = noisy["train"] != clean["train"]
        return TaskData(
            train_inputs=splits.x_train, train_targets=noisy["train"], corrupted=corrupted,
            val_inputs=splits.x_val, val_targets=noisy["val"],
            test_inputs=splits.x_test, test_targets=splits.y_test % 2,
            input_shape=splits.input_shape, outputs=2, num_classes=2,
            info={"realised_noise": float(corrupted.float().mean())},
        )  # fmt: skip

    def base_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets, reduction="none")

    def evaluate(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> dict[str, float]:
        predictions = self.predict(model, inputs).argmax(dim=1)
        return {"accuracy": float((predictions == targets).float().mean() * 100.0)}

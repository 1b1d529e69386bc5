"""Image classification with noisy training labels; metric: clean test top-1 accuracy in %."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superloss.bench.data import load_dataset
from superloss.bench.noise import apply_noise
from superloss.bench.tasks.base import TASKS, Task, TaskData


@TASKS.register("classification")
class Classification(Task):
    name = "classification"
    metric = "accuracy"
    higher_is_better = True
    default_methods = "ce,superloss"

    def prepare(self) -> TaskData:
        config = self.config
        splits = load_dataset(config.dataset, config.data_root, config.seed, config.train_size)
        noisy = {}
        for split, labels, extra in (
            ("train", splits.y_train, splits.extra_train_labels),
            ("val", splits.y_val, splits.extra_val_labels),
        ):
            # Different seeds for the two splits, the same for every method: paired comparisons.
            noisy[split] = apply_noise(
                config.noise_type,
                labels,
                config.noise,
                num_classes=splits.num_classes,
                dataset=config.dataset,
                seed=config.seed * 2 + (split == "val"),
                extra=extra,
            )
        corrupted = noisy["train"] != splits.y_train
        return TaskData(
            train_inputs=splits.x_train,
            train_targets=noisy["train"],
            corrupted=corrupted,
            val_inputs=splits.x_val,
            val_targets=noisy["val"],
            test_inputs=splits.x_test,
            test_targets=splits.y_test,
            input_shape=splits.input_shape,
            outputs=splits.num_classes,
            num_classes=splits.num_classes,
            info={
                "realised_noise": float(corrupted.float().mean()) if len(corrupted) else 0.0,
                "train_clean_targets": splits.y_train,
            },
        )

    def base_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets, reduction="none")

    def evaluate(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> dict[str, float]:
        predictions = self.predict(model, inputs).argmax(dim=1)
        accuracy = (
            (predictions == targets).float().mean() * 100.0 if len(targets) else torch.tensor(0.0)
        )
        return {"accuracy": float(accuracy)}

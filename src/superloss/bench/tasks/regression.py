r"""Regression from images with noisy training targets; metric: clean test mean absolute error.

Datasets and their targets (``REGRESSION_DATASETS``):

- ``digits``, ``mnist``: the digit's value, 0–9, read as a number.
- ``utkface``: the age in years, from UTKFace's file names (``data/utkface.py``; ``--data-root``).
- ``digits-rotation``, ``mnist-rotation``: the angle, in degrees, by which each image of ``digits``
  / ``mnist`` was rotated, uniform in [−45°, 45°] (``data/rotation.py``).

Noise: the run's noise model corrupts the training and validation targets, in their own units
(``--noise-type uniform`` or ``heavy-tailed``, ``noise/targets.py``); test targets stay clean.
Every method of a seed sees the same corruption (paired comparisons).

Targets are standardised for training: the network predicts (y − c)/s, where c is the median and
s = IQR/1.349 of the *noisy* training targets — the statistics a user has, robust to heavy-tailed
noise (whose variance is infinite), and equal to the mean and standard deviation for Gaussian
targets. The MAE is reported in the targets' own units (digit values, degrees, years):
mean |c + s·f(x) − y|. Targets are the values in their own units; c and s are the run's state, kept
on the task object that :meth:`Regression.prepare` built them with.

Base losses (``--base-loss``), on the standardised residual r = f(x) − (y − c)/s, per sample:
``l2`` r², ``l1`` |r|, ``smooth-l1`` ½r² if |r| < 1 else |r| − ½ (Huber with δ = 1).

Units (a check of a loss's scale dependence): ``--target-scale K`` multiplies every target by K
before the noise (both noise models scale with the targets: the same problem in other units;
c and s scale by K, so standardised losses, and every number but the MAE, are unchanged up to
rounding). ``--target-units`` computes the base loss on the residual in the targets' units,
s·r = c + s·f(x) − y (the network still predicts the standardised target): then ``l2`` scales by
K², ``l1`` by K, and ``smooth-l1``'s δ = 1 is one target unit, which changes its shape. SGD's step
scales with the loss (a loss ×100 diverges); Adam's does not (``--optimizer adam --weight-decay
0``: Adam adds weight decay to the gradient, which a scaled loss outweighs). The generic
methods wrap them: ``plain`` averages them, ``superloss`` weights each by its σ with τ the EMA of
the batch-mean loss (``num_classes`` is None, so its ``tau="auto"`` picks ``"ema"``: the loss scale
is not known in advance), ``spl`` keeps the samples below its threshold.

Hyper-parameters, fixed before any result was seen: ``l2`` by default (the usual regression loss);
±45° (rotations a digit survives while staying recognisable: 6 and 9 stay apart); the robust
standardisation above. Optimiser, model, epochs, batch size and learning rate: the dataset's
defaults (``presets.py``), as for classification.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from superloss.bench.config import RunConfig
from superloss.bench.data import Splits, load_dataset
from superloss.bench.data.rotation import ROTATION_PADDING, ROTATION_SUFFIX, rotated_with_angles
from superloss.bench.noise import apply_noise
from superloss.bench.noise.targets import TARGET_NOISE_TYPES
from superloss.bench.options import option
from superloss.bench.tasks.base import TASKS, Task, TaskData

REGRESSION_DATASETS: dict[str, str] = {
    "digits": "the digit's value (0–9)",
    "mnist": "the digit's value (0–9)",
    "utkface": "the age in years",
    **{f"{base}{ROTATION_SUFFIX}": "the rotation angle in degrees" for base in ROTATION_PADDING},
}
IQR_TO_STD = 1.349  # the interquartile range of a Gaussian, in standard deviations


def l2(residual: Tensor) -> Tensor:
    return residual.square()


def l1(residual: Tensor) -> Tensor:
    return residual.abs()


def smooth_l1(residual: Tensor) -> Tensor:
    magnitude = residual.abs()
    return torch.where(magnitude < 1.0, 0.5 * residual.square(), magnitude - 0.5)


BASE_LOSSES: dict[str, Callable[[Tensor], Tensor]] = {"l2": l2, "smooth-l1": smooth_l1, "l1": l1}


@dataclass(frozen=True)
class RegressionOptions:
    base_loss: str = option(
        "l2", "per-sample loss on the standardised residual", choices=tuple(BASE_LOSSES)
    )
    target_units: bool = option(
        False,
        "compute the base loss on the residual in the targets' own units (s times the "
        "standardised one) instead of the standardised residual",
    )
    target_scale: float = option(
        1.0,
        "multiply every target (training, validation, test) by this factor before the noise: "
        "the same problem in other units",
        low=0.0,
        low_open=True,
    )


def robust_standardisation(targets: Tensor) -> tuple[float, float]:
    """(median, IQR/1.349) of ``targets``; the scale falls back to 1 when the IQR is 0."""
    values = targets.double()
    centre = float(values.median())
    spread = float(torch.quantile(values, 0.75) - torch.quantile(values, 0.25))
    return centre, (spread / IQR_TO_STD if spread > 0 else 1.0)


def standardised_residual(
    outputs: Tensor, targets: Tensor, centre: Tensor, scale: Tensor
) -> Tensor:
    """f(x) − (y − c)/s for outputs N×1 (or N) and targets N, in float32 or wider.

    ``centre`` and ``scale`` are float32 0-dim tensors: the residual is computed in float32 as the
    targets are stored.
    """
    if outputs.dim() == 2 and outputs.shape[1] == 1:
        outputs = outputs[:, 0]
    if outputs.dim() != 1 or targets.shape != outputs.shape:
        raise ValueError(
            f"expected outputs N×1 (or N) and targets N, got {tuple(outputs.shape)} and "
            f"{tuple(targets.shape)}"
        )
    standardised = (targets - centre.to(targets.device)) / scale.to(targets.device)
    return outputs.float() - standardised


def check_setting(dataset: str, noise_type: str) -> None:
    """ValueError unless ``dataset`` has a regression target and ``noise_type`` corrupts targets."""
    if dataset not in REGRESSION_DATASETS:
        raise ValueError(
            f"dataset {dataset!r} has no regression target; expected one of "
            f"{', '.join(REGRESSION_DATASETS)}"
        )
    if noise_type not in TARGET_NOISE_TYPES:
        raise ValueError(
            f"the regression task corrupts continuous targets: --noise-type must be one of "
            f"{', '.join(TARGET_NOISE_TYPES)}, got {noise_type!r}"
        )


@TASKS.register("regression")
class Regression(Task):
    name = "regression"
    metric = "mae"
    higher_is_better = False
    default_noise_type = "uniform"
    Options = RegressionOptions
    params_hold_defaults = True
    datasets = tuple(REGRESSION_DATASETS)
    noise_types = TARGET_NOISE_TYPES
    table_options = ("target_units", "target_scale")  # an MAE ×10 is not comparable

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.loss = BASE_LOSSES[self.options.base_loss]
        self.standardise(0.0, 1.0)  # set from the noisy training targets by prepare()

    @classmethod
    def check(cls, config: RunConfig) -> None:
        check_setting(config.dataset, config.noise_type)
        super().check(config)

    def standardise(self, centre: float, scale: float) -> None:
        """Set the run's target centre c and scale s (float32, as the targets)."""
        self.centre = torch.tensor(centre, dtype=torch.float32)
        self.scale = torch.tensor(scale, dtype=torch.float32)

    def base_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        residual = standardised_residual(outputs, targets, self.centre, self.scale)
        if self.options.target_units:
            residual = residual * self.scale.to(residual.device)  # c + s·f(x) − y
        return self.loss(residual)

    def _clean_targets(self) -> tuple[Splits, dict[str, Tensor]]:
        """The dataset's splits and each split's clean targets (the digit, the age, the angle)."""
        config = self.config
        if not config.dataset.endswith(ROTATION_SUFFIX):
            splits = load_dataset(config.dataset, config.data_root, config.seed, config.train_size)
            return splits, {"train": splits.y_train, "val": splits.y_val, "test": splits.y_test}
        # Rotate the whole training split, then keep its first rows: the images the registered
        # rotated dataset gives.
        splits, angles = rotated_with_angles(config.dataset, config.data_root, config.seed)
        if config.train_size is not None:
            if config.train_size > splits.x_train.shape[0]:
                raise ValueError(
                    f"train_size {config.train_size} exceeds the {splits.x_train.shape[0]} "
                    f"training samples of {config.dataset}"
                )
            splits.x_train = splits.x_train[: config.train_size]
            splits.y_train = splits.y_train[: config.train_size]
            angles["train"] = angles["train"][: config.train_size]
        return splits, angles

    def prepare(self) -> TaskData:
        config = self.config
        check_setting(config.dataset, config.noise_type)
        splits, targets = self._clean_targets()
        factor = float(self.options.target_scale)
        clean = {split: values.double() * factor for split, values in targets.items()}
        noisy = {
            # Different seeds for the two splits, the same for every method: paired comparisons.
            split: apply_noise(
                config.noise_type,
                clean[split],
                config.noise,
                num_classes=0,  # continuous targets have no classes
                dataset=config.dataset,
                seed=config.seed * 2 + (split == "val"),
            )
            for split in ("train", "val")
        }
        corrupted = noisy["train"] != clean["train"]
        centre, scale = robust_standardisation(noisy["train"])
        self.standardise(centre, scale)
        return TaskData(
            train_inputs=splits.x_train,
            train_targets=noisy["train"].to(torch.float32),
            corrupted=corrupted,
            val_inputs=splits.x_val,
            val_targets=noisy["val"].to(torch.float32),
            test_inputs=splits.x_test,
            test_targets=clean["test"].to(torch.float32),
            input_shape=splits.input_shape,
            outputs=1,
            num_classes=None,
            info={
                "realised_noise": float(corrupted.float().mean()) if len(corrupted) else 0.0,
                "target_centre": centre,
                "target_scale": scale,
                "train_clean_targets": clean["train"].float(),
            },
        )

    def evaluate(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> dict[str, float]:
        if len(targets) == 0:
            return {"mae": math.nan}
        residual = standardised_residual(
            self.predict(model, inputs), targets, self.centre, self.scale
        )
        return {"mae": float((residual.abs() * self.scale.to(residual.device)).mean())}

r"""Regression from images with noisy training targets; metric: clean test mean absolute error.

Datasets and their targets (``REGRESSION_DATASETS``):

- ``digits``, ``mnist``: the digit's value, 0–9, read as a number.
- ``utkface``: the age in years, from UTKFace's file names (``data/utkface.py``; ``--data-root``).
- ``digits-rotation``, ``mnist-rotation``: the angle, in degrees, by which each image of ``digits``
  / ``mnist`` was rotated (counter-clockwise, about its centre, bilinear); angles are uniform in
  [−45°, 45°]. Training and validation angles are drawn by the run's seed, test angles by a fixed
  seed, so every run is scored on the same rotated test images. The whole digit must stay in the
  frame, or the line along which a rotation cuts it off (and the edge pixels a rotation smears into
  the corners) would give the angle away: the 8×8 digits, which reach their edges, are first padded
  with background to 12×12 (8·√2 ≈ 11.3); MNIST's digits lie inside the circle inscribed in their
  28×28 frame (all but 0.05% of their ink), which no rotation leaves, and are rotated as they
  are. Those two datasets are registered here, beside the task that produces them, under the
  dataset names the command line checks; loaded through the registry (e.g. by the classification
  task) they give the rotated images with their digit labels: rotated-digit classification.

Noise: the run's noise model corrupts the training and validation targets, in their own units
(``--noise-type uniform`` or ``heavy-tailed``, ``noise/targets.py``); test targets stay clean.
Every method of a seed sees the same corruption (paired comparisons).

Targets are standardised for training: the network predicts (y − c)/s, where c is the median and
s = IQR/1.349 of the *noisy* training targets — the statistics a user has, robust to heavy-tailed
noise (whose variance is infinite), and equal to the mean and standard deviation for Gaussian
targets. The MAE is reported in the targets' own units (digit values, degrees, years):
mean |c + s·f(x) − y|. Because the runner gives :meth:`Regression.evaluate` only the model, inputs
and targets, every target travels as a row (y, c, s): its value in its own units, then the run's
centre and scale (the same on every row).

Base losses (``--base-loss``), on the standardised residual r = f(x) − (y − c)/s, per sample:
``l2`` r², ``l1`` |r|, ``smooth-l1`` ½r² if |r| < 1 else |r| − ½ (Huber with δ = 1). The generic
methods wrap them: ``plain`` averages them, ``superloss`` weights each by its σ with τ the EMA of
the batch-mean loss (``num_classes`` is None, so its ``tau="auto"`` picks ``"ema"``: the loss scale
is not known in advance), ``spl`` keeps the samples below its threshold.

Hyper-parameters, fixed before any result was seen: ``l2`` by default (the usual regression loss);
±45° (rotations a digit survives while staying recognisable: 6 and 9 stay apart); the robust
standardisation above. Optimiser, model, epochs, batch size and learning rate: the dataset's
defaults (``presets.py``), as for classification.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superloss.bench.config import RunConfig
from superloss.bench.data import Splits, load_dataset
from superloss.bench.noise import apply_noise
from superloss.bench.noise.targets import TARGET_NOISE_TYPES
from superloss.bench.registry import DATASETS, TASKS
from superloss.bench.tasks.base import Task, TaskData

ROTATION_SUFFIX = "-rotation"
# Base dataset -> background pixels added on each side before rotating (see the module docstring).
ROTATION_PADDING = {"digits": 2, "mnist": 0}
MAX_ANGLE = 45.0  # degrees
# Seeds of the angle draws, apart from the noise's (2·seed, 2·seed + 1): train and validation by the
# run's seed, test fixed.
ANGLE_SEED = 1_000_000
ANGLE_TEST_SEED = ANGLE_SEED - 1

REGRESSION_DATASETS: dict[str, str] = {
    "digits": "the digit's value (0–9)",
    "mnist": "the digit's value (0–9)",
    "utkface": "the age in years",
    **{f"{base}{ROTATION_SUFFIX}": "the rotation angle in degrees" for base in ROTATION_PADDING},
}
IQR_TO_STD = 1.349  # the interquartile range of a Gaussian, in standard deviations

# Columns of a target row.
VALUE, CENTRE, SCALE = 0, 1, 2


def l2(residual: Tensor) -> Tensor:
    return residual.square()


def l1(residual: Tensor) -> Tensor:
    return residual.abs()


def smooth_l1(residual: Tensor) -> Tensor:
    magnitude = residual.abs()
    return torch.where(magnitude < 1.0, 0.5 * residual.square(), magnitude - 0.5)


BASE_LOSSES: dict[str, Callable[[Tensor], Tensor]] = {"l2": l2, "smooth-l1": smooth_l1, "l1": l1}
DEFAULTS: dict[str, Any] = {"base_loss": "l2"}


def rotate(images: Tensor, angles: Tensor) -> Tensor:
    """Each image (N×C×H×W, square) rotated counter-clockwise by its angle in degrees.

    The rotation of ``torchvision.transforms.functional.rotate`` (about the centre, bilinear), but
    outside the image the border pixels are repeated rather than a constant filled in: they are the
    background of a digit, whatever the standardisation made of it.
    """
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images shaped N×C×H×W, got {tuple(images.shape)}")
    radians = angles.double() * (math.pi / 180.0)
    cos, sin, zero = radians.cos(), radians.sin(), torch.zeros_like(radians)
    # affine_grid maps each output position to the input position it samples: the inverse rotation,
    # written in image coordinates (x right, y down).
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def rotation_angles(count: int, seed: int) -> Tensor:
    """``count`` angles uniform in [−MAX_ANGLE, MAX_ANGLE] degrees, float64, seeded."""
    generator = torch.Generator().manual_seed(seed)
    return (2.0 * torch.rand(count, generator=generator, dtype=torch.float64) - 1.0) * MAX_ANGLE


def rotate_splits(splits: Splits, seed: int, padding: int = 0) -> tuple[Splits, dict[str, Tensor]]:
    """The splits with every image rotated, labels unchanged; and the angles of each split.

    Images are first padded with ``padding`` pixels on each side, of the training images' smallest
    value: the background of dark-background images such as digits, whatever their standardisation.
    """
    background = float(splits.x_train.min()) if splits.x_train.numel() else 0.0

    def turned(images: Tensor, angles: Tensor) -> Tensor:
        padded = F.pad(images, (padding,) * 4, value=background) if padding else images
        return rotate(padded, angles)

    angles = {
        "train": rotation_angles(splits.x_train.shape[0], ANGLE_SEED + 2 * seed),
        "val": rotation_angles(splits.x_val.shape[0], ANGLE_SEED + 2 * seed + 1),
        "test": rotation_angles(splits.x_test.shape[0], ANGLE_TEST_SEED),
    }
    rotated = Splits(
        turned(splits.x_train, angles["train"]),
        splits.y_train,
        turned(splits.x_val, angles["val"]),
        splits.y_val,
        turned(splits.x_test, angles["test"]),
        splits.y_test,
        splits.num_classes,
        dict(splits.extra_train_labels),
        dict(splits.extra_val_labels),
    )
    return rotated, angles


def _rotated_dataset(base: str) -> Callable[..., Splits]:
    def load(root: str | None = None, seed: int = 0) -> Splits:
        return rotate_splits(load_dataset(base, root, seed), seed, ROTATION_PADDING[base])[0]

    load.__doc__ = f"``{base}`` with each image rotated by a seeded angle in [−45°, 45°]."
    return load


for _base in ROTATION_PADDING:
    DATASETS.register(f"{_base}{ROTATION_SUFFIX}")(_rotated_dataset(_base))


def robust_standardisation(targets: Tensor) -> tuple[float, float]:
    """(median, IQR/1.349) of ``targets``; the scale falls back to 1 when the IQR is 0."""
    values = targets.double()
    centre = float(values.median())
    spread = float(torch.quantile(values, 0.75) - torch.quantile(values, 0.25))
    return centre, (spread / IQR_TO_STD if spread > 0 else 1.0)


def target_rows(values: Tensor, centre: float, scale: float) -> Tensor:
    """Targets as float32 rows (y, c, s), the form every regression target tensor takes."""
    rows = torch.empty(values.shape[0], 3, dtype=torch.float32)
    rows[:, VALUE] = values.to(torch.float32)
    rows[:, CENTRE] = centre
    rows[:, SCALE] = scale
    return rows


def standardised_residual(outputs: Tensor, targets: Tensor) -> Tensor:
    """f(x) − (y − c)/s for outputs N×1 (or N) and target rows N×3, in float32 or wider."""
    if outputs.dim() == 2 and outputs.shape[1] == 1:
        outputs = outputs[:, 0]
    if outputs.dim() != 1 or targets.dim() != 2 or targets.shape[1] != 3:
        raise ValueError(
            f"expected outputs N×1 and target rows N×3 (y, c, s), got {tuple(outputs.shape)} and "
            f"{tuple(targets.shape)}"
        )
    standardised = (targets[:, VALUE] - targets[:, CENTRE]) / targets[:, SCALE]
    return outputs.float() - standardised


def task_options(task_params: dict[str, Any]) -> dict[str, Any]:
    """The task's options with defaults filled in; ValueError on an unknown option or value."""
    unknown = set(task_params) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown regression option(s) {sorted(unknown)}; expected {sorted(DEFAULTS)}"
        )
    options = {**DEFAULTS, **task_params}
    if options["base_loss"] not in BASE_LOSSES:
        raise ValueError(
            f"unknown base loss {options['base_loss']!r}; expected one of {', '.join(BASE_LOSSES)}"
        )
    return options


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


class Regression(Task):
    name = "regression"
    metric = "mae"
    higher_is_better = False
    default_noise_type = "uniform"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--base-loss",
            choices=tuple(BASE_LOSSES),
            default=DEFAULTS["base_loss"],
            help="per-sample loss on the standardised residual (default l2)",
        )

    def task_params(self, args: argparse.Namespace) -> dict[str, Any]:
        check_setting(args.dataset, args.noise_type)
        return task_options({"base_loss": args.base_loss})

    def make_base_loss(self, config: RunConfig) -> Callable[[Tensor, Tensor], Tensor]:
        loss = BASE_LOSSES[task_options(config.task_params)["base_loss"]]

        def base_loss(outputs: Tensor, targets: Tensor) -> Tensor:
            return loss(standardised_residual(outputs, targets))

        return base_loss

    def base_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return l2(standardised_residual(outputs, targets))

    def prepare(self, config: RunConfig) -> TaskData:
        task_options(config.task_params)
        check_setting(config.dataset, config.noise_type)
        if config.dataset.endswith(ROTATION_SUFFIX):
            # Rotate the whole training split, then keep its first rows: the images the registered
            # rotated dataset gives.
            base = config.dataset.removesuffix(ROTATION_SUFFIX)
            splits, angles = rotate_splits(
                load_dataset(base, config.data_root, config.seed),
                config.seed,
                ROTATION_PADDING[base],
            )
            if config.train_size is not None:
                if config.train_size > splits.x_train.shape[0]:
                    raise ValueError(
                        f"train_size {config.train_size} exceeds the {splits.x_train.shape[0]} "
                        f"training samples of {config.dataset}"
                    )
                splits.x_train = splits.x_train[: config.train_size]
                splits.y_train = splits.y_train[: config.train_size]
                angles["train"] = angles["train"][: config.train_size]
            clean = angles
        else:
            splits = load_dataset(config.dataset, config.data_root, config.seed, config.train_size)
            clean = {"train": splits.y_train, "val": splits.y_val, "test": splits.y_test}
        clean = {split: values.double() for split, values in clean.items()}
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
        return TaskData(
            train_inputs=splits.x_train,
            train_targets=target_rows(noisy["train"], centre, scale),
            corrupted=corrupted,
            val_inputs=splits.x_val,
            val_targets=target_rows(noisy["val"], centre, scale),
            test_inputs=splits.x_test,
            test_targets=target_rows(clean["test"], centre, scale),
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
        residual = standardised_residual(self.predict(model, inputs), targets)
        return {"mae": float((residual.abs() * targets[:, SCALE]).mean())}


TASKS.register("regression")(Regression())

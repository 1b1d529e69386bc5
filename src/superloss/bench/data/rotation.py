r"""``digits-rotation`` and ``mnist-rotation``: each image of ``digits`` / ``mnist`` rotated by a seeded angle.

The angles, in degrees, are uniform in [−45°, 45°], counter-clockwise about the image's centre
(bilinear). Training and validation angles are drawn by the run's seed, test angles by a fixed seed,
so every run is scored on the same rotated test images. The whole digit must stay in the frame, or
the line along which a rotation cuts it off (and the edge pixels a rotation smears into the corners)
would give the angle away: the 8×8 digits, which reach their edges, are first padded with background
to 12×12 (8·√2 ≈ 11.3); MNIST's digits lie inside the circle inscribed in their 28×28 frame (all but
0.05% of their ink), which no rotation leaves, and are rotated as they are.

Loaded through the registry (e.g. by the classification task) these datasets give the rotated images
with their digit labels: rotated-digit classification. The regression task regresses the angle
(:func:`rotate_splits` gives it the angles).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from superloss.bench.data.base import DATASETS, Splits, load_dataset

ROTATION_SUFFIX = "-rotation"
# Base dataset -> background pixels added on each side before rotating (see the module docstring).
ROTATION_PADDING = {"digits": 2, "mnist": 0}
MAX_ANGLE = 45.0  # degrees
# Seeds of the angle draws, apart from the noise's (2·seed, 2·seed + 1): train and validation by the
# run's seed, test fixed.
ANGLE_SEED = 1_000_000
ANGLE_TEST_SEED = ANGLE_SEED - 1


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


def rotated_with_angles(name: str, root: str | None, seed: int) -> tuple[Splits, dict[str, Tensor]]:
    """The rotated dataset ``name`` (``BASE-rotation``) in full, and the angles of each split."""
    base = name.removesuffix(ROTATION_SUFFIX)
    return rotate_splits(load_dataset(base, root, seed), seed, ROTATION_PADDING[base])


def _rotated_dataset(base: str) -> Callable[..., Splits]:
    def load(root: str | None = None, seed: int = 0) -> Splits:
        return rotated_with_angles(f"{base}{ROTATION_SUFFIX}", root, seed)[0]

    load.__doc__ = f"``{base}`` with each image rotated by a seeded angle in [−45°, 45°]."
    return load


for _base in ROTATION_PADDING:
    DATASETS.register(f"{_base}{ROTATION_SUFFIX}")(_rotated_dataset(_base))

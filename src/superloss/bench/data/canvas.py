"""Synthetic detection canvases: 1–4 digits pasted, without overlap, on a blank canvas.

Built from any labelled 1×h×w digit images (sklearn's digits, MNIST). Each canvas draws a number of
objects k uniformly in {1, …, MAX_OBJECTS}; each object is the next digit of a seeded shuffle of the
source images (reshuffled when used up), cropped to its ink (pixels above INK × the image's maximum),
upscaled by an integer factor drawn from the geometry's ``scales`` (nearest neighbour) and pasted at a
uniformly drawn position where its box stays at least GAP pixels away from every box already there
(ATTEMPTS tries; a digit that does not fit is left out, so a canvas may hold fewer than k). Its box is
the pasted rectangle [x1, y1, x2, y2] in pixel coordinates (x2 = x1 + width), its class the digit.

Targets are one tensor, so that the training loop can index a batch of them: (count, MAX_OBJECTS, 5),
rows [x1, y1, x2, y2, class], padded with rows [0, 0, 0, 0, −1] (``PAD_CLASS``).

Geometry, per source image side: 8×8 digits on 64×64 canvases, upscaled ×2 or ×3 (boxes of about
4–24 pixels); larger digits (MNIST's 28×28) on 96×96 canvases at their own size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

MAX_OBJECTS = 4
PAD_CLASS = -1
INK = 0.2
GAP = 1
ATTEMPTS = 50
MEAN_OBJECTS = (1 + MAX_OBJECTS) / 2


@dataclass(frozen=True)
class Geometry:
    size: int  # canvas side in pixels
    scales: tuple[int, ...]  # integer upscaling factors, one drawn per object


def geometry_for(side: int) -> Geometry:
    """Canvas geometry for square source images of ``side`` pixels."""
    if side <= 8:
        return Geometry(64, (2, 3))
    if side <= 32:
        return Geometry(96, (1,))
    raise ValueError(
        f"digit canvases take source images of at most 32×32 pixels, got {side}×{side}"
    )


def canvas_count(num_images: int) -> int:
    """Canvases built from ``num_images`` digits: each digit is pasted about once."""
    return max(1, math.ceil(num_images / MEAN_OBJECTS))


def to_unit_range(images: Tensor, low: float, high: float) -> Tensor:
    """Map pixel values affinely so that ``low`` → 0 and ``high`` → 1 (undoes a standardisation)."""
    return (images - low) / max(high - low, 1e-8)


def _ink_crop(image: Tensor) -> Tensor:
    """The image (h×w) cropped to the rows and columns holding ink."""
    ink = image > INK * image.max().clamp_min(1e-8)
    rows = torch.nonzero(ink.any(dim=1)).flatten()
    cols = torch.nonzero(ink.any(dim=0)).flatten()
    if rows.numel() == 0:
        return image
    return image[int(rows[0]) : int(rows[-1]) + 1, int(cols[0]) : int(cols[-1]) + 1]


def _overlaps(box: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]]) -> bool:
    x1, y1, x2, y2 = box
    return any(
        x1 < px2 + GAP and px1 < x2 + GAP and y1 < py2 + GAP and py1 < y2 + GAP
        for px1, py1, px2, py2 in placed
    )


def make_canvases(
    images: Tensor,
    labels: Tensor,
    count: int,
    geometry: Geometry,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Build ``count`` canvases from ``images`` (n, 1, h, w), values in [0, 1], and ``labels`` (n,).

    Returns:
        canvases (count, 1, S, S) float32 with background 0, and targets (count, MAX_OBJECTS, 5)
        float32 (module docstring).
    """
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"expected digit images shaped (n, 1, h, w), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("no source images to build canvases from")
    size = geometry.size
    canvases = torch.zeros(count, 1, size, size)
    targets = torch.zeros(count, MAX_OBJECTS, 5)
    targets[:, :, 4] = PAD_CLASS
    crops = [_ink_crop(image[0]) for image in images]
    order = torch.randperm(len(crops), generator=generator)
    cursor = 0

    def draw(upper: int) -> int:
        return int(torch.randint(0, upper, (1,), generator=generator))

    for canvas in range(count):
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(1 + draw(MAX_OBJECTS)):
            if cursor == len(order):
                order, cursor = torch.randperm(len(crops), generator=generator), 0
            source = int(order[cursor])
            cursor += 1
            scale = geometry.scales[draw(len(geometry.scales))]
            digit = crops[source].repeat_interleave(scale, 0).repeat_interleave(scale, 1)
            height, width = digit.shape
            if height > size or width > size:
                continue
            for _ in range(ATTEMPTS):
                x, y = draw(size - width + 1), draw(size - height + 1)
                box = (x, y, x + width, y + height)
                if not _overlaps(box, placed):
                    canvases[canvas, 0, y : y + height, x : x + width] = digit
                    targets[canvas, len(placed)] = torch.tensor([*box, float(labels[source])])
                    placed.append(box)
                    break
    return canvases, targets


def real_boxes(targets: Tensor) -> Tensor:
    """Mask (…, MAX_OBJECTS) of the rows that hold a box (class ≥ 0), not padding."""
    return targets[..., 4] >= 0

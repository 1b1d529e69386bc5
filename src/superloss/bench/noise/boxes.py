"""Annotation noise for detection: targets (n, max_boxes, 5), rows [x1, y1, x2, y2, class], class −1 = padding.

The rate p is the fraction of annotated boxes that are corrupted: exactly round(p·n) of the n real
boxes (padding excluded), chosen uniformly over the whole set, are

- ``box-jitter``: moved: each coordinate is shifted by u·size, u ~ U(−JITTER, JITTER), size = the
  box's width for x1, x2 and its height for y1, y2; the coordinates are then re-ordered, clipped to
  the canvas (``extra["canvas_size"]``, when given) and kept at least MIN_SIZE apart. With JITTER =
  0.4 a moved box has an IoU of about 0.47 with its object on average, below the 0.5 of a match in
  62% of the cases;
- ``box-flip``: relabelled with a class drawn uniformly among the C − 1 other classes (the boxes'
  ``symmetric`` noise);
- ``box-drop``: removed, the row becoming padding: the object is left unannotated, so a detector
  learns its pixels as background (missing annotations);
- ``box-mixed``: each chosen box gets one of the three, in equal shares (the chosen boxes, in random
  order, take jitter, flip and drop in turn).

A box counts as corrupted when its row differs from the clean one (:func:`corrupted_boxes`), so every
model realises its rate exactly. Each model follows the noise-model contract of ``base.py`` and
refuses anything but such targets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from superloss.bench.noise.base import NOISES, NoiseContext, exact_count

JITTER = 0.4
MIN_SIZE = 1.0
BOX_NOISE_TYPES = ("box-drop", "box-flip", "box-jitter", "box-mixed")


def corrupted_boxes(clean: Tensor, noisy: Tensor) -> Tensor:
    """(n, max_boxes) mask of the real clean boxes whose annotation the noise changed."""
    return (clean[..., 4] >= 0) & (noisy != clean).any(dim=-1)


def _chosen(targets: Tensor, rate: float, generator: torch.Generator, noise: str) -> Tensor:
    """(image, slot) indices, (k, 2), of the round(rate·n) real boxes to corrupt."""
    if not targets.is_floating_point() or targets.dim() != 3 or targets.shape[-1] != 5:
        raise ValueError(
            f"{noise!r} noise corrupts detection targets (n, max_boxes, 5) of rows "
            f"[x1, y1, x2, y2, class], got a {tuple(targets.shape)} {targets.dtype} tensor; "
            "for class labels use 'symmetric' or 'asymmetric'"
        )
    real = torch.nonzero(targets[..., 4] >= 0)
    order = torch.randperm(real.shape[0], generator=generator)
    return real[order[: exact_count(rate, real.shape[0])]]


def _jitter(
    targets: Tensor, chosen: Tensor, generator: torch.Generator, extra: dict[str, Tensor]
) -> None:
    rows = targets[chosen[:, 0], chosen[:, 1]]
    boxes = rows[:, :4]
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    sizes = torch.stack([width, height, width, height], dim=1)
    shift = (torch.rand(boxes.shape, generator=generator, dtype=boxes.dtype) * 2 - 1) * JITTER
    moved = boxes + shift * sizes
    x1, x2 = torch.minimum(moved[:, 0], moved[:, 2]), torch.maximum(moved[:, 0], moved[:, 2])
    y1, y2 = torch.minimum(moved[:, 1], moved[:, 3]), torch.maximum(moved[:, 1], moved[:, 3])
    limit = float(extra["canvas_size"]) if "canvas_size" in extra else None
    if limit is not None:
        x1, x2 = x1.clamp(0.0, limit - MIN_SIZE), x2.clamp(MIN_SIZE, limit)
        y1, y2 = y1.clamp(0.0, limit - MIN_SIZE), y2.clamp(MIN_SIZE, limit)
    x2, y2 = torch.maximum(x2, x1 + MIN_SIZE), torch.maximum(y2, y1 + MIN_SIZE)
    rows[:, :4] = torch.stack([x1, y1, x2, y2], dim=1)
    targets[chosen[:, 0], chosen[:, 1]] = rows


def _flip(targets: Tensor, chosen: Tensor, generator: torch.Generator, num_classes: int) -> None:
    classes = targets[chosen[:, 0], chosen[:, 1], 4].long()
    shift = torch.randint(1, num_classes, (chosen.shape[0],), generator=generator)
    targets[chosen[:, 0], chosen[:, 1], 4] = ((classes + shift) % num_classes).to(targets.dtype)


def _drop(targets: Tensor, chosen: Tensor) -> None:
    padding = torch.tensor([0.0, 0.0, 0.0, 0.0, -1.0], dtype=targets.dtype)
    targets[chosen[:, 0], chosen[:, 1]] = padding


@NOISES.register("box-jitter")
def box_jitter(labels: Tensor, rate: float, context: NoiseContext) -> Tensor:
    _jitter(
        labels,
        _chosen(labels, rate, context.generator, "box-jitter"),
        context.generator,
        context.extra,
    )
    return labels


@NOISES.register("box-flip")
def box_flip(labels: Tensor, rate: float, context: NoiseContext) -> Tensor:
    _flip(
        labels,
        _chosen(labels, rate, context.generator, "box-flip"),
        context.generator,
        context.num_classes,
    )
    return labels


@NOISES.register("box-drop")
def box_drop(labels: Tensor, rate: float, context: NoiseContext) -> Tensor:
    _drop(labels, _chosen(labels, rate, context.generator, "box-drop"))
    return labels


@NOISES.register("box-mixed")
def box_mixed(labels: Tensor, rate: float, context: NoiseContext) -> Tensor:
    chosen = _chosen(labels, rate, context.generator, "box-mixed")
    _jitter(labels, chosen[0::3], context.generator, context.extra)
    _flip(labels, chosen[1::3], context.generator, context.num_classes)
    _drop(labels, chosen[2::3])
    return labels

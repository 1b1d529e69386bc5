r"""Detectors for the detection task: a small one-stage detector, and torchvision's Faster R-CNN.

Both follow one protocol, which the detection task relies on:

- ``model(images, targets)`` (training): ``(boxes, other)`` — the per-box losses of the head
  (:class:`superloss.integrations.torchvision.BoxLosses`: classification and box regression per box,
  and each box's weight ``scale`` in the plain reduction) and the sum of the losses that are not per
  box (Faster R-CNN's RPN; 0 for the one-stage detector). ``targets``: (N, max_boxes, 5) rows
  [x1, y1, x2, y2, class], class −1 for padding.
- ``model(images)`` (evaluation): one dict per image, ``boxes`` (K, 4) x1y1x2y2 in pixels,
  ``scores`` (K,) and ``labels`` (K,) classes 0…C−1.

``detector``: FCOS-style (Tian et al., ICCV 2019) on a single stride-4 map of a five-convolution
trunk. Each cell predicts C sigmoid class logits and its distances (l, t, r, b) to the box edges.
A cell is positive for a box when its centre lies inside the box within CENTER_RADIUS cells of the
box centre (FCOS's centre sampling), or when it is the cell holding the box centre (so thin digits
get one); a cell claimed by two boxes goes to the smaller. Per cell: the sigmoid focal loss
(Lin et al., ICCV 2017; α = 0.25, γ = 2) summed over classes, plus, on positive cells, the GIoU loss
of its box; every cell's weight ``scale`` = 1/(positive cells in the batch) — RetinaNet's and
FCOS's normalisation. Each cell is one "box" of the per-box losses, as each anchor is in RetinaNet.
Decoding: the TOP_K best (cell, class) scores above SCORE_THRESHOLD, per-class NMS at NMS_IOU,
at most MAX_DETECTIONS per image.
Choices, fixed before any result: stride 4 (digits of 4–24 pixels on 64-pixel canvases span 1–6
cells); the class prior 0.01 of RetinaNet's bias initialisation; box distances initialised at two
cells; WIDTH 32 channels (a run of the quick preset takes seconds on a CPU).

``fasterrcnn``: torchvision's ``FasterRCNN`` (untrained) on the same trunk (one stride-4 feature
map), anchors of 8, 16 and 24 pixels at aspect ratios ½, 1, 2, RoIAlign 7×7, a two-layer box head
of 256 units; 128 sampled anchors and RoIs per image, no resizing (``min_size`` = ``max_size`` = the
canvas), inputs used as they come (mean 0, std 1: the task standardises them). Its box head's
per-RoI losses come from :func:`superloss.integrations.torchvision.hook_box_losses`. Untrained, it
learns far more slowly than ``detector``: in a plain run without noise (digits, seed 0, batch 16,
cosine), learning rate 0.02 gave a validation mAP@0.5 of 0.14 after 12 epochs, 0.05 gave 0.64 after
24 epochs and was still rising — so train it with 0.05 and about 40 epochs.

Both need torchvision (the ``detection`` extra), imported when a detector runs or is built.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superloss.bench.models.base import MODELS

if TYPE_CHECKING:
    from superloss.integrations.torchvision import BoxLosses

DETECTORS = ("detector", "fasterrcnn")  # the models that detect boxes (the detection task's)
STRIDE = 4
WIDTH = 32
PRIOR = 0.01
INITIAL_DISTANCE = 2.0  # cells from a cell centre to each box edge, at initialisation
CENTER_RADIUS = 1.5
SCORE_THRESHOLD = 0.05
NMS_IOU = 0.5
TOP_K = 1000
MAX_DETECTIONS = 20

Detections = list[dict[str, Tensor]]


def _conv(inputs: int, outputs: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(inputs, outputs, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    ]


class Trunk(nn.Sequential):
    """Five 3×3 convolutions to a stride-4 map of ``width`` channels (receptive field 39 pixels)."""

    def __init__(self, channels: int, width: int = WIDTH) -> None:
        half = width // 2
        super().__init__(
            *_conv(channels, half, stride=2),
            *_conv(half, width, stride=2),
            *_conv(width, width),
            *_conv(width, width, dilation=2),
            *_conv(width, width),
        )
        self.out_channels = width  # what torchvision's detectors read from a backbone


def cell_centres(height: int, width: int, device: torch.device) -> Tensor:
    """(height·width, 2) pixel coordinates (x, y) of the cells' centres, row-major."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    return (torch.stack([xs.flatten(), ys.flatten()], dim=1).float() + 0.5) * STRIDE


def assign(targets: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """For each cell of each image: the index of its box in ``targets`` and whether it is positive.

    Returns:
        ``assigned`` (N, cells) int64 (meaningless where not positive) and ``positive`` (N, cells).
    """
    centres = cell_centres(height, width, targets.device)
    cx, cy = centres[:, 0], centres[:, 1]
    x1, y1, x2, y2 = (targets[..., k, None] for k in range(4))  # (N, boxes, 1) each
    real = targets[..., 4, None] >= 0
    inside = (cx > x1) & (cx < x2) & (cy > y1) & (cy < y2)
    box_cx, box_cy = (x1 + x2) / 2, (y1 + y2) / 2
    reach = CENTER_RADIUS * STRIDE
    near = ((cx - box_cx).abs() < reach) & ((cy - box_cy).abs() < reach)
    cell_x = (box_cx / STRIDE).floor().clamp(0, width - 1)
    cell_y = (box_cy / STRIDE).floor().clamp(0, height - 1)
    holds_centre = (cx / STRIDE).floor() == cell_x
    holds_centre &= (cy / STRIDE).floor() == cell_y
    candidate = ((inside & near) | holds_centre) & real
    area = ((x2 - x1) * (y2 - y1)).expand_as(candidate)
    smallest, assigned = torch.where(candidate, area, torch.inf).min(dim=1)
    return assigned, torch.isfinite(smallest)


class TinyDetector(nn.Module):
    """The one-stage detector ``detector`` (module docstring)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.trunk = Trunk(channels)
        self.classifier = nn.Conv2d(WIDTH, num_classes, 3, padding=1)
        self.regressor = nn.Conv2d(WIDTH, 4, 3, padding=1)
        # Every class starts at probability PRIOR (RetinaNet's initialisation) and, through
        # softplus⁻¹, every distance at INITIAL_DISTANCE cells.
        for head, bias in (
            (self.classifier, -math.log((1 - PRIOR) / PRIOR)),
            (self.regressor, math.log(math.expm1(INITIAL_DISTANCE))),
        ):
            nn.init.normal_(head.weight, std=0.01)
            assert head.bias is not None
            nn.init.constant_(head.bias, bias)

    def _heads(self, images: Tensor) -> tuple[Tensor, Tensor, int, int]:
        features = self.trunk(images)
        _, _, height, width = features.shape
        logits = self.classifier(features).flatten(2).transpose(1, 2)  # (N, cells, C)
        distances = F.softplus(self.regressor(features).float()).flatten(2).transpose(1, 2)
        centres = cell_centres(height, width, images.device)
        reach = distances * STRIDE
        boxes = torch.cat([centres - reach[..., :2], centres + reach[..., 2:]], dim=-1)
        return logits, boxes, height, width

    def forward(self, images: Tensor, targets: Tensor | None = None) -> Any:
        logits, boxes, height, width = self._heads(images)
        if targets is None:
            return self._detect(logits, boxes, float(images.shape[-1]))
        return self._box_losses(logits, boxes, targets, height, width), logits.new_zeros(())

    def _box_losses(
        self, logits: Tensor, boxes: Tensor, targets: Tensor, height: int, width: int
    ) -> BoxLosses:
        from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

        from superloss.integrations.torchvision import BoxLosses

        num_images, cells, _ = logits.shape
        assigned, positive = assign(targets, height, width)
        classes = targets[..., 4].long().gather(1, assigned).clamp_min(0)
        one_hot = F.one_hot(classes, self.num_classes).to(logits.dtype) * positive[..., None]
        classification = sigmoid_focal_loss(logits.float(), one_hot.float()).sum(dim=-1).flatten()
        matched = targets[..., :4].gather(1, assigned[..., None].expand(-1, -1, 4))
        positions = torch.where(positive.flatten())[0]
        per_positive = generalized_box_iou_loss(
            boxes.flatten(0, 1)[positions],
            matched.flatten(0, 1)[positions].float(),
            reduction="none",
        )
        count = num_images * cells
        regression = per_positive.new_zeros(count).index_put((positions,), per_positive)
        device = logits.device
        return BoxLosses(
            classification=classification,
            regression=regression,
            scale=torch.full((count,), 1.0 / max(1, positions.numel()), device=device),
            image=torch.arange(num_images, device=device).repeat_interleave(cells),
            positive=positive.flatten(),
            names=("classification", "bbox_regression"),
        )

    @torch.no_grad()
    def _detect(self, logits: Tensor, boxes: Tensor, size: float) -> Detections:
        from torchvision.ops import batched_nms

        detections = []
        for scores, cell_boxes in zip(logits.float().sigmoid(), boxes, strict=True):
            flat = scores.flatten()
            top = flat.topk(min(TOP_K, flat.numel()))
            keep = top.values > SCORE_THRESHOLD
            values, indices = top.values[keep], top.indices[keep]
            cells, labels = indices // self.num_classes, indices % self.num_classes
            chosen = cell_boxes[cells].clamp(0.0, size)
            kept = batched_nms(chosen, values, labels, NMS_IOU)[:MAX_DETECTIONS]
            detections.append(
                {"boxes": chosen[kept], "scores": values[kept], "labels": labels[kept]}
            )
        return detections


def torchvision_targets(targets: Tensor) -> list[dict[str, Tensor]]:
    """Padded (N, max_boxes, 5) targets as torchvision's per-image dicts (labels + 1: 0 = background)."""
    result = []
    for rows in targets:
        rows = rows[rows[:, 4] >= 0]
        result.append({"boxes": rows[:, :4].float(), "labels": rows[:, 4].long() + 1})
    return result


class TorchvisionDetector(nn.Module):
    """A torchvision detector behind the suite's detection protocol (module docstring)."""

    def __init__(self, detector: nn.Module) -> None:
        from superloss.integrations.torchvision import hook_box_losses

        super().__init__()
        self.detector = detector
        self._kept: list[BoxLosses] = []
        # The box head's losses leave the loss dict; the task reduces the kept per-box losses.
        self._hook = hook_box_losses(detector, self._keep)

    def _keep(self, boxes: BoxLosses) -> dict[str, Tensor]:
        self._kept.append(boxes)
        return {}

    def forward(self, images: Tensor, targets: Tensor | None = None) -> Any:
        if targets is None:
            outputs = self.detector(list(images))
            return [
                {"boxes": out["boxes"], "scores": out["scores"], "labels": out["labels"] - 1}
                for out in outputs
            ]
        if not self.training:
            raise RuntimeError("a torchvision detector computes its losses in training mode only")
        self._kept.clear()
        losses = self.detector(list(images), torchvision_targets(targets))
        other = torch.stack(list(losses.values())).sum() if losses else images.new_zeros(())
        return self._kept.pop(), other


def _check_images(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ValueError(f"{name} needs square images shaped C×H×W, got {input_shape}")


@MODELS.register("detector")
def detector(input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    _check_images("detector", input_shape)
    return TinyDetector(input_shape[0], outputs)


@MODELS.register("fasterrcnn")
def fasterrcnn(input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    _check_images("fasterrcnn", input_shape)
    channels, size = input_shape[0], input_shape[-1]
    representation = 256
    model = FasterRCNN(
        Trunk(channels),
        min_size=size,
        max_size=size,
        image_mean=[0.0] * channels,
        image_std=[1.0] * channels,
        rpn_anchor_generator=AnchorGenerator(
            sizes=((8, 16, 24),), aspect_ratios=((0.5, 1.0, 2.0),)
        ),
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=128,
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(WIDTH * 7 * 7, representation),
        box_predictor=FastRCNNPredictor(representation, outputs + 1),
        box_batch_size_per_image=128,
        box_detections_per_img=MAX_DETECTIONS,
    )
    return TorchvisionDetector(model)

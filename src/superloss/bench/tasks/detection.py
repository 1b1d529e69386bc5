r"""Object detection on synthetic digit canvases with noisy box annotations; metric: mAP@0.5.

Data (``data/canvas.py``): canvases holding 1–4 non-overlapping digits of the run's dataset (sklearn
digits ×2–3 on 64×64; MNIST on 96×96), each box the pasted rectangle, its class the digit. Training
canvases are composed from the dataset's training digits by the run's seed, validation canvases from
its validation digits, test canvases from its test digits once for all runs (the same canvases for
every seed and method). Each digit is pasted about once. Pixels are standardised by the training
canvases' mean and std.

Noise (``noise/boxes.py``): ``--noise p`` is the fraction of annotated boxes corrupted and
``--noise-type`` how: ``box-jitter`` (moved by up to 40% of its size per coordinate), ``box-flip``
(another class), ``box-drop`` (left unannotated) or ``box-mixed`` (a third of each). ``symmetric``,
the command line's default, means ``box-flip``: symmetric label noise on the boxes' classes.
Training and validation annotations are corrupted (two seeds, the same for every method: paired
comparisons, as in classification); test annotations are clean. A canvas counts as corrupted (weight
AUROC) when one of its boxes is; ``realised_noise`` is the fraction of corrupted boxes.

Models (``models/detector.py``): ``detector``, a small FCOS-style one-stage detector (the default),
or ``fasterrcnn``, torchvision's Faster R-CNN on the same trunk. Neither is pretrained.

Loss, per box. The detector returns each box's loss — classification plus box regression (a cell of
the one-stage detector, a sampled RoI of Faster R-CNN) — and the weight ``scale`` of each box in its
plain reduction. Those per-box losses are the task's base loss, so every generic method applies per
box: ``plain`` gives the detector's own loss Σ scale·ℓ, ``superloss`` Σ scale·SL(ℓ), one σ per box
weighting both its classification and its regression. Faster R-CNN's RPN losses are added plain.
``TaskData.num_classes`` is None, so the method's ``tau="auto"`` is an EMA of the batch-mean box loss
(log C is the scale of a cross-entropy, not of these losses).

Foreground and background boxes (with and without a regression target) go through two instances of
the method (:func:`superloss.integrations.groups.two_groups`, the rule of the torchvision
integration too), so SuperLoss keeps a threshold for each: the two populations' losses differ by orders of
magnitude (most background cells are easy; 97% of the one-stage detector's cells are background), so
one τ would be set by the background alone and would judge every foreground box against it,
down-weighting all of them — a shift of the foreground/background balance, not a weighting of noisy
boxes. (Seen on validation canvases, digits, 40% mixed noise, seed 0: one shared τ lost 0.07
mAP@0.5 to the plain loss, two did not.) The second instance is the method's submodule
``detection_background``, built on the first step, so it follows the method's device and mode.
A dropped box's object is background: its cells get a low σ among the background ones.

The per-sample record of the loop (histograms, weight AUROC, tracking) is per canvas: the smallest σ
and the largest loss of its boxes — a canvas is as suspect as its least-trusted box.

Metrics on clean canvases, as fractions in [0, 1], from torchmetrics' ``MeanAveragePrecision`` (COCO
evaluation by faster-coco-eval where installed, else pycocotools: the same numbers): ``map50`` (AP at
IoU 0.5, the primary metric) and ``map`` (AP averaged over IoU 0.5:0.95).

Training defaults, used where the command line leaves them unset (``Detection.training_defaults``): the ``detector``,
30 epochs, batch 16, SGD with learning rate 0.02 and a cosine schedule (momentum 0.9 and weight decay
5e-4: the suite's). Fixed before any test result was seen, from plain runs without noise on digits
(seed 0), judged by the training loss and the validation mAP@0.5: learning rate 0.05 at batch 32
left the classifier untrained (0.15), 0.01–0.02 trained; batch 16 at 0.02 reached 0.80 after 15
epochs and 0.93 after 30. Presets set them explicitly.
"""

from __future__ import annotations

import importlib.util
import itertools
from typing import Any, Literal

import torch
from torch import Tensor, nn

from superloss.bench.config import RunConfig
from superloss.bench.data import load_dataset
from superloss.bench.data.base import standardize
from superloss.bench.data.canvas import (
    canvas_count,
    geometry_for,
    make_canvases,
    real_boxes,
    to_unit_range,
)
from superloss.bench.methods.base import Method
from superloss.bench.models.detector import DETECTORS
from superloss.bench.noise import apply_noise
from superloss.bench.noise.boxes import BOX_NOISE_TYPES, corrupted_boxes
from superloss.bench.tasks.base import TASKS, StepOutput, Task, TaskData
from superloss.integrations.groups import GroupRule, two_groups

NOISE_ALIASES = {"symmetric": "box-flip"}
TRAINING_DEFAULTS: dict[str, Any] = {
    "model": "detector",
    "epochs": 30,
    "batch_size": 16,
    "lr": 0.02,
    "lr_schedule": "cosine",
}
CANVAS_SEED = 10_000  # train canvases: CANVAS_SEED + 2·seed, validation: + 1
TEST_CANVAS_SEED = 9_999
EVAL_BATCH = 256
BACKGROUND_METHOD = "detection_background"

Detections = list[dict[str, Tensor]]


def box_noise_type(name: str) -> str:
    """The box-noise model a ``--noise-type`` names for detection; ValueError for the others."""
    name = NOISE_ALIASES.get(name, name)
    if name not in BOX_NOISE_TYPES:
        raise ValueError(
            f"detection corrupts box annotations: --noise-type must be one of "
            f"{', '.join(BOX_NOISE_TYPES)} (or symmetric, meaning box-flip), got {name!r}"
        )
    return name


def check_model(name: str) -> None:
    if name not in DETECTORS:
        raise ValueError(
            f"detection needs a detector: --model must be one of {', '.join(DETECTORS)}, "
            f"got {name!r}"
        )


def target_dicts(targets: Tensor) -> list[dict[str, Tensor]]:
    """Padded (N, max_boxes, 5) targets as one dict of ``boxes`` and ``labels`` per image."""
    return [
        {"boxes": rows[rows[:, 4] >= 0, :4].float(), "labels": rows[rows[:, 4] >= 0, 4].long()}
        for rows in targets
    ]


def mean_average_precision(
    predictions: Detections, targets: list[dict[str, Tensor]]
) -> dict[str, float]:
    """``map50`` and ``map`` (IoU 0.5:0.95) of ``predictions`` against ``targets``, by torchmetrics.

    Args:
        predictions: per image, ``boxes`` (K, 4) x1y1x2y2, ``scores`` (K,), ``labels`` (K,).
        targets: per image, ``boxes`` (G, 4) and ``labels`` (G,).
    """
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=map_backend())
    metric.update(
        [{key: value.detach().cpu() for key, value in p.items()} for p in predictions],
        [{key: value.detach().cpu() for key, value in t.items()} for t in targets],
    )
    result = metric.compute()
    return {"map50": float(result["map_50"]), "map": float(result["map"])}


def map_backend() -> Literal["faster_coco_eval", "pycocotools"]:
    """faster-coco-eval where installed (the same numbers as pycocotools, several times faster)."""
    return "faster_coco_eval" if importlib.util.find_spec("faster_coco_eval") else "pycocotools"


def per_image(values: Tensor, image: Tensor, count: int, reduce: str) -> Tensor:
    """Per image, the ``reduce`` ("amin" | "amax") of its boxes' ``values``; NaN for none."""
    result = torch.full((count,), float("nan"), device=values.device)
    return result.scatter_reduce(0, image, values.detach().float(), reduce, include_self=False)


def background_method(method: Method) -> Method:
    """The method's second instance, for background boxes (module docstring); built once."""
    twin = method._modules.get(BACKGROUND_METHOD)
    if twin is None:
        twin = type(method)(method.context, **method.params)
        state = next(itertools.chain(method.buffers(), method.parameters()), None)
        twin.to(state.device if state is not None else "cpu")
        twin.train(method.training)
        method.add_module(BACKGROUND_METHOD, twin)
    assert isinstance(twin, Method)
    return twin


def per_box_losses(
    method: Method, losses: Tensor, positive: Tensor, image: Tensor, indices: Tensor
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The method's per-box losses, foreground and background boxes apart (:func:`two_groups`);
    their weights (None when the method records none); and the foreground's τ."""
    taus: list[Tensor | None] = []

    def rule(member: Method) -> GroupRule:
        def apply(where: Tensor) -> tuple[Tensor, Tensor | None]:
            output = member(losses[where], image[where], indices[image[where]])
            taus.append(output.tau)
            return output.losses, output.weights

        return apply

    weighted, weights = two_groups(losses, positive, rule(method), rule(background_method(method)))
    return weighted, weights, taus[0]


@TASKS.register("detection")
class Detection(Task):
    name = "detection"
    metric = "map50"
    higher_is_better = True
    default_noise_type = "box-mixed"  # the quick preset's; "symmetric" still means box-flip
    training_defaults = TRAINING_DEFAULTS
    noise_aliases = NOISE_ALIASES
    models = DETECTORS
    noise_types = BOX_NOISE_TYPES

    @classmethod
    def check(cls, config: RunConfig) -> None:
        check_model(config.model)
        box_noise_type(config.noise_type)
        super().check(config)

    def base_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The per-box losses themselves: the detector computed them (``outputs``)."""
        return outputs

    def prepare(self) -> TaskData:
        config = self.config
        check_model(config.model)
        noise_type = box_noise_type(config.noise_type)
        splits = load_dataset(config.dataset, config.data_root, config.seed, config.train_size)
        if len(splits.input_shape) != 3 or splits.input_shape[0] != 1:
            raise ValueError(
                f"detection canvases are built from 1×h×w digit images, {config.dataset!r} has "
                f"inputs shaped {splits.input_shape}"
            )
        geometry = geometry_for(splits.input_shape[-1])
        low, high = float(splits.x_train.min()), float(splits.x_train.max())

        def compose(images: Tensor, labels: Tensor, seed: int) -> tuple[Tensor, Tensor]:
            unit = to_unit_range(images, low, high).clamp(0.0, 1.0)
            generator = torch.Generator().manual_seed(seed)
            return make_canvases(unit, labels, canvas_count(len(labels)), geometry, generator)

        train_x, train_clean = compose(
            splits.x_train, splits.y_train, CANVAS_SEED + 2 * config.seed
        )
        val_x, val_clean = compose(splits.x_val, splits.y_val, CANVAS_SEED + 2 * config.seed + 1)
        test_x, test_targets = compose(splits.x_test, splits.y_test, TEST_CANVAS_SEED)
        train_x, val_x, test_x = standardize(train_x, val_x, test_x)
        noisy = {
            split: apply_noise(
                noise_type,
                clean,
                config.noise,
                num_classes=splits.num_classes,
                dataset=config.dataset,
                seed=config.seed * 2 + (split == "val"),
                extra={"canvas_size": torch.tensor(float(geometry.size))},
            )
            for split, clean in (("train", train_clean), ("val", val_clean))
        }
        corrupted = corrupted_boxes(train_clean, noisy["train"])
        boxes = int(real_boxes(train_clean).sum())
        return TaskData(
            train_inputs=train_x,
            train_targets=noisy["train"],
            corrupted=corrupted.any(dim=1),
            val_inputs=val_x,
            val_targets=noisy["val"],
            test_inputs=test_x,
            test_targets=test_targets,
            input_shape=tuple(train_x.shape[1:]),
            outputs=splits.num_classes,
            num_classes=None,  # per-box losses: SuperLoss's τ is an EMA, not log C
            info={
                "realised_noise": float(corrupted.sum()) / boxes if boxes else 0.0,
                "train_clean_targets": train_clean,
                "canvas_size": geometry.size,
            },
        )

    def training_step(
        self, model: nn.Module, method: Method, inputs: Tensor, targets: Tensor, indices: Tensor
    ) -> StepOutput:
        boxes, other = model(inputs, targets)
        total = boxes.total()
        weighted, weights, tau = per_box_losses(method, total, boxes.positive, boxes.image, indices)
        # One weight and one loss per box; the loop records one per canvas.
        count = int(inputs.shape[0])
        return StepOutput(
            loss=other + (boxes.scale * weighted).sum(),
            weights=None if weights is None else per_image(weights, boxes.image, count, "amin"),
            losses=per_image(total, boxes.image, count, "amax"),
            tau=tau,
        )

    @torch.no_grad()
    def evaluate(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> dict[str, float]:
        detections: Detections = []
        for start in range(0, len(inputs), EVAL_BATCH):
            detections.extend(model(inputs[start : start + EVAL_BATCH]))
        return mean_average_precision(detections, target_dicts(targets))

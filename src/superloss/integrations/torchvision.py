r"""SuperLoss per box for torchvision's Faster R-CNN and RetinaNet, hooked into one model instance.

:func:`apply_superloss` makes a detector weight each box's loss by its confidence σ*, as the paper
does for object detection (Faster R-CNN and RetinaNet on Pascal VOC with noisy boxes):

.. math::

    \ell_i = \ell^{\mathrm{cls}}_i + \ell^{\mathrm{reg}}_i, \qquad
    \mathrm{SL}(\ell_i) = (\ell_i - \tau)\,\sigma^*_i + \lambda (\log \sigma^*_i)^2,

one σ per box: per sampled RoI of Faster R-CNN's box head (the RPN keeps its plain loss), per anchor
of RetinaNet (those the matcher does not ignore). A box's loss is its classification loss plus its
box-regression loss (zero for a box without a regression target, i.e. background), so a box whose
annotation is wrong — a wrong class, a misplaced box — is down-weighted in both terms at once.

Foreground and background boxes have a SuperLoss (and a threshold τ) each: their losses differ by
orders of magnitude — most background anchors are easy — so a single τ, set by the background alone,
would judge every foreground box against it and down-weight them all, shifting the balance of the
two populations instead of singling out the wrong boxes (:func:`superloss.integrations.groups.two_groups`,
shared with the benchmark suite's detection task). A missing annotation leaves its object
among the background boxes, where it stands out by its loss.

Each term is then reduced exactly as torchvision reduces it (``Σᵢ scaleᵢ·…`` with torchvision's
normaliser: the number of sampled RoIs; the number of foreground anchors per image, averaged over
images), and the loss dict keeps its keys: with σ held constant (it carries no gradient),

- ``loss_box_reg`` / ``bbox_regression`` = Σ scaleᵢ·σᵢ·ℓ^reg_i,
- ``loss_classifier`` / ``classification`` = Σ scaleᵢ·[σᵢ(ℓ^cls_i − τᵢ) + λ(log σᵢ)²],

whose sum is Σ scaleᵢ·SL(ℓᵢ): each box's gradient is σᵢ times its stock gradient. For λ → ∞, σ → 1:
the gradients are the stock ones, the regression term is the stock one and the classification term
is the stock one minus Σ scaleᵢ·τᵢ (τᵢ: the threshold of the box's population).

How it hooks in, without copying torchvision's training code. Per instance, undone by ``remove()``:

- Faster R-CNN (any ``GeneralizedRCNN`` whose ``roi_heads`` is torchvision's ``RoIHeads``): the
  instance's ``select_training_samples`` is wrapped to keep the sampled labels and regression
  targets, a forward hook on ``box_predictor`` keeps the logits and box deltas, and a forward hook on
  ``roi_heads`` replaces the two losses of its output. torchvision's ``fastrcnn_loss`` still runs
  (its result is discarded: a few cheap reductions).
- RetinaNet: the instance's ``head.compute_loss`` is replaced; it receives torchvision's own matching.

What is re-implemented: the per-box form of the losses, i.e. the few lines of torchvision's
reductions with ``reduction="none"`` — ``fastrcnn_loss`` (cross-entropy; smooth-L1 with β = 1/9 on
the deltas of the box's class, positives only) and the RetinaNet heads' ``compute_loss`` /
``_box_loss`` (``sigmoid_focal_loss`` summed over classes; l1, smooth-L1 (β = 1) or the
GIoU/DIoU/CIoU losses of ``torchvision.ops`` on foreground anchors). Matching, sampling, the box
coder and the loss functions themselves are torchvision's. The tests check that an identity
replacement reproduces the stock losses.

Lower level: :func:`hook_box_losses` hands the per-box losses (:class:`BoxLosses`) of every training
step to any function that returns the loss entries to put in their place — return ``{}`` to take
the head's losses out of the dict and reduce the kept per-box losses yourself.

Importing this module needs ``torchvision`` (the ``detection`` extra); importing :mod:`superloss`
does not.

Example:
    >>> import torch
    >>> from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn
    >>> from superloss.integrations.torchvision import apply_superloss
    >>> model = fasterrcnn_mobilenet_v3_large_320_fpn(
    ...     weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=64)
    >>> handle = apply_superloss(model, lam=1.0)
    >>> images = [torch.rand(3, 64, 64) for _ in range(2)]
    >>> targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}
    ...            for _ in range(2)]
    >>> losses = model(images, targets)
    >>> sorted(losses)
    ['loss_box_reg', 'loss_classifier', 'loss_objectness', 'loss_rpn_box_reg']
    >>> sum(losses.values()).backward()
    >>> handle.last_confidence.shape == handle.last_image.shape  # one σ per sampled RoI
    True
    >>> sorted(name for name in model.state_dict() if name.startswith("superloss."))[:2]
    ['superloss.background.threshold.initialized', 'superloss.background.threshold.tau']
    >>> handle.remove()
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superloss.integrations import requires_extra
from superloss.integrations.groups import GroupRule, two_groups
from superloss.loss import SuperLoss

with requires_extra("torchvision", "detection"):
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.ops import (
        complete_box_iou_loss,
        distance_box_iou_loss,
        generalized_box_iou_loss,
        sigmoid_focal_loss,
    )

__all__ = [
    "BoxLossHook",
    "BoxLosses",
    "SuperLossHandle",
    "apply_superloss",
    "hook_box_losses",
    "retinanet_box_losses",
    "roi_box_losses",
]

RCNN_LOSS_NAMES = ("loss_classifier", "loss_box_reg")
RETINANET_LOSS_NAMES = ("classification", "bbox_regression")
FASTRCNN_SMOOTH_L1_BETA = 1 / 9  # the constant of torchvision's fastrcnn_loss
HANDLE_ATTRIBUTE = "superloss"  # where apply_superloss attaches its module on the model


@dataclass(frozen=True)
class BoxLosses:
    """The per-box losses of a detector head in one training step, unreduced, with their graph.

    Torchvision's two loss terms are ``Σ scale·classification`` and ``Σ scale·regression``
    (:meth:`stock`).

    Attributes:
        classification: (B,) the classification loss of each box.
        regression: (B,) the box-regression loss of each box; 0 for boxes without a regression
            target (background).
        scale: (B,) the weight of each box in torchvision's reduction.
        image: (B,) int64, the index in the batch of the image each box belongs to.
        positive: (B,) bool, whether the box is foreground (has a regression target).
        names: the loss-dict keys of the (classification, regression) terms.
    """

    classification: Tensor
    regression: Tensor
    scale: Tensor
    image: Tensor
    positive: Tensor
    names: tuple[str, str]

    def total(self) -> Tensor:
        """Each box's loss: classification + regression."""
        return self.classification + self.regression

    def stock(self) -> dict[str, Tensor]:
        """The two loss terms as torchvision reduces them."""
        return {
            self.names[0]: (self.scale * self.classification).sum(),
            self.names[1]: (self.scale * self.regression).sum(),
        }


def _scatter_positive(per_positive: Tensor, positions: Tensor, count: int) -> Tensor:
    """A (count,) vector holding ``per_positive`` at ``positions`` and 0 elsewhere (with gradient)."""
    return per_positive.new_zeros(count).index_put((positions,), per_positive)


def roi_box_losses(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: list[Tensor],
    regression_targets: list[Tensor],
) -> BoxLosses:
    """Per-RoI losses of Faster R-CNN's box head: ``fastrcnn_loss`` with ``reduction="none"``.

    Args:
        class_logits: (B, K) logits of the sampled RoIs (K classes, background 0 included).
        box_regression: (B, 4K) box deltas per class.
        labels: per image, the sampled RoIs' labels (0 = background).
        regression_targets: per image, the sampled RoIs' encoded box targets (B_img, 4).

    Returns:
        One box per sampled RoI; ``scale`` = 1/B for both terms, as in ``fastrcnn_loss``.
    """
    counts = torch.tensor([len(per_image) for per_image in labels], device=class_logits.device)
    all_labels = torch.cat(labels, dim=0)
    all_targets = torch.cat(regression_targets, dim=0)
    count = all_labels.numel()
    classification = F.cross_entropy(class_logits, all_labels, reduction="none")
    positive = all_labels > 0
    positions = torch.where(positive)[0]
    deltas = box_regression.reshape(count, box_regression.size(-1) // 4, 4)
    per_positive = F.smooth_l1_loss(
        deltas[positions, all_labels[positions]],
        all_targets[positions],
        beta=FASTRCNN_SMOOTH_L1_BETA,
        reduction="none",
    ).sum(dim=1)
    return BoxLosses(
        classification=classification,
        regression=_scatter_positive(per_positive, positions, count),
        scale=torch.full((count,), 1.0 / max(count, 1), device=class_logits.device),
        image=torch.repeat_interleave(torch.arange(len(labels), device=counts.device), counts),
        positive=positive,
        names=RCNN_LOSS_NAMES,
    )


def _anchor_regression_losses(
    loss_type: str, box_coder: Any, anchors: Tensor, matched_boxes: Tensor, deltas: Tensor
) -> Tensor:
    """torchvision's ``_box_loss`` per anchor (``reduction="none"``, its default options)."""
    if loss_type in ("l1", "smooth_l1"):
        target = box_coder.encode_single(matched_boxes, anchors)
        if loss_type == "l1":
            return F.l1_loss(deltas, target, reduction="none").sum(dim=1)
        return F.smooth_l1_loss(deltas, target, beta=1.0, reduction="none").sum(dim=1)
    iou_losses = {
        "giou": generalized_box_iou_loss,
        "diou": distance_box_iou_loss,
        "ciou": complete_box_iou_loss,
    }
    if loss_type not in iou_losses:
        raise ValueError(
            f"unsupported RetinaNet box loss {loss_type!r}; expected l1, smooth_l1, giou, diou, ciou"
        )
    boxes = box_coder.decode_single(deltas, anchors)
    per_anchor: Tensor = iou_losses[loss_type](boxes, matched_boxes, reduction="none", eps=1e-7)
    return per_anchor


def retinanet_box_losses(
    head: Any,
    targets: list[dict[str, Tensor]],
    head_outputs: dict[str, Tensor],
    anchors: list[Tensor],
    matched_idxs: list[Tensor],
) -> BoxLosses:
    """Per-anchor losses of RetinaNet's head: its ``compute_loss`` with ``reduction="none"``.

    One box per anchor the matcher does not ignore. Classification: the sigmoid focal loss summed
    over classes; regression: the head's box loss on foreground anchors. ``scale`` is
    1/(max(1, foreground anchors of the image)·images), as torchvision normalises both terms.
    """
    classification_head = head.classification_head
    regression_head = head.regression_head
    ignored = classification_head.BETWEEN_THRESHOLDS
    num_images = len(targets)
    parts: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = []
    for index, (target, logits, deltas, anchors_per_image, matched) in enumerate(
        zip(
            targets,
            head_outputs["cls_logits"],
            head_outputs["bbox_regression"],
            anchors,
            matched_idxs,
            strict=True,
        )
    ):
        valid = matched != ignored
        foreground = matched >= 0
        one_hot = torch.zeros_like(logits)
        one_hot[foreground, target["labels"][matched[foreground]]] = 1.0
        classification = sigmoid_focal_loss(logits[valid], one_hot[valid]).sum(dim=1)
        positions = torch.where(foreground)[0]
        per_foreground = _anchor_regression_losses(
            regression_head._loss_type,
            regression_head.box_coder,
            anchors_per_image[positions],
            target["boxes"][matched[positions]],
            deltas[positions],
        )
        count = classification.numel()
        regression = _scatter_positive(per_foreground, torch.where(foreground[valid])[0], count)
        normaliser = max(1, positions.numel()) * max(1, num_images)
        scale = torch.full((count,), 1.0 / normaliser, device=logits.device)
        image = torch.full((count,), index, dtype=torch.int64, device=logits.device)
        parts.append((classification, regression, scale, image, foreground[valid]))
    classification, regression, scale, image, positive = (
        torch.cat(column) for column in zip(*parts, strict=True)
    )
    return BoxLosses(classification, regression, scale, image, positive, RETINANET_LOSS_NAMES)


Replace = Callable[[BoxLosses], dict[str, Tensor]]


class BoxLossHook:
    """Replaces a detector's head losses by ``replace(per-box losses)`` in every training forward.

    Built by :func:`hook_box_losses`; ``remove()`` restores the stock behaviour.
    """

    def __init__(self, model: nn.Module, replace: Replace) -> None:
        self.replace = replace
        self._undo: list[Callable[[], None]] = []
        heads = getattr(model, "roi_heads", None)
        if isinstance(heads, RoIHeads):
            self._hook_roi_heads(heads)
        elif isinstance(model, RetinaNet):
            self._hook_retinanet(model.head)
        else:
            raise TypeError(
                "hook_box_losses supports torchvision's Faster R-CNN family (a model whose roi_heads "
                f"is torchvision's RoIHeads) and RetinaNet, got {type(model).__name__}"
            )

    def _swap(self, losses: dict[str, Tensor], boxes: BoxLosses) -> dict[str, Tensor]:
        kept = {name: value for name, value in losses.items() if name not in boxes.names}
        return {**self.replace(boxes), **kept}

    def _hook_roi_heads(self, heads: RoIHeads) -> None:
        if "select_training_samples" in vars(heads):
            raise RuntimeError(
                "this model's box losses are already hooked; remove() that hook first"
            )
        select = heads.select_training_samples
        kept: dict[str, Any] = {}

        def select_and_keep(proposals: Any, targets: Any) -> Any:
            sampled = select(proposals, targets)
            kept["labels"], kept["regression_targets"] = sampled[2], sampled[3]
            return sampled

        def keep_predictions(module: nn.Module, inputs: Any, outputs: Any) -> None:
            if heads.training:
                kept["predictions"] = outputs

        def replace_losses(module: nn.Module, inputs: Any, outputs: Any) -> Any:
            if not module.training or "labels" not in kept:
                return None
            result, losses = outputs
            class_logits, box_regression = kept.pop("predictions")
            boxes = roi_box_losses(
                class_logits, box_regression, kept.pop("labels"), kept.pop("regression_targets")
            )
            return result, self._swap(losses, boxes)

        heads.select_training_samples = select_and_keep
        handles = [
            heads.box_predictor.register_forward_hook(keep_predictions),
            heads.register_forward_hook(replace_losses),
        ]

        def undo() -> None:
            for handle in handles:
                handle.remove()
            del heads.select_training_samples  # the class's method shows through again
            kept.clear()

        self._undo.append(undo)

    def _hook_retinanet(self, head: Any) -> None:
        if "compute_loss" in vars(head):
            raise RuntimeError(
                "this model's box losses are already hooked; remove() that hook first"
            )

        def compute_loss(
            targets: list[dict[str, Tensor]],
            head_outputs: dict[str, Tensor],
            anchors: list[Tensor],
            matched_idxs: list[Tensor],
        ) -> dict[str, Tensor]:
            boxes = retinanet_box_losses(head, targets, head_outputs, anchors, matched_idxs)
            return self._swap({}, boxes)

        head.compute_loss = compute_loss

        def undo() -> None:
            del head.compute_loss

        self._undo.append(undo)

    def remove(self) -> None:
        """Restore the model's stock losses (idempotent)."""
        while self._undo:
            self._undo.pop()()


def hook_box_losses(model: nn.Module, replace: Replace) -> BoxLossHook:
    """Hand the head's per-box losses of every training forward of ``model`` to ``replace``.

    ``replace(boxes)`` returns the loss entries that take the place of the head's two terms (named
    ``boxes.names``) in the model's loss dict: ``boxes.stock()`` gives the stock ones back, ``{}``
    takes them out (keep ``boxes`` to reduce them yourself).

    Args:
        model: a torchvision Faster R-CNN (or Mask/Keypoint R-CNN: only the box head's losses are
            touched) or RetinaNet, hooked for this instance only.
        replace: the function of the per-box losses.

    Returns:
        The hook; its ``remove()`` restores the stock losses.
    """
    return BoxLossHook(model, replace)


class SuperLossHandle(nn.Module):
    """What :func:`apply_superloss` attached to a detector: its two SuperLoss modules and σ per box.

    It is the model's submodule ``superloss``, so the thresholds' state is in the model's
    ``state_dict`` (under ``superloss.foreground.`` and ``superloss.background.``) and follows
    ``.to()``.

    Attributes:
        foreground: the :class:`superloss.SuperLoss` of foreground boxes (with a regression target).
        background: the :class:`superloss.SuperLoss` of background boxes.
        last_confidence: σ* per box of the last training step (detached), or None.
        last_image: the index in the batch of each of those boxes' image, or None.
        last_positive: whether each of those boxes is foreground, or None.
    """

    last_confidence: Tensor | None
    last_image: Tensor | None
    last_positive: Tensor | None

    def __init__(self, foreground: SuperLoss, background: SuperLoss) -> None:
        super().__init__()
        self.foreground = foreground
        self.background = background
        self.last_confidence = None
        self.last_image = None
        self.last_positive = None
        self._hook: BoxLossHook | None = None
        self._model: weakref.ref[nn.Module] | None = None

    def terms(self, boxes: BoxLosses) -> dict[str, Tensor]:
        """The head's two loss terms with SuperLoss on each box's total loss (module docstring)."""
        total = boxes.total()

        def rule(super_loss: SuperLoss) -> GroupRule:
            return lambda where: (super_loss(total[where]), super_loss.last_confidence)

        # Both modules run in every step, with an empty batch if need be: a distributed τ stays in
        # step across processes.
        values, sigma = two_groups(
            total, boxes.positive, rule(self.foreground), rule(self.background)
        )
        assert sigma is not None  # SuperLoss records σ in every call
        regression = sigma * boxes.regression
        classification = values - regression  # σ(ℓ_cls − τ) + λ(log σ)²: the rest of SL(ℓ)
        self.last_confidence = sigma
        self.last_image = boxes.image.detach()
        self.last_positive = boxes.positive.detach()
        return {
            boxes.names[0]: (boxes.scale * classification).sum(),
            boxes.names[1]: (boxes.scale * regression).sum(),
        }

    def remove(self) -> None:
        """Restore the model's stock losses and detach this handle from it (idempotent)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        model = self._model() if self._model is not None else None
        if model is not None and getattr(model, HANDLE_ATTRIBUTE, None) is self:
            delattr(model, HANDLE_ATTRIBUTE)
        self._model = None


def apply_superloss(
    model: nn.Module,
    *,
    lam: float = 1.0,
    tau: float | str = "ema",
    ema_past_weight: float = 0.9,
    sync_threshold: bool = True,
    normalize: bool = False,
) -> SuperLossHandle:
    """Make ``model`` (torchvision Faster R-CNN or RetinaNet) train with SuperLoss per box.

    Args:
        model: the detector; hooked for this instance only (module docstring).
        lam: the regularisation λ > 0 (default 1, as :class:`superloss.SuperLoss`).
        tau: the threshold of each population of boxes: ``"ema"`` (default; a box loss has no
            natural constant such as log C), ``"global"`` or a number.
        ema_past_weight: for ``tau="ema"``, the weight of the previous τ (default 0.9).
        sync_threshold: all-reduce τ's statistics under torch.distributed (default True).
        normalize: divide by the running mean confidence, so the weights average one
            (default False; see :class:`superloss.SuperLoss`).

    Returns:
        The handle, also attached as ``model.superloss``; ``handle.remove()`` undoes everything.
    """
    if HANDLE_ATTRIBUTE in vars(model) or HANDLE_ATTRIBUTE in model._modules:
        raise RuntimeError(
            f"model already has an attribute {HANDLE_ATTRIBUTE!r}: SuperLoss applied?"
        )

    def build() -> SuperLoss:
        return SuperLoss(
            tau=tau,
            lam=lam,
            reduction="none",
            ema_past_weight=ema_past_weight,
            sync_threshold=sync_threshold,
            normalize=normalize,
        )

    handle = SuperLossHandle(build(), build())
    handle._hook = hook_box_losses(model, handle.terms)
    handle._model = weakref.ref(model)
    setattr(model, HANDLE_ATTRIBUTE, handle)
    return handle

"""SuperLoss per box in torchvision's Faster R-CNN and RetinaNet (superloss.integrations.torchvision).

Small detectors (a two-convolution backbone, 64×64 images, untrained: nothing is downloaded), two
images. torchvision's samplers draw from the global generator, so every forward is reseeded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

pytest.importorskip("torchvision")

from torchvision.models.detection import (
    FasterRCNN,
    RetinaNet,
    fasterrcnn_mobilenet_v3_large_320_fpn,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from superloss.functional import confidence
from superloss.integrations.torchvision import (
    BoxLosses,
    SuperLossHandle,
    apply_superloss,
    hook_box_losses,
)

SIZE = 64
NUM_CLASSES = 4  # background included


class Backbone(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 16, 3, 2, 1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1),
            nn.ReLU(),
        )
        self.out_channels = 32


def _anchors() -> AnchorGenerator:
    return AnchorGenerator(sizes=((12, 24),), aspect_ratios=((0.5, 1.0, 2.0),))


def faster_rcnn() -> nn.Module:
    torch.manual_seed(0)
    return FasterRCNN(
        Backbone(),
        num_classes=NUM_CLASSES,
        min_size=SIZE,
        max_size=SIZE,
        rpn_anchor_generator=_anchors(),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        rpn_batch_size_per_image=64,
        box_batch_size_per_image=64,
    )


def retinanet(loss_type: str = "l1") -> nn.Module:
    torch.manual_seed(0)
    model = RetinaNet(
        Backbone(),
        num_classes=NUM_CLASSES,
        min_size=SIZE,
        max_size=SIZE,
        anchor_generator=_anchors(),
    )
    model.head.regression_head._loss_type = loss_type
    return model


def mobilenet_faster_rcnn() -> nn.Module:
    torch.manual_seed(0)
    return fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=NUM_CLASSES,
        min_size=SIZE,
        max_size=SIZE,
    )


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "fasterrcnn": faster_rcnn,
    "retinanet": retinanet,
    "retinanet-giou": lambda: retinanet("giou"),
}


def batch() -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, SIZE, SIZE, generator=generator) for _ in range(2)]
    targets = [
        {
            "boxes": torch.tensor([[4.0, 6.0, 28.0, 40.0], [34.0, 30.0, 60.0, 62.0]]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.tensor([[10.0, 12.0, 50.0, 44.0]]), "labels": torch.tensor([2])},
    ]
    return images, targets


def step(model: nn.Module, seed: int = 1) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """One training forward and backward: the losses and the parameters' gradients."""
    model.train()
    model.zero_grad(set_to_none=True)
    images, targets = batch()
    torch.manual_seed(seed)
    losses = model(images, targets)
    torch.stack(list(losses.values())).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {name: value.detach() for name, value in losses.items()}, grads


def assert_close_dicts(actual: dict[str, Tensor], expected: dict[str, Tensor], **tol: Any) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], **tol, msg=name)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_identity_replacement_gives_the_stock_losses_and_gradients(name: str) -> None:
    model = BUILDERS[name]()
    stock_losses, stock_grads = step(model)
    hook = hook_box_losses(model, BoxLosses.stock)
    losses, grads = step(model)
    hook.remove()
    assert_close_dicts(losses, stock_losses, rtol=1e-5, atol=1e-6)
    assert_close_dicts(grads, stock_grads, rtol=1e-4, atol=1e-7)


def _threshold_offset(handle: SuperLossHandle, model: nn.Module) -> Tensor:
    """Σ scaleᵢ·τᵢ, from torchvision's normalisers recomputed here: what λ → ∞ leaves in the loss."""
    positive, image = handle.last_positive, handle.last_image
    assert positive is not None and image is not None
    tau = torch.where(positive, handle.foreground.last_tau, handle.background.last_tau)
    if isinstance(model, RetinaNet):  # 1/(max(1, foreground anchors of the image)·images)
        images = int(image.max()) + 1
        foreground = torch.bincount(image[positive], minlength=images).clamp_min(1)
        scale = 1.0 / (foreground[image] * images)
    else:  # fastrcnn_loss: 1 / sampled RoIs
        scale = torch.full_like(tau, 1.0 / len(tau))
    return (scale * tau).sum()


@pytest.mark.parametrize("name", [*sorted(BUILDERS), "mobilenet"])
def test_very_large_lambda_gives_the_stock_gradients_and_losses_up_to_tau(name: str) -> None:
    build = BUILDERS.get(name, mobilenet_faster_rcnn)
    model = build()
    stock_losses, stock_grads = step(model)
    handle = apply_superloss(model, lam=1e9)
    losses, grads = step(model)
    classification, regression = (
        ("classification", "bbox_regression")
        if isinstance(model, RetinaNet)
        else ("loss_classifier", "loss_box_reg")
    )
    assert handle.last_confidence is not None
    torch.testing.assert_close(
        handle.last_confidence, torch.ones_like(handle.last_confidence), rtol=0, atol=1e-6
    )
    torch.testing.assert_close(losses[regression], stock_losses[regression], rtol=1e-5, atol=1e-6)
    offset = _threshold_offset(handle, model).float()
    torch.testing.assert_close(
        losses[classification] + offset, stock_losses[classification], rtol=1e-5, atol=1e-5
    )
    for other in set(stock_losses) - {classification, regression}:
        torch.testing.assert_close(losses[other], stock_losses[other])
    assert_close_dicts(grads, stock_grads, rtol=1e-4, atol=1e-6)


def _count_boxes(model: nn.Module) -> Callable[[], tuple[int, int]]:
    """Spy on torchvision's own sampling/matching: (boxes, foreground boxes) of the next forward."""
    seen: dict[str, int] = {}
    if isinstance(model, RetinaNet):
        matcher = model.proposal_matcher

        def spy(quality: Tensor) -> Tensor:
            matched: Tensor = matcher(quality)
            seen["boxes"] = seen.get("boxes", 0) + int(
                (matched != matcher.BETWEEN_THRESHOLDS).sum()
            )
            seen["foreground"] = seen.get("foreground", 0) + int((matched >= 0).sum())
            return matched

        model.proposal_matcher = spy
    else:
        sampler = model.roi_heads.fg_bg_sampler

        def spy_sampler(labels: list[Tensor]) -> Any:
            positive, negative = sampler(labels)
            seen["boxes"] = sum(
                int(p.sum() + n.sum()) for p, n in zip(positive, negative, strict=True)
            )
            seen["foreground"] = sum(int(p.sum()) for p in positive)
            return positive, negative

        model.roi_heads.fg_bg_sampler = spy_sampler
    return lambda: (seen["boxes"], seen["foreground"])


@pytest.mark.parametrize("name", ["fasterrcnn", "retinanet"])
def test_one_confidence_per_box_from_its_own_population(name: str) -> None:
    model = BUILDERS[name]()
    counts = _count_boxes(model)
    lam = 0.5
    handle = apply_superloss(model, lam=lam)
    losses, _ = step(model)
    boxes, foreground = counts()
    sigma, positive, image = handle.last_confidence, handle.last_positive, handle.last_image
    assert sigma is not None and positive is not None and image is not None
    assert sigma.shape == positive.shape == image.shape == (boxes,)
    assert int(positive.sum()) == foreground > 0
    assert set(image.tolist()) == {0, 1}
    assert torch.isfinite(sigma).all() and (sigma > 0).all() and (sigma <= math.e + 1e-6).all()
    for module, members in ((handle.foreground, positive), (handle.background, ~positive)):
        assert module.last_loss is not None and module.last_tau is not None
        expected = confidence(module.last_loss, module.last_tau, lam)
        torch.testing.assert_close(sigma[members], expected.to(sigma.dtype))
    assert all(torch.isfinite(value) for value in losses.values())


@pytest.mark.parametrize("name", ["fasterrcnn", "retinanet"])
def test_gradients_reach_the_backbone_and_the_heads(name: str) -> None:
    model = BUILDERS[name]()
    apply_superloss(model, lam=0.25)
    _, grads = step(model)
    head = "roi_heads.box_predictor" if name == "fasterrcnn" else "head.regression_head"
    for prefix in ("backbone.0.weight", head):
        chosen = [g for n, g in grads.items() if n.startswith(prefix)]
        assert chosen and all(torch.isfinite(g).all() for g in chosen)
        assert any(bool(g.abs().sum() > 0) for g in chosen), prefix


def test_thresholds_live_in_the_state_dict_and_remove_restores_the_stock_model() -> None:
    model = faster_rcnn()
    stock_losses, _ = step(model)
    handle = apply_superloss(model)
    step(model)
    state = model.state_dict()
    names = {n for n in state if n.startswith("superloss.")}
    assert "superloss.foreground.threshold.tau" in names
    assert "superloss.background.threshold.tau" in names
    assert bool(state["superloss.foreground.threshold.initialized"])

    copy = faster_rcnn()
    copy_handle = apply_superloss(copy)
    copy.load_state_dict(state)
    torch.testing.assert_close(
        copy_handle.foreground.threshold.tau, handle.foreground.threshold.tau
    )

    with pytest.raises(RuntimeError, match="already"):
        apply_superloss(model)
    handle.remove()
    handle.remove()  # idempotent
    assert not hasattr(model, "superloss")
    assert not any(n.startswith("superloss.") for n in model.state_dict())
    assert "select_training_samples" not in vars(model.roi_heads)
    losses, _ = step(model)
    assert_close_dicts(losses, stock_losses)


def test_retinanet_remove_restores_its_head() -> None:
    model = retinanet()
    stock_losses, _ = step(model)
    handle = apply_superloss(model, lam=0.5)
    changed, _ = step(model)
    assert not torch.allclose(changed["classification"], stock_losses["classification"])
    handle.remove()
    assert "compute_loss" not in vars(model.head)
    losses, _ = step(model)
    assert_close_dicts(losses, stock_losses)


def test_evaluation_is_untouched() -> None:
    model = faster_rcnn()
    model.eval()
    images, _ = batch()
    with torch.no_grad():
        stock = model(images)
        apply_superloss(model)
        hooked = model(images)
    for before, after in zip(stock, hooked, strict=True):
        assert_close_dicts(after, before)


def test_a_replacement_can_take_the_head_losses_out() -> None:
    model = faster_rcnn()
    kept: list[BoxLosses] = []

    def keep(boxes: BoxLosses) -> dict[str, Tensor]:
        kept.append(boxes)
        return {}

    hook_box_losses(model, keep)
    model.train()
    images, targets = batch()
    losses = model(images, targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    (boxes,) = kept
    assert boxes.names == ("loss_classifier", "loss_box_reg")
    assert (boxes.regression[~boxes.positive] == 0).all()
    assert boxes.total().requires_grad


def test_unsupported_models_are_refused() -> None:
    with pytest.raises(TypeError, match="Faster R-CNN"):
        apply_superloss(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="lam"):
        apply_superloss(faster_rcnn(), lam=0.0)


def test_normalize_reaches_both_populations() -> None:
    model = faster_rcnn()
    handle = apply_superloss(model, normalize=True)
    step(model)
    state = model.state_dict()
    for population in ("foreground", "background"):
        assert bool(state[f"superloss.{population}.confidence_scale.initialized"]) is False
        assert float(state[f"superloss.{population}.confidence_scale.pending"][1]) > 0
    step(model)
    for population in (handle.foreground, handle.background):
        assert population.confidence_scale is not None
        assert bool(population.confidence_scale.initialized)

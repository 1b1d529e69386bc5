"""SuperLoss per box in torchvision's Faster R-CNN: synthetic images, a fifth of the box labels wrong.

    pip install "superloss[detection]"
    python examples/torchvision_detection.py

Each 64×64 image holds one filled rectangle, red (class 1) or green (class 2), on a dark noisy
background; a fifth of the annotations carry the other colour's class. ``apply_superloss`` hooks the
detector instance so that its RoI head weights every sampled box's loss by its confidence σ* (the
RPN keeps its plain loss); the loss dict keeps torchvision's keys, so the training step is the usual
one (the classification term now holds SuperLoss's −τ·σ* and may be negative). The detector is
torchvision's ``FasterRCNN`` on a small randomly initialised backbone (nothing downloaded; with a
torchvision model such as ``fasterrcnn_resnet50_fpn`` the two lines of SuperLoss are the same). At
the end, the mean σ* of the foreground boxes over training is printed for the images whose label is
wrong and for the others. Runs in under a minute on a CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from superloss.integrations.torchvision import apply_superloss

SIZE, IMAGES, BATCH, STEPS = 64, 64, 8, 150


def synthetic(generator: torch.Generator) -> tuple[list[Tensor], list[dict[str, Tensor]], Tensor]:
    """Images, their (partly wrong) targets, and which images got a wrong label."""
    images, targets = [], []
    classes = torch.randint(1, 3, (IMAGES,), generator=generator)
    flipped = torch.rand(IMAGES, generator=generator) < 0.2
    for index in range(IMAGES):
        width, height = torch.randint(14, 32, (2,), generator=generator).tolist()
        x, y = torch.randint(0, SIZE - 32, (2,), generator=generator).tolist()
        image = 0.1 * torch.rand(3, SIZE, SIZE, generator=generator)
        colour = int(classes[index]) - 1  # channel 0 red, channel 1 green
        image[colour, y : y + height, x : x + width] = 0.9
        images.append(image)
        label = 3 - classes[index] if flipped[index] else classes[index]
        box = torch.tensor([[x, y, x + width, y + height]], dtype=torch.float32)
        targets.append({"boxes": box, "labels": label.reshape(1)})
    return images, targets, flipped


def detector() -> FasterRCNN:
    """A small Faster R-CNN (a three-convolution backbone), quick to train on a CPU."""
    backbone = nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, 1, 1), nn.ReLU(),
    )  # fmt: skip
    backbone.out_channels = 64
    return FasterRCNN(
        backbone,
        num_classes=3,
        min_size=SIZE,
        max_size=SIZE,
        rpn_anchor_generator=AnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        rpn_pre_nms_top_n_train=200,  # a 64×64 image needs few proposals
        rpn_post_nms_top_n_train=100,
        box_batch_size_per_image=32,
    )


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    images, targets, flipped = synthetic(generator)
    torch.manual_seed(0)
    model = detector()
    handle = apply_superloss(model, lam=1.0)  # this instance only; handle.remove() undoes it
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    model.train()
    confidence_sum, confidence_count = torch.zeros(IMAGES), torch.zeros(IMAGES)
    for step in range(STEPS):
        batch = torch.randperm(IMAGES, generator=generator)[:BATCH]
        losses = model([images[i] for i in batch], [targets[i] for i in batch])
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # σ* of every sampled RoI, with the image (in the batch) it came from and foreground or not.
        assert handle.last_confidence is not None and handle.last_image is not None
        foreground = handle.last_positive
        image = batch[handle.last_image[foreground]]
        confidence_sum.index_add_(0, image, handle.last_confidence[foreground])
        confidence_count.index_add_(0, image, torch.ones_like(image, dtype=torch.float32))
        if step % 25 == 0 or step == STEPS - 1:
            terms = ", ".join(f"{name} {value.item():.3f}" for name, value in losses.items())
            print(f"step {step:3d}: {terms}")
    mean = confidence_sum / confidence_count.clamp_min(1)
    seen = confidence_count > 0
    print(
        f"mean σ* of foreground boxes over training: wrong label {mean[flipped & seen].mean():.3f}, "
        f"right label {mean[~flipped & seen].mean():.3f}"
    )
    tau = handle.foreground.last_tau
    assert tau is not None
    print(f"foreground τ at the end: {tau.item():.3f}")


if __name__ == "__main__":
    main()

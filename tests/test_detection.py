"""The detection task: digit canvases, box-annotation noise, the mAP metric, per-box losses, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

pytest.importorskip("torchvision")
pytest.importorskip("torchmetrics")

from superloss.bench.cli import main
from superloss.bench.config import RunConfig
from superloss.bench.data.canvas import (
    GAP,
    MAX_OBJECTS,
    PAD_CLASS,
    Geometry,
    make_canvases,
    real_boxes,
)
from superloss.bench.methods.base import MethodContext, build_method
from superloss.bench.models.base import build_model
from superloss.bench.models.detector import STRIDE, assign
from superloss.bench.noise import apply_noise
from superloss.bench.noise.boxes import JITTER, corrupted_boxes
from superloss.bench.tasks.base import TaskData, build_task
from superloss.bench.tasks.detection import (
    BACKGROUND_METHOD,
    mean_average_precision,
    target_dicts,
)

GEOMETRY = Geometry(64, (2, 3))


def coded_digits(count: int = 60, seed: int = 0) -> tuple[Tensor, Tensor]:
    """8×8 'digits' whose ink value encodes their class: (c + 1)/10 on a random ink shape."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    shapes = torch.rand(count, 1, 8, 8, generator=generator) > 0.5
    return shapes * (labels[:, None, None, None] + 1).float() / 10, labels


def test_canvases_are_seeded_and_valid() -> None:
    images, labels = coded_digits()
    canvases, targets = make_canvases(
        images, labels, 40, GEOMETRY, torch.Generator().manual_seed(3)
    )
    again = make_canvases(images, labels, 40, GEOMETRY, torch.Generator().manual_seed(3))
    other = make_canvases(images, labels, 40, GEOMETRY, torch.Generator().manual_seed(4))
    assert torch.equal(canvases, again[0]) and torch.equal(targets, again[1])
    assert not torch.equal(targets, other[1])
    assert canvases.shape == (40, 1, 64, 64) and targets.shape == (40, MAX_OBJECTS, 5)
    real = real_boxes(targets)
    assert (real.sum(dim=1) >= 1).all()
    assert (targets[~real] == torch.tensor([0.0, 0, 0, 0, PAD_CLASS])).all()
    for canvas, rows in zip(canvases[:, 0], targets, strict=True):
        rows = rows[rows[:, 4] >= 0]
        covered = torch.zeros_like(canvas, dtype=torch.bool)
        for x1, y1, x2, y2, cls in rows.tolist():
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
            assert x1 == int(x1) and (x2 - x1) >= 2  # whole pixels, upscaled at least ×2
            patch = canvas[int(y1) : int(y2), int(x1) : int(x2)]
            # The class is the pasted digit's (its ink value), and the box is tight on its ink.
            assert torch.allclose(patch[patch > 0], torch.tensor((cls + 1) / 10))
            assert patch[0].any() and patch[-1].any() and patch[:, 0].any() and patch[:, -1].any()
            covered[int(y1) : int(y2), int(x1) : int(x2)] = True
        assert (canvas[~covered] == 0).all()  # nothing pasted outside the boxes
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                a, b = rows[i], rows[j]
                apart_x = a[2] + GAP <= b[0] or b[2] + GAP <= a[0]
                apart_y = a[3] + GAP <= b[1] or b[3] + GAP <= a[1]
                assert apart_x or apart_y


def _targets(seed: int = 0) -> Tensor:
    images, labels = coded_digits(200)
    return make_canvases(images, labels, 120, GEOMETRY, torch.Generator().manual_seed(seed))[1]


NOISE_TYPES = ("box-jitter", "box-flip", "box-drop", "box-mixed")


@pytest.mark.parametrize("noise_type", NOISE_TYPES)
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.9])
def test_box_noise_realises_its_rate_and_is_seeded(noise_type: str, rate: float) -> None:
    clean = _targets()
    extra = {"canvas_size": torch.tensor(64.0)}

    def noisy(seed: int) -> Tensor:
        return apply_noise(
            noise_type, clean, rate, num_classes=10, dataset="digits", seed=seed, extra=extra
        )

    first = noisy(1)
    assert torch.equal(first, noisy(1))
    if rate > 0:
        assert not torch.equal(first, noisy(2))
    changed = corrupted_boxes(clean, first)
    boxes = int(real_boxes(clean).sum())
    assert int(changed.sum()) == math.floor(rate * boxes + 0.5)
    assert torch.equal(clean, _targets())  # the clean targets are left alone
    unchanged = ~changed
    assert torch.equal(first[unchanged], clean[unchanged])
    kept = first[changed & (first[..., 4] >= 0)]
    assert (kept[:, 0] >= 0).all() and (kept[:, 2] <= 64).all()
    assert (kept[:, 2] > kept[:, 0]).all() and (kept[:, 3] > kept[:, 1]).all()
    assert ((kept[:, 4] >= 0) & (kept[:, 4] < 10)).all()


def test_each_box_noise_corrupts_what_it_says() -> None:
    clean = _targets()
    extra = {"canvas_size": torch.tensor(64.0)}
    real = real_boxes(clean)

    def corrupt(noise_type: str) -> tuple[Tensor, Tensor]:
        noisy = apply_noise(
            noise_type, clean, 0.5, num_classes=10, dataset="digits", seed=0, extra=extra
        )
        return noisy, corrupted_boxes(clean, noisy)

    noisy, changed = corrupt("box-flip")
    assert torch.equal(noisy[..., :4], clean[..., :4])
    assert (noisy[changed][:, 4] != clean[changed][:, 4]).all()

    noisy, changed = corrupt("box-drop")
    assert (noisy[changed] == torch.tensor([0.0, 0, 0, 0, PAD_CLASS])).all()
    assert int(real_boxes(noisy).sum()) == int(real.sum()) - int(changed.sum())

    noisy, changed = corrupt("box-jitter")
    assert torch.equal(noisy[..., 4], clean[..., 4])
    shift = (noisy[changed][:, :4] - clean[changed][:, :4]).abs()
    size = clean[changed][:, 2:4] - clean[changed][:, 0:2]
    assert (shift <= JITTER * size.repeat(1, 2) + 1.0 + 1e-4).all()  # + MIN_SIZE after clipping

    noisy, changed = corrupt("box-mixed")
    dropped = changed & (noisy[..., 4] < 0)
    flipped = changed & (noisy[..., 4] >= 0) & (noisy[..., 4] != clean[..., 4])
    moved = changed & ~dropped & ~flipped
    counts = [int(m.sum()) for m in (moved, flipped, dropped)]
    assert sum(counts) == int(changed.sum()) and max(counts) - min(counts) <= 1


def test_box_noise_refuses_class_labels() -> None:
    with pytest.raises(ValueError, match="detection targets"):
        apply_noise("box-flip", torch.arange(10), 0.2, num_classes=10, dataset="d", seed=0)


def _box(x1: float, y1: float, x2: float, y2: float) -> Tensor:
    return torch.tensor([[x1, y1, x2, y2]])


def test_map_against_hand_computed_cases() -> None:
    targets = [
        {"boxes": _box(0, 0, 10, 10), "labels": torch.tensor([1])},
        {"boxes": _box(20, 20, 40, 30), "labels": torch.tensor([4])},
    ]

    def predict(first: Tensor, label: int = 1) -> list[dict[str, Tensor]]:
        return [
            {"boxes": first, "scores": torch.tensor([0.9]), "labels": torch.tensor([label])},
            {
                "boxes": _box(20, 20, 40, 30),
                "scores": torch.tensor([0.8]),
                "labels": torch.tensor([4]),
            },
        ]

    perfect = mean_average_precision(predict(_box(0, 0, 10, 10)), targets)
    assert perfect == pytest.approx({"map50": 1.0, "map": 1.0})
    # IoU 100/160 = 0.625: a match at IoU 0.5, 0.55, 0.6, not above. Class 1's AP: 3 of 10
    # thresholds; class 4's: 1; the mean over the two classes: (0.3 + 1)/2.
    shifted = mean_average_precision(predict(_box(0, 0, 10, 16)), targets)
    assert shifted == pytest.approx({"map50": 1.0, "map": 0.65})
    # IoU 100/250 = 0.4: no match for class 1 at any threshold.
    missed = mean_average_precision(predict(_box(0, 0, 10, 25)), targets)
    assert missed == pytest.approx({"map50": 0.5, "map": 0.5})
    wrong_class = mean_average_precision(predict(_box(0, 0, 10, 10), label=2), targets)
    assert wrong_class["map50"] == pytest.approx(0.5)  # class 1 unfound, class 2 without objects


def test_every_box_gets_a_positive_cell_even_a_thin_one() -> None:
    targets = torch.tensor(
        [[[5.0, 5.0, 7.0, 30.0, 1.0], [20.0, 20.0, 44.0, 44.0, 2.0], [0, 0, 0, 0, PAD_CLASS]]]
    )
    assigned, positive = assign(targets, 16, 16)
    owners = assigned[positive]
    assert set(owners.tolist()) == {0, 1}
    # The big box's positive cells lie inside it, within 1.5 cells of its centre.
    cells = torch.nonzero(positive[0] & (assigned[0] == 1)).flatten()
    centres_x = (cells % 16).float() * STRIDE + STRIDE / 2
    assert ((centres_x - 32).abs() < 1.5 * STRIDE).all()


def _config(method: str, model: str = "detector", noise: float = 0.4) -> RunConfig:
    return RunConfig(
        task="detection",
        dataset="digits",
        model=model,
        method=method,
        noise_type="box-mixed",
        noise=noise,
        train_size=200,
        epochs=1,
        batch_size=8,
        lr=0.02,
    )


@pytest.fixture(scope="module")
def prepared() -> TaskData:
    return build_task(_config("plain")).prepare()


def test_prepare_builds_clean_test_canvases_and_noisy_training_ones(prepared: TaskData) -> None:
    data = prepared
    assert data.input_shape == (1, 64, 64)
    clean = data.info["train_clean_targets"]
    changed = corrupted_boxes(clean, data.train_targets)
    assert data.info["realised_noise"] == pytest.approx(
        int(changed.sum()) / int(real_boxes(clean).sum())
    )
    assert abs(data.info["realised_noise"] - 0.4) < 0.01
    assert torch.equal(data.corrupted, changed.any(dim=1))
    other_seed = build_task(
        RunConfig(**{**_config("plain").as_dict(), "seed": 1, "noise": 0.0})
    ).prepare()
    # The same test canvases for every seed, normalised by each run's training canvases.
    same = data.test_targets
    assert torch.equal(other_seed.test_targets, same)
    assert not torch.equal(other_seed.train_targets[:5], data.train_targets[:5])


@pytest.mark.parametrize("model", ["detector", "fasterrcnn"])
def test_per_box_losses_through_the_generic_methods(prepared: TaskData, model: str) -> None:
    task = build_task(_config("plain"))
    data = prepared
    torch.manual_seed(0)
    detector = build_model(model, data.input_shape, data.outputs)
    context = MethodContext("detection", task.base_loss, None, data.num_train, 1)
    inputs, targets = data.train_inputs[:4], data.train_targets[:4]
    indices = torch.arange(4)

    detector.train()
    plain = build_method("plain", context, {})
    torch.manual_seed(1)
    step = task.training_step(detector, plain, inputs, targets, indices)
    torch.manual_seed(1)
    boxes, other = detector(inputs, targets)
    # plain reduces the per-box losses as the detector itself does.
    torch.testing.assert_close(step.loss, other + (boxes.scale * boxes.total()).sum())
    assert step.weights is None and step.losses is not None
    assert step.losses.shape == (4,)

    superloss = build_method("superloss", context, {})
    step = task.training_step(detector, superloss, inputs, targets, indices)
    loss = step.loss
    assert torch.isfinite(loss)
    loss.backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in detector.parameters()
        if p.requires_grad
    )
    background = getattr(superloss, BACKGROUND_METHOD)
    foreground_tau, background_tau = superloss.criterion.last_tau, background.criterion.last_tau
    assert foreground_tau is not None and background_tau is not None
    assert float(foreground_tau) != float(background_tau)  # one τ per population
    assert step.tau is not None and float(step.tau) == float(foreground_tau)
    assert step.weights is not None and step.weights.shape == (4,)
    assert (step.weights > 0).all() and (step.weights <= math.e).all()

    detector.eval()
    metrics = task.evaluate(detector, data.test_inputs[:8], data.test_targets[:8])
    assert set(metrics) == {"map50", "map"} and all(0 <= v <= 1 for v in metrics.values())


def test_one_training_run_through_the_cli(tmp_path: Path) -> None:
    code = main(
        [
            "bench",
            "detection",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--seeds",
            "1",
            "--noise",
            "0.4",
            "--noise-type",
            "box-mixed",
            "--methods",
            "plain,superloss",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--no-report",
        ]
    )
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(r["config"]["method"] for r in records) == ["plain", "superloss"]
    for record in records:
        assert record["config"]["model"] == "detector"  # the task's default, not the dataset's MLP
        assert math.isfinite(record["final"]["map50"]) and 0 <= record["final"]["map50"] <= 1
        assert abs(record["realised_noise"] - 0.4) < 0.01


@pytest.mark.parametrize(
    "flags",
    [
        ["--noise", "1.0"],
        ["--noise", "-0.1"],
        ["--noise-type", "uniform"],
        ["--model", "mlp"],
    ],
)
def test_bad_input_exits_2(
    tmp_path: Path, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bench", "detection", "--epochs", "1", "--seeds", "1", "--out", str(tmp_path / "o")]
    assert main([*args, "--noise-type", "box-flip", *flags]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_target_dicts_drop_padding() -> None:
    targets = torch.tensor([[[1.0, 2, 3, 4, 5], [0, 0, 0, 0, PAD_CLASS]]])
    (only,) = target_dicts(targets)
    assert only["boxes"].tolist() == [[1.0, 2, 3, 4]] and only["labels"].tolist() == [5]

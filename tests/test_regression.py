"""The regression task: rotations, target noise, base losses, MAE, UTKFace files, command line."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from superloss.bench.cli import main
from superloss.bench.config import RunConfig
from superloss.bench.data import DataUnavailable, load_dataset
from superloss.bench.data.rotation import MAX_ANGLE, rotate, rotate_splits, rotation_angles
from superloss.bench.data.utkface import parse_age
from superloss.bench.noise import apply_noise
from superloss.bench.tasks.regression import Regression, robust_standardisation


def _task(base_loss: str = "l2", centre: float = 0.0, scale: float = 1.0) -> Regression:
    """The regression task of one run, its targets' centre and scale set as prepare() sets them."""
    task = Regression(RunConfig(task="regression", task_params={"base_loss": base_loss}))
    task.standardise(centre, scale)
    return task


def _bar_image(side: int = 28) -> Tensor:
    """A vertical bar above the centre, on a zero background: 1×1×side×side."""
    image = torch.zeros(1, 1, side, side)
    image[0, 0, 4:10, side // 2 - 2 : side // 2 + 2] = 1.0
    return image


def _centre_of_mass(image: Tensor) -> tuple[float, float]:
    rows, cols = torch.meshgrid(
        torch.arange(image.shape[-2], dtype=torch.float32),
        torch.arange(image.shape[-1], dtype=torch.float32),
        indexing="ij",
    )
    mass = image[0, 0]
    return float((mass * cols).sum() / mass.sum()), float((mass * rows).sum() / mass.sum())


# --- rotation -------------------------------------------------------------------------------------


def test_rotation_turns_counter_clockwise() -> None:
    # A bar above the centre (x = 13.5, y = 6.5) lands left of it after +90°, right after −90°.
    left = _centre_of_mass(rotate(_bar_image(), torch.tensor([90.0])))
    right = _centre_of_mass(rotate(_bar_image(), torch.tensor([-90.0])))
    assert left == pytest.approx((6.5, 13.5), abs=1e-3)
    assert right == pytest.approx((20.5, 13.5), abs=1e-3)


def test_rotation_matches_torchvision() -> None:
    functional = pytest.importorskip("torchvision.transforms.functional")
    from torchvision.transforms import InterpolationMode

    image = _bar_image()
    for angle in (30.0, -17.5):
        expected = functional.rotate(image, angle, interpolation=InterpolationMode.BILINEAR)
        torch.testing.assert_close(
            rotate(image, torch.tensor([angle])), expected, atol=1e-5, rtol=0
        )


def test_rotating_back_by_the_target_angle_recovers_the_image() -> None:
    images = load_dataset("mnist", None, seed=0).x_test[:16]
    angles = rotation_angles(16, seed=3)
    back = rotate(rotate(images, angles), -angles)
    # Bilinear resampling twice blurs a little; the digit itself comes back.
    inner = (slice(None), slice(None), slice(6, 22), slice(6, 22))
    error = (back - images)[inner].abs().mean() / images[inner].abs().mean()
    assert error < 0.2
    unrelated = (rotate(images, -angles) - images)[inner].abs().mean() / images[inner].abs().mean()
    assert unrelated > 2 * error


def test_rotation_angles_are_seeded_and_uniform_in_range() -> None:
    angles = rotation_angles(20000, seed=5)
    assert torch.equal(angles, rotation_angles(20000, seed=5))
    assert not torch.equal(angles, rotation_angles(20000, seed=6))
    assert angles.min() >= -MAX_ANGLE and angles.max() <= MAX_ANGLE
    counts = torch.histc(angles, bins=9, min=-MAX_ANGLE, max=MAX_ANGLE)
    expected = 20000 / 9
    assert torch.all((counts - expected).abs() < 5 * expected**0.5)


def test_rotated_splits_fix_the_test_angles_and_draw_the_others_by_seed() -> None:
    splits = load_dataset("digits", None, seed=0)
    _, first = rotate_splits(splits, seed=0)
    _, second = rotate_splits(splits, seed=1)
    assert torch.equal(first["test"], second["test"])
    assert not torch.equal(first["train"], second["train"])
    assert not torch.equal(first["train"][: len(first["val"])], first["val"])


def test_registered_rotated_digits_are_padded_and_keep_their_labels() -> None:
    plain = load_dataset("digits", None, seed=2)
    rotated = load_dataset("digits-rotation", None, seed=2)
    assert torch.equal(rotated.y_train, plain.y_train) and rotated.num_classes == 10
    assert rotated.x_train.shape[1:] == (1, 12, 12)  # 8×8 padded by 2 on each side
    # No ink is cut off: each image keeps its total ink (up to bilinear resampling), and the
    # frame's corners stay background whatever the angle.
    background = plain.x_train.min()
    ink_before = (plain.x_train - background).sum(dim=(1, 2, 3))
    ink_after = (rotated.x_train - background).sum(dim=(1, 2, 3))
    torch.testing.assert_close(ink_after, ink_before, rtol=0.05, atol=0.0)
    corners = rotated.x_train[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    torch.testing.assert_close(corners, torch.full_like(corners, float(background)))


# --- target noise ---------------------------------------------------------------------------------


def _targets(count: int = 1000) -> Tensor:
    return torch.linspace(0.0, 9.0, count, dtype=torch.float64)


@pytest.mark.parametrize("noise", ["uniform", "heavy-tailed"])
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.45, 0.95])
def test_target_noise_realises_its_rate_and_is_seeded(noise: str, rate: float) -> None:
    clean = _targets()
    noisy = apply_noise(noise, clean, rate, num_classes=0, dataset="digits", seed=4)
    assert int((noisy != clean).sum()) == round(rate * len(clean))
    assert torch.equal(clean, _targets())  # the input is not modified
    assert torch.equal(
        noisy, apply_noise(noise, clean, rate, num_classes=0, dataset="digits", seed=4)
    )
    if rate > 0:
        other = apply_noise(noise, clean, rate, num_classes=0, dataset="digits", seed=5)
        assert not torch.equal(noisy, other)


def test_uniform_noise_draws_uniformly_over_the_target_range() -> None:
    clean = torch.cat([torch.zeros(10000), torch.full((10000,), 9.0)]).double()
    noisy = apply_noise("uniform", clean, 0.9, num_classes=0, dataset="digits", seed=0)
    replaced = noisy[noisy != clean]
    assert replaced.min() >= 0.0 and replaced.max() <= 9.0
    counts = torch.histc(replaced, bins=9, min=0.0, max=9.0)
    expected = 18000 / 9
    assert torch.all((counts - expected).abs() < 5 * expected**0.5)


def test_heavy_tailed_noise_is_cauchy_scaled_by_the_target_std() -> None:
    clean = (
        torch.randn(40000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3.0
    )
    noisy = apply_noise("heavy-tailed", clean, 0.5, num_classes=0, dataset="digits", seed=1)
    corrupted = noisy != clean
    shift = (noisy - clean)[corrupted] / clean.std()
    # Standard Cauchy: median |shift| = 1, P(|shift| > 10) = 1 − (2/π)·atan(10) ≈ 0.0635.
    assert float(shift.abs().median()) == pytest.approx(1.0, abs=0.05)
    assert float((shift.abs() > 10).double().mean()) == pytest.approx(0.0635, abs=0.01)


@pytest.mark.parametrize("noise", ["uniform", "heavy-tailed"])
def test_target_noise_refuses_class_labels(noise: str) -> None:
    labels = torch.arange(10)
    with pytest.raises(ValueError, match="continuous targets"):
        apply_noise(noise, labels, 0.4, num_classes=10, dataset="digits", seed=0)


# --- base losses, standardisation and the metric --------------------------------------------------


def _loss(name: str, outputs: Tensor, targets: Tensor, centre: float, scale: float) -> Tensor:
    return _task(name, centre, scale).base_loss(outputs, targets)


def test_base_losses_match_hand_computed_values() -> None:
    # Centre 1, scale 2: standardised targets (y − 1)/2 = 0.5, 0, 0, 1; residuals 0, 2, −3, −0.5.
    outputs = torch.tensor([[0.5], [2.0], [-3.0], [0.5]])
    targets, centre, scale = torch.tensor([2.0, 1.0, 1.0, 3.0]), 1.0, 2.0
    torch.testing.assert_close(
        _loss("l2", outputs, targets, centre, scale), torch.tensor([0.0, 4.0, 9.0, 0.25])
    )
    torch.testing.assert_close(
        _loss("l1", outputs, targets, centre, scale), torch.tensor([0.0, 2.0, 3.0, 0.5])
    )
    torch.testing.assert_close(
        _loss("smooth-l1", outputs, targets, centre, scale), torch.tensor([0.0, 1.5, 2.5, 0.125])
    )


def test_base_loss_refuses_an_unknown_name_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="unknown base loss 'l3'"):
        _loss("l3", torch.zeros(2, 1), torch.zeros(2), 0.0, 1.0)
    with pytest.raises(ValueError, match="expected outputs N×1 \\(or N\\) and targets N"):
        _loss("l2", torch.zeros(2, 1), torch.zeros(2, 3), 0.0, 1.0)


class _FirstInput(nn.Module):
    def forward(self, inputs: Tensor) -> Tensor:
        return inputs[:, :1]


def test_mae_is_in_the_targets_units() -> None:
    # Standardised predictions 0 and 1 with centre 10, scale 2: 10 and 12 against 11 and 15.
    inputs = torch.tensor([[0.0], [1.0]])
    targets = torch.tensor([11.0, 15.0])
    task = _task(centre=10.0, scale=2.0)
    assert task.evaluate(_FirstInput(), inputs, targets) == {"mae": pytest.approx(2.0)}


def test_robust_standardisation_is_median_and_iqr() -> None:
    centre, scale = robust_standardisation(torch.tensor([1.0, 2.0, 3.0, 4.0, 1000.0]))
    assert centre == 3.0
    assert scale == pytest.approx(2.0 / 1.349)
    assert robust_standardisation(torch.full((5,), 7.0)) == (7.0, 1.0)


def test_prepare_corrupts_train_and_val_and_keeps_test_clean() -> None:
    config = RunConfig(task="regression", dataset="digits", noise_type="uniform", noise=0.4, seed=1)
    task = Regression(config)
    data = task.prepare()
    clean = data.info["train_clean_targets"]
    values = data.train_targets
    assert torch.equal(data.corrupted, values != clean)
    assert int(data.corrupted.sum()) == round(0.4 * data.num_train)
    assert int((data.val_targets != data.val_targets.round()).sum()) > 0  # noisy val
    assert torch.equal(data.test_targets, load_dataset("digits", None, 1).y_test.float())
    # The run's centre and scale live on the task: those of the noisy training targets.
    assert (float(task.centre), float(task.scale)) == pytest.approx(
        robust_standardisation(values), rel=1e-6
    )
    assert data.outputs == 1 and data.num_classes is None


# --- UTKFace --------------------------------------------------------------------------------------


def test_parse_age_reads_the_first_field() -> None:
    assert parse_age("26_0_1_20170116171048641.jpg.chip.jpg") == 26
    assert parse_age("1_0_0_20161219140623097.jpg") == 1
    assert parse_age("39_1_20170116174525125.jpg.chip.jpg") == 39  # an official file without race
    for name in ("readme.txt", "x_0_1_2017.jpg", "26.jpg", "26_0_1_2017.png"):
        assert parse_age(name) is None


def _fake_utkface(folder: Path, ages: list[int]) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, age in enumerate(ages):
        colour = (age * 2 % 256, i * 7 % 256, 100)
        Image.new("RGB", (48, 48), colour).save(
            folder / f"{age}_{i % 2}_{i % 5}_2017011617{i:07d}.jpg.chip.jpg"
        )
    (folder / "notes.txt").write_text("not an image")


def test_utkface_loads_a_folder_of_files(tmp_path: Path) -> None:
    ages = [1 + (7 * i) % 90 for i in range(40)]
    _fake_utkface(tmp_path / "faces", ages)
    first = load_dataset("utkface", str(tmp_path / "faces"), seed=0)
    second = load_dataset("utkface", str(tmp_path / "faces"), seed=1)
    assert first.x_train.shape[1:] == (3, 32, 32)
    assert (len(first.y_train), len(first.y_val), len(first.y_test)) == (29, 3, 8)
    everything = torch.cat([first.y_train, first.y_val, first.y_test])
    assert sorted(everything.tolist()) == sorted(ages)
    assert torch.equal(first.y_test, second.y_test)  # the test split is fixed
    assert not torch.equal(first.y_val, second.y_val)  # validation is drawn by the seed


def test_utkface_without_files_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailable, match="needs --data-root"):
        load_dataset("utkface", None, seed=0)
    with pytest.raises(DataUnavailable, match="does not exist"):
        load_dataset("utkface", str(tmp_path / "missing"), seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataUnavailable, match="no AGE_"):
        load_dataset("utkface", str(tmp_path / "empty"), seed=0)


# --- the command line -----------------------------------------------------------------------------

TINY = ["--epochs", "1", "--seeds", "1", "--noise", "0.4", "--noise-type", "uniform"]


def _bench(out: Path, *extra: str) -> list[str]:
    return ["bench", "regression", "--out", str(out), "--no-progress", "--no-report", *TINY, *extra]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--base-loss", "l3"], "invalid choice: 'l3'"),
        (["--noise", "0,1.0"], r"--noise rates must be in \[0, 1\), got 1.0"),
        (["--noise", "-0.1"], r"--noise rates must be in \[0, 1\), got -0.1"),
        (["--noise-type", "symmetric"], "--noise-type must be one of heavy-tailed, uniform"),
        (["--dataset", "mnist1d"], "dataset 'mnist1d' has no regression target"),
        (["--dataset", "utkface"], "needs --data-root"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert main(_bench(out, *extra)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not out.exists()


@pytest.mark.parametrize(
    ("dataset", "extra"),
    [
        ("digits", []),
        ("digits-rotation", ["--base-loss", "smooth-l1"]),
        ("mnist", ["--train-size", "256", "--base-loss", "l1"]),
        ("mnist-rotation", ["--train-size", "256", "--noise-type", "heavy-tailed"]),
        ("utkface", ["--model", "cnn"]),
    ],
)
def test_tiny_run_records_a_finite_mae(tmp_path: Path, dataset: str, extra: list[str]) -> None:
    if dataset == "utkface":
        _fake_utkface(tmp_path / "faces", [1 + (7 * i) % 90 for i in range(40)])
        extra = [*extra, "--data-root", str(tmp_path / "faces")]
    out = tmp_path / "out"
    command = _bench(out, "--dataset", dataset, "--methods", "plain,superloss", *extra)
    assert main(command) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["config"]["method"] for r in records] == ["plain", "superloss"]
    for record in records:
        assert record["config"]["task_params"]["base_loss"] in ("l2", "smooth-l1", "l1")
        assert math.isfinite(record["final"]["mae"]) and record["final"]["mae"] >= 0
        # Exactly round(0.4·n) of the n training targets: 12 of the 29 fake UTKFace ones.
        assert record["realised_noise"] == pytest.approx(0.4, abs=0.015)


# --- units: the scale check -----------------------------------------------------------------------


def _scaled(scale: float, task_params: dict[str, object], **settings: object) -> RunConfig:
    """A regression run at noise 0.4 (uniform) with the targets multiplied by ``scale``."""
    params = {**task_params, "target_scale": scale}
    return RunConfig(
        task="regression", noise_type="uniform", noise=0.4, task_params=params, **settings
    )


def test_target_scale_multiplies_every_target_and_keeps_the_noise_pattern() -> None:
    def prepared(scale: float) -> tuple[Regression, object]:
        task = Regression(_scaled(scale, {}, seed=1))
        return task, task.prepare()

    (one, base), (ten, scaled) = prepared(1.0), prepared(10.0)
    for split in ("train_targets", "val_targets", "test_targets"):
        torch.testing.assert_close(getattr(scaled, split), 10 * getattr(base, split))
    assert torch.equal(scaled.corrupted, base.corrupted)  # type: ignore[attr-defined]
    assert float(ten.centre) == pytest.approx(10 * float(one.centre))
    assert float(ten.scale) == pytest.approx(10 * float(one.scale))


@pytest.mark.parametrize(
    ("base_loss", "expected"), [("l2", [1.0, 9.0]), ("l1", [1.0, 3.0]), ("smooth-l1", [0.5, 2.5])]
)
def test_target_units_computes_the_loss_on_the_residual_in_units(
    base_loss: str, expected: list[float]
) -> None:
    # Centre 10, scale 2; standardised predictions 0 and 1 are 10 and 12 against targets 11 and 15:
    # residuals −1 and −3 in units (−0.5 and −1.5 standardised).
    task = Regression(
        RunConfig(task="regression", task_params={"base_loss": base_loss, "target_units": True})
    )
    task.standardise(10.0, 2.0)
    losses = task.base_loss(torch.tensor([[0.0], [1.0]]), torch.tensor([11.0, 15.0]))
    torch.testing.assert_close(losses, torch.tensor(expected))
    standardised = _task(base_loss, centre=10.0, scale=2.0)
    plain = standardised.base_loss(torch.tensor([[0.0], [1.0]]), torch.tensor([11.0, 15.0]))
    assert not torch.allclose(plain, losses)  # the option changes the loss


@pytest.mark.parametrize("base_loss", ["l2", "l1"])
def test_adam_sees_the_same_problem_when_the_targets_are_multiplied_by_10(base_loss: str) -> None:
    """Losses ×100 (L2) or ×10 (L1) in units: Adam without weight decay takes the same steps, so
    the MAE in units is 10× (to Adam's ε and float rounding)."""
    from superloss.bench.runner import run

    maes = []
    for scale in (1.0, 10.0):
        units = {"base_loss": base_loss, "target_units": True}
        config = _scaled(
            scale, units, epochs=3, train_size=300, optimizer="adam", lr=0.001, weight_decay=0.0
        )
        maes.append(run(config).final["mae"])
    assert maes[1] == pytest.approx(10 * maes[0], rel=2e-3)


def test_target_options_on_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    extra = ["--target-units", "--target-scale", "10", "--optimizer", "adam", "--lr", "0.001"]
    assert main(_bench(out, "--train-size", "100", "--methods", "plain", *extra)) == 0
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["config"]["task_params"] == {
        "base_loss": "l2",
        "target_units": True,
        "target_scale": 10.0,
    }
    assert record["config"]["optimizer"] == "adam" and math.isfinite(record["final"]["mae"])

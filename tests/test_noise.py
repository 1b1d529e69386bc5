"""Label-noise models: realised rates, seeding, and what each corrupts."""

from __future__ import annotations

import pytest
import torch

from superloss.bench.noise import apply_noise
from superloss.bench.noise.asymmetric import CIFAR10_FLIPS


def _labels(per_class: int = 100, classes: int = 10) -> torch.Tensor:
    return torch.arange(classes).repeat_interleave(per_class)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.6, 0.95])
def test_symmetric_realises_exact_rate_with_other_classes(rate: float) -> None:
    clean = _labels()
    noisy = apply_noise("symmetric", clean, rate, num_classes=10, dataset="digits", seed=3)
    corrupted = noisy != clean
    assert int(corrupted.sum()) == round(rate * len(clean))
    assert noisy.min() >= 0 and noisy.max() < 10
    assert torch.equal(clean, _labels())  # the input is not modified


def test_symmetric_new_labels_are_uniform_over_other_classes() -> None:
    clean = torch.zeros(20000, dtype=torch.int64)
    noisy = apply_noise("symmetric", clean, 0.9, num_classes=10, dataset="digits", seed=0)
    counts = torch.bincount(noisy[noisy != 0], minlength=10).float()
    assert counts[0] == 0
    expected = 18000 / 9
    assert torch.all((counts[1:] - expected).abs() < 5 * expected**0.5)  # ~5 sigma of a multinomial


def test_noise_is_seeded() -> None:
    clean = _labels()
    a = apply_noise("symmetric", clean, 0.4, num_classes=10, dataset="digits", seed=1)
    b = apply_noise("symmetric", clean, 0.4, num_classes=10, dataset="digits", seed=1)
    c = apply_noise("symmetric", clean, 0.4, num_classes=10, dataset="digits", seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_asymmetric_flips_each_class_to_the_next(rate: float) -> None:
    clean = _labels()
    noisy = apply_noise("asymmetric", clean, rate, num_classes=10, dataset="digits", seed=0)
    corrupted = noisy != clean
    assert torch.equal(noisy[corrupted], (clean[corrupted] + 1) % 10)
    for c in range(10):
        assert int(corrupted[clean == c].sum()) == round(rate * 100)


def test_asymmetric_cifar10_uses_the_class_mapping() -> None:
    clean = _labels()
    noisy = apply_noise("asymmetric", clean, 0.4, num_classes=10, dataset="cifar10", seed=0)
    corrupted = noisy != clean
    for source in range(10):
        flipped = noisy[(clean == source) & corrupted]
        if source in CIFAR10_FLIPS:
            assert len(flipped) == 40 and torch.all(flipped == CIFAR10_FLIPS[source])
        else:
            assert len(flipped) == 0


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_rate_outside_unit_interval_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match=r"noise rate must be a number in \[0, 1\)"):
        apply_noise("symmetric", _labels(), rate, num_classes=10, dataset="digits", seed=0)


def test_unknown_noise_type_lists_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown noise type 'bogus'; expected one of: .*symmetric"
    ):
        apply_noise("bogus", _labels(), 0.1, num_classes=10, dataset="digits", seed=0)

"""The data of the examples: scikit-learn's bundled 8×8 digits (offline), a share of labels made wrong.

Imported by the example scripts beside it; not a script itself.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from sklearn.datasets import load_digits
from torch import Tensor


class NoisyDigits(NamedTuple):
    train_inputs: Tensor  # (N, 64) standardised pixels
    train_labels: Tensor  # (N,) the labels trained on, some of them wrong
    flipped: Tensor  # (N,) bool, which training labels were made wrong
    test_inputs: Tensor
    test_labels: Tensor  # clean


def noisy_digits(noise: float = 0.3, seed: int = 0) -> NoisyDigits:
    """Two thirds of the digits to train on, a share ``noise`` of their labels moved to another
    class drawn uniformly; the last third, with clean labels, to test on."""
    digits = load_digits()
    inputs = torch.as_tensor(digits.data, dtype=torch.float32)
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    train, test = order[: 2 * len(order) // 3], order[2 * len(order) // 3 :]
    mean, std = inputs[train].mean(0), inputs[train].std(0).clamp_min(1e-3)
    inputs = (inputs - mean) / std
    flipped = torch.rand(len(train), generator=generator) < noise
    shift = torch.randint(1, 10, (len(train),), generator=generator)  # never the true class
    noisy = torch.where(flipped, (labels[train] + shift) % 10, labels[train])
    return NoisyDigits(inputs[train], noisy, flipped, inputs[test], labels[test])

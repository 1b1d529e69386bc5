"""scikit-learn's bundled 8×8 digits (1,797 images, 10 classes): the embedded default, always offline.

Test set: a fixed third of the data (stratified, seed 0), the same for every run. Validation: 10% of
the rest, drawn by the run's seed. Pixels are scaled by the training set's mean and std.
"""

from __future__ import annotations

import torch

from superloss.bench.data.base import DATASETS, Splits, split_off, standardize

TEST_FRACTION = 1 / 3
VAL_FRACTION = 0.1


@DATASETS.register("digits")
def load(root: str | None = None, seed: int = 0) -> Splits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    indices = torch.arange(labels.shape[0])
    pool_idx, test_idx = train_test_split(
        indices.numpy(), test_size=TEST_FRACTION, random_state=0, stratify=labels.numpy()
    )
    pool_x, pool_y = images[pool_idx], labels[pool_idx]
    (x_train, y_train), (x_val, y_val) = split_off(
        round(VAL_FRACTION * pool_y.shape[0]), seed, pool_x, pool_y
    )
    x_train, x_val, x_test = standardize(x_train, x_val, images[test_idx])
    return Splits(x_train, y_train, x_val, y_val, x_test, labels[test_idx], num_classes=10)

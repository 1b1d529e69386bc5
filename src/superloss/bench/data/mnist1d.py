"""MNIST-1D (Greydanus & Kobak, 2020): 5,000 one-dimensional signals of length 40, 10 classes.

Generated offline by the ``mnist1d`` package's ``make_dataset(get_dataset_args())``, with its
default arguments and a fixed generation seed, 42 (``GENERATION_SEED``, the package's default), so
every run sees the same 4,000 training and 1,000 test signals. ``mnist1d.get_dataset`` is never
called: it downloads. ``root`` is ignored. Generation reseeds NumPy's and Python's global random
generators; their states are put back afterwards.

Splits: validation = 10% of the 4,000 training signals (400), drawn by the run's seed; test = the
package's 1,000 test signals with their clean labels. Inputs 1×40 float32, standardised by the
training split's mean and std; labels int64. The generated arrays are cached in-process.
"""

from __future__ import annotations

import functools
import random

import numpy as np
import torch
from torch import Tensor

from superloss.bench.data.base import DATASETS, DataUnavailable, Splits, split_off, standardize

GENERATION_SEED = 42
VAL_FRACTION = 0.1
NUM_CLASSES = 10
HOW_TO_GET = "install the mnist1d package (pip install mnist1d), which generates it offline"


@DATASETS.register("mnist1d")
def load(root: str | None = None, seed: int = 0) -> Splits:
    signals, labels, test_signals, test_labels = _generate()
    (x_train, y_train), (x_val, y_val) = split_off(
        round(VAL_FRACTION * labels.shape[0]), seed, signals, labels
    )
    x_train, x_val, x_test = standardize(x_train, x_val, test_signals)
    return Splits(x_train, y_train, x_val, y_val, x_test, test_labels.clone(), NUM_CLASSES)


@functools.lru_cache(maxsize=1)
def _generate() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training signals and labels, test signals and labels: inputs N×1×40 float32, labels int64."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:
        raise DataUnavailable(
            f"dataset 'mnist1d' needs the mnist1d package ({error}): {HOW_TO_GET}"
        ) from None
    args = get_dataset_args()
    args.seed = GENERATION_SEED
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return (
        torch.as_tensor(data["x"], dtype=torch.float32).unsqueeze(1),
        torch.as_tensor(data["y"], dtype=torch.int64),
        torch.as_tensor(data["x_test"], dtype=torch.float32).unsqueeze(1),
        torch.as_tensor(data["y_test"], dtype=torch.int64),
    )

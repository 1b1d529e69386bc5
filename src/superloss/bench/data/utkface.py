"""UTKFace (Zhang, Song & Qi, CVPR 2017): faces named ``age_gender_race_date.jpg``. Never downloads.

The user gives the folder with ``--data-root``: the extracted "aligned & cropped faces" (23,708
files named like ``26_0_1_20170116171048641.jpg.chip.jpg``) or the in-the-wild faces
(``26_0_1_20170116171048641.jpg``). Files are found recursively; the age is the first field of the
name, in years (0–116); the other fields are not used, so the few official files that lack the race
field still count. Files whose names do not start with ``AGE_`` or do not end in ``.jpg`` are
ignored.

Images: decoded with Pillow, converted to RGB, resized to 32×32 (bilinear), pixels scaled to [0, 1]
then standardised by the training split's mean and std. Labels: the ages, int64; ``num_classes`` is
117 (ages 0–116), which is what a classification run on this dataset would use.

Splits: test = a fixed 20% of the images (seeded permutation with seed 0, the same for every run);
validation = 10% of the rest, drawn by the run's seed. Files are read in sorted order, so the splits
depend only on the folder's contents. Decoded images are cached in-process (a sweep reloads its
dataset for every run).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from superloss.bench.data.base import (
    DATASETS,
    DataUnavailable,
    Splits,
    check_root,
    split_off,
    standardize,
)

IMAGE_SIDE = 32
MAX_AGE = 116
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1
TEST_SEED = 0
HOW_TO_GET = (
    "download UTKFace's 'Aligned&Cropped Faces' (UTKFace.tar.gz) from "
    "https://susanqq.github.io/UTKFace/, extract it and pass the folder holding its "
    "age_gender_race_date.jpg(.chip.jpg) files as --data-root"
)
_NAME = re.compile(r"^(\d+)_.*\.jpg$", re.IGNORECASE)


def parse_age(name: str) -> int | None:
    """The age in a UTKFace file name, or None for a name that is not an ``AGE_….jpg`` image.

    Example:
        >>> parse_age("26_0_1_20170116171048641.jpg.chip.jpg"), parse_age("notes.txt")
        (26, None)
    """
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def _image_files(folder: Path) -> list[tuple[Path, int]]:
    found = []
    for path in sorted(folder.rglob("*")):
        age = parse_age(path.name)
        if age is None or not path.is_file():
            continue
        if age > MAX_AGE:
            raise ValueError(f"UTKFace file {str(path)!r} gives age {age}, above {MAX_AGE}")
        found.append((path, age))
    return found


@functools.lru_cache(maxsize=2)
def _decode(folder: str) -> tuple[Tensor, Tensor]:
    """(images N×3×32×32 float32 in [0, 1], ages int64) of every image file under ``folder``."""
    from PIL import Image

    files = _image_files(Path(folder))
    if not files:
        raise DataUnavailable(f"no AGE_…jpg image files under {folder!r}: {HOW_TO_GET}")
    images = np.empty((len(files), IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        with Image.open(path) as image:
            image.draft("RGB", (2 * IMAGE_SIDE, 2 * IMAGE_SIDE))  # JPEG: decode at a reduced scale
            small = image.convert("RGB").resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BILINEAR)
            images[i] = np.asarray(small)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    ages = torch.tensor([age for _, age in files], dtype=torch.int64)
    return pixels, ages


@DATASETS.register("utkface")
def load(root: str | None = None, seed: int = 0) -> Splits:
    folder = check_root(root, "utkface", HOW_TO_GET)
    images, ages = _decode(str(folder.resolve()))
    (pool_x, pool_y), (x_test, y_test) = split_off(
        round(TEST_FRACTION * ages.shape[0]), TEST_SEED, images, ages
    )
    (x_train, y_train), (x_val, y_val) = split_off(
        round(VAL_FRACTION * pool_y.shape[0]), seed, pool_x, pool_y
    )
    x_train, x_val, x_test = standardize(x_train, x_val, x_test)
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, num_classes=MAX_AGE + 1)

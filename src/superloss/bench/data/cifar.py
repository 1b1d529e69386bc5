"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009): 32×32 colour images, 50,000 train / 10,000 test.

Read from the standard python-pickle archives in the folder given as ``root`` (never downloaded):
``cifar-10-batches-py/{data_batch_1…5, test_batch, batches.meta}`` and
``cifar-100-python/{train, test, meta}``. ``root`` may be the folder holding the extracted folder,
the extracted folder itself, or a folder holding the unextracted ``cifar-10-python.tar.gz`` /
``cifar-100-python.tar.gz``, which is then read in memory. The meta file is optional; when present
its class names are checked against the class count. The pickles are read with an unpickler that
only builds plain containers and NumPy arrays, so a crafted file cannot run code.

CIFAR-N human labels (Wei et al., ICLR 2022): when ``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt``
lies in ``root`` (or in the extracted folder), each of its label sets (``worse_label``,
``aggre_label``, ``random_label1``…, or ``noisy_label``, ``noisy_coarse_label``…), aligned with
the 50,000 training images in order, is put in ``Splits.extra_train_labels`` /
``extra_val_labels`` under its key, carved with the same permutation as the images. Its
``clean_label`` must equal the training labels. The ``human-*`` noise types (``noise/human.py``)
use them.

Splits: validation = min(5,000, 10%) of the training images, drawn by the run's seed (5,000 of
50,000, leaving 45,000; the 10% only matters for small test files); test = the official test batch
with its clean labels. CIFAR-100 uses the 100 fine labels. Inputs 3×32×32 float32, standardised per
colour channel by the training split's mean and std (the usual CIFAR normalisation, rather than one
mean and std over all pixels as ``standardize`` does); labels int64. The decoded arrays are cached
in-process, keyed by the files' sizes and modification times.
"""

from __future__ import annotations

import codecs
import functools
import io
import pickle
import tarfile
from dataclasses import dataclass
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
    val_count,
)

CHANNELS, SIDE = 3, 32
CIFAR_N_URL = "https://github.com/UCSC-REAL/cifar-10-100n"


@dataclass(frozen=True)
class Layout:
    """Where one CIFAR variant's files lie and what their pickles hold."""

    dataset: str
    title: str
    folder: str
    archive: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    human_file: str

    @property
    def how_to_get(self) -> str:
        return (
            f"download https://www.cs.toronto.edu/~kriz/{self.archive} and pass --data-root FOLDER "
            f"holding it or its extracted {self.folder}/ (optionally with {self.human_file}, "
            f"{self.title}N's human labels, from {CIFAR_N_URL})"
        )


CIFAR10 = Layout(
    dataset="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
    human_file="CIFAR-10_human.pt",
)
CIFAR100 = Layout(
    dataset="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
    human_file="CIFAR-100_human.pt",
)


@DATASETS.register("cifar10")
def load_cifar10(root: str | None = None, seed: int = 0) -> Splits:
    return load(CIFAR10, root, seed)


@DATASETS.register("cifar100")
def load_cifar100(root: str | None = None, seed: int = 0) -> Splits:
    return load(CIFAR100, root, seed)


def load(layout: Layout, root: str | None, seed: int) -> Splits:
    folder = check_root(root, layout.dataset, layout.how_to_get)
    source = _find_source(layout, folder)
    if source.is_dir():
        wanted = (*layout.train_files, layout.test_file, layout.meta_file)
        files = [source / name for name in wanted if (source / name).is_file()]
        places = [folder, source]
    else:
        files, places = [source], [folder]
    human = next((p / layout.human_file for p in places if (p / layout.human_file).is_file()), None)
    if human is not None:
        files.append(human)
    # Sizes and modification times are part of the cache key, so a changed file is read again.
    signature = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    images, labels, test_images, test_labels, extra = _decode(
        layout, str(source), None if human is None else str(human), signature
    )

    names = list(extra)
    rest, held = split_off(val_count(labels.shape[0]), seed, images, labels, *extra.values())
    x_train, x_val, x_test = (x.float() for x in (rest[0], held[0], test_images))
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    for x in (x_train, x_val, x_test):
        x.sub_(mean).div_(std)  # in place: these are fresh copies, and CIFAR is large
    return Splits(
        x_train,
        rest[1],
        x_val,
        held[1],
        x_test,
        test_labels.clone(),
        layout.num_classes,
        extra_train_labels=dict(zip(names, rest[2:], strict=True)),
        extra_val_labels=dict(zip(names, held[2:], strict=True)),
    )


def _find_source(layout: Layout, folder: Path) -> Path:
    """The folder holding the batches, or the .tar.gz archive; DataUnavailable if neither."""
    needed = (*layout.train_files, layout.test_file)
    for candidate in (folder / layout.folder, folder):
        present = [name for name in needed if (candidate / name).is_file()]
        named = candidate.name == layout.folder  # a folder of another name may hold other files
        if present and len(present) < len(needed) and named:
            missing = ", ".join(name for name in needed if name not in present)
            raise DataUnavailable(
                f"{layout.title} folder {str(candidate)!r} lacks {missing}: {layout.how_to_get}"
            )
        if len(present) == len(needed):
            return candidate
    if (folder / layout.archive).is_file():
        return folder / layout.archive
    raise DataUnavailable(
        f"no {layout.title} in {str(folder)!r} (expected {layout.folder}/, its files, or "
        f"{layout.archive}): {layout.how_to_get}"
    )


Decoded = tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]


@functools.lru_cache(maxsize=2)
def _decode(
    layout: Layout, source_text: str, human: str | None, signature: tuple[tuple[str, int, int], ...]
) -> Decoded:
    """Training images (uint8 N×3×32×32) and labels, test images and labels, human label sets."""
    source = Path(source_text)
    blobs = _read_members(layout, source)
    where = {name: str(source / name) for name in blobs}
    batches = [
        _batch(layout, _unpickle(blobs[name], where[name]), where[name])
        for name in layout.train_files
    ]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    test_images, test_labels = _batch(
        layout, _unpickle(blobs[layout.test_file], where[layout.test_file]), where[layout.test_file]
    )
    if layout.meta_file in blobs:
        _check_meta(
            layout,
            _unpickle(blobs[layout.meta_file], where[layout.meta_file]),
            where[layout.meta_file],
        )
    extra = {} if human is None else _human_labels(Path(human), labels)
    return (
        torch.from_numpy(images),
        torch.from_numpy(labels),
        torch.from_numpy(test_images),
        torch.from_numpy(test_labels),
        extra,
    )


def _read_members(layout: Layout, source: Path) -> dict[str, bytes]:
    """The raw bytes of the batches (and meta, when there), from the folder or from the archive."""
    wanted = (*layout.train_files, layout.test_file, layout.meta_file)
    if source.is_dir():
        return {name: (source / name).read_bytes() for name in wanted if (source / name).is_file()}
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(source, "r:gz") as archive:
            # One pass in stored order: seeking back in a gzip stream would decompress it again.
            for member in archive:
                folder, _, name = member.name.rpartition("/")
                if folder.endswith(layout.folder) and name in wanted and member.isfile():
                    stream = archive.extractfile(member)
                    if stream is not None:
                        blobs[name] = stream.read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ValueError(f"{source}: not a readable .tar.gz archive ({error})") from None
    missing = [name for name in wanted[:-1] if name not in blobs]
    if missing:
        raise ValueError(f"{source}: the archive lacks {layout.folder}/{', '.join(missing)}")
    return blobs


# NumPy's array rebuilder, whichever module holds it (numpy.core before NumPy 2, numpy._core since).
_RECONSTRUCT: Any = np.zeros(0).__reduce__()[0]
_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 pickles bytes at protocol 2
}


class _ArrayUnpickler(pickle.Unpickler):
    """Builds only plain containers and NumPy arrays (what CIFAR pickles hold): nothing runs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: not part of a CIFAR pickle"
            )
        return _PICKLE_GLOBALS[(module, name)]


def _unpickle(blob: bytes, where: str) -> dict[str, Any]:
    """A CIFAR pickle as a dict with str keys (the originals are Python 2 pickles, byte keys)."""
    try:
        content = _ArrayUnpickler(io.BytesIO(blob), encoding="latin1").load()
    except Exception as error:  # a damaged pickle can fail in many ways; all mean the same here
        raise ValueError(f"{where}: not a readable CIFAR python pickle ({error})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{where}: expected a pickled dict, found {type(content).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in content.items()}


def _batch(
    layout: Layout, entries: dict[str, Any], where: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Images (N×3×32×32 uint8, rows stored as 1024 red, 1024 green, 1024 blue) and int64 labels."""
    if "data" not in entries or layout.label_key not in entries:
        raise ValueError(
            f"{where}: expected the keys 'data' and {layout.label_key!r}, found {sorted(entries)}"
        )
    data = entries["data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.shape[1:] != (CHANNELS * SIDE * SIDE,)
    ):
        shape = getattr(data, "shape", None)
        raise ValueError(
            f"{where}: 'data' must be uint8 rows of {CHANNELS * SIDE * SIDE} pixels, got {shape}"
        )
    labels = np.asarray(entries[layout.label_key])
    if labels.shape != (data.shape[0],) or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(
            f"{where}: {layout.label_key!r} must be {data.shape[0]} integer labels, "
            f"got {labels.shape}"
        )
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise ValueError(f"{where}: labels outside 0…{layout.num_classes - 1}")
    return data.reshape(-1, CHANNELS, SIDE, SIDE).copy(), labels


def _check_meta(layout: Layout, entries: dict[str, Any], where: str) -> None:
    names = entries.get(layout.names_key)
    if not isinstance(names, list) or len(names) != layout.num_classes:
        count = len(names) if isinstance(names, list) else "no"
        raise ValueError(
            f"{where}: expected {layout.num_classes} class names under {layout.names_key!r}, found "
            f"{count}: is this {layout.title}?"
        )


# torch.load(weights_only=True) refuses NumPy arrays unless allowed; CIFAR-N's files hold them.
_NUMPY_GLOBALS: list[Any] = [
    _RECONSTRUCT,
    (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),  # files written under NumPy 1
    np.ndarray,
    np.dtype,
    *sorted({type(np.dtype(code)) for code in "bBhHiIlLqQ"}, key=str),
]


def _human_labels(path: Path, labels: np.ndarray[Any, Any]) -> dict[str, Tensor]:
    """CIFAR-N's label sets, each checked to hold one integer label per training image."""
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to read it means the same: not a CIFAR-N file
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise ValueError(f"{path}: not a readable CIFAR-N label file ({first_line})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a dict of label sets, found {type(content).__name__}")
    extra = {}
    for key, value in content.items():
        array = np.asarray(value.numpy() if isinstance(value, Tensor) else value)
        if array.shape != labels.shape or array.dtype.kind not in "iu":
            raise ValueError(
                f"{path}: {key!r} must hold one integer label per training image "
                f"({labels.shape[0]}), got {array.dtype} {array.shape}"
            )
        extra[str(key)] = torch.from_numpy(array.astype(np.int64))
    clean = extra.get("clean_label")
    if clean is not None and not torch.equal(clean, torch.from_numpy(labels)):
        wrong = int((clean != torch.from_numpy(labels)).sum())
        raise ValueError(
            f"{path}: its clean_label disagrees with the training labels on {wrong} images: "
            "not aligned with these training images"
        )
    return extra

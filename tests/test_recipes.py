"""The recipes of docs/architecture.md: a method, a dataset, a task, a protocol — each one file.

Each toy plug-in lives in ``tests/plugins/``, registers itself on import (the one import line a real
plug-in adds to its package's ``__init__``), and runs through the command line's ``main([...])``.
The registries are restored after each test, so no toy leaks into other tests.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from superloss.bench.cli import main
from superloss.bench.data import DATASETS
from superloss.bench.methods import METHODS
from superloss.bench.models import MODELS
from superloss.bench.noise import NOISES
from superloss.bench.protocols import PROTOCOLS
from superloss.bench.tasks import TASKS

PLUGINS = Path(__file__).resolve().parent / "plugins"
REGISTRIES = (DATASETS, NOISES, MODELS, METHODS, TASKS, PROTOCOLS)
TINY = ["--seeds", "1", "--epochs", "2", "--no-progress", "--no-report"]


@pytest.fixture(autouse=True)
def restored_registries() -> Iterator[None]:
    saved = [(dict(r._entries), dict(r._aliases)) for r in REGISTRIES]
    yield
    for registry, (entries, aliases) in zip(REGISTRIES, saved, strict=True):
        registry._entries, registry._aliases = entries, aliases


def load_plugin(name: str) -> Any:
    """Import ``tests/plugins/NAME.py`` afresh: its decorators register it."""
    spec = importlib.util.spec_from_file_location(f"plugins_{name}", PLUGINS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_add_a_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "focal" not in METHODS
    load_plugin("focal")
    argv = ["bench", "classification", "--methods", "ce,focal", "--noise", "0.4", *TINY]
    assert main([*argv, "--train-size", "200", "--focal-gamma", "1", "--out", str(tmp_path)]) == 0
    by_method = {r["config"]["method"]: r for r in records(tmp_path)}
    assert set(by_method) == {"ce", "focal"}
    assert by_method["focal"]["config"]["method_params"] == {"gamma": 1}
    assert math.isfinite(by_method["focal"]["final"]["accuracy"])
    assert "weight_auroc" in by_method["focal"]["history"][-1]  # its weights reach the loop
    # Its declared hyper-parameter is checked, and it refuses a task it does not apply to.
    with pytest.raises(ValueError, match=r"focal gamma must be a number >= 0, got -1"):
        METHODS.get("focal")(None, gamma=-1)  # type: ignore[arg-type]
    assert main(["bench", "regression", "--methods", "focal", "--out", str(tmp_path / "r")]) == 2
    assert "applies to classification" in capsys.readouterr().err


def test_add_a_dataset(tmp_path: Path) -> None:
    load_plugin("blobs")
    argv = ["bench", "classification", "--dataset", "blobs", "--methods", "ce,superloss", *TINY]
    # 240 training points: two steps an epoch at the fallback batch size of 128.
    assert main([*argv, "--epochs", "20", "--noise", "0,0.4", "--out", str(tmp_path)]) == 0
    runs = records(tmp_path)
    assert len(runs) == 4 and {r["config"]["dataset"] for r in runs} == {"blobs"}
    clean = [r for r in runs if r["config"]["noise"] == 0.0]
    assert all(r["final"]["accuracy"] > 90.0 for r in clean)  # well-separated blobs
    noisy = [r["realised_noise"] for r in runs if r["config"]["noise"] == 0.4]
    assert noisy == [pytest.approx(0.4, abs=0.01)] * 2  # the registered symmetric noise applies


def test_add_a_task(tmp_path: Path) -> None:
    load_plugin("parity")
    argv = ["bench", "parity", "--methods", "ce,superloss", "--noise", "0.2", *TINY]
    assert main([*argv, "--train-size", "300", "--out", str(tmp_path)]) == 0
    runs = records(tmp_path)
    assert sorted(r["config"]["method"] for r in runs) == ["ce", "superloss"]
    for run in runs:
        assert run["config"]["task"] == "parity"
        assert 0.0 <= run["final"]["accuracy"] <= 100.0
        assert run["realised_noise"] == pytest.approx(0.2, abs=0.01)
    superloss_run = next(r for r in runs if r["config"]["method"] == "superloss")
    # Two classes: SuperLoss's τ = log 2, the loss of a uniform prediction.
    assert superloss_run["history"][-1]["tau"] == pytest.approx(math.log(2), abs=1e-6)


def test_add_a_protocol(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load_plugin("repeats")
    argv = ["bench", "repeats", "--methods", "ce", "--repeats", "3", *TINY]
    assert main([*argv, "--train-size", "200", "--out", str(tmp_path)]) == 0
    (run,) = records(tmp_path)
    assert run["config"]["task"] == "repeats"
    assert run["config"]["task_params"] == {"repeats": 3}
    assert run["final"]["accuracy_std"] > 0  # three model seeds, three results
    assert main([*argv, "--repeats", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "--repeats must be an integer >= 1" in capsys.readouterr().err

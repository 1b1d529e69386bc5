"""The scripts in examples/ run as a user runs them, and the README links each of them.

All four start together (one thread each: tiny models run fastest so) and each test waits for its
own. Only that they run and print what they promise is checked: their numbers come from one seed
and are shown, not asserted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SCRIPTS = {
    "plain_pytorch.py": (),
    "lightning_digits.py": ("--out", "{out}"),
    "hf_trainer.py": ("--out", "{out}"),
    "torchvision_detection.py": (),
}
TIMEOUT = 600  # seconds, for all of them together on a loaded machine


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.Popen[str]]]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = {}
    for name, arguments in SCRIPTS.items():
        out = tmp_path_factory.mktemp(name.removesuffix(".py"))
        command = [sys.executable, str(EXAMPLES / name), *(a.format(out=out) for a in arguments)]
        started[name] = subprocess.Popen(
            command,
            cwd=out,  # whatever a script writes by default lands in a temporary folder
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


def output_of(runs: dict[str, subprocess.Popen[str]], name: str) -> str:
    process = runs[name]
    output, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, output[-4000:]
    return output


def test_plain_pytorch_example(runs: dict[str, subprocess.Popen[str]]) -> None:
    output = output_of(runs, "plain_pytorch.py")
    assert re.search(r"clean test accuracy, cross-entropy: 0\.\d{3}", output)
    assert re.search(r"clean test accuracy, SuperLoss: +0\.\d{3}", output)
    assert re.search(r"mislabelled among the \d+ lowest mean σ\*: [01]\.\d{3}", output)


def test_lightning_example(runs: dict[str, subprocess.Popen[str]]) -> None:
    output = output_of(runs, "lightning_digits.py")
    assert re.search(r"last epoch: τ = 2\.303, mean σ\* = \d\.\d{3}", output)  # τ = log 10
    match = re.search(r"written to (\S+suspects\.csv)", output)
    assert match is not None, output[-2000:]
    rows = Path(match.group(1)).read_text().splitlines()
    assert rows[0] == "index,score" and len(rows) == 101
    metrics = next(Path(match.group(1)).parent.rglob("metrics.csv")).read_text()
    assert "superloss/criterion/confidence_mean" in metrics


def test_hf_trainer_example(runs: dict[str, subprocess.Popen[str]]) -> None:
    output = output_of(runs, "hf_trainer.py")
    assert re.search(r"τ = -?\d+\.\d{3}, clean test accuracy: [01]\.\d{3}", output)
    assert "training sequences of lowest σ*" in output


def test_torchvision_detection_example(runs: dict[str, subprocess.Popen[str]]) -> None:
    output = output_of(runs, "torchvision_detection.py")
    assert re.search(r"step 149: loss_classifier -?\d", output)
    assert re.search(r"wrong label \d\.\d{3}, right label \d\.\d{3}", output)


def test_the_readme_links_every_example() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in SCRIPTS:
        assert f"(examples/{name})" in readme, name

"""Same configs, same seed, CPU: the same per-epoch histories and metrics as the recorded fixture.

``fixtures/numbers.json`` holds a small fixed sweep of every task (``numbers_fixture.py``), recorded
before the suite's skeleton was rebuilt; every number must come back (wall times left out) — counts,
keys and strings exactly, floats within the last bits that another CPU's kernels move
(``numbers_fixture.mismatches``; on the machine that recorded them they came back to the bit).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from superloss.bench.config import RunConfig
from tests.numbers_fixture import FIXTURE, mismatches, without_timing

RUNS: list[dict[str, Any]] = json.loads(FIXTURE.read_text())


def _rerun(values: dict[str, Any]) -> dict[str, Any]:
    from superloss.bench.runner import run

    # Through JSON, as the fixture was written: tuples become lists, floats stay floats.
    record: dict[str, Any] = json.loads(
        json.dumps(without_timing(run(RunConfig(**values)).as_dict()))
    )
    return record


def test_fixture_covers_every_task() -> None:
    tasks = {run["record"]["config"]["task"] for run in RUNS}
    assert tasks == {"classification", "regression", "retrieval", "detection", "noise-detection"}


@pytest.mark.parametrize(
    "run",
    RUNS,
    ids=[
        f"{r['record']['config']['task']}-{r['record']['config']['method']}-{i}"
        for i, r in enumerate(RUNS)
    ],
)
def test_same_numbers_as_recorded(run: dict[str, Any]) -> None:
    record = _rerun(run["config"])
    expected = run["record"]
    assert record["key"] == expected["key"]
    for part in ("history", "final", "best", "selected", "realised_noise", "weight_histograms"):
        assert mismatches(expected[part], record[part], part) == [], part
    assert mismatches(expected, record) == []


def test_mismatches_tell_a_change_of_results_from_another_cpus_last_bits() -> None:
    recorded = {"accuracy": 80.13356, "ap": 0.002879, "epoch": 3, "score": "mean", "x": math.nan}
    # Another CPU's kernels: the 7th significant digit, one rounding unit on a small value.
    assert mismatches(recorded, {**recorded, "accuracy": 80.13357, "ap": 0.002878}) == []
    # A change of results: the 3rd significant digit, a count, a string, a missing key, NaN.
    assert mismatches(recorded, {**recorded, "accuracy": 80.3}) == ["/accuracy: 80.13356 != 80.3"]
    assert len(mismatches(recorded, {**recorded, "epoch": 4})) == 1
    assert len(mismatches(recorded, {**recorded, "epoch": 3.0})) == 1
    assert len(mismatches(recorded, {**recorded, "score": "last"})) == 1
    assert len(mismatches(recorded, {k: v for k, v in recorded.items() if k != "ap"})) == 1
    assert len(mismatches(recorded, {**recorded, "x": 0.0})) == 1
    assert mismatches([1.0, [2.0]], [1.0, [2.0, 3.0]]) != []

"""Same configs, same seed, CPU: the same per-epoch histories and metrics as the recorded fixture.

``fixtures/numbers.json`` holds a small fixed sweep of every task (``numbers_fixture.py``), recorded
before the suite's skeleton was rebuilt; every number must come back exactly (wall times left out).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from superloss.bench.config import RunConfig
from tests.numbers_fixture import FIXTURE, canonical, without_timing

RUNS: list[dict[str, Any]] = json.loads(FIXTURE.read_text())


def _rerun(values: dict[str, Any]) -> dict[str, Any]:
    from superloss.bench.runner import run

    return without_timing(run(RunConfig(**values)).as_dict())


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
    assert canonical(record["history"]) == canonical(expected["history"])
    for part in ("final", "best", "selected", "realised_noise", "weight_histograms"):
        assert canonical(record[part]) == canonical(expected[part]), part
    assert canonical(record) == canonical(expected)

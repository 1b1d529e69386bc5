"""The one training loop and the sweep around it: determinism, results lines, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from superloss.bench import runner
from superloss.bench.config import RunConfig
from superloss.bench.record import RunRecord
from superloss.bench.results import append_result, load_results, results_path

TINY = {"epochs": 2, "train_size": 120, "batch_size": 32}


def test_same_seed_same_numbers() -> None:
    config = RunConfig(method="superloss", noise=0.4, seed=1, **TINY)
    first, second = runner.run(config).as_dict(), runner.run(config).as_dict()
    assert first["history"] == second["history"]
    other = runner.run(RunConfig(method="superloss", noise=0.4, seed=2, **TINY)).as_dict()
    assert other["history"] != first["history"]


def test_record_holds_config_versions_and_metrics() -> None:
    record = runner.run(RunConfig(method="superloss", noise=0.4, **TINY)).as_dict()
    assert record["config"]["method"] == "superloss" and record["config"]["noise"] == 0.4
    assert set(record["versions"]) >= {"torch", "superloss", "python"}
    assert len(record["history"]) == 2
    assert set(record["final"]) == {"accuracy"} and set(record["best"]) == {"accuracy"}
    assert 0.0 <= record["final"]["accuracy"] <= 100.0
    assert record["best"]["accuracy"] == max(h["accuracy"] for h in record["history"])
    assert record["realised_noise"] == pytest.approx(0.4, abs=0.01)
    # σ histograms: every seen training sample counted once, split by the corrupted mask.
    histogram = record["weight_histograms"][-1]
    assert sum(histogram["clean"]) + sum(histogram["corrupted"]) == 120
    assert sum(histogram["corrupted"]) == round(0.4 * 120)
    assert 0.0 <= record["history"][-1]["weight_auroc"] <= 1.0


def test_auroc_matches_a_hand_computed_case() -> None:
    import math

    import torch

    from superloss.bench.metrics import auroc

    scores = torch.tensor([0.9, 0.8, 0.8, 0.1])
    positives = torch.tensor([True, False, True, False])
    # pairs (pos, neg): (0.9,0.8)=1 (0.9,0.1)=1 (0.8,0.8)=0.5 (0.8,0.1)=1 -> 3.5/4
    assert auroc(scores, positives) == pytest.approx(0.875)
    assert math.isnan(auroc(scores, torch.zeros(4, dtype=torch.bool)))  # undefined: one class


def _configs(count: int) -> list[RunConfig]:
    return [
        RunConfig(method=m, noise=0.4, seed=s, **TINY)
        for s in range(count // 2)
        for m in ("ce", "superloss")
    ]


def test_interrupted_sweep_resumes_without_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = _configs(4)
    real_run = runner.run
    calls = []

    def interrupted(config: RunConfig, **kwargs: object) -> RunRecord:
        calls.append(config.key())
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run(config, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep(configs, tmp_path, progress=False)
    before = load_results(results_path(tmp_path))
    assert [r["key"] for r in before] == [c.key() for c in configs[:2]]

    monkeypatch.setattr(runner, "run", real_run)
    runner.run_sweep(configs, tmp_path, progress=False)
    after = load_results(results_path(tmp_path))
    assert [r["key"] for r in after] == [c.key() for c in configs]
    assert after[:2] == before  # nothing lost or rewritten
    runner.run_sweep(configs, tmp_path, progress=False)  # all finished: nothing runs again
    assert len(load_results(results_path(tmp_path))) == 4


def test_torn_last_line_is_skipped_and_closed(tmp_path: Path) -> None:
    path = results_path(tmp_path)
    append_result(path, {"key": "a", "value": 1})
    with path.open("a") as handle:
        handle.write('{"key": "b", "val')  # a writer killed mid-line
    append_result(path, {"key": "c", "value": 3})
    assert [r["key"] for r in load_results(path)] == ["a", "c"]
    assert json.loads(path.read_text().splitlines()[-1])["key"] == "c"


def test_parallel_jobs_give_the_same_numbers(tmp_path: Path) -> None:
    configs = _configs(2)
    runner.run_sweep(configs, tmp_path, progress=False, jobs=2)
    records = {r["key"]: r for r in load_results(results_path(tmp_path))}
    assert set(records) == {c.key() for c in configs}
    for config in configs:  # CPU runs are single-threaded wherever they run
        assert records[config.key()]["history"] == runner.run(config).history


PROGRESS_LINE = (
    r"^\[(\d+)/(\d+)\] classification/digits (\w+) symmetric=0\.4 s\d: (.*) \| "
    r"elapsed [\d.]+ s, ETA ([\d.]+ s|\d+ min \d+ s|unknown)$"
)


@pytest.mark.parametrize("jobs", [1, 2])
def test_progress_without_a_terminal_reports_each_epoch_and_run_with_an_eta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], jobs: int
) -> None:
    import re

    monkeypatch.setattr(runner, "PROGRESS_EVERY_S", 0.0)  # a line for every epoch
    configs = _configs(2)
    runner.run_sweep(configs, tmp_path, progress=True, jobs=jobs)
    lines = capsys.readouterr().err.strip().splitlines()  # stderr is not a terminal here
    matches = [re.match(PROGRESS_LINE, line) for line in lines]
    assert all(matches), lines
    epochs = [m for m in matches if m and m.group(4).startswith("epoch ")]
    finished = [m for m in matches if m and m.group(4).startswith("accuracy selected ")]
    assert all(
        re.match(
            r"accuracy selected [\d.]+ \(epoch \d+\), final [\d.]+, best \(test "
            r"oracle\) [\d.]+ \([\d.]+ s\)$",
            m.group(4),
        )
        for m in finished
    )
    assert len(epochs) == 2 * TINY["epochs"] and len(finished) == 2
    assert {m.group(2) for m in matches if m} == {"2"}  # done/total
    assert [int(m.group(1)) for m in finished] == [1, 2]
    assert all(m.group(5) != "unknown" for m in finished)  # an ETA once a run is done
    first_finished = next(i for i, m in enumerate(matches) if m and m in finished)
    before = [m for m in matches[:first_finished] if m]
    assert before and all(m.group(5) == "unknown" for m in before)  # none from a first epoch
    assert finished[-1].group(5) == "0.0 s"


def test_progress_between_runs_is_at_most_every_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Runs of a fraction of a second: within PROGRESS_EVERY_S (10 s) of the first epoch's line,
    # only the finished runs are reported.
    runner.run_sweep(_configs(2), tmp_path, progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [": epoch " in line for line in lines] == [True, False, False]


def test_each_session_of_a_sweep_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from superloss.bench.timing import load_sessions

    configs = _configs(4)
    real_run = runner.run

    def interrupted(config: RunConfig, **kwargs: object) -> RunRecord:
        if config == configs[1]:
            raise KeyboardInterrupt
        return real_run(config, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "run", interrupted)
    started = __import__("time").time() - 5.0  # the command began 5 s before the sweep
    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep(configs, tmp_path, progress=False, started=started)
    monkeypatch.setattr(runner, "run", real_run)
    runner.run_sweep(configs, tmp_path, progress=False, jobs=2)
    runner.run_sweep(configs, tmp_path, progress=False)  # nothing left to run: no session
    first, second = load_sessions(tmp_path)
    assert (first.runs, first.jobs, first.stopped_by) == (1, 1, "SIGINT")
    assert (second.runs, second.jobs, second.stopped_by) == (3, 2, None)
    assert first.elapsed_s >= 5.0
    records = load_results(results_path(tmp_path))
    assert second.elapsed_s >= max(r["wall_time_s"] for r in records[1:])


def test_a_failing_run_in_a_worker_raises_its_own_error(tmp_path: Path) -> None:
    from superloss.bench.processes import RemoteTraceback
    from superloss.bench.registry import UnknownName

    configs = [*_configs(2), RunConfig(model="nope", **TINY)]
    with pytest.raises(UnknownName, match="unknown model 'nope'") as raised:
        runner.run_sweep(configs, tmp_path, progress=False, jobs=2)
    assert isinstance(raised.value.__cause__, RemoteTraceback)
    assert "Traceback" in str(raised.value.__cause__)  # the worker's, where it was raised


def test_record_holds_the_package_version_and_its_commit() -> None:
    import subprocess

    import superloss
    from superloss.bench.record import source_commit

    assert superloss.__version__ == "0.5.0"
    versions = runner.run(RunConfig(method="ce", **TINY)).as_dict()["versions"]
    assert versions["superloss"] == "0.5.0"
    source = Path(superloss.__file__).resolve().parent
    head = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode == 0:  # a git checkout, as in development
        assert versions["superloss_commit"] in (head.stdout.strip(), head.stdout.strip() + "+dirty")
    else:
        assert versions["superloss_commit"] is None
    assert source_commit() == versions["superloss_commit"]


def test_no_commit_outside_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import superloss
    from superloss.bench.record import source_commit

    (tmp_path / "superloss").mkdir()
    (tmp_path / "superloss" / "__init__.py").write_text("")
    monkeypatch.setattr(superloss, "__file__", str(tmp_path / "superloss" / "__init__.py"))
    assert source_commit.__wrapped__() is None


def test_results_of_another_version_are_run_again_and_left_out_of_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from superloss.bench.report import write_report

    configs = _configs(2)
    old = runner.run(configs[0]).as_dict()
    old["versions"]["superloss"] = "0.1.0"
    old["final"]["accuracy"] = 123.0  # a number the current version never gives
    append_result(results_path(tmp_path), old)
    runner.run_sweep(configs, tmp_path, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of superloss 0.1.0" in err[0] and "not reused" in err[0]
    records = load_results(results_path(tmp_path))
    assert [r["key"] for r in records] == [configs[0].key(), configs[0].key(), configs[1].key()]
    assert [r["versions"]["superloss"] for r in records] == ["0.1.0", "0.5.0", "0.5.0"]
    runner.run_sweep(configs, tmp_path, progress=False)  # the current version's: all reused
    assert len(load_results(results_path(tmp_path))) == 3
    text = write_report(tmp_path).read_text()
    assert "1 record(s) of superloss 0.1.0 left out" in text
    assert "123.00" not in text and "2 runs" in text

"""The report: summary.json values, report.md tables and comparison, plots, errors and the CLI.

Every results file here is written by hand with known numbers (3 seeds at 80, 82, 84 → mean 82,
sample std 2), so each expected cell is computed by hand, not by the code under test.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from superloss.bench import protocols
from superloss.bench.cli import main
from superloss.bench.config import RunConfig
from superloss.bench.report import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _record(
    method: str,
    noise: float,
    seed: int,
    final: float,
    best: float,
    selected: float,
    *,
    task: str = "classification",
    metric: str = "accuracy",
    params: dict[str, Any] | None = None,
    extra: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One run with a 3-epoch history whose epochs give ``selected``, ``best`` and ``final``."""
    config = RunConfig(
        task=task,
        method=method,
        method_params=params or {},
        noise=noise,
        seed=seed,
        epochs=3,
    )
    extra = extra or {}
    weighted = method == "superloss"
    history = []
    for epoch, value, val in ((1, selected, 0.9), (2, best, 0.5), (3, final, 0.1)):
        entry = {"epoch": epoch, "train_loss": 1.0 / epoch, metric: value, f"val_{metric}": val}
        entry.update(extra)
        if weighted and noise > 0:
            entry["weight_auroc"] = 0.6 + 0.1 * epoch
        history.append(entry)
    histograms = []
    if weighted:
        edges = [round(i * math.e / 40, 6) for i in range(41)]
        for epoch in (1, 3):
            clean = [0] * 40
            corrupted = [0] * 40
            clean[39], clean[20] = 50, 10
            if noise > 0:
                corrupted[2], corrupted[5] = 20, 5
            histograms.append(
                {"epoch": epoch, "edges": edges, "clean": clean, "corrupted": corrupted}
            )
    return {
        "config": config.as_dict(),
        "key": config.key(),
        "versions": {"python": "3.11.7", "torch": "2.14.1", "superloss": "0.1.0"},
        "realised_noise": noise,
        "history": history,
        "final": {metric: final, **extra},
        "best": {metric: best, **extra},
        "selected": {metric: selected, **extra, "epoch": 1},
        "weight_histograms": histograms,
        "wall_time_s": 1.5,
    }


def _write(folder: Path, records: list[dict[str, Any]], tail: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    (folder / "results.jsonl").write_text(lines + tail)
    return folder


# ce beats SuperLoss at the best epoch (86 vs 81) and loses at the final epoch (82 vs 91).
# SuperLoss at noise 0.4 lacks seed 2: an unfinished sweep, n = 2.
CLASSIFICATION = [
    *(_record("ce", 0.0, s, f, b, sel) for s, f, b, sel in
      ((0, 80, 85, 81), (1, 82, 86, 82), (2, 84, 87, 83))),
    *(_record("superloss", 0.0, s, f, b, sel) for s, f, b, sel in
      ((0, 90, 80, 81), (1, 91, 81, 82), (2, 92, 82, 83))),
    *(_record("ce", 0.4, s, f, b, sel) for s, f, b, sel in
      ((0, 60, 70, 65), (1, 62, 70, 66), (2, 64, 70, 67))),
    *(_record("superloss", 0.4, s, f, b, sel) for s, f, b, sel in
      ((0, 70, 75, 66), (1, 74, 75, 66))),
]  # fmt: skip


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = _write(tmp_path_factory.mktemp("report"), CLASSIFICATION)
    assert write_report(folder) == folder / "report.md"
    return folder


def _summary(folder: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((folder / "summary.json").read_text())
    return rows


def _row(rows: list[dict[str, Any]], method: str, noise: float, stat: str) -> dict[str, Any]:
    found = [r for r in rows if (r["method"], r["noise"], r["stat"]) == (method, noise, stat)]
    assert len(found) == 1
    return found[0]


def test_summary_values(report_dir: Path) -> None:
    rows = _summary(report_dir)
    assert len(rows) == 4 * 3  # 4 groups × 1 metric × 3 stats
    expected = {
        ("ce", 0.0, "final"): (82.0, 2.0, 3),
        ("ce", 0.0, "best"): (86.0, 1.0, 3),
        ("ce", 0.0, "selected"): (82.0, 1.0, 3),
        ("superloss", 0.0, "final"): (91.0, 1.0, 3),
        ("superloss", 0.0, "best"): (81.0, 1.0, 3),
        ("ce", 0.4, "best"): (70.0, 0.0, 3),
        ("superloss", 0.4, "final"): (72.0, 2.828427125, 2),  # std of 70, 74 = √8
        ("superloss", 0.4, "selected"): (66.0, 0.0, 2),
    }
    for (method, noise, stat), (mean, std, n) in expected.items():
        row = _row(rows, method, noise, stat)
        assert (row["mean"], row["std"], row["n"]) == (mean, std, n), (method, noise, stat)
        assert row["metric"] == "accuracy"
        assert (row["task"], row["dataset"], row["model"]) == ("classification", "digits", "mlp")
        assert (row["noise_type"], row["config"]["epochs"]) == ("symmetric", 3)
    assert _row(rows, "superloss", 0.4, "final")["seeds"] == [0, 1]


def test_report_tables_and_bold_winner(report_dir: Path) -> None:
    text = (report_dir / "report.md").read_text()
    assert "11 runs" in text
    assert "Higher is better" in text
    assert "ddof = 1" in text and "0 when n = 1" in text
    assert "oracle" in text and "validation labels carry the same noise" in text
    # Final epoch: SuperLoss wins both columns; best epoch: ce wins both.
    assert "| ce | 82.00 ± 2.00 (3) | 62.00 ± 2.00 (3) |" in text
    assert "| superloss | **91.00 ± 1.00 (3)** | **72.00 ± 2.83 (2)** |" in text
    assert "| ce | **86.00 ± 1.00 (3)** | 70.00 ± 0.00 (3) |" in text
    assert "| superloss | 81.00 ± 1.00 (3) | **75.00 ± 0.00 (2)** |" in text
    # Validation-selected: ties in both columns, every tied mean bold.
    assert "| ce | **82.00 ± 1.00 (3)** | **66.00 ± 1.00 (3)** |" in text
    assert "| superloss | **82.00 ± 1.00 (3)** | **66.00 ± 0.00 (2)** |" in text


def test_comparison_says_where_superloss_loses(report_dir: Path) -> None:
    text = (report_dir / "report.md").read_text()
    lines = text.splitlines()

    def line(stat: str, noise: str) -> str:
        found = [ln for ln in lines if ln.startswith(f"| {stat} | {noise} |")]
        assert len(found) == 1
        return found[0]

    final_0 = line("Final epoch", "0")
    assert "+9.00" in final_0 and "3/3" in final_0 and "SuperLoss better, beyond" in final_0
    best_0 = line("Best epoch (oracle)", "0")
    assert "-5.00" in best_0 and "0/3" in best_0 and "SuperLoss worse, beyond" in best_0
    selected_0 = line("Validation-selected", "0")
    assert "+0.00" in selected_0 and "within the seed spread" in selected_0
    # noise 0.4 selected: 66 ± 0 vs 66 ± 1; seeds 0, 1 paired: 66 vs 65 (won), 66 vs 66 (not).
    selected_4 = line("Validation-selected", "0.4")
    assert "1/2" in selected_4 and "within the seed spread" in selected_4
    assert "Best epoch (oracle): SuperLoss is better beyond the spread at noise 0.4; " in text
    assert "worse beyond the spread at noise 0." in text


def test_plots_exist_and_are_linked(report_dir: Path) -> None:
    text = (report_dir / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    kinds = ("_accuracy_vs_noise.png", "_accuracy_per_epoch.png", "_weights_superloss.png",
             "_weight_auroc.png")  # fmt: skip
    for kind in kinds:
        assert sum(link.endswith(kind) for link in links) == 1, kind
    for link in links:
        assert link.startswith("plots/")
        data = (report_dir / link).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    assert sorted(p.name for p in (report_dir / "plots").iterdir()) == sorted(
        Path(link).name for link in links
    )


def test_rebuild_is_identical_and_ignores_torn_line(report_dir: Path, tmp_path: Path) -> None:
    summary = (report_dir / "summary.json").read_bytes()
    report = (report_dir / "report.md").read_bytes()
    torn = _write(tmp_path / "torn", CLASSIFICATION, tail='{"config": {"task": "classif')
    (torn / "plots").mkdir()
    (torn / "plots" / "stale.png").write_bytes(PNG_SIGNATURE)  # from an earlier report
    write_report(torn)
    assert (torn / "summary.json").read_bytes() == summary
    assert (torn / "report.md").read_bytes() == report
    assert not (torn / "plots" / "stale.png").exists()


def test_lower_is_better_picks_the_minimum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_experiment = protocols.experiment

    def experiment(name: str) -> Any:
        if name == "fake-regression":
            return SimpleNamespace(metric="mae", higher_is_better=False)
        return real_experiment(name)

    monkeypatch.setattr(protocols, "experiment", experiment)
    records = [
        _record("plain", 0.2, s, f, f, f, task="fake-regression", metric="mae", extra={"rmse": 2.0})
        for s, f in ((0, 0.5), (1, 0.7))
    ] + [
        _record("superloss", 0.2, s, f, f, f, task="fake-regression", metric="mae",
                extra={"rmse": 3.0})
        for s, f in ((0, 0.2), (1, 0.3))
    ]  # fmt: skip
    folder = _write(tmp_path, records)
    write_report(folder)
    text = (folder / "report.md").read_text()
    assert "Lower is better" in text
    assert "### mae (primary metric)" in text and "### rmse" in text
    assert "| plain | 0.6000 ± 0.1414 (2) |" in text
    assert "| superloss | **0.2500 ± 0.0707 (2)** |" in text
    # The second metric, also lower-is-better: the plain loss's 2.0 wins.
    assert "| plain | **2.000 ± 0.000 (2)** |" in text
    assert "| superloss | 3.000 ± 0.000 (2) |" in text
    mae = [ln for ln in text.splitlines() if ln.startswith("| Final epoch | 0.2 |")]
    assert len(mae) == 1 and "-0.3500" in mae[0] and "SuperLoss better, beyond" in mae[0]
    rows = _summary(folder)
    assert {(r["metric"], r["higher_is_better"]) for r in rows} == {("mae", False), ("rmse", False)}
    assert len(rows) == 2 * 2 * 3


def test_labels_show_hyper_parameters_only_where_they_differ(tmp_path: Path) -> None:
    varied = [
        _record("ce", 0.0, 0, 80, 80, 80),
        _record("superloss", 0.0, 0, 85, 85, 85),
        _record("superloss", 0.0, 0, 90, 90, 90, params={"lam": 0.5}),
        _record("ce", 0.4, 0, 70, 70, 70),
    ]
    write_report(_write(tmp_path / "varied", varied))
    text = (tmp_path / "varied" / "report.md").read_text()
    assert "| ce | 80.00 ± 0.00 (1) | 70.00 ± 0.00 (1) |" in text  # alone: no bold
    assert "| superloss(lam=auto-hold) | 85.00 ± 0.00 (1) | — |" in text
    assert "| superloss(lam=0.5) | **90.00 ± 0.00 (1)** | — |" in text
    assert "one seed: spread unknown, not judged" in text
    assert {r["label"] for r in _summary(tmp_path / "varied")} == {
        "ce",
        "superloss(lam=auto-hold)",
        "superloss(lam=0.5)",
    }

    constant = [_record("ce", 0.0, 0, 80, 80, 80), varied[2]]
    write_report(_write(tmp_path / "constant", constant))
    text = (tmp_path / "constant" / "report.md").read_text()
    assert "| superloss | **90.00 ± 0.00 (1)** |" in text
    assert "off their defaults, in every row of the method: superloss lam=0.5." in text


def test_old_records_without_newer_fields_group_with_new_ones(tmp_path: Path) -> None:
    old = _record("ce", 0.0, 1, 84, 84, 84)
    del old["config"]["momentum"]  # as if written before the field existed (at its default)
    records = [_record("ce", 0.0, 0, 80, 80, 80), old, _record("ce", 0.0, 2, 82, 82, 82)]
    folder = _write(tmp_path, records)
    write_report(folder)
    assert (_row(_summary(folder), "ce", 0.0, "final")["n"]) == 3


def test_no_complete_record_is_an_error(tmp_path: Path) -> None:
    folder = _write(tmp_path, [{"key": "x", "config": {"task": "classification"}}], tail='{"tor')
    with pytest.raises(ValueError, match=re.escape(str(folder / "results.jsonl"))):
        write_report(folder)
    with pytest.raises(ValueError, match="no complete result record"):
        write_report(tmp_path / "missing")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write(tmp_path / "results", CLASSIFICATION[:6])
    assert main(["report", str(folder)]) == 0
    assert f"report: {folder / 'report.md'}" in capsys.readouterr().out
    assert (folder / "report.md").is_file() and (folder / "summary.json").is_file()
    assert main(["report", str(tmp_path / "nonexistent")]) == 2
    assert "holds no results.jsonl" in capsys.readouterr().err


def test_report_gives_elapsed_wall_time_and_summed_run_time_apart(tmp_path: Path) -> None:
    from superloss.bench.timing import record_session

    folder = _write(tmp_path / "timed", CLASSIFICATION)  # 11 runs of 1.5 s: 16.5 s summed
    text = (write_report(folder)).read_text()
    assert "- Elapsed wall time: not recorded (no `sessions.jsonl` in this folder)." in text
    assert "- Summed run time: 16.5 s, the 11 runs' own times added up (1.5 s per run" in text
    # Two sessions of the command (an interrupted one, then its rerun): 100 s + 30 s elapsed.
    record_session(folder, 1_000.0, 1_100.0, runs=8, jobs=2, stopped_by="SIGINT")
    record_session(folder, 5_000.0, 5_030.0, runs=3, jobs=2)
    text = (write_report(folder)).read_text()
    assert (
        "- Elapsed wall time: 2 min 10 s, from the command's start to its last run, summed over "
        "its 2 sessions in this folder (`sessions.jsonl`)." in text
    )
    assert "- Summed run time: 16.5 s" in text and "left no record" not in text
    # A session killed before it could record itself: its runs are named, not timed.
    (folder / "sessions.jsonl").write_text(
        (folder / "sessions.jsonl").read_text().splitlines()[0] + "\n" + '{"started_at": "x", "ela'
    )
    text = (write_report(folder)).read_text()
    assert "over its 1 session in this folder" in text
    assert "- 3 run(s) finished in sessions that left no record" in text


def test_table_options_split_tables_and_task_options_label_rows(tmp_path: Path) -> None:
    """Regression's --target-scale changes the MAE's units: those runs get a table of their own.
    A task option that differs between rows labels them by its own name."""

    def regression(method: str, value: float, seed: int = 0, **task_params: Any) -> dict[str, Any]:
        record = _record(method, 0.4, seed, value, value, value, task="regression", metric="mae")
        record["config"]["task_params"] = {"base_loss": "l2", **task_params}
        record["key"] = RunConfig.from_dict(record["config"]).key()
        return record

    records = [
        regression("plain", 1.0),
        regression("plain", 0.9, base_loss="l1"),
        regression("plain", 10.0, target_units=True, target_scale=10.0),
        regression("superloss", 8.0, target_units=True, target_scale=10.0),
        regression("plain", 1.1, seed=1, target_units=False, target_scale=1.0),  # the defaults
    ]
    folder = _write(tmp_path, records)
    text = write_report(folder).read_text()
    titles = [line for line in text.splitlines() if line.startswith("## ")]
    assert titles == [
        "## regression · digits · mlp · symmetric noise · 3 epochs",
        "## regression · digits · mlp · symmetric noise · 3 epochs · target_scale=10.0 · "
        "target_units=True",
    ]
    assert "| plain [base_loss=l1] | **0.900 ± 0.000 (1)** |" in text
    assert "| plain [base_loss=l2] | 1.050 ± 0.071 (2) |" in text  # options at their defaults
    assert "| superloss | **8.00 ± 0.00 (1)** |" in text  # alone in its table with plain ×10

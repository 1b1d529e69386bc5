"""The ``superloss`` command: help, bad input (one line, exit 2, nothing written), a tiny sweep."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from superloss.bench.cli import main

TINY = ["--epochs", "1", "--seeds", "1", "--train-size", "100", "--no-progress"]


def _bench(out: Path, *extra: str) -> list[str]:
    return ["bench", "classification", "--out", str(out), *TINY, *extra]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "nope"], "unknown dataset 'nope'; expected one of: .*digits"),
        (["--methods", "ce,nope"], "unknown method 'nope'"),
        (["--model", "nope"], "unknown model 'nope'"),
        (["--noise-type", "nope"], "unknown noise type 'nope'"),
        (["--noise", "0,1.0"], r"noise rate 1.0 is outside \[0, 1\)"),
        (["--noise", "-0.2"], r"outside \[0, 1\)"),
        (["--noise", "a,b"], "comma-separated rates"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--dataset", "cifar10", "--data-root", "/nonexistent/folder"], "does not exist"),
        (["--dataset", "cifar10"], "needs --data-root"),
        (["--device", "tpu"], "--device must be cpu or cuda"),
        (["--gce-q", "0.5"], "'gce' is not in --methods"),
        (["--bogus-flag"], "unrecognized arguments"),
        (["--noise-type", "human-worst", "--noise", "0"], "human"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert main(_bench(out, *extra)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("superloss")
    assert re.search(message, err), err
    assert not out.exists()


def test_missing_out_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "classification"]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", [[], ["bench"], ["bench", "classification"], ["reproduce"], ["report"]]
)
def test_help_on_every_subcommand(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: superloss" in capsys.readouterr().out


def test_tiny_sweep_writes_results_summary_and_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert (
        main(_bench(out, "--noise", "0,0.4", "--methods", "ce,superloss", "--superloss-lam", "0.5"))
        == 0
    )
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4
    superloss_runs = [
        json.loads(line) for line in lines if json.loads(line)["config"]["method"] == "superloss"
    ]
    assert all(r["config"]["method_params"] == {"lam": 0.5} for r in superloss_runs)
    assert (out / "summary.json").is_file() and (out / "report.md").is_file()
    # The same command again runs nothing new; a different sweep is refused unless --add.
    assert (
        main(_bench(out, "--noise", "0,0.4", "--methods", "ce,superloss", "--superloss-lam", "0.5"))
        == 0
    )
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    assert main(_bench(out, "--noise", "0.2")) == 2
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    assert main(_bench(out, "--noise", "0.2", "--add", "--no-report")) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 6  # ce and superloss at 0.2


def test_python_dash_m_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "superloss.bench", "bench", "classification", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "--superloss-lam" in done.stdout


def test_superloss_lam_takes_auto_and_base_params_take_json(tmp_path: Path) -> None:
    from superloss.bench.cli import _sweep_from_args, build_parser

    args = build_parser().parse_args(
        [*_bench(tmp_path / "x", "--methods", "superloss", "--superloss-lam", "auto")]
    )
    configs = _sweep_from_args(args, None).configs()
    assert configs and all(c.method_params == {"lam": "auto"} for c in configs)
    out = tmp_path / "base"
    argv = ["--methods", "superloss", "--superloss-base", "gce", "--superloss-base-params",
            '{"q": 0.5}', "--no-report", "--noise", "0.4"]  # fmt: skip
    assert main(_bench(out, *argv)) == 0
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["config"]["method_params"] == {"base": "gce", "base_params": {"q": 0.5}}


def test_bad_json_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--methods", "superloss", "--superloss-base-params", "{q: 0.5}"]
    assert main(_bench(tmp_path / "out", *argv)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "expected a JSON object" in err

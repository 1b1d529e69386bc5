"""The ``superloss`` command: help, bad input (one line, exit 2, nothing written), a tiny sweep."""

from __future__ import annotations

import argparse
import json
import os
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
        (["--noise", "0,1.0"], r"--noise rates must be in \[0, 1\), got 1.0"),
        (["--noise", "-0.2"], r"--noise rates must be in \[0, 1\), got -0.2"),
        (["--noise", "a,b"], "comma-separated rates"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--dataset", "cifar10", "--data-root", "/nonexistent/folder"], "does not exist"),
        (["--dataset", "cifar10"], "needs --data-root"),
        (["--device", "tpu"], "--device must be cpu or cuda"),
        (["--gce-q", "0.5"], "'gce' is not in --methods"),
        (["--bogus-flag"], "unrecognized arguments"),
        (["--noise-type", "human-worst", "--noise", "0"], "human"),
        # Method hyper-parameters, from each method's declaration.
        (
            ["--methods", "superloss", "--superloss-lam", "-1"],
            "^superloss: error: --superloss-lam must be a number > 0 or one of auto, auto-hold, got -1$",
        ),
        (
            ["--methods", "superloss", "--superloss-lam", "abc"],
            "^superloss: error: --superloss-lam must be one of auto, auto-hold, or a number > 0, "
            "got 'abc'$",
        ),
        (
            ["--methods", "superloss", "--superloss-lam", "inf"],
            "--superloss-lam must be a finite number or one of auto, auto-hold, got inf",
        ),
        (
            ["--methods", "superloss", "--superloss-tau", "bogus"],
            "^superloss: error: --superloss-tau must be one of auto, log_classes, ema, global, or a number, got 'bogus'$",
        ),
        (
            ["--methods", "superloss", "--superloss-ema-past-weight", "1"],
            r"--superloss-ema-past-weight must be in \[0, 1\), got 1",
        ),
        (
            ["--methods", "gce", "--gce-q", "5"],
            r"^superloss: error: --gce-q must be in \(0, 1\], got 5$",
        ),
        (["--methods", "gce", "--gce-q", "x"], "--gce-q must be a number, got 'x'"),
        (
            ["--methods", "superloss", "--superloss-normalize", "yes"],
            "^superloss: error: --superloss-normalize must be true or false, got 'yes'$",
        ),
        (["--methods", "spl", "--spl-growth", "0"], "--spl-growth must be a number > 0, got 0"),
        # What the task takes.
        (
            ["--model", "detector"],
            "^superloss: error: --model must be one of cnn, mlp, resnet18 for the classification task, got 'detector'$",
        ),
        (
            ["--noise-type", "uniform"],
            "--noise-type must be one of .*symmetric for the classification task, got 'uniform'",
        ),
        (["--noise-type", "box-flip"], "--noise-type must be one of .* got 'box-flip'"),
        # Numeric ranges.
        (["--lr", "-1"], "--lr must be a number > 0, got -1.0"),
        (["--lr", "nan"], "--lr must be a finite number, got nan"),
        (["--momentum", "1"], r"--momentum must be in \[0, 1\), got 1.0"),
        (["--weight-decay", "-0.1"], "--weight-decay must be a number >= 0"),
        (["--train-size", "0"], "--train-size must be at least 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--nproc", "0"], "--nproc must be at least 1, got 0"),
        (["--jobs", "0"], "--jobs must be at least 1, got 0"),
        (["--seeds", "x"], "argument --seeds: invalid int value: 'x'"),
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
    assert re.search(message, err.strip()), err
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


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a refused command prints (exit 2)."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _tree(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_out_must_be_a_usable_folder_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    other = tmp_path / "other"
    assert main(_bench(other, "--methods", "ce", "--noise", "0.2", "--no-report")) == 0
    before = _tree(tmp_path)
    line = _refused(_bench(afile), capsys)
    assert line == f"superloss: error: --out must be a folder, got '{afile}': an existing file"
    line = _refused(_bench(afile / "sub"), capsys)
    assert (
        line
        == f"superloss: error: --out must be a folder, got '{afile / 'sub'}': {afile} is a file"
    )
    line = _refused(_bench(Path("/proc/superloss-out")), capsys)
    assert line.startswith(
        "superloss: error: --out must be a folder this user can create or write in, got "
        "'/proc/superloss-out': cannot write in /proc ("
    )
    line = _refused(_bench(other, "--methods", "ce", "--noise", "0.4"), capsys)
    assert line == (
        f"superloss: error: --out {other} holds a different sweep (1 runs); pass --add to add "
        "these runs to it, or choose another --out"
    )
    for bad in (["--superloss-lam", "-1"], ["--model", "detector"], ["--jobs", "0"]):
        _refused(_bench(other, "--methods", "ce,superloss", "--noise", "0.2", *bad), capsys)
    assert _tree(tmp_path) == before and afile.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in a read-only folder")
def test_out_in_a_folder_without_write_permission_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    line = _refused(_bench(locked / "out"), capsys)
    assert f"cannot write in {locked} (Permission denied)" in line
    assert list(locked.iterdir()) == []


def test_reproduce_checks_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    for argv, message in [
        (["--jobs", "0"], "--jobs must be at least 1, got 0"),
        (["--device", "tpu"], "--device must be cpu or cuda, got 'tpu'"),
        (["--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
        (["--seeds", "0"], "--seeds must be at least 1, got 0"),
    ]:
        assert message in _refused(["reproduce", "--out", str(out), *argv], capsys)
    assert not out.exists()


def test_reproduce_seeds_sets_every_sweeps_seed_count_and_reuses_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from superloss.bench import presets

    tiny = {"epochs": 1, "train_size": 100}
    monkeypatch.setitem(
        presets.PRESETS,
        "quick",
        lambda: [
            presets.Sweep("classification", "digits", ("ce",), (0.0,), settings=dict(tiny)),
            presets.Sweep("classification", "digits", ("gce",), (0.4,), settings=dict(tiny)),
        ],
    )
    out = tmp_path / "out"
    argv = ["reproduce", "--out", str(out), "--no-report", "--no-progress", "--jobs", "1"]

    def seeds() -> list[tuple[str, int]]:
        lines = (out / "results.jsonl").read_text().splitlines()
        configs = [json.loads(line)["config"] for line in lines]
        return sorted((config["method"], config["seed"]) for config in configs)

    assert main([*argv, "--seeds", "1"]) == 0
    assert seeds() == [("ce", 0), ("gce", 0)]
    first = (out / "results.jsonl").read_text()
    assert main([*argv, "--seeds", "2", "--add"]) == 0
    assert seeds() == [("ce", 0), ("ce", 1), ("gce", 0), ("gce", 1)]
    assert (out / "results.jsonl").read_text().startswith(first)  # seed 0 reused, not rerun


def test_superloss_lam_auto_passes_the_declaration_and_is_checked_by_the_core(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from superloss import SuperLoss
    from superloss.bench.methods.superloss import SuperLossHyperParameters
    from superloss.bench.options import parse

    assert parse(SuperLossHyperParameters, {"lam": "auto"}, "superloss").lam == "auto"
    try:
        SuperLoss(lam="auto")  # type: ignore[arg-type]
        core_has_auto = True
    except ValueError:
        core_has_auto = False
    out = tmp_path / "out"
    code = main(_bench(out, "--methods", "superloss", "--superloss-lam", "auto", "--no-report"))
    if core_has_auto:  # a core with an automatic λ: the run goes through
        assert code == 0 and (out / "results.jsonl").is_file()
    else:  # refused up front by the core's own check, not mid-sweep
        assert code == 2 and not out.exists()
        assert "SuperLoss refuses {'lam': 'auto'}" in capsys.readouterr().err


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # help lines unwrapped


def _help(*command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_task_help_lists_only_what_the_task_takes(
    capsys: pytest.CaptureFixture[str], wide: None
) -> None:
    classification = _help("bench", "classification", capsys=capsys)
    assert "one of cnn, mlp, resnet18 (default per dataset: digits" in classification
    assert "detector" not in classification and "box-flip" not in classification
    assert "--gce-q" in classification and "--superloss-lam" in classification
    regression = _help("bench", "regression", capsys=capsys)
    assert "one of heavy-tailed, uniform (default uniform)" in regression
    for flag in ("--gce-q", "--sce-alpha", "--bootstrap-beta", "--data-params-lr-class"):
        assert flag not in regression  # classification-only methods
    assert "asymmetric" not in regression and "cifar10" not in regression
    detection = _help("bench", "detection", capsys=capsys)
    assert "one of detector, fasterrcnn (default detector)" in detection
    assert "(default box-mixed)" in detection and "training epochs (default 30)" in detection
    noise_detection = _help("bench", "noise-detection", capsys=capsys)
    assert "of superloss, ce, cleanlab" in noise_detection and "--superloss-lam" in noise_detection
    assert "--gce-q" not in noise_detection


def test_help_shows_every_default_value(wide: None) -> None:
    from superloss.bench.cli import build_parser
    from superloss.bench.presets import DATASET_DEFAULTS

    def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        (found,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return dict(found.choices)

    tasks = commands(commands(build_parser())["bench"])
    for name, sub in tasks.items():
        for action in sub._actions:
            if action.nargs == 0 or action.required:  # flags and --help; --out
                continue
            assert "default" in (action.help or ""), (name, action.option_strings)
            assert "default per dataset)" not in action.help, (name, action.option_strings)
        text = sub.format_help()
        assert "number of seeds: 0, 1, … (default 3)" in text
    classification = tasks["classification"].format_help()
    # The plain loss under the name each task's default uses.
    assert "of bootstrap, ce, data-params" in " ".join(classification.split())
    regression = " ".join(tasks["regression"].format_help().split())
    assert "of plain, spl, superloss (default plain,superloss)" in regression
    epochs = DATASET_DEFAULTS["digits"]["epochs"], DATASET_DEFAULTS["mnist"]["epochs"]
    assert f"digits, mnist1d, utkface: {epochs[0]}; " in classification
    assert f"mnist, mnist-rotation: {epochs[1]}" in classification


def test_reproduce_help_says_what_each_preset_runs(
    capsys: pytest.CaptureFixture[str], wide: None
) -> None:
    from superloss.bench.presets import preset

    text = _help("reproduce", capsys=capsys)
    quick = preset("quick")
    runs = sum(len(sweep.configs()) for sweep in quick)
    assert (
        f"--preset quick: {runs} runs, meant to take ≤ 10 minutes on 2 CPU cores, under load."
        in text
    )
    assert "--preset full:" in text
    assert (
        "classification on digits (mlp, 60 epochs, symmetric noise): bootstrap, ce, data-params, "
        "gce, sce, spl, superloss × noise 0, 0.4, 0.6 × 3 seeds = 63 runs" in text
    )
    assert (
        "classification on digits (mlp, 60 epochs, asymmetric noise): superloss (base gce) and its "
        "grid × noise 0.4 × 3 seeds = 15 runs" in text
    )
    every = [
        sweep for name in ("quick", "full", "tune-quick", "tune-full") for sweep in preset(name)
    ]
    assert text.count("  - ") == len(every)


def test_a_method_flag_of_another_task_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    line = _refused(["bench", "regression", "--out", str(out), "--gce-q", "0.5"], capsys)
    assert line == (
        "superloss: error: --gce-q: the regression task does not take method 'gce'; it takes "
        "ce, spl, superloss"
    )
    line = _refused(["bench", "regression", "--out", str(out), "--bogus", "1"], capsys)
    assert line == "superloss: error: unrecognized arguments: --bogus 1"
    assert not out.exists()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from superloss import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"superloss {__version__}\n"


def test_bare_commands_list_what_they_take(capsys: pytest.CaptureFixture[str]) -> None:
    from superloss.bench.protocols.base import experiment_names

    assert main([]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[:2] == ["superloss: a command is needed", "commands:"]
    assert [line.split()[0] for line in lines[2:6]] == ["bench", "tune", "reproduce", "report"]
    assert "`superloss COMMAND --help`" in lines[6]
    assert main(["bench"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[:2] == ["superloss: a task is needed", "tasks:"]
    assert [line.split()[0] for line in lines[2:-1]] == experiment_names()
    assert "Image classification with noisy training labels" in lines[2]


def test_superloss_lam_takes_auto_and_base_params_take_json(tmp_path: Path) -> None:
    from superloss.bench.cli import _sweep_from_args, build_parser

    for mode in ("auto", "auto-hold"):
        args = build_parser().parse_args(
            [*_bench(tmp_path / "x", "--methods", "superloss", "--superloss-lam", mode)]
        )
        configs = _sweep_from_args(args, None).configs()
        assert configs and all(c.method_params == {"lam": mode} for c in configs)
    for word, value in (("true", True), ("False", False)):
        argv = ["--methods", "superloss", "--superloss-normalize", word]
        configs = _sweep_from_args(build_parser().parse_args(_bench(tmp_path / "x", *argv)), None)
        assert all(c.method_params == {"normalize": value} for c in configs.configs())
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
    assert (
        len(err.strip().splitlines()) == 1
        and "--superloss-base-params expects a JSON object" in err
    )


def test_every_sweep_command_can_skip_the_report(tmp_path: Path) -> None:
    from superloss.bench.cli import build_parser

    parser = build_parser()
    out = str(tmp_path / "out")
    for argv in (["bench", "classification"], ["tune", "classification"], ["reproduce"]):
        assert parser.parse_args([*argv, "--out", out, "--no-report"]).no_report is True
        assert parser.parse_args([*argv, "--out", out]).no_report is False

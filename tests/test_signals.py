"""Ctrl-C and SIGTERM on the command with worker (``--jobs``) and distributed (``--nproc``) processes.

Real processes, as a terminal makes them: the command is started in a process group of its own, and
the signal goes to the whole group once a run has finished and children are training. Then: the
command ends within seconds with one line and the shell's exit code, no process of the group is
left, the finished run is kept, and the same command again completes the sweep without duplicates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from superloss.bench.processes import GRACE_S
from superloss.bench.results import load_results, results_path

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").is_file(), reason="reads process groups from /proc (Linux)"
)

# Runs of a second or two each (process start-up aside): ce and superloss, for each seed.
SWEEP = [
    "bench", "classification", "--methods", "ce,superloss", "--noise", "0.4", "--epochs", "20",
    "--train-size", "300", "--no-report", "--no-progress",
]  # fmt: skip
TIMEOUT_S = 120.0


def _group(pgid: int) -> list[str]:
    """The live processes of process group ``pgid``: 'pid command' each (zombies left out)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        state, _, _, group = stat[stat.rindex(")") + 2 :].split()[:4]
        if int(group) == pgid and state != "Z":
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            found.append(f"{entry.name} {name}")
    return found


def _wait(condition: object, what: str, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():  # type: ignore[operator]
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the command ended before {what}: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _command(out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "superloss.bench", *SWEEP, *extra, "--out", str(out)]


def _interrupt(out: Path, extra: list[str], signals: list[int]) -> tuple[int, str, float]:
    """Start the command in a new process group, send ``signals`` (0.2 s apart) to the group once a
    run is finished and children are running; its exit code, stderr and seconds to end."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        _command(out, extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        finished = lambda: len(load_results(results_path(out))) >= 1  # noqa: E731
        _wait(finished, "a finished run", process)
        # The command and at least two children (workers or ranks) training.
        _wait(lambda: len(_group(process.pid)) >= 3, "children at work", process)
        sent = time.monotonic()
        for number, signum in enumerate(signals):
            if number:
                time.sleep(0.2)
            os.killpg(process.pid, signum)
        _, stderr = process.communicate(timeout=TIMEOUT_S)
        took = time.monotonic() - sent
        _wait(lambda: not _group(process.pid), "every process of the group to end")
        return process.returncode, stderr, took
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


@pytest.mark.parametrize(
    ("extra", "signals", "code"),
    [
        # Four runs, two at a time: when the first finishes, two are in flight. The second Ctrl-C
        # comes while the command stops its workers.
        (["--jobs", "2", "--seeds", "2"], [signal.SIGINT, signal.SIGINT], 130),
        (["--jobs", "2", "--seeds", "2"], [signal.SIGTERM], 143),
        # Two runs, each on two processes: when the first finishes, the second is in flight.
        (["--nproc", "2", "--seeds", "1"], [signal.SIGINT], 130),
        (["--nproc", "2", "--seeds", "1"], [signal.SIGTERM], 143),
    ],
    ids=["jobs-SIGINT-twice", "jobs-SIGTERM", "nproc-SIGINT", "nproc-SIGTERM"],
)
def test_a_stopped_sweep_ends_cleanly_and_resumes(
    tmp_path: Path, extra: list[str], signals: list[int], code: int
) -> None:
    out = tmp_path / "out"
    returncode, stderr, took = _interrupt(out, extra, signals)
    assert returncode == code, stderr
    name = signal.Signals(signals[0]).name
    assert stderr.splitlines() == [
        f"superloss: stopped by {name}; the runs finished are kept in "
        f"{out / 'results.jsonl'}, rerun the same command to resume"
    ], stderr  # the whole of it when not
    # Every child stops at SIGTERM or is killed GRACE_S later; the rest is the command's exit.
    assert took < GRACE_S + 15.0, took
    runs = 2 * int(extra[extra.index("--seeds") + 1])
    kept = load_results(results_path(out))
    assert 1 <= len(kept) < runs
    (session,) = [json.loads(line) for line in (out / "sessions.jsonl").read_text().splitlines()]
    assert session["stopped_by"] == name and session["runs"] == len(kept)

    again = subprocess.run(_command(out, extra), capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    after = load_results(results_path(out))
    keys = [record["key"] for record in after]
    assert len(keys) == runs and len(set(keys)) == runs  # the sweep complete, no run twice
    assert after[: len(kept)] == kept  # what was kept is untouched

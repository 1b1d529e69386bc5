"""``torchrun`` launches the same command on several nodes: two simulated on localhost (gloo, CPU).

Two ``torchrun --nnodes 2 --node-rank 0/1 --nproc-per-node 1`` processes (``python -m
torch.distributed.run`` is torchrun) meet through the ``env://`` rendezvous; checked as the
``--nproc`` test checks a spawned run: the single-process τ, one record written by rank 0, resume.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from superloss.bench import runner
from superloss.bench.config import RunConfig
from superloss.bench.results import load_results, results_path

SWEEP = [
    "bench", "classification", "--dataset", "digits", "--methods", "superloss",
    "--superloss-tau", "ema", "--noise", "0.4", "--epochs", "2", "--train-size", "150",
    "--seeds", "1", "--no-progress", "--no-report",
]  # fmt: skip
# The same run in one process: 5 global batches of 32, the last one partial (22).
SINGLE = RunConfig(
    method="superloss", method_params={"tau": "ema"}, noise=0.4, epochs=2, train_size=150
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _torchrun(node: int, port: int, out: Path) -> list[str]:
    """One simulated node's command: torchrun, one process, rendezvous at localhost:port."""
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
        "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
    ]  # fmt: skip
    return [*torchrun, "-m", "superloss.bench", *SWEEP, "--out", str(out)]


def _two_nodes(out: Path) -> None:
    """One torchrun per simulated node, started together; both must finish cleanly."""
    port = _free_port()
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            _torchrun(node, port, out),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
        )
        for node in (0, 1)
    ]
    try:
        outputs = [node.communicate(timeout=600)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output


@pytest.mark.slow
def test_two_nodes_on_localhost_match_the_single_process_tau(tmp_path: Path) -> None:
    single = runner.run(SINGLE)
    _two_nodes(tmp_path)
    records = load_results(results_path(tmp_path))
    assert len(records) == 1  # written once, by rank 0
    record = records[0]
    assert record["config"]["nproc"] == 2  # torchrun's world size
    assert record["key"] == RunConfig(**{**SINGLE.as_dict(), "nproc": 2}).key()
    # Same global batches and a τ all-reduced over the ranks: the single-process trajectory.
    for one, two in zip(single.history, record["history"], strict=True):
        assert two["tau"] == pytest.approx(one["tau"], rel=1e-5)
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-3)
    # The σ histogram is gathered over both ranks: every training sample counted once.
    histogram = record["weight_histograms"][-1]
    assert sum(histogram["clean"]) + sum(histogram["corrupted"]) == 150
    # Resume: rank 0 finds the run finished and tells the other rank; nothing runs again.
    _two_nodes(tmp_path)
    assert len(load_results(results_path(tmp_path))) == 1

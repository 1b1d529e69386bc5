"""The two entry points: :func:`run` (one run of a config) and :func:`run_sweep` (every unfinished run
of a list, each result appended atomically to ``results.jsonl``).

:func:`run` dispatches the config to its protocol (``protocols/``), which trains through the one
trainer (``engine.py``). With ``nproc > 1`` it spawns that many processes that each run the same
config in one process group; under ``torchrun`` the processes already exist and share a group, and
:func:`run_sweep` runs every config on every rank, rank 0 alone writing results.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import superloss
from superloss.bench import distributed
from superloss.bench.config import RunConfig
from superloss.bench.engine import EpochCallbackFn, single_thread
from superloss.bench.protocols import experiment
from superloss.bench.record import RunRecord
from superloss.bench.results import append_result, finished_keys, other_versions, results_path


def run(config: RunConfig, on_epoch: EpochCallbackFn | None = None) -> RunRecord:
    """Carry out one run of ``config`` and return its record (rank 0's, when distributed).

    Single-threaded on CPU: same config and seed ⇒ same numbers on any machine.
    """
    world = distributed.world()[1]
    if config.nproc > 1 and world == 1:
        return _spawned(config)
    if config.nproc != world:
        raise ValueError(
            f"config.nproc is {config.nproc} but the process group holds {world} processes"
        )
    protocol = experiment(config.task).protocol(config)
    with single_thread(torch.device(config.device)):
        return protocol.run(on_epoch)


def _rank_worker(rank: int, config: RunConfig, init_file: str, result_file: str) -> None:
    """One of ``config.nproc`` spawned processes: the run on this rank; rank 0 keeps the record."""
    device = distributed.local_device(config.device, rank)
    with distributed.process_group(device, f"file://{init_file}", rank, config.nproc):
        record = run(dataclasses.replace(config, device=device))
        if rank == 0:
            record.config = dataclasses.replace(record.config, device=config.device)
            Path(result_file).write_text(json.dumps(record.as_dict()))


def _spawned(config: RunConfig) -> RunRecord:
    """Train ``config`` on ``config.nproc`` new processes (gloo on CPU, nccl on CUDA)."""
    with tempfile.TemporaryDirectory() as folder:
        init_file, result_file = Path(folder, "init"), Path(folder, "record.json")
        distributed.spawn(_rank_worker, config.nproc, (config, str(init_file), str(result_file)))
        return RunRecord.from_dict(json.loads(result_file.read_text()))


def _label(config: RunConfig) -> str:
    return f"{config.task}/{config.dataset} {config.method} {config.noise_type}={config.noise} s{config.seed}"


def _summary_line(record: RunRecord) -> str:
    metric = experiment(record.config.task).metric
    return (
        f"{metric} final {record.final[metric]:.2f}, best {record.best[metric]:.2f} "
        f"({record.wall_time_s or 0.0:.1f} s)"
    )


def _other_versions_line(path: Path, counts: dict[str, int]) -> str:
    held = ", ".join(f"{n} of superloss {v}" for v, n in sorted(counts.items()))
    return (
        f"{path} holds results of other versions ({held}): not reused; their runs are run again "
        f"with superloss {superloss.__version__}, and the report uses this version's"
    )


def run_sweep(
    configs: Sequence[RunConfig], out_dir: Path, progress: bool = True, jobs: int = 1
) -> list[RunRecord]:
    """Run every config not already finished in ``out_dir/results.jsonl``; return the new records.

    Each finished run is appended as one line, atomically, by this process only (rank 0 under
    torchrun), so an interrupted sweep loses at most the runs in flight and a rerun of the same
    command picks up where it stopped. Runs finished by another superloss version are not reused
    (one line says so): they are run again, and their old lines stay in the file. ``jobs`` > 1 trains that many runs at once in worker processes
    (each single-threaded); a run's numbers do not depend on it.
    """
    path = results_path(out_dir)
    rank, world = distributed.world()
    if world > 1 and jobs > 1:
        raise ValueError("--jobs must be 1 under torchrun: every process trains each run together")
    done = finished_keys(path, superloss.__version__) if rank == 0 else set()
    if rank == 0 and (older := other_versions(path, superloss.__version__)):
        print(_other_versions_line(path, older), file=sys.stderr, flush=True)
    pending = distributed.broadcast([c for c in configs if c.key() not in done])
    bar = _Progress(len(configs), len(configs) - len(pending), progress and rank == 0)
    records: list[RunRecord] = []

    def finish(record: RunRecord) -> None:
        if rank == 0:
            append_result(path, record.as_dict())
        records.append(record)
        bar.set_description(_label(record.config))
        bar.update(1, _summary_line(record))

    try:
        if jobs > 1 and len(pending) > 1:
            _run_in_workers(pending, jobs, finish)
        else:
            for config in pending:
                bar.set_description(_label(config))
                finish(
                    run(config, on_epoch=None if config.nproc > 1 else bar.epoch_callback(config))
                )
    finally:
        bar.close()
    return records


def _run_in_workers(configs: Sequence[RunConfig], jobs: int, finish: Any) -> None:
    """``jobs`` runs at a time in spawned worker processes, each finished one handed to ``finish``."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        running = {pool.submit(run, config) for config in configs}
        while running:
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                finish(future.result())


class _Progress:
    """A tqdm bar on a terminal; one plain line per finished run otherwise (logs, CI)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, done, enabled
        self.description = ""
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, initial=done, unit="run", dynamic_ncols=True, mininterval=0.5
            )

    def epoch_callback(self, config: RunConfig) -> EpochCallbackFn:
        """Shows the epoch and the primary metric of the run in progress."""
        metric = experiment(config.task).metric

        def show(epoch: int, entry: dict[str, float]) -> None:
            value = entry.get(metric, float("nan"))
            self.set_postfix_str(f"epoch {epoch}/{config.epochs} {metric}={value:.2f}")

        return show

    def set_description(self, text: str) -> None:
        self.description = text
        if self.bar is not None:
            self.bar.set_description(text, refresh=False)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def update(self, count: int, summary: str = "") -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
        elif self.enabled:
            print(
                f"[{self.done}/{self.total}] {self.description}: {summary}",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

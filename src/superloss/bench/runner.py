"""The two entry points: :func:`run` (one run of a config) and :func:`run_sweep` (every unfinished run
of a list, each result appended atomically to ``results.jsonl``).

:func:`run` dispatches the config to its protocol (``protocols/``), which trains through the one
trainer (``engine.py``). With ``nproc > 1`` it spawns that many processes that each run the same
config in one process group; under ``torchrun`` the processes already exist and share a group, and
:func:`run_sweep` runs every config on every rank, rank 0 alone writing results. Spawned processes
(ranks, and the workers of ``jobs > 1``) are stopped with the command (``processes.py``).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

import superloss
from superloss.bench import distributed
from superloss.bench.config import RunConfig
from superloss.bench.engine import EpochCallbackFn, single_thread
from superloss.bench.processes import Child, ChildFailed, Children, Stopped
from superloss.bench.protocols import experiment
from superloss.bench.record import RunRecord
from superloss.bench.results import append_result, finished_keys, other_versions, results_path
from superloss.bench.timing import duration, record_session

# What a spawned process sends its parent: (STARTED,) when a worker begins a run, (EPOCH, epoch,
# entry) after each epoch of its run, and (RECORD, record as a dict) when the run is finished.
STARTED, EPOCH, RECORD = "started", "epoch", "record"
# Without a terminal, a progress line per finished run, and one for the epoch of a run in progress
# when this long has passed since the last line (long runs are never silent for longer).
PROGRESS_EVERY_S = 10.0


def run(config: RunConfig, on_epoch: EpochCallbackFn | None = None) -> RunRecord:
    """Carry out one run of ``config`` and return its record (rank 0's, when distributed).

    Single-threaded on CPU: same config and seed ⇒ same numbers on any machine. ``on_epoch(epoch,
    entry)`` is called after each epoch (rank 0's, when ``nproc > 1``).
    """
    world = distributed.world()[1]
    if config.nproc > 1 and world == 1:
        return _spawned(config, on_epoch)
    if config.nproc != world:
        raise ValueError(
            f"config.nproc is {config.nproc} but the process group holds {world} processes"
        )
    protocol = experiment(config.task).protocol(config)
    with single_thread(torch.device(config.device)):
        return protocol.run(on_epoch)


def _epoch_sender(connection: Connection) -> EpochCallbackFn:
    def send(epoch: int, entry: dict[str, float]) -> None:
        connection.send((EPOCH, epoch, entry))

    return send


def _rank_worker(connection: Connection, rank: int, config: RunConfig, init_method: str) -> None:
    """One of ``config.nproc`` spawned processes: the run on this rank; rank 0 sends its epochs and
    the record."""
    device = distributed.local_device(config.device, rank)
    with distributed.process_group(device, init_method, rank, config.nproc):
        on_epoch = _epoch_sender(connection) if rank == 0 else None
        record = run(dataclasses.replace(config, device=device), on_epoch)
        if rank == 0:
            record.config = dataclasses.replace(record.config, device=config.device)
            connection.send((RECORD, record.as_dict()))


def _spawned(config: RunConfig, on_epoch: EpochCallbackFn | None) -> RunRecord:
    """Train ``config`` on ``config.nproc`` new processes (gloo on CPU, nccl on CUDA)."""
    with tempfile.TemporaryDirectory() as folder, Children("rank") as ranks:
        init_method = f"file://{Path(folder, 'init')}"
        for rank in range(config.nproc):
            ranks.start(_rank_worker, rank, config, init_method)
        record = None
        for _, (kind, *body) in ranks.messages():
            if kind == EPOCH and on_epoch is not None:
                on_epoch(*body)
            elif kind == RECORD:
                record = RunRecord.from_dict(body[0])
    if record is None:
        raise ChildFailed("rank 0 finished without sending its record")
    return record


def _label(config: RunConfig) -> str:
    return f"{config.task}/{config.dataset} {config.method} {config.noise_type}={config.noise} s{config.seed}"


def _summary_line(record: RunRecord) -> str:
    """The run's headline first (the validation-selected epoch's), then final, then the oracle."""
    metric = experiment(record.config.task).metric
    selected = record.selected.get(metric)
    epoch = record.selected.get("epoch")
    at = f" (epoch {epoch})" if epoch is not None else ""  # cleanlab's folds have no one epoch
    head = f"selected {selected:.2f}{at}, " if isinstance(selected, (int, float)) else ""
    return (
        f"{metric} {head}final {record.final[metric]:.2f}, best (test oracle) "
        f"{record.best[metric]:.2f} ({record.wall_time_s or 0.0:.1f} s)"
    )


def _other_versions_line(path: Path, counts: dict[str, int]) -> str:
    held = ", ".join(f"{n} of superloss {v}" for v, n in sorted(counts.items()))
    return (
        f"{path} holds results of other versions ({held}): not reused; their runs are run again "
        f"with superloss {superloss.__version__}, and the report uses this version's"
    )


def run_sweep(
    configs: Sequence[RunConfig],
    out_dir: Path,
    progress: bool = True,
    jobs: int = 1,
    started: float | None = None,
) -> list[RunRecord]:
    """Run every config not already finished in ``out_dir/results.jsonl``; return the new records.

    Each finished run is appended as one line, atomically, by this process only (rank 0 under
    torchrun), so an interrupted sweep loses at most the runs in flight and a rerun of the same
    command picks up where it stopped. Runs finished by another superloss version are not reused
    (one line says so): they are run again, and their old lines stay in the file. ``jobs`` > 1
    trains that many runs at once in worker processes (each single-threaded); a run's numbers do
    not depend on it. The session — from ``started`` (``time.time()``, default now) to the end,
    stopped or not — is appended to ``sessions.jsonl``.
    """
    started = time.time() if started is None else started
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
    stopped_by = None

    def finish(record: RunRecord) -> None:
        if rank == 0:
            append_result(path, record.as_dict())
        records.append(record)
        bar.finish(record)

    try:
        if jobs > 1 and len(pending) > 1:
            _run_in_workers(pending, jobs, bar, finish)
        else:
            for config in pending:
                bar.start(config)
                finish(run(config, on_epoch=bar.epoch_callback(config)))
    except (Stopped, KeyboardInterrupt) as stop:
        stopped_by = stop.args[0] if isinstance(stop, Stopped) else "SIGINT"
        raise
    finally:
        bar.close()
        if rank == 0 and pending:  # the runs it finished: those in the file (a stop may come
            # between a record's line and its count)
            runs = len(finished_keys(path, superloss.__version__) - done)
            record_session(
                out_dir, started, time.time(), runs=runs, jobs=jobs, stopped_by=stopped_by
            )
    return records


def _job_worker(connection: Connection) -> None:
    """A worker of ``jobs > 1``: trains each config it is sent, until it is sent None."""
    while (config := connection.recv()) is not None:
        connection.send((STARTED,))
        record = run(config, on_epoch=_epoch_sender(connection))
        connection.send((RECORD, record.as_dict()))


def _run_in_workers(
    configs: Sequence[RunConfig], jobs: int, bar: _Progress, finish: Callable[[RunRecord], None]
) -> None:
    """``jobs`` runs at a time in spawned worker processes, each finished one handed to ``finish``.

    Stopped (or failing), the workers are stopped; records they had sent are still handed over.
    """
    queue = list(configs)
    running: dict[Child, RunConfig] = {}

    def next_run(worker: Child) -> None:
        config = queue.pop(0) if queue else None
        worker.send(config)
        if config is not None:
            running[worker] = config

    with Children("worker") as workers:
        for _ in range(min(jobs, len(queue))):
            next_run(workers.start(_job_worker))
        try:
            for worker, (kind, *body) in workers.messages():
                if kind == STARTED:
                    bar.start(running[worker])
                elif kind == EPOCH:
                    bar.epoch(running[worker], *body)
                else:
                    finish(RunRecord.from_dict(body[0]))
                    next_run(worker)
        except BaseException:
            workers.stop()
            for _, (kind, *body) in workers.drain():
                if kind == RECORD:
                    finish(RunRecord.from_dict(body[0]))
            raise


class _Progress:
    """How far the sweep is. On a terminal, a tqdm bar; otherwise (logs, CI) plain lines on stderr,
    each with runs done/total, the elapsed time and an ETA: one per finished run, and one for an
    epoch of a run in progress when PROGRESS_EVERY_S have passed since the last line.

    The ETA extrapolates the pace of this session since its first run started (worker start-up
    left out) over the work left: finished runs plus the share of epochs done of each run in
    progress. It is "unknown" until a run of this session has finished: a first epoch also pays
    for loading data and warming up, and extrapolated alone it gave ETAs of days.
    """

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, done, enabled
        self.created = time.monotonic()
        self.first_start: float | None = None
        self.finished_here = 0
        self.in_progress: dict[str, float] = {}  # run key → share of its epochs done
        self.last_line = -math.inf
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, initial=done, unit="run", dynamic_ncols=True, mininterval=0.5
            )

    def start(self, config: RunConfig) -> None:
        if self.first_start is None:
            self.first_start = time.monotonic()
        self.in_progress[config.key()] = 0.0
        if self.bar is not None:
            self.bar.set_description(_label(config), refresh=False)

    def epoch_callback(self, config: RunConfig) -> EpochCallbackFn:
        def show(epoch: int, entry: dict[str, float]) -> None:
            self.epoch(config, epoch, entry)

        return show

    def epoch(self, config: RunConfig, epoch: int, entry: dict[str, float]) -> None:
        """Epoch ``epoch`` (1-based) of ``config`` is done, with ``entry``'s metrics."""
        key = config.key()
        share = min(epoch / config.epochs, 1.0)
        self.in_progress[key] = max(self.in_progress.get(key, 0.0), share)
        metric = experiment(config.task).metric
        text = f"epoch {epoch}/{config.epochs} {metric}={entry.get(metric, math.nan):.2f}"
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        elif self.enabled and time.monotonic() - self.last_line >= PROGRESS_EVERY_S:
            self._line(_label(config), text)

    def finish(self, record: RunRecord) -> None:
        self.in_progress.pop(record.key, None)
        self.done += 1
        self.finished_here += 1
        if self.bar is not None:
            self.bar.set_description(_label(record.config), refresh=False)
            self.bar.update(1)
        elif self.enabled:
            self._line(_label(record.config), _summary_line(record))

    def eta(self) -> float | None:
        """Seconds left, by the pace of this session so far; None before a run has finished."""
        partial = sum(self.in_progress.values())
        progress = self.finished_here + partial
        if self.finished_here == 0 or self.first_start is None:
            return None
        remaining = max(self.total - self.done - partial, 0.0)
        return (time.monotonic() - self.first_start) * remaining / progress

    def _line(self, label: str, text: str) -> None:
        eta = self.eta()
        elapsed = duration(time.monotonic() - self.created)
        print(
            f"[{self.done}/{self.total}] {label}: {text} | elapsed {elapsed}, "
            f"ETA {'unknown' if eta is None else duration(eta)}",
            file=sys.stderr,
            flush=True,
        )
        self.last_line = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

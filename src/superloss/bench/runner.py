"""The one training loop, and the sweep around it: skip finished runs, append each result atomically.

Every task and method runs through :func:`train`. Same config and seed ⇒ same numbers on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn

import superloss
from superloss.bench.config import RunConfig
from superloss.bench.methods.base import Method, MethodContext, build_method
from superloss.bench.models.base import build_model
from superloss.bench.registry import TASKS
from superloss.bench.results import append_result, finished_keys, results_path
from superloss.bench.tasks.base import Task, TaskData

# σ histograms: fixed bins over [0, e] (σ* never exceeds e), recorded at these fractions of training.
WEIGHT_BINS = 40
WEIGHT_HISTOGRAM_AT = (0.1, 0.5, 1.0)
EVAL_BATCH = 1024

EpochCallback = Callable[[int, dict[str, float]], None]


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__}
    found["superloss"] = superloss.__version__
    for module in ("numpy", "sklearn"):
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            pass
    return found


def get_task(name: str) -> Task:
    task = TASKS.get(name)
    assert isinstance(task, Task)
    return task


def _auroc(scores: Tensor, positives: Tensor) -> float | None:
    """Area under the ROC curve of ``scores`` for ``positives`` (scikit-learn's: ties count half);
    None where undefined (one class only). NaN scores rank below every other score."""
    from sklearn.metrics import roc_auc_score

    if bool(positives.all()) or not bool(positives.any()):
        return None
    scores = scores.double()
    seen = ~torch.isnan(scores)
    floor = scores[seen].min() - 1.0 if bool(seen.any()) else torch.tensor(0.0, dtype=torch.float64)
    filled = torch.where(seen, scores, floor)
    return float(roc_auc_score(positives.numpy(), filled.numpy()))


def _weight_record(weights: Tensor, corrupted: Tensor, epoch: int) -> dict[str, Any]:
    """Histogram of per-sample weights on clean vs corrupted samples, as plain lists."""
    seen = ~torch.isnan(weights)
    edges = torch.linspace(0.0, math.e, WEIGHT_BINS + 1)
    clean = torch.histc(weights[seen & ~corrupted], WEIGHT_BINS, 0.0, math.e)
    noisy = torch.histc(weights[seen & corrupted], WEIGHT_BINS, 0.0, math.e)
    return {
        "epoch": epoch,
        "edges": [round(float(e), 6) for e in edges],
        "clean": [int(c) for c in clean],
        "corrupted": [int(c) for c in noisy],
    }


def _make_optimizer(config: RunConfig, parameters: Any) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; expected sgd or adam")


def _lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    raise ValueError(f"unknown lr schedule {schedule!r}; expected constant or cosine")


BatchObserver = Callable[[Tensor, Method], None]


def _world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _autocast(config: RunConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CPU, fp16 on CUDA, when ``config.amp``; SuperLoss computes σ in float32."""
    if not config.amp:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _gather_weights(weights: Tensor, world: int) -> Tensor:
    """Each rank filled the weights of its own samples (NaN elsewhere): merge them on every rank."""
    if world == 1:
        return weights
    seen = ~torch.isnan(weights)
    merged = torch.stack([weights.nan_to_num(0.0), seen.to(weights.dtype)])
    dist.all_reduce(merged)
    return torch.where(merged[1] > 0, merged[0] / merged[1].clamp_min(1.0), math.nan)


@contextlib.contextmanager
def _cpu_threads(device: torch.device) -> Any:
    """CPU runs train on one thread: summation order, hence every number, then depends neither on the
    machine's core count nor on ``--jobs`` (which runs several single-threaded runs at once)."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train(
    config: RunConfig,
    on_epoch: EpochCallback | None = None,
    data: TaskData | None = None,
) -> dict[str, Any]:
    """Train one run; return its result record (config, history, final, best, weights).

    A task that runs its own approaches (``Task.run`` returns a record) trains through :func:`fit`
    itself, single-threaded on CPU like every run.
    """
    if data is None:
        with _cpu_threads(torch.device(config.device)):
            record = get_task(config.task).run(config, on_epoch)
        if record is not None:
            return record
    return fit(config, on_epoch=on_epoch, data=data)[1]


def fit(
    config: RunConfig,
    on_epoch: EpochCallback | None = None,
    data: TaskData | None = None,
    observer: BatchObserver | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The training loop (see :func:`_fit`), single-threaded on CPU."""
    with _cpu_threads(torch.device(config.device)):
        return _fit(config, on_epoch, data, observer)


def _fit(
    config: RunConfig,
    on_epoch: EpochCallback | None,
    data: TaskData | None,
    observer: BatchObserver | None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The training loop. Returns the trained model and the run's result record.

    ``observer(indices, method)`` is called after every training step with the batch's training-set
    indices; the method holds the batch's ``sample_weights`` and ``sample_losses``.

    Under torch.distributed (``--nproc``), every rank draws the same seeded permutation and global
    batches of ``batch_size``, and takes the slice ``batch[rank::world]`` — what DistributedSampler
    does, but per global batch, so the union of the ranks' step-t batches is exactly the single-process
    step-t batch (and SuperLoss's synced τ follows the single-process trajectory). Each rank's loss is
    scaled by its share of the global batch, so DDP's gradient average is the global-batch mean.
    """
    started = time.perf_counter()
    task = get_task(config.task)
    device = torch.device(config.device)
    rank, world = _world()
    if data is None:
        data = task.prepare(config)
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.input_shape, data.outputs).to(device)
    context = MethodContext(
        task=config.task,
        base_loss=task.make_base_loss(config),
        num_classes=data.num_classes,
        num_train=data.num_train,
        epochs=config.epochs,
    )
    method = build_method(config.method, context, config.method_params).to(device)
    optimizer = _make_optimizer(config, model.parameters())
    optimizers = [optimizer, *method.optimizers()]
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    trained: nn.Module = model
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(model)
    if config.compile:
        trained = cast(nn.Module, torch.compile(trained))

    train_x, train_y = data.train_inputs.to(device), data.train_targets.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    histogram_epochs = {max(1, round(f * config.epochs)) for f in WEIGHT_HISTOGRAM_AT}
    history: list[dict[str, float]] = []
    histograms: list[dict[str, Any]] = []

    for epoch in range(config.epochs):
        # The schedule drives the model's optimizer; a method's own optimizer keeps its rates (the
        # official Data Parameters code keeps them constant).
        factor = _lr_factor(config.lr_schedule, epoch, config.epochs)
        for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = lr * factor
        trained.train()
        method.train()
        method.start_epoch(epoch)
        weights = torch.full((data.num_train,), math.nan, device=device)
        running_loss = torch.zeros((), device=device)
        order = torch.randperm(data.num_train, generator=generator)
        for start in range(0, data.num_train, config.batch_size):
            global_batch = order[start : start + config.batch_size]
            indices = global_batch[rank::world].to(device)
            with _autocast(config, device):
                loss = task.training_loss(
                    trained, method, train_x[indices], train_y[indices], indices
                )
            if world > 1:
                loss = loss * (len(indices) * world / len(global_batch))
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in optimizers:
                opt.step()
            running_loss += loss.detach().float() * len(global_batch) / world
            if method.sample_weights is not None:
                weights[indices] = method.sample_weights.detach().float()
            if observer is not None:
                observer(indices, method)
        trained.eval()
        method.eval()
        if world > 1:
            dist.all_reduce(running_loss)
        entry: dict[str, float] = {
            "epoch": epoch + 1,
            "train_loss": float(running_loss) / data.num_train,
        }
        with _autocast(config, device):
            entry.update(
                task.evaluate(model, data.test_inputs.to(device), data.test_targets.to(device))
            )
            validation = task.evaluate(
                model, data.val_inputs.to(device), data.val_targets.to(device)
            )
        entry.update({f"val_{name}": value for name, value in validation.items()})
        tau = getattr(method, "last_tau", None)
        if tau is not None:
            entry["tau"] = float(tau)
        if method.sample_weights is not None:
            weights = _gather_weights(weights, world).cpu()
            # How well the weights single out corrupted samples: AUROC of −weight (low weight = suspect).
            auroc = _auroc(-weights, data.corrupted)
            if auroc is not None:
                entry["weight_auroc"] = auroc
            if epoch + 1 in histogram_epochs:
                histograms.append(_weight_record(weights, data.corrupted, epoch + 1))
        entry = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in entry.items()}
        history.append(entry)
        if on_epoch is not None:
            on_epoch(epoch + 1, entry)

    not_metrics = {"epoch", "train_loss", "weight_auroc", "tau"}
    metrics = [m for m in history[-1] if m not in not_metrics and not m.startswith("val_")]
    pick = max if task.higher_is_better else min
    best = {m: pick(h[m] for h in history) for m in metrics}
    val_metric = f"val_{task.metric}"
    chosen = pick(
        history, key=lambda h: h[val_metric]
    )  # first epoch with the best validation score
    record = {
        "config": config.as_dict(),
        "key": config.key(),
        "versions": versions(),
        "realised_noise": data.info.get("realised_noise"),
        "history": history,
        "final": {m: history[-1][m] for m in metrics},
        "best": best,
        "selected": {m: chosen[m] for m in metrics} | {"epoch": chosen["epoch"]},
        "weight_histograms": histograms,
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    return model, record


def _distributed_worker(rank: int, config: RunConfig, init_file: str, result_file: str) -> None:
    backend = "nccl" if config.device.startswith("cuda") else "gloo"
    dist.init_process_group(
        backend, init_method=f"file://{init_file}", rank=rank, world_size=config.nproc
    )
    try:
        local = config
        if config.device.startswith("cuda"):
            torch.cuda.set_device(rank)
            local = dataclasses.replace(config, device=f"cuda:{rank}")
        record = train(local)
        if rank == 0:
            record["config"]["device"] = config.device
            Path(result_file).write_text(json.dumps(record))
        dist.barrier()  # no rank tears the group down while another still uses it
    finally:
        dist.destroy_process_group()


def train_distributed(config: RunConfig) -> dict[str, Any]:
    """Train one run on ``config.nproc`` processes (gloo on CPU, nccl on CUDA); rank 0's record."""
    from torch.multiprocessing.spawn import spawn

    with tempfile.TemporaryDirectory() as folder:
        init_file, result_file = Path(folder, "init"), Path(folder, "record.json")
        spawn(
            _distributed_worker,
            args=(config, str(init_file), str(result_file)),
            nprocs=config.nproc,
            join=True,
        )
        record: dict[str, Any] = json.loads(result_file.read_text())
    return record


def _label(config: RunConfig) -> str:
    return f"{config.task}/{config.dataset} {config.method} {config.noise_type}={config.noise} s{config.seed}"


def _train_in_worker(config: RunConfig) -> dict[str, Any]:
    """A run in a worker process of ``--jobs``."""
    return train_distributed(config) if config.nproc > 1 else train(config)


def run_sweep(
    configs: Sequence[RunConfig],
    out_dir: Path,
    progress: bool = True,
    jobs: int = 1,
) -> list[dict[str, Any]]:
    """Run every config not already finished in ``out_dir/results.jsonl``; return the new records.

    Each finished run is appended as one line, atomically, by this process only, so an interrupted
    sweep loses at most the runs in flight and a rerun of the same command picks up where it stopped.
    ``jobs`` > 1 trains that many runs at once in worker processes (each single-threaded); a run's
    numbers do not depend on it.
    """
    path = results_path(out_dir)
    done = finished_keys(path)
    pending = [c for c in configs if c.key() not in done]
    records = []
    bar = _Progress(len(configs), len(configs) - len(pending), progress)

    def finish(config: RunConfig, record: dict[str, Any]) -> None:
        append_result(path, record)
        records.append(record)
        metric = get_task(config.task).metric
        bar.set_description(_label(config))
        bar.update(
            1,
            f"{metric} final {record['final'][metric]:.2f}, best {record['best'][metric]:.2f} "
            f"({record['wall_time_s']:.1f} s)",
        )

    try:
        if jobs > 1 and len(pending) > 1:
            import multiprocessing
            from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
                running = {pool.submit(_train_in_worker, c): c for c in pending}
                while running:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        finish(running.pop(future), future.result())
        else:
            for config in pending:
                bar.set_description(_label(config))

                def show(epoch: int, entry: dict[str, float], config: RunConfig = config) -> None:
                    metric = get_task(config.task).metric
                    value = entry.get(metric, float("nan"))
                    bar.set_postfix_str(f"epoch {epoch}/{config.epochs} {metric}={value:.2f}")

                if config.nproc > 1:
                    record = train_distributed(config)
                else:
                    record = train(config, on_epoch=show)
                finish(config, record)
    finally:
        bar.close()
    return records


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

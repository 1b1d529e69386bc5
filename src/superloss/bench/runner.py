"""The one training loop, and the sweep around it: skip finished runs, append each result atomically.

Every task and method runs through :func:`train`. Same config and seed ⇒ same numbers on CPU.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import superloss
from superloss.bench.config import RunConfig
from superloss.bench.methods.base import MethodContext, build_method
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
    """Area under the ROC curve of ``scores`` for ``positives`` (ties count half); None if undefined."""
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(scores.double())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: Tensor) -> Tensor:
    """1-based ranks with ties given their average rank (Mann–Whitney)."""
    order = torch.argsort(values)
    sorted_values = values[order]
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(values)
    ranks[order] = average[inverse]
    return ranks


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


def train(
    config: RunConfig,
    on_epoch: EpochCallback | None = None,
    data: TaskData | None = None,
) -> dict[str, Any]:
    """Train one run; return its result record (config, history, final, best, weights)."""
    started = time.perf_counter()
    task = get_task(config.task)
    device = torch.device(config.device)
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
    base_lrs = [[group["lr"] for group in opt.param_groups] for opt in optimizers]

    train_x, train_y = data.train_inputs.to(device), data.train_targets.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    histogram_epochs = {max(1, round(f * config.epochs)) for f in WEIGHT_HISTOGRAM_AT}
    history: list[dict[str, float]] = []
    histograms: list[dict[str, Any]] = []

    for epoch in range(config.epochs):
        factor = _lr_factor(config.lr_schedule, epoch, config.epochs)
        for opt, lrs in zip(optimizers, base_lrs):
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr * factor
        model.train()
        method.train()
        method.start_epoch(epoch)
        weights = torch.full((data.num_train,), math.nan, device=device)
        running_loss = torch.zeros((), device=device)
        order = torch.randperm(data.num_train, generator=generator)
        for start in range(0, data.num_train, config.batch_size):
            indices = order[start : start + config.batch_size]
            device_indices = indices.to(device)
            loss = task.training_loss(
                model, method, train_x[device_indices], train_y[device_indices], device_indices
            )
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in optimizers:
                opt.step()
            running_loss += loss.detach() * len(indices)
            if method.sample_weights is not None:
                weights[device_indices] = method.sample_weights.detach().float()
        model.eval()
        method.eval()
        entry: dict[str, float] = {"epoch": epoch + 1, "train_loss": float(running_loss) / data.num_train}
        entry.update(task.evaluate(model, data.test_inputs.to(device), data.test_targets.to(device)))
        validation = task.evaluate(model, data.val_inputs.to(device), data.val_targets.to(device))
        entry.update({f"val_{name}": value for name, value in validation.items()})
        if method.sample_weights is not None:
            weights = weights.cpu()
            # How well the weights single out corrupted samples: AUROC of −weight (low weight = suspect).
            auroc = _auroc(-weights.nan_to_num(math.inf), data.corrupted)
            if auroc is not None:
                entry["weight_auroc"] = auroc
            if epoch + 1 in histogram_epochs:
                histograms.append(_weight_record(weights, data.corrupted, epoch + 1))
        entry = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in entry.items()}
        history.append(entry)
        if on_epoch is not None:
            on_epoch(epoch + 1, entry)

    metrics = [name for name in history[-1] if name != "epoch" and not name.startswith("val_")]
    metrics = [m for m in metrics if m not in ("train_loss", "weight_auroc")]
    pick = max if task.higher_is_better else min
    best = {m: pick(h[m] for h in history) for m in metrics}
    val_metric = f"val_{task.metric}"
    chosen = pick(history, key=lambda h: h[val_metric])  # first epoch with the best validation score
    return {
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


def run_sweep(
    configs: Sequence[RunConfig],
    out_dir: Path,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every config not already finished in ``out_dir/results.jsonl``; return the new records.

    Each finished run is appended as one line, atomically, so an interrupted sweep loses at most the
    run in flight and a rerun of the same command picks up where it stopped.
    """
    path = results_path(out_dir)
    done = finished_keys(path)
    pending = [c for c in configs if c.key() not in done]
    records = []
    bar = _Progress(len(configs), len(configs) - len(pending), progress)
    try:
        for config in pending:
            label = f"{config.task}/{config.dataset} {config.method} {config.noise_type}={config.noise} s{config.seed}"
            bar.set_description(label)

            def show(epoch: int, entry: dict[str, float], config: RunConfig = config) -> None:
                task = get_task(config.task)
                bar.set_postfix_str(f"epoch {epoch}/{config.epochs} {task.metric}={entry.get(task.metric, float('nan')):.2f}")

            record = train(config, on_epoch=show)
            append_result(path, record)
            records.append(record)
            metric = get_task(config.task).metric
            bar.update(
                1,
                f"{metric} final {record['final'][metric]:.2f}, best {record['best'][metric]:.2f} "
                f"({record['wall_time_s']:.1f} s)",
            )
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

            self.bar = tqdm(total=total, initial=done, unit="run", dynamic_ncols=True, mininterval=0.5)

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
            print(f"[{self.done}/{self.total}] {self.description}: {summary}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

"""The one training loop: a small trainer, and hooks for everything around a step.

In the style of detectron2's ``TrainerBase`` and hooks. :meth:`TrainerBase.train` runs::

    before_train
    for each epoch:  before_epoch → (run_step → after_step) per batch → after_epoch
    after_train

and each hook (:class:`HookBase`) acts at those points. :class:`Trainer` adds the suite's step
(:meth:`Trainer.run_step`: the task's loss through the method, one optimizer step) and
:meth:`Trainer.evaluate`. Its default hooks set the learning rate (:class:`LRSchedule`), evaluate
(:class:`Evaluation`), record σ (:class:`WeightStatistics`: histograms and AUROC against the
corrupted samples), write the epoch's entry (:class:`EpochHistory`), and hand it to callbacks
(:class:`EpochCallback`); :class:`StepObserver` hands each step's output to an observer (e.g. a
:class:`~superloss.ConfidenceTracker`). :func:`fit` builds and trains one, and returns the model and
the run's record.

Under torch.distributed every rank draws the same seeded permutation and global batches of
``batch_size``, and takes the slice ``batch[rank::world]`` — what DistributedSampler does, but per
global batch, so the union of the ranks' step-t batches is exactly the single-process step-t batch
(and SuperLoss's synced τ follows the single-process trajectory). Each rank's loss is scaled by its
share of the global batch, so DDP's gradient average is the global-batch mean. Same config and seed
⇒ same numbers on CPU.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from superloss.bench.config import RunConfig
from superloss.bench.distributed import all_reduce_sum, gather_weights, world
from superloss.bench.methods.base import Method, MethodContext, build_method
from superloss.bench.metrics import auroc
from superloss.bench.models.base import build_model
from superloss.bench.record import RunRecord, build_record, summarise
from superloss.bench.tasks.base import StepOutput, Task, TaskData

# σ histograms: fixed bins over [0, e] (σ* never exceeds e), recorded at these fractions of training.
WEIGHT_BINS = 40
WEIGHT_HISTOGRAM_AT = (0.1, 0.5, 1.0)

EpochCallbackFn = Callable[[int, dict[str, float]], None]
Observer = Callable[[Tensor, StepOutput], None]


class HookBase:
    """Something done around the trainer's steps; ``self.trainer`` is set on registration."""

    trainer: Trainer

    def before_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def after_train(self) -> None:
        pass


class TrainerBase:
    """Epochs of steps with hooks around them; subclasses give ``batches`` and ``run_step``."""

    def __init__(self) -> None:
        self.hooks: list[HookBase] = []
        self.epoch = 0  # 0-based, the current epoch
        self.max_epochs = 0

    def register_hooks(self, hooks: Sequence[HookBase | None]) -> None:
        """Add hooks (None is skipped); they run in the order registered."""
        for hook in hooks:
            if hook is not None:
                hook.trainer = cast("Trainer", self)
                self.hooks.append(hook)

    def train(self, max_epochs: int) -> None:
        self.max_epochs = max_epochs
        self.before_train()
        for self.epoch in range(max_epochs):
            self.before_epoch()
            for batch in self.batches():
                self.run_step(batch)
                self.after_step()
            self.after_epoch()
        self.after_train()

    def batches(self) -> Iterator[Tensor]:
        raise NotImplementedError

    def run_step(self, batch: Tensor) -> None:
        raise NotImplementedError

    def call_hooks(self, stage: str) -> None:
        """Each hook's ``stage`` method ("before_epoch", …), in registration order."""
        for hook in self.hooks:
            getattr(hook, stage)()

    def before_train(self) -> None:
        self.call_hooks("before_train")

    def before_epoch(self) -> None:
        self.call_hooks("before_epoch")

    def after_step(self) -> None:
        self.call_hooks("after_step")

    def after_epoch(self) -> None:
        self.call_hooks("after_epoch")

    def after_train(self) -> None:
        self.call_hooks("after_train")


class Trainer(TrainerBase):
    """The suite's trainer: a task's data, loss and metrics, a model, a method, one optimizer.

    State the hooks read: ``entry`` (the current epoch's metrics), ``history`` (one entry per
    finished epoch), ``indices`` and ``output`` (the last step's training-set indices and
    :class:`~superloss.bench.tasks.base.StepOutput`).
    """

    def __init__(
        self, config: RunConfig, task: Task, data: TaskData, model: nn.Module, method: Method
    ) -> None:
        super().__init__()
        self.config, self.task, self.data = config, task, data
        self.model, self.method = model, method
        self.device = torch.device(config.device)
        self.rank, self.world = world()
        self.optimizer = make_optimizer(config, model.parameters())
        self.optimizers = [self.optimizer, *method.optimizers()]
        # What the steps call: the model, wrapped for DDP and compiled as asked; evaluation calls
        # the model itself.
        trained: nn.Module = nn.parallel.DistributedDataParallel(model) if self.world > 1 else model
        self.trained = cast(nn.Module, torch.compile(trained)) if config.compile else trained
        self.train_x = data.train_inputs.to(self.device)
        self.train_y = data.train_targets.to(self.device)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.running_loss = torch.zeros((), device=self.device)
        self.entry: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.indices: Tensor | None = None
        self.output: StepOutput | None = None

    def batches(self) -> Iterator[Tensor]:
        """The epoch's global batches, of a permutation drawn by the run's seed."""
        order = torch.randperm(self.data.num_train, generator=self.generator)
        for start in range(0, self.data.num_train, self.config.batch_size):
            yield order[start : start + self.config.batch_size]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on CPU, fp16 on CUDA, when ``config.amp``; SuperLoss computes σ in float32."""
        if not self.config.amp:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def before_epoch(self) -> None:
        self.trained.train()
        self.method.train()
        self.method.start_epoch(self.epoch)
        self.running_loss = torch.zeros((), device=self.device)
        super().before_epoch()

    def run_step(self, batch: Tensor) -> None:
        """One optimizer step on this rank's share of the global ``batch``."""
        self.indices = batch[self.rank :: self.world].to(self.device)
        with self.autocast():
            inputs, targets = self.train_x[self.indices], self.train_y[self.indices]
            self.output = self.task.training_step(
                self.trained, self.method, inputs, targets, self.indices
            )
        loss = self.output.loss
        if self.world > 1:
            loss = loss * (len(self.indices) * self.world / len(batch))
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        self.running_loss += loss.detach().float() * len(batch) / self.world

    def after_epoch(self) -> None:
        self.trained.eval()
        self.method.eval()
        train_loss = float(all_reduce_sum(self.running_loss)) / self.data.num_train
        self.entry = {"epoch": self.epoch + 1, "train_loss": train_loss}
        if self.output is not None and self.output.tau is not None:
            self.entry["tau"] = float(self.output.tau)
        super().after_epoch()

    def evaluate(self) -> tuple[dict[str, float], dict[str, float]]:
        """The task's metrics on the clean test set and on the (noisy) validation set."""
        data, device = self.data, self.device
        with self.autocast():
            test = self.task.evaluate(
                self.model, data.test_inputs.to(device), data.test_targets.to(device)
            )
            validation = self.task.evaluate(
                self.model, data.val_inputs.to(device), data.val_targets.to(device)
            )
        return test, validation


def make_optimizer(config: RunConfig, parameters: Any) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; expected sgd or adam")


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    raise ValueError(f"unknown lr schedule {schedule!r}; expected constant or cosine")


# -- hooks -------------------------------------------------------------------------------------------


class LRSchedule(HookBase):
    """Sets the model optimizer's learning rate each epoch. A method's own optimizer keeps its rates
    (the official Data Parameters code keeps them constant)."""

    def before_train(self) -> None:
        self.base_lrs = [group["lr"] for group in self.trainer.optimizer.param_groups]

    def before_epoch(self) -> None:
        trainer = self.trainer
        factor = lr_factor(trainer.config.lr_schedule, trainer.epoch, trainer.max_epochs)
        for group, lr in zip(trainer.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = lr * factor


class Evaluation(HookBase):
    """After each epoch: the test metrics, and the validation ones prefixed ``val_``."""

    def after_epoch(self) -> None:
        test, validation = self.trainer.evaluate()
        self.trainer.entry.update(test)
        self.trainer.entry.update({f"val_{name}": value for name, value in validation.items()})


class WeightStatistics(HookBase):
    """The method's per-sample weights over an epoch: how well they single out the corrupted
    samples (``weight_auroc``: AUROC of −weight, low weight = suspect), and their histograms on
    clean vs corrupted samples at fixed fractions of training."""

    def __init__(self) -> None:
        self.histograms: list[dict[str, Any]] = []

    def before_epoch(self) -> None:
        trainer = self.trainer
        self.weights = torch.full((trainer.data.num_train,), math.nan, device=trainer.device)

    def after_step(self) -> None:
        output, indices = self.trainer.output, self.trainer.indices
        if output is not None and output.weights is not None and indices is not None:
            self.weights[indices] = output.weights.detach().float()

    def after_epoch(self) -> None:
        trainer = self.trainer
        if trainer.output is None or trainer.output.weights is None:
            return
        weights = gather_weights(self.weights).cpu()
        score = auroc(-weights, trainer.data.corrupted)
        if not math.isnan(score):
            trainer.entry["weight_auroc"] = score
        at = {max(1, round(f * trainer.max_epochs)) for f in WEIGHT_HISTOGRAM_AT}
        if trainer.epoch + 1 in at:
            self.histograms.append(
                weight_histogram(weights, trainer.data.corrupted, trainer.epoch + 1)
            )


def weight_histogram(weights: Tensor, corrupted: Tensor, epoch: int) -> dict[str, Any]:
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


class EpochHistory(HookBase):
    """Closes the epoch's entry (floats rounded to 6 decimals) and appends it to the history."""

    def after_epoch(self) -> None:
        trainer = self.trainer
        entry = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in trainer.entry.items()}
        trainer.entry = entry
        trainer.history.append(entry)


class SelectedWeights(HookBase):
    """Keeps a copy of the model's weights at the validation-selected epoch (the first with the
    best validation metric, as :func:`~superloss.bench.record.summarise` picks it) and loads them
    back after training, so that the trained model is the selected one, not the last."""

    def __init__(self) -> None:
        self.best: float | None = None
        self.epoch = 0
        self.state: dict[str, Tensor] = {}

    def after_epoch(self) -> None:
        trainer = self.trainer
        score = float(trainer.history[-1][f"val_{trainer.task.metric}"])
        if math.isnan(score):
            return
        better = self.best is None or (
            score > self.best if trainer.task.higher_is_better else score < self.best
        )
        if better:
            self.best, self.epoch = score, trainer.epoch + 1
            self.state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    def after_train(self) -> None:
        if self.state:
            self.trainer.model.load_state_dict(self.state)


class EpochCallback(HookBase):
    """Calls ``callback(epoch, entry)`` (1-based epoch) after each epoch's entry is written."""

    def __init__(self, callback: EpochCallbackFn) -> None:
        self.callback = callback

    def after_epoch(self) -> None:
        self.callback(self.trainer.epoch + 1, self.trainer.history[-1])


class StepObserver(HookBase):
    """Calls ``observer(indices, output)`` after every step with the batch's training-set indices."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def after_step(self) -> None:
        assert self.trainer.indices is not None and self.trainer.output is not None
        self.observer(self.trainer.indices, self.trainer.output)


def build_trainer(config: RunConfig, task: Task, data: TaskData) -> Trainer:
    """The model (seeded by ``config.seed``), the method and the trainer of one run."""
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.input_shape, data.outputs).to(device)
    context = MethodContext(
        task=config.task,
        base_loss=task.base_loss,
        num_classes=data.num_classes,
        num_train=data.num_train,
        epochs=config.epochs,
    )
    method = build_method(config.method, context, config.method_params).to(device)
    return Trainer(config, task, data, model, method)


def fit(
    config: RunConfig,
    task: Task,
    data: TaskData,
    *,
    on_epoch: EpochCallbackFn | None = None,
    observer: Observer | None = None,
    keep_selected: bool = False,
) -> tuple[nn.Module, RunRecord]:
    """Train one run of ``config`` on ``data``; the trained model and the run's record.

    ``keep_selected``: the model returned has the weights of the validation-selected epoch
    (``record.selected["epoch"]``) instead of the last epoch's.
    """
    started = time.perf_counter()
    weights = WeightStatistics()
    with single_thread(torch.device(config.device)):
        trainer = build_trainer(config, task, data)
        trainer.register_hooks(
            [
                LRSchedule(),
                StepObserver(observer) if observer is not None else None,
                Evaluation(),
                weights,
                EpochHistory(),
                SelectedWeights() if keep_selected else None,
                EpochCallback(on_epoch) if on_epoch is not None else None,
            ]
        )
        trainer.train(config.epochs)
    history = trainer.history
    summary = summarise(history, task.higher_is_better, f"val_{task.metric}")
    record = build_record(
        config,
        history,
        summary,
        realised_noise=data.info.get("realised_noise"),
        weight_histograms=weights.histograms,
        wall_time_s=round(time.perf_counter() - started, 3),
    )
    return trainer.model, record


@contextlib.contextmanager
def single_thread(device: torch.device) -> Iterator[None]:
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

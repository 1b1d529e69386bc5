r"""SuperLoss in PyTorch Lightning: a callback that logs τ and σ* and feeds a ConfidenceTracker.

Keep the :class:`superloss.SuperLoss` as a submodule of the LightningModule (``self.criterion =
SuperLoss(...)``) and call it in ``training_step`` as usual; it then moves with the module, and its
running τ is in the module's checkpoint. Add :class:`SuperLossMonitor` to the Trainer's callbacks. It
finds every SuperLoss submodule and, through the LightningModule's own ``log`` (so every logger, the
progress bar and ``trainer.callback_metrics`` see them), records:

- every training step: ``superloss/<name>/tau``, the τ of that step;
- every training epoch, over all the σ* of the epoch (all processes together):
  ``superloss/<name>/confidence_mean`` (mean σ*), ``superloss/<name>/confidence_at_cap`` (the share
  of samples at the cap σ* = e, i.e. with ℓ ≤ τ − 2λ/e: the easiest) and
  ``superloss/<name>/confidence_below_one`` (the share with σ* < 1, i.e. ℓ > τ: down-weighted);
- every training epoch, a histogram of σ* over [0, e], written by the loggers that take histograms
  (TensorBoard's ``add_histogram_raw``); every logger also gets the scalars above, and the whole
  summary is kept in :attr:`SuperLossMonitor.history` whatever the logger.

``<name>`` is the submodule's path in the LightningModule (``criterion``).

Finding mislabelled samples. Pass ``tracker=ConfidenceTracker(len(train_set))``: after each training
batch the monitor hands the tracker the batch's dataset indices with that step's σ* and loss. The
batch carries the indices itself — the last element of a tuple batch by default, as
``(inputs, targets, indices)`` (wrap a map-style dataset in :class:`IndexedDataset`, or add
``torch.arange(N)`` to a ``TensorDataset``), a key of a dict batch with ``batch_indices="index"``,
or any function of the batch. At the end of ``fit`` the monitor ranks the samples
(:attr:`SuperLossMonitor.suspects`) and, with ``suspects_path``, writes them to a CSV file.

Several processes (DDP). τ is the same on every rank (SuperLoss all-reduces its statistics in each
step), the epoch summaries are summed over the ranks in one collective per SuperLoss module and epoch,
and the tracker merges every rank's samples when it ranks them; every rank must run the callback.

Importing this module needs ``lightning`` (the ``lightning`` extra); importing :mod:`superloss`
does not. The callback is a ``lightning.pytorch.Callback``: use it with ``lightning``'s Trainer
(``import lightning as L``), not with the separate ``pytorch_lightning`` package.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from superloss.integrations import requires_extra
from superloss.loss import SuperLoss
from superloss.tracking import SCORE_KINDS, ConfidenceTracker

with requires_extra("lightning", "lightning"):
    import lightning.pytorch as pl

__all__ = ["ConfidenceSummary", "IndexedDataset", "SuperLossMonitor"]

CONFIDENCE_CAP = math.e  # σ* = e for every ℓ ≤ τ − 2λ/e
# σ* within this relative distance of e counts as capped: σ* leaves e like a square root of
# ℓ − (τ − 2λ/e), so this is a loss within ~1e-13·λ of the cap's edge — rounding, not a sample.
CAP_TOLERANCE = 1e-6
BatchIndices = str | int | Callable[[Any], Tensor]

# Running sums of an epoch, per SuperLoss module: [count, Σσ, Σσ², at cap, below one, *histogram].
COUNT, TOTAL, SQUARES, AT_CAP, BELOW_ONE, BINS = range(6)

Item = TypeVar("Item")


class IndexedDataset(Dataset[tuple[Any, ...]], Generic[Item]):
    """A map-style dataset whose items also carry their index: ``(*item, index)``.

    A tuple item ``(inputs, target)`` becomes ``(inputs, target, index)``, anything else ``(item,
    index)``; the default collate function batches the indices into an int64 tensor, the last
    element of the batch, where :class:`SuperLossMonitor` reads them by default.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> data = IndexedDataset(TensorDataset(torch.randn(5, 2), torch.arange(5) % 2))
        >>> data[3][2], len(data)
        (3, 5)
    """

    def __init__(self, dataset: Dataset[Item]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # map-style datasets have a length

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        item = self.dataset[index]
        return (*item, index) if isinstance(item, tuple) else (item, index)


@dataclass(frozen=True)
class ConfidenceSummary:
    """σ* of one SuperLoss module over one training epoch, all processes together.

    Attributes:
        epoch: the epoch (from 0).
        tau: τ of the epoch's last step.
        count: number of finite σ* in the epoch.
        mean: their mean.
        at_cap: the share at the cap σ* = e (the easiest samples, ℓ ≤ τ − 2λ/e).
        below_one: the share with σ* < 1 (ℓ > τ: down-weighted).
        minimum, maximum: the smallest and largest σ*.
        sum_squares: Σσ*², for the histogram's moments.
        histogram: (bins,) float64 counts of σ* over [0, e] in equal bins (``edges``).
        edges: (bins + 1,) the bins' edges.
    """

    epoch: int
    tau: float
    count: int
    mean: float
    at_cap: float
    below_one: float
    minimum: float
    maximum: float
    sum_squares: float
    histogram: Tensor
    edges: Tensor


class SuperLossMonitor(pl.Callback):
    r"""Logs τ and σ* of a LightningModule's SuperLoss modules; optionally tracks σ per sample.

    See the module docstring for what is logged and how batches carry dataset indices.

    Args:
        tracker: a :class:`superloss.ConfidenceTracker` sized for the training set, fed after
            every training batch (moved to the module's device when ``fit`` starts), or None.
        batch_indices: where a batch holds its samples' dataset indices (with ``tracker``): a
            position in a tuple or list batch (default ``-1``, the last element), a key of a dict
            batch, or a function of the batch returning the indices.
        tracked: the path of the SuperLoss module whose σ* feeds the tracker (default: the only
            one; needed when the LightningModule holds several).
        suspects_path: with ``tracker``, a CSV file written at the end of ``fit`` (by the first
            process): ``index,score``, most suspicious sample first.
        num_suspects: how many samples to rank at the end of ``fit`` (default: all).
        kind: the tracker score to rank by (default ``"mean_confidence"``).
        bins: the number of histogram bins over [0, e] (default 50).

    Attributes:
        names: the paths of the SuperLoss modules found (set when ``fit`` starts).
        history: for each of them, one :class:`ConfidenceSummary` per training epoch.
        suspects: after ``fit`` with a tracker, the ranked dataset indices (CPU int64).
        tracker: the tracker passed in.
    """

    def __init__(
        self,
        tracker: ConfidenceTracker | None = None,
        *,
        batch_indices: BatchIndices = -1,
        tracked: str | None = None,
        suspects_path: str | os.PathLike[str] | None = None,
        num_suspects: int | None = None,
        kind: str = "mean_confidence",
        bins: int = 50,
    ) -> None:
        if tracker is not None and not isinstance(tracker, ConfidenceTracker):
            raise TypeError(
                f"tracker must be a superloss.ConfidenceTracker, got {type(tracker).__name__}"
            )
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be an int >= 1, got {bins!r}")
        if kind not in SCORE_KINDS:
            raise ValueError(f"kind must be one of {SCORE_KINDS}, got {kind!r}")
        if suspects_path is not None and tracker is None:
            raise ValueError("suspects_path needs a tracker: pass tracker=ConfidenceTracker(N)")
        if num_suspects is not None and (
            isinstance(num_suspects, bool) or not isinstance(num_suspects, int) or num_suspects < 0
        ):
            raise ValueError(f"num_suspects must be an int >= 0 or None, got {num_suspects!r}")
        self.tracker = tracker
        self.batch_indices = batch_indices
        self.tracked = tracked
        self.suspects_path = suspects_path
        self.num_suspects = num_suspects
        self.kind = kind
        self.bins = bins
        self.names: list[str] = []
        self.history: dict[str, list[ConfidenceSummary]] = {}
        self.suspects: Tensor | None = None
        self._modules: dict[str, SuperLoss] = {}
        self._sums: dict[str, Tensor] = {}
        self._extremes: dict[str, Tensor] = {}  # [max σ, −min σ]: one MAX reduction for both
        self._last_seen: dict[str, Tensor | None] = {}

    # -- Lightning hooks ---------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._modules = {
            name: module
            for name, module in pl_module.named_modules()
            if isinstance(module, SuperLoss)
        }
        if not self._modules:
            raise ValueError(
                f"SuperLossMonitor found no SuperLoss module in {type(pl_module).__name__}: "
                "make it a submodule (self.criterion = SuperLoss(...) in __init__)"
            )
        self.names = list(self._modules)
        self.history = {name: [] for name in self.names}
        if self.tracker is not None:
            if self.tracked is None and len(self.names) > 1:
                raise ValueError(
                    f"several SuperLoss modules ({', '.join(self.names)}): "
                    "name the one that feeds the tracker with tracked=..."
                )
            if self.tracked is not None and self.tracked not in self._modules:
                raise ValueError(
                    f"tracked={self.tracked!r} is not a SuperLoss module of "
                    f"{type(pl_module).__name__}; found: {', '.join(self.names)}"
                )
            self.tracker.to(pl_module.device)
        self._last_seen = dict.fromkeys(self.names)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start_epoch(pl_module.device)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        for name, module in self._modules.items():
            confidence = module.last_confidence
            if confidence is None or confidence is self._last_seen[name]:
                continue  # not called in this step: nothing new to count
            self._last_seen[name] = confidence
            self._accumulate(name, confidence)
            if module.last_tau is not None:
                pl_module.log(
                    f"superloss/{name}/tau", module.last_tau, on_step=True, on_epoch=False
                )
            if self.tracker is not None and name == (self.tracked or self.names[0]):
                self._track(name, batch, confidence, module.last_loss)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for name, module in self._modules.items():
            summary = self._summarise(trainer, name, module, trainer.current_epoch)
            self.history[name].append(summary)
            prefix = f"superloss/{name}/confidence"
            for suffix, value in (
                ("mean", summary.mean),
                ("at_cap", summary.at_cap),
                ("below_one", summary.below_one),
            ):
                # The value is already that of all processes, the same on each: sync_dist only
                # averages equal numbers (Lightning warns of unsynchronised epoch-level logs).
                pl_module.log(
                    f"{prefix}_{suffix}", value, on_step=False, on_epoch=True, sync_dist=True
                )
            if trainer.is_global_zero:
                _log_histogram(trainer, prefix, summary)
        if self.tracker is not None:
            self.tracker.end_epoch()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.tracker is None:
            return
        # Both read all processes' statistics: every rank calls them, in the same order.
        self.suspects = self.tracker.suspects(k=self.num_suspects, kind=self.kind).cpu()
        scores = self.tracker.scores(self.kind).cpu()
        if self.suspects_path is not None and trainer.is_global_zero:
            with open(self.suspects_path, "w", newline="") as file:
                writer = csv.writer(file)
                writer.writerow(("index", "score"))
                for index, score in zip(
                    self.suspects.tolist(), scores[self.suspects].tolist(), strict=True
                ):
                    writer.writerow((index, f"{score:.6g}"))

    def state_dict(self) -> dict[str, Any]:
        return {} if self.tracker is None else {"tracker": self.tracker.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.tracker is not None and "tracker" in state_dict:
            self.tracker.load_state_dict(state_dict["tracker"])

    # -- internals ---------------------------------------------------------------------------------

    def _start_epoch(self, device: torch.device) -> None:
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        for name in self._modules:
            self._sums[name] = torch.zeros(BINS + self.bins, dtype=dtype, device=device)
            self._extremes[name] = torch.full((2,), -math.inf, dtype=dtype, device=device)

    def _accumulate(self, name: str, confidence: Tensor) -> None:
        """Add a step's σ* to the epoch's sums, on the device, without reading anything back."""
        sigma = confidence.detach().reshape(-1).to(self._sums[name].dtype)
        finite = torch.isfinite(sigma)  # ignored elements (NaN loss, NaN σ*) are not samples
        kept = torch.where(finite, sigma, 0.0)
        sums = self._sums[name]
        sums[COUNT] += finite.sum()
        sums[TOTAL] += kept.sum()
        sums[SQUARES] += kept.square().sum()
        sums[AT_CAP] += (kept >= CONFIDENCE_CAP * (1 - CAP_TOLERANCE)).sum()
        sums[BELOW_ONE] += (finite & (sigma < 1)).sum()
        # histc drops values outside [0, e]: σ* rounded past e joins the last bin, NaN drops out.
        binned = torch.where(finite, sigma.clamp(max=CONFIDENCE_CAP), -1.0)
        sums[BINS:] += torch.histc(binned, bins=self.bins, min=0.0, max=CONFIDENCE_CAP)
        if sigma.numel():  # amax of nothing is an error; an empty batch changes no extreme
            extremes = torch.where(finite, torch.stack([sigma, -sigma]), -math.inf).amax(dim=1)
            torch.maximum(self._extremes[name], extremes, out=self._extremes[name])

    def _summarise(
        self, trainer: pl.Trainer, name: str, module: SuperLoss, epoch: int
    ) -> ConfidenceSummary:
        """The epoch's summary over all processes: one SUM and one MAX reduction."""
        sums = trainer.strategy.reduce(self._sums[name], reduce_op="sum").cpu().double()
        extremes = trainer.strategy.reduce(self._extremes[name], reduce_op="max").cpu().double()
        count = int(sums[COUNT].item())
        share = 1.0 / count if count else math.nan
        tau = module.last_tau
        return ConfidenceSummary(
            epoch=epoch,
            tau=math.nan if tau is None else float(tau.item()),
            count=count,
            mean=float(sums[TOTAL].item()) * share,
            at_cap=float(sums[AT_CAP].item()) * share,
            below_one=float(sums[BELOW_ONE].item()) * share,
            minimum=-float(extremes[1].item()) if count else math.nan,
            maximum=float(extremes[0].item()) if count else math.nan,
            sum_squares=float(sums[SQUARES].item()),
            histogram=sums[BINS:].clone(),
            edges=torch.linspace(0.0, CONFIDENCE_CAP, self.bins + 1, dtype=torch.float64),
        )

    def _track(self, name: str, batch: Any, confidence: Tensor, loss: Tensor | None) -> None:
        assert self.tracker is not None
        indices = self._indices(batch)
        if confidence.shape != indices.shape:
            raise ValueError(
                f"the tracker needs one σ* per sample: SuperLoss {name!r} gave σ* of shape "
                f"{tuple(confidence.shape)} for a batch whose indices have shape "
                f"{tuple(indices.shape)}"
            )
        self.tracker.update(indices, confidence, loss)

    def _indices(self, batch: Any) -> Tensor:
        where = self.batch_indices
        if callable(where):
            indices = where(batch)
        elif isinstance(where, str):
            if not isinstance(batch, Mapping) or where not in batch:
                raise ValueError(
                    f"batch_indices={where!r} needs dict batches holding that key, got "
                    f"{type(batch).__name__}"
                    + (f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else "")
                )
            indices = batch[where]
        else:
            if not isinstance(batch, (tuple, list)):
                raise ValueError(
                    f"batch_indices={where!r} needs tuple or list batches such as "
                    f"(inputs, targets, indices), got {type(batch).__name__}; pass a key or "
                    "a function of the batch instead"
                )
            indices = batch[where]
        if not isinstance(indices, Tensor) or indices.dtype.is_floating_point:
            got = (
                f"dtype {indices.dtype}" if isinstance(indices, Tensor) else type(indices).__name__
            )
            raise TypeError(
                f"the batch's dataset indices must be an integer tensor, got {got} "
                f"(batch_indices={where!r})"
            )
        return indices


def _log_histogram(trainer: pl.Trainer, tag: str, summary: ConfidenceSummary) -> None:
    """Hand the epoch's histogram to every logger that takes pre-binned histograms."""
    if summary.count == 0:
        return
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        add_histogram_raw = getattr(experiment, "add_histogram_raw", None)
        if add_histogram_raw is None:
            continue  # e.g. CSVLogger: the scalars and monitor.history carry the summary
        add_histogram_raw(
            tag,
            min=summary.minimum,
            max=summary.maximum,
            num=summary.count,
            sum=summary.mean * summary.count,
            sum_squares=summary.sum_squares,
            bucket_limits=summary.edges[1:].tolist(),
            bucket_counts=summary.histogram.tolist(),
            global_step=trainer.global_step,
        )

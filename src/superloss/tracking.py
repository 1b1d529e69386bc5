"""Per-sample confidence tracking: which training samples does SuperLoss keep doubting?

SuperLoss gives noisy samples a small confidence σ early in training (Castells et al., NeurIPS
2020), so σ averaged over training is a label-noise detector. :class:`ConfidenceTracker` records,
for each of the N samples of a dataset, running statistics of σ (and optionally of the task loss ℓ)
from the training loop, and ranks the samples from most to least suspicious. A typical loop, with a
dataset that also returns each sample's index::

    criterion = SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau="log_classes", num_classes=10)
    tracker = ConfidenceTracker(len(train_set), device="cuda")
    for epoch in range(epochs):
        for inputs, targets, indices in loader:
            loss = criterion(model(inputs), targets)
            ...
            tracker.update(indices, criterion.last_confidence, criterion.last_loss)
        tracker.end_epoch()
    suspects = tracker.suspects(k=100)  # dataset indices, most suspicious first

:func:`export_suspects` writes that ranking, with each sample's given and predicted label, to a CSV
file to review by hand.

Cost: :meth:`ConfidenceTracker.update` only copies the batch into a pending buffer (a handful of
small copies, no read-back to the host on CUDA); every few thousand observations, and before any
read, :meth:`ConfidenceTracker.flush` applies them to the per-sample table with a fixed number of
vectorised index operations. Such bookkeeping costs about the fixed overhead of each operation
(a kernel launch on CUDA), whatever its size, so applying it once per few thousand observations
instead of once per batch is what keeps it cheap.
Memory is O(N), 64 bytes a sample in float64, plus 16 bytes a sample and epoch with
``keep_history=True``.

Under ``torch.distributed`` every rank accumulates only the samples it sees; the statistics are
combined in one place, ``ConfidenceTracker._gathered_statistics``, called by the reading methods
and by :meth:`~ConfidenceTracker.end_epoch`, never in a training step (the torchmetrics pattern).
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from superloss.threshold import statistics_dtype

__all__ = ["SCORE_KINDS", "SUSPECTS_HEADER", "ConfidenceTracker", "export_suspects"]

# The statistics table has shape (N + 1, 3, 2): a row per sample, then a statistic, then the
# quantity. Row N absorbs the writes of observations superseded within a flush; it is never read.
COUNT, SUM, LAST = range(3)
CONFIDENCE, LOSS = 0, 1
_QUANTITIES = {"confidence": CONFIDENCE, "loss": LOSS}

# kind -> (statistic, quantity, sign); sign·score is the suspicion (higher = more suspicious).
_KINDS: dict[str, tuple[int, int, float]] = {
    "mean_confidence": (SUM, CONFIDENCE, -1.0),
    "last_confidence": (LAST, CONFIDENCE, -1.0),
    "mean_loss": (SUM, LOSS, 1.0),
    "last_loss": (LAST, LOSS, 1.0),
}
SCORE_KINDS = tuple(_KINDS)

# A stamp orders observations: (step << _POSITION_BITS) + position in the flush (from 1); 0 = never.
_POSITION_BITS = 24
_MAX_PENDING = (1 << _POSITION_BITS) - 1
_MIN_PENDING = 4096  # observations buffered before a flush, at least; 16 batches' worth otherwise


class ConfidenceTracker(nn.Module):
    r"""Running per-sample statistics of SuperLoss's confidence σ and loss ℓ, to find noisy labels.

    Each training step hands the tracker the dataset indices of the batch with their σ and,
    optionally, their per-sample loss (:meth:`update`; calling the module is the same). For each
    sample and each of σ and ℓ it keeps the number of observations, their sum and the last one.
    From these, :meth:`scores` gives one score per sample:

    - ``"mean_confidence"``: :math:`\frac1{n_i}\sum_t \sigma_{i,t}` (low = suspicious);
    - ``"last_confidence"``: the latest σ (low = suspicious);
    - ``"mean_loss"``: :math:`\frac1{m_i}\sum_t \ell_{i,t}` (high = suspicious);
    - ``"last_loss"``: the latest ℓ (high = suspicious).

    :meth:`suspicion` orients every kind so that higher = more suspicious, and :meth:`suspects`
    ranks the samples by it. Samples never observed score NaN and rank last.

    Non-finite σ or ℓ (e.g. an overflowing mixed-precision step) are not recorded: that sample's
    statistics are left as they were, as :mod:`superloss.threshold` leaves τ. Within one batch a
    repeated index is observed once per occurrence; its "last" value is that of its last occurrence.

    :meth:`update` buffers the batch; :meth:`flush` applies the buffer to the :attr:`statistics`
    table. Every reading method, :meth:`end_epoch` and ``state_dict()`` flush first, so the
    buffering shows only to code that reads :attr:`statistics` directly. State lives in buffers:
    ``state_dict``/``load_state_dict`` resume the tracker exactly (loading discards anything still
    pending in the tracker loaded into), and ``.to(device)`` moves it. Counts are stored in the
    statistics' dtype, exact up to 2⁵³ in float64 (2²⁴ in float32, used on MPS).

    Under an initialised ``torch.distributed`` with more than one process and ``sync=True``, each
    rank records the samples it sees, and :meth:`scores`, :meth:`suspects`, :meth:`observations`
    and :meth:`end_epoch` (with ``keep_history``) combine all ranks' statistics — collectives that
    every rank must call together. Counts and sums are added; a "last" value is the one from the
    latest step, the highest rank winning a tie, which assumes the ranks call :meth:`update` in the
    same steps, as DistributedDataParallel does. The local buffers are never overwritten by the
    combined values, so scoring twice counts nothing twice, and ``state_dict`` holds this rank's own
    statistics.

    Indices on the CPU are range-checked at once; hand them over from a ``pin_memory=True`` loader
    (or already on the device) so that copying them to an accelerator does not wait for it.

    Args:
        num_samples: N, the size of the dataset; indices run over ``0 … N−1``.
        device: where the statistics live (default: the CPU); put them on the training device.
        keep_history: also record, at each :meth:`end_epoch`, the last σ and ℓ of every sample in
            that epoch, as ``(epochs, N)`` tensors (NaN where a sample was not seen), read by
            :meth:`history`. Costs 16 bytes a sample and epoch, nothing in :meth:`update`.
        sync: combine the ranks' statistics under torch.distributed (default True).
        process_group: the group to combine over (default: the default group).

    Attributes:
        statistics: the ``(N + 1, 3, 2)`` table [count, sum, last] × [σ, ℓ] of this process, up to
            the last :meth:`flush`; its row N is scratch.
        stamps: ``(N, 2)`` int64, orders each sample's last σ and ℓ: (step << 24) + position.
        step: number of :meth:`update` calls (0-dim int64 buffer).
        epoch: number of :meth:`end_epoch` calls (0-dim int64 buffer).

    Shape:
        - indices: :math:`(B)`, integer, in :math:`[0, N)`
        - confidence, loss: :math:`(B)`, floating point
        - scores: :math:`(N)`, float64 (float32 on MPS)

    Example:
        >>> import torch
        >>> from superloss import ConfidenceTracker
        >>> tracker = ConfidenceTracker(4)
        >>> tracker.update(torch.tensor([0, 1]), torch.tensor([0.75, 0.25]))
        >>> tracker.update(torch.tensor([2, 1]), torch.tensor([1.5, 0.5]))
        >>> tracker.scores("mean_confidence")
        tensor([0.7500, 0.3750, 1.5000,    nan], dtype=torch.float64)
        >>> tracker.suspects(k=2)
        tensor([1, 0])
        >>> tracker.suspects(threshold=1.0)
        tensor([1, 0])
    """

    statistics: Tensor
    stamps: Tensor
    step: Tensor
    epoch: Tensor
    epoch_start: Tensor
    confidence_history: Tensor
    loss_history: Tensor
    _pending_index: Tensor
    _pending_values: Tensor
    _pending_step: Tensor

    def __init__(
        self,
        num_samples: int,
        *,
        device: torch.device | str | None = None,
        keep_history: bool = False,
        sync: bool = True,
        process_group: Any = None,
    ) -> None:
        super().__init__()
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(
                f"num_samples must be an int >= 1 (the dataset size), got {num_samples!r}"
            )
        self.num_samples = num_samples
        self.keep_history = bool(keep_history)
        self.sync = bool(sync)
        self.process_group = process_group
        device = torch.device("cpu") if device is None else torch.device(device)
        dtype = statistics_dtype(device)

        def integers(*shape: int) -> Tensor:
            return torch.zeros(shape, dtype=torch.int64, device=device)

        statistics = torch.zeros((num_samples + 1, 3, 2), dtype=dtype, device=device)
        statistics[:, LAST] = math.nan
        self.register_buffer("statistics", statistics)
        self.register_buffer("stamps", integers(num_samples, 2))
        self.register_buffer("step", integers())
        self.register_buffer("epoch", integers())
        self.register_buffer("epoch_start", integers())  # the step this epoch began at
        if self.keep_history:
            for name in ("confidence_history", "loss_history"):
                empty = torch.zeros((0, num_samples), dtype=dtype, device=device)
                self.register_buffer(name, empty)
        # Observations not yet applied to the table; sized at the first update.
        self._pending = 0
        self.register_buffer("_pending_index", integers(0), persistent=False)
        self.register_buffer("_pending_values", statistics.new_zeros((0, 2)), persistent=False)
        self.register_buffer("_pending_step", integers(0), persistent=False)

    # -- recording ---------------------------------------------------------------------------------

    def forward(self, indices: Tensor, confidence: Tensor, loss: Tensor | None = None) -> None:
        """Same as :meth:`update`."""
        self.update(indices, confidence, loss)

    def update(self, indices: Tensor, confidence: Tensor, loss: Tensor | None = None) -> None:
        """Record one batch: the dataset ``indices`` of its samples, their σ and optionally their ℓ.

        Every input is checked before anything is recorded, so a rejected call changes nothing. CPU
        indices are range-checked at once; indices on an accelerator with ``torch._assert_async``,
        which does not wait for the device (an out-of-range index then fails at a later
        synchronisation). σ and ℓ are detached and copied, so the caller may reuse their memory.

        Args:
            indices: integer tensor of shape (B,), the samples' positions in the dataset.
            confidence: σ of those samples, floating point, shape (B,), e.g.
                ``SuperLoss.last_confidence``.
            loss: the per-sample loss ℓ, floating point, shape (B,), e.g. ``SuperLoss.last_loss``.

        Raises:
            TypeError: an argument is not a tensor, ``indices`` is not integer, or σ/ℓ not floating.
            ValueError: ``indices`` is not 1-D, or σ/ℓ does not have the shape of ``indices``.
            IndexError: an index is negative or not below ``num_samples`` (CPU indices).
        """
        self._check_indices(indices)
        self._check_values("confidence", confidence, indices)
        if loss is not None:
            self._check_values("loss", loss, indices)
        batch = indices.numel()
        if batch > _MAX_PENDING:
            raise ValueError(f"a batch holds at most {_MAX_PENDING} samples, got {batch}")
        self._reserve(batch)
        window = slice(self._pending, self._pending + batch)
        self.step.add_(1)
        self._pending_index[window].copy_(indices, non_blocking=True)
        if loss is None:
            pending = self._pending_values[window]
            pending[:, CONFIDENCE].copy_(confidence.detach(), non_blocking=True)
            pending[:, LOSS].fill_(math.nan)  # not finite: not recorded
        else:
            # σ and ℓ side by side: one copy (each copy into a column costs two views too).
            values = torch.stack([confidence, loss], dim=1)
            if values.requires_grad:
                values = values.detach()
            self._pending_values[window].copy_(values, non_blocking=True)
        self._pending_step[window].copy_(self.step)
        self._pending += batch

    def flush(self) -> None:
        """Apply the pending observations to :attr:`statistics` (the reading methods do it first)."""
        size = self._pending
        if size == 0:
            return
        index = self._pending_index[:size]
        values = self._pending_values[:size]
        finite = torch.isfinite(values)
        table = self.statistics
        increments = torch.stack([finite.to(values.dtype), torch.where(finite, values, 0.0)], 1)
        table[:, COUNT : SUM + 1].index_add_(0, index, increments)
        # "Last" must not depend on the order in which duplicate indices are written: stamp every
        # finite observation, keep each sample's greatest stamp, and let only its owner write.
        positions = torch.arange(1, size + 1, device=index.device)
        stamps = positions.add_(self._pending_step[:size], alpha=1 << _POSITION_BITS)
        stamps = torch.where(finite, stamps.unsqueeze(1), -1)
        columns = index.unsqueeze(1).expand(size, 2)
        self.stamps.scatter_reduce_(0, columns, stamps, reduce="amax")
        latest = self.stamps.gather(0, columns) == stamps
        table[:, LAST].scatter_(0, torch.where(latest, columns, self.num_samples), values)
        self._pending = 0

    def end_epoch(self) -> None:
        """Mark the end of an epoch; with ``keep_history``, record each sample's last σ and ℓ in it.

        With ``keep_history`` and ``sync`` under torch.distributed, all ranks call this together.
        """
        if self.keep_history:
            table, last_step = self._gathered_statistics()
            last = torch.where(last_step > self.epoch_start, table[:, LAST], math.nan)
            self.confidence_history = torch.cat(
                [self.confidence_history, last[None, :, CONFIDENCE]]
            )
            self.loss_history = torch.cat([self.loss_history, last[None, :, LOSS]])
        self.epoch.add_(1)
        self.epoch_start.copy_(self.step)

    # -- reading -----------------------------------------------------------------------------------

    def scores(self, kind: str = "mean_confidence") -> Tensor:
        """One score per sample, NaN for samples never observed (see the class docstring for kinds).

        Args:
            kind: one of ``"mean_confidence"``, ``"last_confidence"``, ``"mean_loss"``,
                ``"last_loss"``.

        Returns:
            A new tensor of shape (N,) on the tracker's device, covering all ranks' samples when
            synchronised.
        """
        statistic, quantity, _ = self._kind(kind)
        table = self._gathered_statistics()[0][:, :, quantity]
        count = table[:, COUNT]
        value = table[:, statistic]
        if statistic == SUM:
            value = value / count.clamp_min(1.0)
        return torch.where(count > 0, value, math.nan)

    def suspicion(self, kind: str = "mean_confidence") -> Tensor:
        """:meth:`scores` oriented so that higher = more suspicious: −σ, or ℓ for the loss kinds."""
        _, _, sign = self._kind(kind)
        return sign * self.scores(kind)

    def suspects(
        self, k: int | None = None, kind: str = "mean_confidence", threshold: float | None = None
    ) -> Tensor:
        """Dataset indices ranked from most to least suspicious by ``kind``.

        Ties keep index order; samples never observed rank last.

        Args:
            k: keep at most the ``k`` most suspicious (default: all).
            kind: the score to rank by (see :meth:`scores`).
            threshold: keep only samples whose score is strictly below it (σ kinds) or strictly
                above it (ℓ kinds); never-observed samples are then left out.

        Returns:
            int64 indices on the tracker's device.
        """
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise ValueError(f"k must be an int >= 0 or None, got {k!r}")
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float))
        ):
            raise ValueError(f"threshold must be a number or None, got {threshold!r}")
        _, _, sign = self._kind(kind)
        suspicion = self.suspicion(kind)
        ranking = torch.where(suspicion.isnan(), -math.inf, suspicion)
        order = torch.sort(ranking, descending=True, stable=True).indices
        if threshold is not None:
            order = order[(suspicion > sign * threshold)[order]]
        return order if k is None else order[:k]

    def observations(self, quantity: str = "confidence") -> Tensor:
        """How many finite σ (``"confidence"``) or ℓ (``"loss"``) were recorded for each sample.

        Returns:
            A new int64 tensor of shape (N,), covering all ranks when synchronised.
        """
        column = self._quantity(quantity)
        return self._gathered_statistics()[0][:, COUNT, column].to(torch.int64)

    def history(self, quantity: str = "confidence") -> Tensor:
        """The last σ (``"confidence"``) or ℓ (``"loss"``) of each sample in each completed epoch.

        Returns:
            A new ``(epochs, N)`` tensor, NaN where a sample was not observed in that epoch.

        Raises:
            RuntimeError: the tracker was built without ``keep_history=True``.
        """
        column = self._quantity(quantity)
        if not self.keep_history:
            raise RuntimeError("history() needs a tracker built with keep_history=True")
        return (self.confidence_history if column == CONFIDENCE else self.loss_history).clone()

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, keep_history={self.keep_history}, sync={self.sync}"

    # -- internals ---------------------------------------------------------------------------------

    def _reserve(self, batch: int) -> None:
        """Make room for ``batch`` more pending observations, flushing or growing the buffer."""
        if self._pending + batch <= self._pending_index.numel():
            return
        self.flush()
        if batch <= self._pending_index.numel():
            return
        capacity = min(max(_MIN_PENDING, 16 * batch), _MAX_PENDING)
        self._pending_index = self._pending_index.new_zeros(capacity)
        self._pending_values = self._pending_values.new_zeros((capacity, 2))
        self._pending_step = self._pending_step.new_zeros(capacity)

    def _world(self) -> tuple[int, int] | None:
        """(world size, rank) when statistics must be combined across processes, else None."""
        if not (self.sync and dist.is_available() and dist.is_initialized()):
            return None
        size = dist.get_world_size(self.process_group)
        return (size, dist.get_rank(self.process_group)) if size > 1 else None

    def _gathered_statistics(self) -> tuple[Tensor, Tensor]:
        """The (N, 3, 2) table over all ranks and the step of each last value: the only collectives.

        Two all-reduces of O(N) tensors. MAX over a unique key for each sample's last observation,
        step·world + rank, which elects the rank holding the last value (latest step, then highest
        rank); then SUM over the counts, the sums and the elected ranks' last values. The local
        buffers are read, never written, so calling this twice is harmless. Without
        synchronisation it returns views of the local table.
        """
        self.flush()
        local = self.statistics[: self.num_samples]
        last_step = self.stamps >> _POSITION_BITS
        world = self._world()
        if world is None:
            return local, last_step
        size, rank = world
        seen = last_step > 0
        local_keys = torch.where(seen, last_step * size + rank, -1)
        keys = local_keys.clone()
        dist.all_reduce(keys, op=dist.ReduceOp.MAX, group=self.process_group)
        holder = seen & (keys == local_keys)
        table = torch.stack(
            [local[:, COUNT], local[:, SUM], torch.where(holder, local[:, LAST], 0.0)], dim=1
        )
        dist.all_reduce(table, op=dist.ReduceOp.SUM, group=self.process_group)
        anyone_saw = keys >= 0
        table[:, LAST] = torch.where(anyone_saw, table[:, LAST], math.nan)
        return table, torch.where(anyone_saw, keys.div(size, rounding_mode="floor"), 0)

    @staticmethod
    def _kind(kind: str) -> tuple[int, int, float]:
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {SCORE_KINDS}, got {kind!r}")
        return _KINDS[kind]

    @staticmethod
    def _quantity(quantity: str) -> int:
        if quantity not in _QUANTITIES:
            raise ValueError(f"quantity must be one of {tuple(_QUANTITIES)}, got {quantity!r}")
        return _QUANTITIES[quantity]

    def _check_indices(self, indices: Tensor) -> None:
        if not isinstance(indices, Tensor):
            raise TypeError(
                f"expected indices as an integer torch.Tensor of shape (B,), "
                f"got {type(indices).__name__}"
            )
        if (
            indices.dtype.is_floating_point
            or indices.dtype.is_complex
            or indices.dtype == torch.bool
        ):
            raise TypeError(
                f"expected integer indices (e.g. torch.int64), got dtype {indices.dtype}"
            )
        if indices.dim() != 1:
            raise ValueError(f"expected indices of shape (B,), got shape {tuple(indices.shape)}")
        bound = self.num_samples
        if indices.numel() == 0:
            return
        if indices.device.type == "cpu":
            lowest, highest = (int(value) for value in torch.aminmax(indices))
            if lowest < 0 or highest >= bound:
                culprit = lowest if lowest < 0 else highest
                raise IndexError(
                    f"indices must lie in [0, {bound}) (num_samples={bound}), got {culprit}"
                )
        else:  # no host synchronisation: the check runs on the device, in stream order
            in_range = ((indices >= 0) & (indices < bound)).all()
            torch._assert_async(in_range, f"ConfidenceTracker: indices must lie in [0, {bound})")

    @staticmethod
    def _check_values(name: str, value: Tensor, indices: Tensor) -> None:
        if not isinstance(value, Tensor):
            raise TypeError(
                f"expected {name} as a floating-point torch.Tensor of shape (B,), "
                f"got {type(value).__name__}"
            )
        if not value.dtype.is_floating_point:
            raise TypeError(f"expected a floating-point {name} tensor, got dtype {value.dtype}")
        if value.shape != indices.shape:
            raise ValueError(
                f"expected {name} of the shape of indices {tuple(indices.shape)}, "
                f"got shape {tuple(value.shape)}"
            )

    def _save_to_state_dict(
        self, destination: dict[str, Any], prefix: str, keep_vars: bool
    ) -> None:
        self.flush()  # the saved state holds every observation so far
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        self._pending = 0  # the loaded state replaces everything recorded here
        # The history grows by one row an epoch: take the saved number of rows before copying.
        if self.keep_history:
            for name in ("confidence_history", "loss_history"):
                saved = state_dict.get(prefix + name)
                current: Tensor = getattr(self, name)
                if isinstance(saved, Tensor) and saved.dim() == 2:
                    setattr(self, name, current.new_empty((saved.shape[0], current.shape[1])))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


# -- export ------------------------------------------------------------------------------------------

SUSPECTS_HEADER = ("index", "score", "given_label", "predicted_label")


def export_suspects(
    tracker: ConfidenceTracker,
    labels: Tensor,
    predictions: Tensor,
    path: str | os.PathLike[str],
    k: int | None = None,
    kind: str = "mean_confidence",
) -> Tensor:
    """Write the tracked samples, ranked from most to least suspicious, to a CSV file.

    One row per sample, most suspicious first, under the header
    ``index,score,given_label,predicted_label``: the sample's position in the dataset, its
    ``tracker.scores(kind)`` (mean σ by default: low = suspicious; for the loss kinds, high =
    suspicious), the label it was trained with and the model's prediction. The order is
    :meth:`ConfidenceTracker.suspects`'s: ties keep index order, never-observed samples come last
    with score ``nan``. Scores are written with 6 significant digits.

    Args:
        tracker: the tracker fed during training.
        labels: the given (possibly wrong) label of every sample, shape (N,), N = ``num_samples``.
        predictions: the predicted label of every sample, shape (N,), or one row of class scores
            (logits or probabilities) per sample, shape (N, C), whose argmax is written.
        path: the CSV file to write (replaced if it exists).
        k: write only the ``k`` most suspicious samples (default: all).
        kind: the score to rank by, one of :data:`superloss.tracking.SCORE_KINDS`.

    Returns:
        The written dataset indices (int64, on the CPU), most suspicious first.

    Raises:
        TypeError: ``labels`` or ``predictions`` is not a tensor.
        ValueError: their first dimension is not ``tracker.num_samples``, a bad ``k`` or ``kind``.

    Example:
        >>> import torch, tempfile, pathlib
        >>> from superloss.tracking import ConfidenceTracker, export_suspects
        >>> tracker = ConfidenceTracker(3)
        >>> tracker.update(torch.tensor([0, 1, 2]), torch.tensor([1.5, 0.25, 0.75]))
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "suspects.csv"
        >>> export_suspects(tracker, torch.tensor([4, 7, 1]), torch.tensor([4, 2, 1]), path)
        tensor([1, 2, 0])
        >>> print(path.read_text(), end="")
        index,score,given_label,predicted_label
        1,0.25,7,2
        2,0.75,1,1
        0,1.5,4,4
    """
    size = tracker.num_samples
    given = _per_sample("labels", labels, size, allow_scores=False)
    predicted = _per_sample("predictions", predictions, size, allow_scores=True)
    order = tracker.suspects(k=k, kind=kind).cpu()
    scores = tracker.scores(kind).cpu()
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(SUSPECTS_HEADER)
        for index, score, label, prediction in zip(
            order.tolist(),
            scores[order].tolist(),
            given[order].tolist(),
            predicted[order].tolist(),
            strict=True,
        ):
            writer.writerow(
                [index, "nan" if math.isnan(score) else f"{score:.6g}", label, prediction]
            )
    return order


def _per_sample(name: str, values: Tensor, size: int, allow_scores: bool) -> Tensor:
    """``values`` as one integer label per sample, on the CPU (argmax of rows of class scores)."""
    if not isinstance(values, Tensor):
        raise TypeError(f"expected {name} as a torch.Tensor, got {type(values).__name__}")
    shapes = f"({size},)" + (f" or ({size}, C)" if allow_scores else "")
    if values.dim() == 2 and allow_scores and values.shape[0] == size and values.shape[1] > 0:
        return values.detach().argmax(dim=1).cpu()
    if values.dim() != 1 or values.shape[0] != size:
        raise ValueError(
            f"expected {name} of shape {shapes} (the tracker's num_samples), "
            f"got shape {tuple(values.shape)}"
        )
    if values.dtype.is_floating_point or values.dtype.is_complex:
        raise ValueError(f"expected integer {name} (class indices), got dtype {values.dtype}")
    return values.detach().to(torch.int64).cpu()

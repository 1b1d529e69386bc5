"""The samples a :class:`~superloss.ConfidenceTracker` doubts most, written to a CSV file to review.

Needs only torch and the standard library, like the core: a training script can call it without the
suite's extra dependencies.
"""

from __future__ import annotations

import csv
import math
import os

import torch
from torch import Tensor

from superloss.tracking import ConfidenceTracker

__all__ = ["SUSPECTS_HEADER", "export_suspects"]

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
        >>> from superloss import ConfidenceTracker
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

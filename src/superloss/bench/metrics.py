"""Ranking metrics, in one place and with one rule for undefined cases.

Every score ranks items, higher = more suspicious (or more similar). The rule everywhere:

- a NaN score (an item never observed) ranks below every other score; ±inf rank above / below all
  finite scores; ties count half (AUROC) or keep index order (precision@k, :func:`ranking`);
- a metric that is undefined for its input is NaN, never an exception: AUROC without both a
  positive and a negative, AP and precision@k without a positive, mAP without a query that has a
  relevant item, recall@1 with fewer than two items.

AUROC and AP are scikit-learn's ``roc_auc_score`` and ``average_precision_score``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

QUERY_CHUNK = 1024  # retrieval queries ranked at once: bounds the similarity matrix held in memory


def _filled(scores: Tensor) -> Tensor:
    """Scores as float64 on the CPU with NaN below and ±inf beyond every finite score."""
    values = scores.detach().double().cpu()
    finite = values[values.isfinite()]
    low = float(finite.min()) - 1.0 if finite.numel() else 0.0
    high = float(finite.max()) + 1.0 if finite.numel() else 0.0
    return values.nan_to_num(nan=low, posinf=high, neginf=low)


def auroc(scores: Tensor, positives: Tensor) -> float:
    """Area under the ROC curve of ``scores`` for ``positives`` (ties count half); NaN where
    undefined (one class only)."""
    from sklearn.metrics import roc_auc_score

    truth = positives.detach().cpu().bool()
    count = int(truth.sum())
    if not 0 < count < truth.numel():
        return math.nan
    return float(roc_auc_score(truth.numpy(), _filled(scores).numpy()))


def average_precision(scores: Tensor, positives: Tensor) -> float:
    """Average precision of ``scores`` for ``positives``; NaN without a positive."""
    from sklearn.metrics import average_precision_score

    truth = positives.detach().cpu().bool()
    if not bool(truth.any()):
        return math.nan
    return float(average_precision_score(truth.numpy(), _filled(scores).numpy()))


def ranking(suspicion: Tensor) -> Tensor:
    """Indices from most to least suspicious; ties keep index order, NaN ranks last."""
    values = suspicion.detach().double().cpu()
    values = torch.where(values.isnan(), -math.inf, values)
    return torch.sort(values, descending=True, stable=True).indices


def precision_at_k(suspicion: Tensor, corrupted: Tensor, k: int) -> float:
    """Share of corrupted samples among the ``k`` most suspicious (see :func:`ranking`); NaN if k = 0."""
    if k <= 0:
        return math.nan
    top = ranking(suspicion)[:k]
    return float(corrupted.detach().cpu().bool()[top].double().mean())


def ranking_metrics(suspicion: Tensor, corrupted: Tensor) -> dict[str, float]:
    """``auroc``, ``ap`` and ``precision@noise`` of ``suspicion`` (higher = more suspicious).

    ``corrupted`` marks the positives; precision@noise is precision@k with k the number of
    positives. Undefined metrics are NaN (module docstring).
    """
    positives = corrupted.detach().cpu().bool()
    values = suspicion.detach().double().cpu()
    if values.shape != positives.shape or values.dim() != 1:
        raise ValueError(
            f"expected suspicion and corrupted of one shape (N,), got {tuple(values.shape)} and "
            f"{tuple(positives.shape)}"
        )
    return {
        "auroc": auroc(values, positives),
        "ap": average_precision(values, positives),
        "precision@noise": precision_at_k(values, positives, int(positives.sum())),
    }


def upcast_half(values: Tensor) -> Tensor:
    """float16 and bfloat16 values as float32; others as they are."""
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


@torch.no_grad()
def retrieval_metrics(embeddings: Tensor, labels: Tensor) -> dict[str, float]:
    """Mean average precision and recall@1, in %, of every item as a query against all the others.

    Items are ranked by the dot product of ``embeddings`` (cosine similarity for unit vectors), ties
    by index. AP of a query = mean, over its relevant items (same label), of the precision at their
    rank; queries with no relevant item are left out of the mean (``map`` is NaN if none is left).
    """
    count = int(labels.shape[0])
    if count < 2:
        return {"map": math.nan, "recall@1": math.nan}
    embeddings = upcast_half(embeddings)
    ranks = torch.arange(1, count, device=embeddings.device, dtype=torch.float64)
    ap_total, ap_count, hits = 0.0, 0, 0
    for start in range(0, count, QUERY_CHUNK):
        queries = torch.arange(start, min(start + QUERY_CHUNK, count), device=embeddings.device)
        similarity = embeddings[queries] @ embeddings.T
        order = torch.argsort(similarity, dim=1, descending=True, stable=True)
        # Drop the query itself (exactly one entry per row), wherever NaN or ties placed it.
        others = order[order != queries[:, None]].view(len(queries), count - 1)
        relevant = labels[others] == labels[queries][:, None]
        hits += int(relevant[:, 0].sum())
        precision = relevant.cumsum(dim=1).double() / ranks
        num_relevant = relevant.sum(dim=1)
        has_relevant = num_relevant > 0
        query_ap = (precision * relevant).sum(dim=1) / num_relevant.clamp_min(1)
        ap_total += float(query_ap[has_relevant].sum())
        ap_count += int(has_relevant.sum())
    mean_ap = 100.0 * ap_total / ap_count if ap_count else math.nan
    return {"map": mean_ap, "recall@1": 100.0 * hits / count}

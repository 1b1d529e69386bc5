r"""Metric learning for retrieval of unseen classes, trained on noisy labels; metric: mAP in %.

Class-disjoint splits, as in the usual metric-learning benchmarks (CUB-200, Cars-196, SOP): the
model is trained on the first 60% of the classes (digits / MNIST: 0–5) and evaluated on the others
(6–9), which it never saw. ``--class-split seeded`` draws the training classes from the run's seed
instead (the same draw for every method of a seed: paired comparisons).

- Training: the training split's images of the training classes, their labels relabelled 0..K−1
  and corrupted by the run's noise model over those K classes (e.g. ``symmetric``, as in
  classification).
  Each corrupted label makes wrong pairs: a positive pair across two classes, or a negative pair
  inside one.
- Validation (model selection): the validation split's images of the training classes, with noisy
  labels drawn like the training ones (as classification does).
- Test: the test split's images of the held-out classes, clean labels. Every image is a query
  against all the other held-out test images (the gallery).

Model: the dataset's model with ``embedding_dim`` outputs (32), L2-normalised here, in the loss and
in evaluation. Loss: the contrastive loss of Hadsell, Chopra & LeCun (CVPR 2006) over every pair
(i < j) of a batch, on the normalised embeddings at Euclidean distance d_ij:

.. math::

    \ell_{ij} = \begin{cases} \tfrac12\, d_{ij}^2 & y_i = y_j \\
                              \tfrac12 \max(0,\, m - d_{ij})^2 & y_i \neq y_j \end{cases}

Those per-pair losses are the task's base loss, so the generic methods apply per pair: ``plain``
averages them, ``superloss`` weights each pair by its σ (the paper's retrieval setting: SuperLoss
per pair of a contrastive loss). The method sees one vector of pair losses, so positive and negative
pairs share one threshold there; τ is the EMA of the batch-mean pair loss (``TaskData.num_classes``
is None, so the method's ``tau="auto"`` picks ``"ema"``: log C means nothing for a pair loss).
The recorded per-sample weight (histograms, weight AUROC, tracking) is the mean σ over the sample's
pairs in its batch, and likewise the per-sample loss.

Metrics on the held-out classes, in %: ``map`` (mean over queries of the average precision of the
ranking by cosine similarity; queries without any other image of their class are left out) and
``recall@1`` (whether the nearest other image shares the query's class).

Hyper-parameters, fixed before any result was seen:
- ``margin`` m = 0.5, set a priori: on unit vectors d ∈ [0, 2], and two random directions in 32
  dimensions lie at d ≈ √2, so negatives are pushed at least about a third of that apart.
  (Radenović et al., TPAMI 2018, use 0.7–0.85 with deep CNN features.)
- ``embedding_dim`` = 32: a common small embedding size for small images.
- 60% of the classes for training: close to the half/half of CUB and Cars, leaving 4 of 10 digit
  classes to retrieve among.
- Optimiser, epochs, batch size and learning rate: the dataset's defaults (``presets.py``).

``--train-size`` keeps the first N training images before the held-out classes are removed. Under
``--nproc`` (torch.distributed), pairs are formed within each process's share of the batch.

Reading the results: with few training classes, what the embedding learns transfers weakly to the
held-out ones. On digits the trained MLP retrieves 6–9 worse than the standardised raw pixels do
(mAP ≈ 52–55 % at the last epoch, ≈ 79 % for pixels) and its best epoch is the first; on MNIST the
gap is smaller (≈ 55 % vs 61 %). Compare methods with each other, not with an absolute level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superloss.bench.data import load_dataset
from superloss.bench.methods.base import Method
from superloss.bench.metrics import retrieval_metrics, upcast_half
from superloss.bench.noise import apply_noise
from superloss.bench.options import option
from superloss.bench.tasks.base import TASKS, StepOutput, Task, TaskData

CLASS_SPLITS = ("fixed", "seeded")
TRAIN_CLASS_FRACTION = 0.6


@dataclass(frozen=True)
class RetrievalOptions:
    margin: float = option(0.5, "contrastive margin on unit embeddings", low=0.0, low_open=True)
    embedding_dim: int = option(32, "embedding size", low=1)
    class_split: str = option(
        "fixed",
        "training classes: the first 60% (fixed) or drawn by the seed (seeded)",
        choices=CLASS_SPLITS,
    )


def class_split(num_classes: int, seed: int | None = None) -> tuple[list[int], list[int]]:
    """(training classes, held-out classes): round(60%) of the classes for training, disjoint.

    ``seed`` None takes the first classes (0–5 of 10); a seed draws them by a seeded permutation.
    """
    if num_classes < 4:
        raise ValueError(
            f"retrieval needs at least 4 classes (2 to train, 2 to retrieve), got {num_classes}"
        )
    count = min(max(round(TRAIN_CLASS_FRACTION * num_classes), 2), num_classes - 2)
    if seed is None:
        order = list(range(num_classes))
    else:
        order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[:count]), sorted(order[count:])


def pair_indices(count: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """The pairs (i, j), i < j, of ``count`` items, in row-major order (0,1), (0,2), …, (1,2), …"""
    first, second = torch.triu_indices(count, count, offset=1, device=device)
    return first, second


def contrastive_pair_losses(embeddings: Tensor, labels: Tensor, margin: float) -> Tensor:
    """Per-pair contrastive loss (Hadsell et al. 2006): ½d² for a same-label pair, else ½(m − d)₊².

    ``embeddings`` (N, D) are used as given (normalise them first); pairs as in
    :func:`pair_indices`.
    Returns the N(N−1)/2 pair losses, float32 or wider (half-precision inputs are upcast).
    """
    embeddings = upcast_half(embeddings)
    first, second = pair_indices(embeddings.shape[0], embeddings.device)
    squared = (embeddings[first] - embeddings[second]).pow(2).sum(dim=1)
    # d from d² clamped away from 0: the square root's gradient is infinite at 0.
    distance = squared.clamp_min(1e-12).sqrt()
    same = labels[first] == labels[second]
    return torch.where(same, 0.5 * squared, 0.5 * F.relu(margin - distance).pow(2))


def normalised(outputs: Tensor) -> Tensor:
    """Unit-length rows; half-precision outputs (autocast) are upcast to float32 first."""
    return F.normalize(upcast_half(outputs), dim=1)


def per_sample_mean(pair_values: Tensor, count: int) -> Tensor:
    """For each of ``count`` items, the mean value of the pairs it is in (NaN if in none)."""
    values = pair_values.detach().float()
    if count < 2:
        return torch.full((count,), math.nan, device=values.device)
    first, second = pair_indices(count, values.device)
    total = torch.zeros(count, device=values.device).index_add_(0, first, values)
    return total.index_add_(0, second, values) / (count - 1)  # each item is in count − 1 pairs


@TASKS.register("retrieval")
class Retrieval(Task):
    name = "retrieval"
    metric = "map"
    higher_is_better = True
    Options = RetrievalOptions
    params_hold_defaults = False  # only the options given: a run with the defaults keeps its key

    def base_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return contrastive_pair_losses(normalised(outputs), targets, float(self.options.margin))

    def prepare(self) -> TaskData:
        config = self.config
        splits = load_dataset(config.dataset, config.data_root, config.seed, config.train_size)
        seed = config.seed if self.options.class_split == "seeded" else None
        train_classes, test_classes = class_split(splits.num_classes, seed)
        relabel = torch.full((splits.num_classes,), -1, dtype=torch.int64)
        relabel[train_classes] = torch.arange(len(train_classes))
        kept: dict[str, tuple[Tensor, Tensor]] = {}
        noisy: dict[str, Tensor] = {}
        for split, inputs, labels in (
            ("train", splits.x_train, splits.y_train),
            ("val", splits.x_val, splits.y_val),
        ):
            keep = torch.isin(labels, torch.tensor(train_classes))
            clean = relabel[labels[keep]]
            kept[split] = (inputs[keep], clean)
            # Seeds as in classification: one per split, the same for every method.
            noisy[split] = apply_noise(
                config.noise_type,
                clean,
                config.noise,
                num_classes=len(train_classes),
                dataset=config.dataset,
                seed=config.seed * 2 + (split == "val"),
            )
        test_keep = torch.isin(splits.y_test, torch.tensor(test_classes))
        train_inputs, train_clean = kept["train"]
        corrupted = noisy["train"] != train_clean
        return TaskData(
            train_inputs=train_inputs,
            train_targets=noisy["train"],
            corrupted=corrupted,
            val_inputs=kept["val"][0],
            val_targets=noisy["val"],
            test_inputs=splits.x_test[test_keep],
            test_targets=splits.y_test[test_keep],
            input_shape=splits.input_shape,
            outputs=int(self.options.embedding_dim),
            num_classes=None,  # pair losses: SuperLoss's τ is an EMA, not log C
            info={
                "realised_noise": float(corrupted.float().mean()) if len(corrupted) else 0.0,
                "train_clean_targets": train_clean,
                "train_classes": train_classes,
                "test_classes": test_classes,
            },
        )

    def training_step(
        self, model: nn.Module, method: Method, inputs: Tensor, targets: Tensor, indices: Tensor
    ) -> StepOutput:
        output = method(model(inputs), targets, indices)
        # The method gave one weight and one loss per pair; the loop wants one per sample.
        count = int(inputs.shape[0])
        weights = None if output.weights is None else per_sample_mean(output.weights, count)
        losses = per_sample_mean(output.sample_losses(), count)
        return StepOutput(output.loss(), weights, losses, output.tau)

    def evaluate(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> dict[str, float]:
        embeddings = normalised(self.predict(model, inputs))
        return retrieval_metrics(embeddings, targets)

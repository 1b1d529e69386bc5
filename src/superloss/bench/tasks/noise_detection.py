r"""Finding mislabelled training samples: SuperLoss's confidences, the plain loss, and cleanlab.

The data are the classification task's (its ``prepare``: the dataset, its noise model and rate, the
seed's corruption), and every approach ranks the same noisy training set from most to least
suspicious. A run of this task is one *approach* (``RunConfig.method``):

- ``superloss``: one classification run with the ``superloss`` method (its defaults; ``--superloss-*``
  options apply) whose σ feed a :class:`~superloss.ConfidenceTracker` after every step. Score: the
  mean σ over training (low = suspicious); the last σ is scored too (``*_last`` metrics).
- ``ce``: one run with the plain cross-entropy (``ce``), the tracker fed with its per-sample losses.
  Score: the mean loss over training (high = suspicious); the last loss for ``*_last``.
- ``cleanlab``: confident learning (Northcutt et al., JAIR 2021) on out-of-fold predicted
  probabilities: the noisy training set is cut into K folds (``--folds``, default 5; stratified by
  the given label, as cleanlab's own cross-validation, and seeded), a ``ce`` run with the same model,
  epochs and optimiser settings is trained on each K−1 folds and predicts the softmax of the
  held-out fold. Score: ``cleanlab.rank.get_label_quality_scores`` (self-confidence, the predicted
  probability of the given label; low = suspicious). ``cleanlab.filter.find_label_issues`` (its
  default, prune by noise rate) gives cleanlab's own set of issues, recorded beside the metrics.

The runner hands each run to :meth:`NoiseDetection.run` (the ``Task.run`` hook) rather than
training ``config.method`` itself, and ``--methods`` takes these approaches (``Task.methods``). Every
training goes through the one loop, ``runner.fit``, with the run's settings and seed, in one process
(``--nproc 1``). The fold runs evaluate on their held-out fold (given labels) instead of the
validation and test sets, which cleanlab does not need; the ``superloss`` and ``ce`` runs evaluate
on both every epoch, as every run of the suite does (timed apart, see below).

Metrics (``final``, all higher-is-better), against the training samples whose label the noise changed:
``auroc`` (ties count half), ``ap`` (average precision) and ``precision@noise`` (the share of
corrupted samples among the k most suspicious, k = the true number of corrupted labels; ties keep
index order), by :func:`ranking_metrics` (scikit-learn's ``roc_auc_score`` and
``average_precision_score``). They are NaN where undefined (no corrupted label, e.g. noise 0). The
``superloss`` and ``ce`` runs also give ``accuracy``, the clean test accuracy (%) of the model they
trained. For them, ``history`` holds each epoch's metrics of the scores accumulated so far, so
``best`` is the best epoch's (an oracle, as everywhere in the suite) and ``selected`` the metrics at
the epoch of the best validation accuracy; for ``cleanlab``, which has no epochs, the three are
equal. Wall times are not metrics (lower is better), and go in ``detection`` (:class:`Clock`):
``time_s`` runs from the start of training to the scores, less the benchmark's own per-epoch scoring
(``monitoring_time_s``); ``evaluation_time_s`` is the part of it the loop spent evaluating on the
validation and test sets (or the held-out fold) after each epoch, which detecting needs not, and
``time_without_evaluation_s`` the rest: what the approach costs. Data preparation, the same for
every approach, and retraining are left out; ``wall_time_s`` is the whole run's.

``--retrain``: drop each approach's k most suspicious samples and train ``ce`` again, same settings,
on the rest; ``retrain_accuracy`` is its clean test accuracy. k is the true number of corrupted
labels — an oracle a user does not have, chosen so that every approach drops as many samples and
the comparison is of rankings alone (cleanlab's own count, ``detection.issues_found``, is recorded
for comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from superloss.bench.config import RunConfig
from superloss.bench.registry import TASKS
from superloss.bench.tasks.base import TaskData
from superloss.bench.tasks.classification import Classification
from superloss.tracking import ConfidenceTracker

if TYPE_CHECKING:
    from superloss.bench.methods.base import Method

EpochCallback = Callable[[int, dict[str, float]], None]

APPROACHES = ("superloss", "ce", "cleanlab")
CLEANLAB = "cleanlab"
DEFAULTS: dict[str, Any] = {"folds": 5, "retrain": False}
RANKING_METRICS = ("auroc", "ap", "precision@noise")
LAST_SUFFIX = "_last"
STATS = ("final", "best", "selected")
# The fold shuffle's seed, apart from the noise's (2·seed, 2·seed + 1) and the loop's (seed).
FOLD_SEED = 3_000_000
# Tracker score kinds (mean, last) when the method reports σ, and when it reports only its loss.
CONFIDENCE_KINDS = ("mean_confidence", "last_confidence")
LOSS_KINDS = ("mean_loss", "last_loss")


# -- ranking metrics ---------------------------------------------------------------------------------


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

    ``corrupted`` marks the positives. NaN suspicions (never-observed samples) count as the least
    suspicious. AUROC is NaN without both a corrupted and a clean sample, AP and precision@noise
    without a corrupted one.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    positives = corrupted.detach().cpu().bool()
    values = suspicion.detach().double().cpu()
    if values.shape != positives.shape or values.dim() != 1:
        raise ValueError(
            f"expected suspicion and corrupted of one shape (N,), got {tuple(values.shape)} and "
            f"{tuple(positives.shape)}"
        )
    count = int(positives.sum())
    finite = values[values.isfinite()]
    low = float(finite.min()) - 1.0 if finite.numel() else 0.0
    high = float(finite.max()) + 1.0 if finite.numel() else 0.0
    filled = values.nan_to_num(nan=low, posinf=high, neginf=low).numpy()
    truth = positives.numpy()
    has_both = 0 < count < positives.numel()
    return {
        "auroc": float(roc_auc_score(truth, filled)) if has_both else math.nan,
        "ap": float(average_precision_score(truth, filled)) if count else math.nan,
        "precision@noise": precision_at_k(values, positives, count),
    }


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 6) for name, value in metrics.items()}


# -- folds and subsets -------------------------------------------------------------------------------


def fold_assignment(labels: Tensor, folds: int, seed: int) -> Tensor:
    """The fold, 0 … folds−1, of each sample: a seeded partition stratified by label.

    The samples are shuffled by ``seed``, sorted by label (stably), and dealt to the folds in turn:
    fold sizes differ by at most one, and so do each label's counts in the folds.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an int >= 2, got {folds!r}")
    count = labels.shape[0]
    if folds > count:
        raise ValueError(f"cannot cut {count} samples into {folds} folds")
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(count, generator=generator)
    dealt = shuffled[torch.sort(labels.cpu()[shuffled], stable=True).indices]
    assignment = torch.empty(count, dtype=torch.int64)
    assignment[dealt] = torch.arange(count) % folds
    return assignment


def training_subset(data: TaskData, keep: Tensor, evaluate_on: Tensor | None = None) -> TaskData:
    """``data`` with only the training samples ``keep``; evaluated on the training samples
    ``evaluate_on`` (with their given labels) instead of the validation and test sets, if given."""
    corrupted = data.corrupted[keep]
    subset = dataclasses.replace(
        data,
        train_inputs=data.train_inputs[keep],
        train_targets=data.train_targets[keep],
        corrupted=corrupted,
        info={"realised_noise": float(corrupted.float().mean()) if len(keep) else 0.0},
    )
    if evaluate_on is not None:
        inputs, targets = data.train_inputs[evaluate_on], data.train_targets[evaluate_on]
        subset.val_inputs, subset.val_targets = inputs, targets
        subset.test_inputs, subset.test_targets = inputs, targets
    return subset


# -- cleanlab ----------------------------------------------------------------------------------------


def cleanlab_scores(labels: Tensor, probabilities: Tensor) -> tuple[Tensor, Tensor]:
    """cleanlab's suspicion of each sample (−self-confidence) and its own issues (a bool mask).

    Args:
        labels: the given labels, shape (N,), integers in [0, C).
        probabilities: out-of-fold predicted probabilities, shape (N, C), rows summing to 1.
    """
    import numpy as np
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    given = labels.detach().cpu().numpy().astype(np.int64)
    predicted = probabilities.detach().cpu().double().numpy()
    quality = get_label_quality_scores(given, predicted, method="self_confidence")
    # n_jobs=1: the suite trains single-threaded runs side by side (--jobs); no worker pool here.
    issues = find_label_issues(given, predicted, n_jobs=1)
    return -torch.from_numpy(np.asarray(quality, dtype=np.float64)), torch.from_numpy(
        np.asarray(issues, dtype=bool)
    )


# -- timing ------------------------------------------------------------------------------------------


class Clock:
    """Splits an approach's time: the loop's per-epoch evaluation and the benchmark's own scoring.

    The loop calls the observer after every step and the epoch callback after evaluating: the time
    from an epoch's last :meth:`step` to its :meth:`end_epoch` is evaluation. Time spent in
    :meth:`monitoring` blocks (per-epoch scoring, the progress bar) is not the approach's.
    """

    def __init__(self) -> None:
        self.started = self.last_step = time.perf_counter()
        self.evaluation = self.monitored = 0.0

    def step(self) -> None:
        self.last_step = time.perf_counter()

    def end_epoch(self) -> None:
        self.evaluation += time.perf_counter() - self.last_step

    @contextlib.contextmanager
    def monitoring(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.monitored += time.perf_counter() - started

    def times(self) -> dict[str, float]:
        """``time_s``, ``evaluation_time_s``, ``time_without_evaluation_s``, ``monitoring_time_s``."""
        total = time.perf_counter() - self.started - self.monitored
        return {
            "time_s": round(total, 3),
            "evaluation_time_s": round(self.evaluation, 3),
            "time_without_evaluation_s": round(total - self.evaluation, 3),
            "monitoring_time_s": round(self.monitored, 3),
        }


# -- options -----------------------------------------------------------------------------------------


def task_options(task_params: dict[str, Any]) -> dict[str, Any]:
    """The task's options with defaults filled in; ValueError on an unknown option or a bad value."""
    unknown = set(task_params) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown noise-detection option(s) {sorted(unknown)}; expected {sorted(DEFAULTS)}"
        )
    options = {**DEFAULTS, **task_params}
    folds = options["folds"]
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"--folds must be an integer >= 2, got {folds!r}")
    if not isinstance(options["retrain"], bool):
        raise ValueError(f"retrain must be true or false, got {options['retrain']!r}")
    return options


class NoiseDetection(Classification):
    """Ranks the noisy training samples by suspicion; metric: AUROC for the corrupted ones."""

    name = "noise-detection"
    metric = "auroc"
    higher_is_better = True
    default_methods = ",".join(APPROACHES)
    default_noise: ClassVar[str] = "0.2,0.4"  # rates with labels to find: --noise's default
    # The names --methods takes: this task's approaches, not the registered methods.
    methods: ClassVar[tuple[str, ...] | None] = APPROACHES

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--folds",
            type=int,
            default=DEFAULTS["folds"],
            help="K of cleanlab's K-fold cross-validation (default %(default)s)",
        )
        parser.add_argument(
            "--retrain",
            action="store_true",
            help="drop each approach's k most suspicious samples (k: the true number of corrupted "
            "labels, an oracle) and retrain with ce on the rest",
        )

    def task_params(self, args: argparse.Namespace) -> dict[str, Any]:
        if getattr(args, "nproc", 1) != 1:
            raise ValueError("the noise-detection task trains in one process: --nproc must be 1")
        return task_options({"folds": args.folds, "retrain": args.retrain})

    def prepare(self, config: RunConfig) -> TaskData:
        folds = task_options(config.task_params)["folds"]
        data = super().prepare(config)
        if folds > data.num_train:
            raise ValueError(f"--folds {folds} exceeds the {data.num_train} training samples")
        return data

    def run(self, config: RunConfig, on_epoch: EpochCallback | None = None) -> dict[str, Any]:
        """The run of one approach (``config.method``): its record, trained through ``runner.fit``."""
        if config.method not in APPROACHES:
            raise ValueError(
                f"unknown noise-detection approach {config.method!r}; expected one of "
                f"{', '.join(APPROACHES)}"
            )
        if config.nproc != 1:
            raise ValueError("the noise-detection task trains in one process: nproc must be 1")
        started = time.perf_counter()
        options = task_options(config.task_params)
        data = self.prepare(config)
        if config.method == CLEANLAB:
            record, suspicion = self._cleanlab(config, data, options["folds"], on_epoch)
        else:
            record, suspicion = self._tracked(config, data, on_epoch)
        if options["retrain"]:
            accuracy, record["retrain"] = self._retrain(config, data, suspicion)
            for stat in STATS:
                record[stat]["retrain_accuracy"] = accuracy[stat]
        record["wall_time_s"] = round(time.perf_counter() - started, 3)
        return record

    # -- approaches ----------------------------------------------------------------------------------

    def _tracked(
        self, config: RunConfig, data: TaskData, on_epoch: EpochCallback | None
    ) -> tuple[dict[str, Any], Tensor]:
        """One run of the method ``config.method``, a tracker fed after every step."""
        from superloss.bench import runner

        clock = Clock()
        tracker = ConfidenceTracker(data.num_train, device=config.device)

        def observe(indices: Tensor, method: Method) -> None:
            losses = method.sample_losses
            assert losses is not None  # set by every method's forward
            weights = method.sample_weights
            if weights is None:  # not recorded: NaN is skipped by the tracker
                weights = torch.full_like(losses, math.nan)
            tracker.update(indices, weights, losses)
            clock.step()

        per_epoch: dict[int, dict[str, float]] = {}

        def score_epoch(epoch: int, entry: dict[str, float]) -> None:
            clock.end_epoch()
            with clock.monitoring():
                per_epoch[epoch] = _tracker_metrics(tracker, data.corrupted)
                if on_epoch is not None:
                    on_epoch(epoch, {**entry, **per_epoch[epoch]})

        inner = dataclasses.replace(config, task="classification", task_params={})
        _, trained = runner.fit(inner, on_epoch=score_epoch, data=data, observer=observe)
        kind, last_kind = _kinds(tracker)
        suspicion = tracker.suspicion(kind).cpu()
        times = clock.times()

        history = [{**entry, **per_epoch[int(entry["epoch"])]} for entry in trained["history"]]
        metrics = [*RANKING_METRICS, *(m + LAST_SUFFIX for m in RANKING_METRICS)]
        chosen = int(trained["selected"]["epoch"])
        by_epoch = {int(entry["epoch"]): entry for entry in history}
        record = _record(
            config,
            data,
            final={
                **{m: history[-1][m] for m in metrics},
                "accuracy": trained["final"]["accuracy"],
            },
            best={
                **{m: _best(history, m) for m in metrics},
                "accuracy": trained["best"]["accuracy"],
            },
            selected={
                **{m: by_epoch[chosen][m] for m in metrics},
                "accuracy": trained["selected"]["accuracy"],
                "epoch": chosen,
            },
            history=history,
            detection={
                "score": kind,
                "last_score": last_kind,
                "num_corrupted": int(data.corrupted.sum()),
                **times,
            },
        )
        record["weight_histograms"] = trained["weight_histograms"]
        return record, suspicion

    def _cleanlab(
        self, config: RunConfig, data: TaskData, folds: int, on_epoch: EpochCallback | None
    ) -> tuple[dict[str, Any], Tensor]:
        """cleanlab on out-of-fold probabilities from ``folds`` ``ce`` runs."""
        from superloss.bench import runner

        clock = Clock()

        def observe(indices: Tensor, method: Method) -> None:
            clock.step()

        def end_epoch(epoch: int, entry: dict[str, float]) -> None:
            clock.end_epoch()
            if on_epoch is not None:
                with clock.monitoring():
                    on_epoch(epoch, entry)

        assignment = fold_assignment(data.train_targets, folds, FOLD_SEED + config.seed)
        probabilities = torch.empty(data.num_train, data.outputs, dtype=torch.float64)
        inner = dataclasses.replace(
            config, task="classification", method="ce", method_params={}, task_params={}
        )
        device = torch.device(config.device)
        fold_records = []
        for fold in range(folds):
            held_out = (assignment == fold).nonzero().squeeze(1)
            kept = (assignment != fold).nonzero().squeeze(1)
            model, trained = runner.fit(
                inner,
                on_epoch=end_epoch,
                data=training_subset(data, kept, held_out),
                observer=observe,
            )
            logits = self.predict(model, data.train_inputs[held_out].to(device))
            probabilities[held_out] = torch.softmax(logits.double(), dim=1).cpu()
            fold_records.append(
                {
                    "fold": fold,
                    "held_out": len(held_out),
                    "held_out_accuracy": trained["final"]["accuracy"],  # on the given labels
                    "wall_time_s": trained["wall_time_s"],
                }
            )
        scoring = time.perf_counter()
        suspicion, issues = cleanlab_scores(data.train_targets, probabilities)
        scoring_time = time.perf_counter() - scoring
        times = clock.times()
        metrics = _rounded(ranking_metrics(suspicion, data.corrupted))
        found = int(issues.sum())
        true_found = int((issues & data.corrupted.cpu()).sum())
        corrupted = int(data.corrupted.sum())
        record = _record(
            config,
            data,
            final=dict(metrics),
            best=dict(metrics),
            selected=dict(metrics),
            history=[],
            detection={
                "score": "self_confidence",
                "num_corrupted": corrupted,
                "folds": fold_records,
                "issues_found": found,
                "issues_precision": round(true_found / found, 6) if found else math.nan,
                "issues_recall": round(true_found / corrupted, 6) if corrupted else math.nan,
                "scoring_time_s": round(scoring_time, 3),
                **times,
            },
        )
        import cleanlab

        record["versions"]["cleanlab"] = cleanlab.__version__
        return record, suspicion

    def _retrain(
        self, config: RunConfig, data: TaskData, suspicion: Tensor
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """``ce`` trained again without the k most suspicious samples, k = the true corrupted count."""
        from superloss.bench import runner

        dropped = int(data.corrupted.sum())
        keep = ranking(suspicion)[dropped:].sort().values  # the kept samples in dataset order
        subset = training_subset(data, keep)
        inner = dataclasses.replace(
            config, task="classification", method="ce", method_params={}, task_params={}
        )
        _, trained = runner.fit(inner, data=subset)
        accuracy = {stat: trained[stat]["accuracy"] for stat in STATS}
        info = {
            "dropped": dropped,
            "kept": len(keep),
            "remaining_noise": round(subset.info["realised_noise"], 6),
            "time_s": trained["wall_time_s"],
        }
        return accuracy, info


def _kinds(tracker: ConfidenceTracker) -> tuple[str, str]:
    """σ's score kinds if the method reported σ, else the loss's."""
    return CONFIDENCE_KINDS if int(tracker.observations("confidence").sum()) else LOSS_KINDS


def _tracker_metrics(tracker: ConfidenceTracker, corrupted: Tensor) -> dict[str, float]:
    """Ranking metrics of the tracker's mean score, then (suffixed ``_last``) of its last score."""
    kind, last_kind = _kinds(tracker)
    metrics = ranking_metrics(tracker.suspicion(kind), corrupted)
    last = ranking_metrics(tracker.suspicion(last_kind), corrupted)
    return _rounded(metrics | {name + LAST_SUFFIX: value for name, value in last.items()})


def _best(history: list[dict[str, Any]], metric: str) -> float:
    values = [float(entry[metric]) for entry in history if not math.isnan(entry[metric])]
    return max(values) if values else math.nan


def _record(
    config: RunConfig,
    data: TaskData,
    *,
    final: dict[str, Any],
    best: dict[str, Any],
    selected: dict[str, Any],
    history: list[dict[str, Any]],
    detection: dict[str, Any],
) -> dict[str, Any]:
    """A result record the suite's results, summary and report read like a training run's."""
    from superloss.bench.runner import versions

    return {
        "config": config.as_dict(),
        "key": config.key(),
        "versions": versions(),
        "realised_noise": data.info.get("realised_noise"),
        "history": history,
        "final": final,
        "best": best,
        "selected": selected,
        "weight_histograms": [],
        "detection": detection,
    }


TASKS.register("noise-detection")(NoiseDetection())

r"""Finding mislabelled training samples: SuperLoss's confidences, the plain loss, and cleanlab.

The data are the classification task's (its ``prepare``: the dataset, its noise model and rate, the
seed's corruption), and every approach ranks the same noisy training set from most to least
suspicious. A run of this protocol (``superloss bench noise-detection``) is one *approach*
(``RunConfig.method``):

- ``superloss``: one classification run with the ``superloss`` method (its defaults; ``--superloss-*``
  options apply) whose σ feed a :class:`~superloss.ConfidenceTracker` after every step. Score: the
  mean σ over training (low = suspicious); the last σ is scored too (``*_last`` metrics).
- ``ce``: one run with the plain cross-entropy (``ce``), the tracker fed with its per-sample losses.
  Score: the mean loss over training (high = suspicious); the last loss for ``*_last``.
- ``cleanlab``: confident learning (Northcutt et al., JAIR 2021) on out-of-fold predicted
  probabilities: the noisy training set is cut into K folds (``--folds``, default 5; stratified by
  the given label, as cleanlab's own cross-validation, and seeded), a ``ce`` run with the same model,
  epochs and optimiser settings is trained on each K−1 folds and predicts the softmax of the
  held-out fold — with the weights of its epoch of best accuracy on the held-out fold's given
  (noisy) labels (``engine.fit(keep_selected=True)``), as a user without clean labels would pick
  it, not those of the last epoch, by which the model has memorised the noisy labels. Score: ``cleanlab.rank.get_label_quality_scores`` (self-confidence, the predicted
  probability of the given label; low = suspicious). ``cleanlab.filter.find_label_issues`` (its
  default, prune by noise rate) gives cleanlab's own set of issues, recorded beside the metrics.

The runner dispatches each run to :meth:`NoiseDetection.run`, and ``--methods`` takes these
approaches (``NoiseDetection.approaches``). Every training goes through the one loop,
:func:`superloss.bench.engine.fit`, with the run's settings and seed, in one process (``--nproc 1``). The fold runs evaluate on their held-out fold (given labels) instead of the
validation and test sets, which cleanlab does not need (the held-out evaluation selects each fold's
epoch); the ``superloss`` and ``ce`` runs evaluate on both every epoch, as every run of the suite
does (timed apart, see below).

Metrics (``final``, all higher-is-better), against the training samples whose label the noise changed:
``auroc`` (ties count half), ``ap`` (average precision) and ``precision@noise`` (the share of
corrupted samples among the k most suspicious, k = the true number of corrupted labels; ties keep
index order), by :func:`superloss.bench.metrics.ranking_metrics` (scikit-learn's ``roc_auc_score`` and
``average_precision_score``). They are NaN where undefined (no corrupted label, e.g. noise 0). The
``superloss`` and ``ce`` runs also give ``accuracy``, the clean test accuracy (%) of the model they
trained. For them, ``history`` holds each epoch's metrics of the scores accumulated so far, so
``best`` is the best epoch's (an oracle, as everywhere in the suite) and ``selected`` the metrics at
the epoch of the best validation accuracy; for ``cleanlab``, which has no epochs, the three are
equal. Wall times are not metrics (lower is better), and go in ``detection`` (:class:`Clock`):
``time_s`` runs from the start of training to the scores, less the benchmark's own per-epoch scoring
(``monitoring_time_s``); ``evaluation_time_s`` is the part of it the loop spent evaluating on the
validation and test sets (or the held-out fold) after each epoch, and ``time_without_evaluation_s``
the rest. What an approach costs: the trackers need no evaluation (``time_without_evaluation_s``),
cleanlab's folds need theirs to select the epoch (``time_s``). The time target, a single tracked
run against cleanlab's K fold runs on (K−1)/K of the data each (about K − 1 runs, so one run cannot
beat 1/(K − 1)): ≤ 1.05 / (K − 1) of cleanlab's time; the report gives the measured ratio. Data
preparation, the same for every approach, the framework's one-time set-up (the first optimizer of a process loads torch's
compiler machinery: seconds, paid before any clock) and retraining are left out; ``wall_time_s``
is the whole run's.

``--retrain``: drop each approach's k most suspicious samples and train ``ce`` again, same settings,
on the rest; ``retrain_accuracy`` is its clean test accuracy. k is the true number of corrupted
labels — an oracle a user does not have, chosen so that every approach drops as many samples and
the comparison is of rankings alone (cleanlab's own count, ``detection.issues_found``, is recorded
for comparison).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from superloss.bench.config import RunConfig
from superloss.bench.engine import fit, make_optimizer
from superloss.bench.metrics import ranking, ranking_metrics
from superloss.bench.options import option
from superloss.bench.protocols.base import PROTOCOLS, EpochCallback, Protocol
from superloss.bench.record import RunRecord, Summary, build_record
from superloss.bench.tasks.base import StepOutput, TaskData
from superloss.bench.tasks.classification import Classification
from superloss.tracking import ConfidenceTracker

APPROACHES = ("superloss", "ce", "cleanlab")
CLEANLAB = "cleanlab"
RANKING_METRICS = ("auroc", "ap", "precision@noise")
LAST_SUFFIX = "_last"
STATS = ("final", "best", "selected")
# The fold shuffle's seed, apart from the noise's (2·seed, 2·seed + 1) and the loop's (seed).
FOLD_SEED = 3_000_000
# Tracker score kinds (mean, last) when the method reports σ, and when it reports only its loss.
CONFIDENCE_KINDS = ("mean_confidence", "last_confidence")
LOSS_KINDS = ("mean_loss", "last_loss")


@dataclass(frozen=True)
class NoiseDetectionOptions:
    folds: int = option(5, "K of cleanlab's K-fold cross-validation", low=2)
    retrain: bool = option(
        False,
        "drop each approach's k most suspicious samples (k: the true number of corrupted labels, "
        "an oracle) and retrain with ce on the rest",
    )


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


def _set_up_framework(config: RunConfig) -> None:
    """The framework's one-time set-up, before any clock starts: the first optimizer a process
    builds loads torch's compiler machinery (2.5 s measured on the 2-core machine), a cost of
    starting the process that no approach should be charged — a K-fold approach pays it once for
    its K trainings, a single run would pay it in full."""
    make_optimizer(config, [torch.zeros(1, requires_grad=True, device=config.device)])


# -- the protocol ------------------------------------------------------------------------------------


@PROTOCOLS.register("noise-detection")
class NoiseDetection(Protocol):
    """Ranks the noisy training samples by suspicion; metric: AUROC for the corrupted ones."""

    name = "noise-detection"
    task = "classification"
    Options = NoiseDetectionOptions
    params_hold_defaults = True
    approaches = APPROACHES
    metric = "auroc"
    higher_is_better = True
    default_methods = ",".join(APPROACHES)
    default_noise = "0.2,0.4"  # rates with labels to find: --noise's default

    @classmethod
    def check(cls, config: RunConfig) -> None:
        if config.method not in APPROACHES:
            raise ValueError(
                f"unknown noise-detection approach {config.method!r}; expected one of "
                f"{', '.join(APPROACHES)}"
            )
        if config.nproc != 1:
            raise ValueError("the noise-detection task trains in one process: --nproc must be 1")
        super().check(config)

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        # The classification task's data, loss and metric; its own runs train its methods.
        self.inner = dataclasses.replace(config, task=self.task, task_params={})
        self.run_task = Classification(self.inner)

    def prepare(self) -> TaskData:
        data = self.run_task.prepare()
        if self.options.folds > data.num_train:
            raise ValueError(
                f"--folds {self.options.folds} exceeds the {data.num_train} training samples"
            )
        return data

    def run(self, on_epoch: EpochCallback | None = None) -> RunRecord:
        """The run of one approach (``config.method``): its record."""
        self.check(self.config)
        started = time.perf_counter()
        data = self.prepare()
        _set_up_framework(self.config)
        if self.config.method == CLEANLAB:
            record, suspicion = self._cleanlab(data, on_epoch)
        else:
            record, suspicion = self._tracked(data, on_epoch)
        if self.options.retrain:
            accuracy, record.retrain = self._retrain(data, suspicion)
            for stat in STATS:
                getattr(record, stat)["retrain_accuracy"] = accuracy[stat]
        record.wall_time_s = round(time.perf_counter() - started, 3)
        return record

    # -- approaches ----------------------------------------------------------------------------------

    def _tracked(self, data: TaskData, on_epoch: EpochCallback | None) -> tuple[RunRecord, Tensor]:
        """One run of the method ``config.method``, a tracker fed after every step."""
        clock = Clock()
        tracker = ConfidenceTracker(data.num_train, device=self.config.device)

        def observe(indices: Tensor, output: StepOutput) -> None:
            weights = output.weights
            if weights is None:  # not recorded: NaN is skipped by the tracker
                weights = torch.full_like(output.losses, math.nan)
            tracker.update(indices, weights, output.losses)
            clock.step()

        per_epoch: dict[int, dict[str, float]] = {}

        def score_epoch(epoch: int, entry: dict[str, float]) -> None:
            clock.end_epoch()
            with clock.monitoring():
                per_epoch[epoch] = _tracker_metrics(tracker, data.corrupted)
                if on_epoch is not None:
                    on_epoch(epoch, {**entry, **per_epoch[epoch]})

        _, trained = fit(self.inner, self.run_task, data, on_epoch=score_epoch, observer=observe)
        kind, last_kind = _kinds(tracker)
        suspicion = tracker.suspicion(kind).cpu()
        times = clock.times()
        history = [{**entry, **per_epoch[int(entry["epoch"])]} for entry in trained.history]
        detection = {
            "score": kind,
            "last_score": last_kind,
            "num_corrupted": int(data.corrupted.sum()),
            **times,
        }
        record = build_record(
            self.config,
            history,
            _tracked_summary(history, trained),
            realised_noise=data.info.get("realised_noise"),
            weight_histograms=trained.weight_histograms,
            detection=detection,
        )
        return record, suspicion

    def _out_of_fold(
        self, data: TaskData, clock: Clock, on_epoch: EpochCallback | None
    ) -> tuple[Tensor, list[dict[str, Any]]]:
        """Out-of-fold predicted probabilities of ``ce`` runs on the other folds; per-fold notes."""

        def observe(indices: Tensor, output: StepOutput) -> None:
            clock.step()

        def end_epoch(epoch: int, entry: dict[str, float]) -> None:
            clock.end_epoch()
            if on_epoch is not None:
                with clock.monitoring():
                    on_epoch(epoch, entry)

        folds = self.options.folds
        assignment = fold_assignment(data.train_targets, folds, FOLD_SEED + self.config.seed)
        probabilities = torch.empty(data.num_train, data.outputs, dtype=torch.float64)
        inner = dataclasses.replace(self.inner, method="ce", method_params={})
        device = torch.device(self.config.device)
        notes = []
        for fold in range(folds):
            held_out = (assignment == fold).nonzero().squeeze(1)
            kept = (assignment != fold).nonzero().squeeze(1)
            subset = training_subset(data, kept, held_out)
            # Each fold's model at the epoch of its best accuracy on the held-out part's given
            # (noisy) labels, not the last epoch's, which has memorised the noise.
            model, trained = fit(
                inner,
                self.run_task,
                subset,
                on_epoch=end_epoch,
                observer=observe,
                keep_selected=True,
            )
            logits = self.run_task.predict(model, data.train_inputs[held_out].to(device))
            probabilities[held_out] = torch.softmax(logits.double(), dim=1).cpu()
            notes.append(
                {
                    "fold": fold,
                    "held_out": len(held_out),
                    "selected_epoch": trained.selected["epoch"],
                    # On the given labels: at the selected epoch, and at the last.
                    "held_out_accuracy": trained.selected["accuracy"],
                    "held_out_accuracy_last": trained.final["accuracy"],
                    "wall_time_s": trained.wall_time_s,
                }
            )
        return probabilities, notes

    def _cleanlab(self, data: TaskData, on_epoch: EpochCallback | None) -> tuple[RunRecord, Tensor]:
        """cleanlab on out-of-fold probabilities from ``folds`` ``ce`` runs."""
        import cleanlab

        clock = Clock()
        probabilities, fold_notes = self._out_of_fold(data, clock, on_epoch)
        scoring = time.perf_counter()
        suspicion, issues = cleanlab_scores(data.train_targets, probabilities)
        scoring_time = time.perf_counter() - scoring
        times = clock.times()
        metrics = _rounded(ranking_metrics(suspicion, data.corrupted))
        found = int(issues.sum())
        true_found = int((issues & data.corrupted.cpu()).sum())
        corrupted = int(data.corrupted.sum())
        detection = {
            "score": "self_confidence",
            "num_corrupted": corrupted,
            "folds": fold_notes,
            "issues_found": found,
            "issues_precision": round(true_found / found, 6) if found else math.nan,
            "issues_recall": round(true_found / corrupted, 6) if corrupted else math.nan,
            "scoring_time_s": round(scoring_time, 3),
            **times,
        }
        record = build_record(
            self.config,
            [],
            Summary(dict(metrics), dict(metrics), dict(metrics)),
            realised_noise=data.info.get("realised_noise"),
            detection=detection,
        )
        record.versions["cleanlab"] = cleanlab.__version__
        return record, suspicion

    def _retrain(
        self, data: TaskData, suspicion: Tensor
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """``ce`` trained again without the k most suspicious samples, k = the true corrupted count."""
        dropped = int(data.corrupted.sum())
        keep = ranking(suspicion)[dropped:].sort().values  # the kept samples in dataset order
        subset = training_subset(data, keep)
        inner = dataclasses.replace(self.inner, method="ce", method_params={})
        _, trained = fit(inner, self.run_task, subset)
        accuracy = {stat: getattr(trained, stat)["accuracy"] for stat in STATS}
        info = {
            "dropped": dropped,
            "kept": len(keep),
            "remaining_noise": round(subset.info["realised_noise"], 6),
            "time_s": trained.wall_time_s,
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


def _tracked_summary(history: list[dict[str, Any]], trained: RunRecord) -> Summary:
    """The ranking metrics per epoch (best: the best epoch's, an oracle; selected: at the epoch of
    the best validation accuracy) and the trained model's clean test accuracy."""
    metrics = [*RANKING_METRICS, *(m + LAST_SUFFIX for m in RANKING_METRICS)]
    chosen = int(trained.selected["epoch"])
    by_epoch = {int(entry["epoch"]): entry for entry in history}
    return Summary(
        final={**{m: history[-1][m] for m in metrics}, "accuracy": trained.final["accuracy"]},
        best={**{m: _best(history, m) for m in metrics}, "accuracy": trained.best["accuracy"]},
        selected={
            **{m: by_epoch[chosen][m] for m in metrics},
            "accuracy": trained.selected["accuracy"],
            "epoch": chosen,
        },
    )

"""The noise-detection task: ranking metrics, K-fold split, cleanlab, CSV export, a tiny CLI run."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from superloss.bench.cli import main
from superloss.bench.config import RunConfig
from superloss.bench.metrics import precision_at_k, ranking, ranking_metrics
from superloss.bench.protocols.noise_detection import (
    NoiseDetection,
    cleanlab_scores,
    fold_assignment,
)
from superloss.tracking import SUSPECTS_HEADER, ConfidenceTracker, export_suspects

# -- ranking metrics ------------------------------------------------------------------------------


def test_ranking_metrics_hand_computed() -> None:
    # Ranked: 0.9 (corrupted), 0.8 (clean), 0.3 (corrupted), 0.1 (clean).
    # AUROC: 3 of the 4 (corrupted, clean) pairs are ordered right. AP: (1/1 + 2/3) / 2.
    # precision@noise: k = 2, top 2 = {0.9, 0.8}: one corrupted.
    metrics = ranking_metrics(
        torch.tensor([0.9, 0.1, 0.8, 0.3]), torch.tensor([True, False, False, True])
    )
    assert metrics["auroc"] == pytest.approx(0.75)
    assert metrics["ap"] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["precision@noise"] == pytest.approx(0.5)


def test_ranking_metrics_ties_and_nan() -> None:
    # A tie between the corrupted sample and a clean one counts half: (0.5 + 1) / 2.
    tied = ranking_metrics(torch.tensor([1.0, 1.0, 0.0]), torch.tensor([True, False, False]))
    assert tied["auroc"] == pytest.approx(0.75)
    # precision@noise keeps index order among ties: sample 0 comes first.
    assert tied["precision@noise"] == 1.0
    # A never-observed sample (NaN) is the least suspicious.
    unseen = ranking_metrics(torch.tensor([math.nan, 0.5, 0.2]), torch.tensor([True, False, False]))
    assert unseen["auroc"] == 0.0 and unseen["precision@noise"] == 0.0
    assert ranking(torch.tensor([math.nan, 0.5, 0.5, 2.0])).tolist() == [3, 1, 2, 0]


def test_ranking_metrics_undefined_without_corrupted_labels() -> None:
    none = ranking_metrics(torch.tensor([0.3, 0.2]), torch.tensor([False, False]))
    assert all(math.isnan(v) for v in none.values())
    everything = ranking_metrics(torch.tensor([0.3, 0.2]), torch.tensor([True, True]))
    assert math.isnan(everything["auroc"]) and everything["precision@noise"] == 1.0
    with pytest.raises(ValueError, match="one shape"):
        ranking_metrics(torch.zeros(3), torch.zeros(4, dtype=torch.bool))


@pytest.mark.parametrize("seed", range(5))
def test_ranking_metrics_match_scikit_learn(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    corrupted = torch.rand(300, generator=generator) < 0.3
    # Informative scores, rounded so that ties occur.
    scores = (torch.randn(300, generator=generator) + 1.5 * corrupted).mul(4).round().double()
    metrics = ranking_metrics(scores, corrupted)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(corrupted.numpy(), scores.numpy()))
    assert metrics["ap"] == pytest.approx(
        average_precision_score(corrupted.numpy(), scores.numpy())
    )
    # precision@k, by a direct count: stable descending order, first k.
    k = int(corrupted.sum())
    order = sorted(range(300), key=lambda i: (-float(scores[i]), i))[:k]
    assert metrics["precision@noise"] == pytest.approx(sum(bool(corrupted[i]) for i in order) / k)
    assert precision_at_k(scores, corrupted, 0) != precision_at_k(scores, corrupted, 0)  # NaN


# -- K-fold split ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "folds"), [(103, 5), (40, 2), (11, 11)])
def test_folds_partition_stratified_and_seeded(count: int, folds: int) -> None:
    labels = torch.randint(0, 4, (count,), generator=torch.Generator().manual_seed(count))
    assignment = fold_assignment(labels, folds, seed=7)
    # A partition: every sample in exactly one fold, the folds' sizes within one of each other.
    assert assignment.shape == (count,) and set(assignment.tolist()) == set(range(folds))
    sizes = torch.bincount(assignment, minlength=folds)
    assert int(sizes.sum()) == count and int(sizes.max() - sizes.min()) <= 1
    for label in range(4):
        per_fold = torch.bincount(assignment[labels == label], minlength=folds)
        assert int(per_fold.max() - per_fold.min()) <= 1
    assert torch.equal(assignment, fold_assignment(labels, folds, seed=7))
    if count > folds:
        assert not torch.equal(assignment, fold_assignment(labels, folds, seed=8))


def test_folds_bad_input() -> None:
    with pytest.raises(ValueError, match="folds must be an int >= 2"):
        fold_assignment(torch.zeros(10, dtype=torch.int64), 1, seed=0)
    with pytest.raises(ValueError, match="cannot cut 3 samples into 4 folds"):
        fold_assignment(torch.zeros(3, dtype=torch.int64), 4, seed=0)
    with pytest.raises(ValueError, match="--folds must be an integer >= 2"):
        NoiseDetection(RunConfig(task="noise-detection", task_params={"folds": 1}))
    with pytest.raises(ValueError, match="unknown noise-detection option"):
        NoiseDetection(RunConfig(task="noise-detection", task_params={"fold": 3}))


# -- cleanlab -------------------------------------------------------------------------------------


def test_cleanlab_finds_confidently_wrong_labels() -> None:
    labels = torch.arange(3).repeat_interleave(20)
    probabilities = torch.full((60, 3), 0.05, dtype=torch.float64)
    probabilities[torch.arange(60), labels] = 0.9
    wrong = torch.tensor([0, 23, 47])
    probabilities[wrong] = 0.05
    probabilities[wrong, (labels[wrong] + 1) % 3] = 0.9
    suspicion, issues = cleanlab_scores(labels, probabilities)
    assert suspicion.shape == (60,) and issues.dtype == torch.bool
    # Self-confidence: the probability of the given label, negated.
    assert torch.allclose(suspicion, -probabilities[torch.arange(60), labels])
    assert sorted(ranking(suspicion)[:3].tolist()) == wrong.tolist()
    assert issues.nonzero().squeeze(1).tolist() == wrong.tolist()
    corrupted = torch.zeros(60, dtype=torch.bool)
    corrupted[wrong] = True
    assert ranking_metrics(suspicion, corrupted) == {
        "auroc": 1.0,
        "ap": 1.0,
        "precision@noise": 1.0,
    }


# -- CSV export -----------------------------------------------------------------------------------


def test_export_suspects_csv(tmp_path: Path) -> None:
    tracker = ConfidenceTracker(4)
    tracker.update(torch.tensor([0, 1, 2]), torch.tensor([1.5, 0.25, 0.75]))
    tracker.update(torch.tensor([1]), torch.tensor([0.5]))  # mean σ of sample 1: 0.375
    logits = torch.tensor([[0.0, 3.0], [2.0, 1.0], [0.0, 1.0], [5.0, 0.0]])
    path = tmp_path / "suspects.csv"
    order = export_suspects(tracker, torch.tensor([1, 1, 0, 0]), logits, path)
    assert order.tolist() == [1, 2, 0, 3]
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    assert tuple(rows[0]) == SUSPECTS_HEADER
    assert rows[1:] == [
        ["1", "0.375", "1", "0"],
        ["2", "0.75", "0", "1"],
        ["0", "1.5", "1", "1"],
        ["3", "nan", "0", "0"],  # never observed: last
    ]
    export_suspects(
        tracker, torch.tensor([1, 1, 0, 0]), logits.argmax(1), path, k=1, kind="last_confidence"
    )
    assert path.read_text().splitlines() == [",".join(SUSPECTS_HEADER), "1,0.5,1,0"]


def test_export_suspects_bad_input(tmp_path: Path) -> None:
    tracker = ConfidenceTracker(3)
    path = tmp_path / "suspects.csv"
    with pytest.raises(ValueError, match=r"labels of shape \(3,\)"):
        export_suspects(tracker, torch.zeros(4, dtype=torch.int64), torch.zeros(3), path)
    with pytest.raises(ValueError, match="integer labels"):
        export_suspects(tracker, torch.zeros(3), torch.zeros(3, dtype=torch.int64), path)
    with pytest.raises(TypeError, match=r"predictions as a torch\.Tensor"):
        export_suspects(tracker, torch.zeros(3, dtype=torch.int64), [0, 1, 2], path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind must be one of"):
        export_suspects(
            tracker, torch.zeros(3, dtype=torch.int64), torch.zeros(3, 2), path, kind="x"
        )
    assert not path.exists()


# -- the command line -----------------------------------------------------------------------------

TINY = ["--dataset", "digits", "--epochs", "1", "--seeds", "1", "--train-size", "200"]


def test_tiny_run_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["bench", "noise-detection", *TINY, "--noise", "0.4", "--folds", "2", "--retrain"]
    assert main([*argv, "--out", str(out), "--no-progress", "--no-report"]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["config"]["method"] for r in records) == ["ce", "cleanlab", "superloss"]
    for record in records:
        assert record["config"]["task"] == "noise-detection"
        assert record["config"]["task_params"] == {"folds": 2, "retrain": True}
        for stat in ("final", "best", "selected"):
            for metric in ("auroc", "ap", "precision@noise", "retrain_accuracy"):
                assert math.isfinite(record[stat][metric]), (record["config"]["method"], metric)
        assert 0.0 <= record["final"]["auroc"] <= 1.0
        assert record["detection"]["num_corrupted"] == record["retrain"]["dropped"] > 0
        assert record["retrain"]["kept"] == 200 - record["retrain"]["dropped"]
        times = record["detection"]
        assert record["wall_time_s"] >= times["time_s"] > 0 and times["evaluation_time_s"] > 0
        assert times["time_s"] == pytest.approx(
            times["evaluation_time_s"] + times["time_without_evaluation_s"], abs=0.002
        )
    by_method = {r["config"]["method"]: r for r in records}
    assert by_method["superloss"]["detection"]["score"] == "mean_confidence"
    assert by_method["ce"]["detection"]["score"] == "mean_loss"
    assert [f["held_out"] for f in by_method["cleanlab"]["detection"]["folds"]] == [100, 100]
    for method in ("superloss", "ce"):
        assert math.isfinite(by_method[method]["final"]["accuracy"])
        assert len(by_method[method]["history"]) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--noise", "1.0"], r"--noise rates must be in \[0, 1\), got 1.0"),
        (["--noise", "-0.1"], r"--noise rates must be in \[0, 1\), got -0.1"),
        (["--folds", "1"], "--folds must be an integer >= 2"),
        (["--folds", "300"], "--folds 300 exceeds the 200 training samples"),
        (["--methods", "superloss,gce"], "unknown method 'gce' for the noise-detection task"),
        (["--nproc", "2"], "--nproc must be 1"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "out"
    argv = ["bench", "noise-detection", *TINY, *extra, "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not out.exists()


def test_fit_can_return_the_validation_selected_weights() -> None:
    from superloss.bench.config import RunConfig
    from superloss.bench.engine import fit
    from superloss.bench.tasks.base import build_task

    config = RunConfig(method="ce", noise=0.6, seed=0, epochs=6, train_size=150)
    task = build_task(config)
    data = task.prepare()
    selected_model, record = fit(config, task, data, keep_selected=True)
    last_model, same = fit(config, task, data)
    assert record.history == same.history  # keeping a copy changes no number
    chosen = int(record.selected["epoch"])
    assert chosen == 5 != len(record.history)  # here the best validation epoch is not the last
    by_epoch = {int(e["epoch"]): e for e in record.history}

    def val_accuracy(model: torch.nn.Module) -> float:
        return task.evaluate(model, data.val_inputs, data.val_targets)["accuracy"]

    assert val_accuracy(selected_model) == pytest.approx(by_epoch[chosen]["val_accuracy"], abs=1e-4)
    assert val_accuracy(last_model) == pytest.approx(record.history[-1]["val_accuracy"], abs=1e-4)


def test_cleanlab_folds_take_their_held_out_selected_epoch(tmp_path: Path) -> None:
    from superloss.bench.config import RunConfig
    from superloss.bench.runner import run

    config = RunConfig(
        task="noise-detection",
        method="cleanlab",
        noise=0.4,
        epochs=4,
        train_size=200,
        task_params={"folds": 2, "retrain": False},
    )
    folds = run(config).as_dict()["detection"]["folds"]
    assert len(folds) == 2
    for fold in folds:
        assert 1 <= fold["selected_epoch"] <= 4
        # The selected epoch's held-out accuracy (given labels) is the best of the run's epochs.
        assert fold["held_out_accuracy"] >= fold["held_out_accuracy_last"]


def test_report_gives_the_time_ratio_against_the_target(tmp_path: Path) -> None:
    from superloss.bench.config import RunConfig
    from superloss.bench.report import write_report

    def record(
        method: str, seed: int, time_s: float, without: float, **params: Any
    ) -> dict[str, Any]:
        config = RunConfig(
            task="noise-detection",
            method=method,
            method_params=params,
            noise=0.4,
            seed=seed,
            task_params={"folds": 5, "retrain": False},
        )
        metrics = {"auroc": 0.9, "ap": 0.8, "precision@noise": 0.7}
        return {
            "config": config.as_dict(),
            "key": config.key(),
            "history": [],
            "final": metrics,
            "best": metrics,
            "selected": metrics,
            "realised_noise": 0.4,
            "detection": {"time_s": time_s, "time_without_evaluation_s": without},
        }

    # superloss: 2.0 and 3.0 s without evaluation (mean 2.5); cleanlab: 10 and 12 s (mean 11).
    records = [
        record("superloss", 0, 9.0, 2.0),
        record("superloss", 1, 9.0, 3.0),
        record("superloss", 0, 9.0, 4.0, lam="auto"),
        record("superloss", 1, 9.0, 2.0, lam="auto"),
        record("ce", 0, 9.0, 1.5),
        record("cleanlab", 0, 10.0, 1.0),
        record("cleanlab", 1, 12.0, 1.0),
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    text = write_report(tmp_path).read_text()
    # 2.5 / 11 = 0.227 ≤ 1.05 / 4 = 0.2625.
    # Every tracker has its own row: both SuperLoss variants (3.0 / 11 = 0.273: missed) and CE's.
    rows = [line for line in text.splitlines() if line.startswith("| 0.4 | 5 |")]
    assert rows == [
        "| 0.4 | 5 | superloss(lam=auto) | 3.00 | 11.00 | 0.273 | ≤ 0.263 | **no** |",
        "| 0.4 | 5 | superloss(lam=auto-hold) | 2.50 | 11.00 | 0.227 | ≤ 0.263 | yes |",
        "| 0.4 | 5 | ce | 1.50 | 11.00 | 0.136 | ≤ 0.263 | yes |",
    ]

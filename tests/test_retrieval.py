"""Retrieval task: class-disjoint splits, the per-pair contrastive loss, mAP / recall@1, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from superloss.bench import cli
from superloss.bench import metrics as ranking_metrics
from superloss.bench.config import RunConfig
from superloss.bench.metrics import retrieval_metrics
from superloss.bench.tasks import TASKS
from superloss.bench.tasks.retrieval import class_split, contrastive_pair_losses, per_sample_mean


def unit(*degrees: float) -> torch.Tensor:
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([angles.cos(), angles.sin()], dim=1)


def test_fixed_split_is_the_first_sixty_percent() -> None:
    assert class_split(10) == ([0, 1, 2, 3, 4, 5], [6, 7, 8, 9])


def test_seeded_splits_are_disjoint_complete_and_reproducible() -> None:
    draws = set()
    for seed in range(5):
        train, held_out = class_split(10, seed)
        assert not set(train) & set(held_out)
        assert sorted(train + held_out) == list(range(10))
        assert (len(train), len(held_out)) == (6, 4)
        assert class_split(10, seed) == (train, held_out)
        draws.add(tuple(train))
    assert len(draws) > 1  # the seed matters


def test_too_few_classes() -> None:
    with pytest.raises(ValueError, match="at least 4 classes"):
        class_split(3)


@pytest.mark.parametrize("class_split_option", ["fixed", "seeded"])
def test_prepared_data_is_class_disjoint(class_split_option: str) -> None:
    config = RunConfig(
        task="retrieval", dataset="digits", noise=0.4, seed=3,
        task_params={"class_split": class_split_option},
    )  # fmt: skip
    task = TASKS.get("retrieval")(config)
    data = task.prepare()
    train_classes, test_classes = data.info["train_classes"], data.info["test_classes"]
    assert not set(train_classes) & set(test_classes)
    assert set(data.test_targets.tolist()) == set(test_classes)
    # Training labels are the K training classes relabelled 0..K−1, clean and noisy alike.
    assert set(data.info["train_clean_targets"].tolist()) == set(range(len(train_classes)))
    assert set(data.train_targets.tolist()) <= set(range(len(train_classes)))
    assert set(data.val_targets.tolist()) <= set(range(len(train_classes)))
    # The training images really are those of the training classes: compare with the raw split.
    from superloss.bench.data import load_dataset

    splits = load_dataset("digits", None, seed=3)
    keep = torch.isin(splits.y_train, torch.tensor(train_classes))
    assert torch.equal(data.train_inputs, splits.x_train[keep])
    assert torch.equal(
        torch.tensor(train_classes)[data.info["train_clean_targets"]], splits.y_train[keep]
    )
    assert data.num_classes is None and data.outputs == 32
    assert data.info["realised_noise"] == pytest.approx(0.4, abs=1e-3)
    assert torch.equal(data.corrupted, data.train_targets != data.info["train_clean_targets"])
    again = TASKS.get("retrieval")(config).prepare()
    assert torch.equal(again.train_targets, data.train_targets)


def test_contrastive_pair_losses_hand_computed() -> None:
    embeddings = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    # Pairs (0,1) same: ½·d² = ½·(0.4² + 0.8²) = 0.4; (0,2) differ: d = √2 > m = 1 → 0;
    # (1,2) differ: d = √(0.6² + 0.2²) = √0.4 → ½(1 − √0.4)².
    expected = torch.tensor([0.4, 0.0, 0.5 * (1 - math.sqrt(0.4)) ** 2], dtype=torch.float64)
    losses = contrastive_pair_losses(embeddings, labels, margin=1.0)
    torch.testing.assert_close(losses, expected)
    # A wider margin reaches the (0,2) pair too: ½(1.5 − √2)².
    wider = contrastive_pair_losses(embeddings, labels, margin=1.5)
    torch.testing.assert_close(wider[1], torch.tensor(0.5 * (1.5 - math.sqrt(2)) ** 2).double())


def test_task_base_loss_normalises_and_gradients_are_finite() -> None:
    task = TASKS.get("retrieval")(RunConfig(task="retrieval", task_params={"margin": 1.0}))
    base = task.base_loss
    raw = torch.tensor([[3.0, 0.0], [1.2, 1.6], [0.0, 0.5]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    expected = contrastive_pair_losses(unit(0.0, 53.13010235415598, 90.0), labels, 1.0)
    torch.testing.assert_close(base(raw, labels), expected)
    # Two identical embeddings with different labels: d = 0, the gradient stays finite.
    same = torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    base(same, torch.tensor([0, 1])).sum().backward()
    assert same.grad is not None and torch.isfinite(same.grad).all()


def test_map_and_recall_hand_computed() -> None:
    # Angles 0°, 10°, 25°, 90°; labels 0, 0, 1, 1. Rankings (nearest first, query left out):
    # q0: 1 2 3 → AP 1, hit; q1: 0 2 3 → AP 1, hit; q2: 1 0 3 → relevant at rank 3: AP 1/3, miss;
    # q3: 2 1 0 → AP 1, hit. mAP = (1 + 1 + 1/3 + 1)/4, recall@1 = 3/4.
    metrics = retrieval_metrics(unit(0, 10, 25, 90), torch.tensor([0, 0, 1, 1]))
    assert metrics["map"] == pytest.approx(100 * (10 / 3) / 4)
    assert metrics["recall@1"] == pytest.approx(75.0)


def test_query_without_relevant_items_is_left_out_of_map_only() -> None:
    # Item 4 (label 2) has no other item of its class: no AP, but a recall@1 miss.
    # q0 (0°): 1 (40°) 4 (50°) 2 (100°) 3 (170°) → AP 1;
    # q1 (40°): 4 0 2 3 → relevant 0 at rank 2: AP 1/2.
    # q2 (100°): 4 1 3 0 → relevant 3 at rank 3: 1/3; q3 (170°): 2 4 1 0 → AP 1.
    metrics = retrieval_metrics(unit(0, 40, 100, 170, 50), torch.tensor([0, 0, 1, 1, 2]))
    assert metrics["map"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 3 + 1) / 4)
    assert metrics["recall@1"] == pytest.approx(100 * 2 / 5)  # q0, q3 hit


def test_map_matches_scikit_learn_per_query(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics_module = pytest.importorskip("sklearn.metrics")
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(60, 8, generator=generator), dim=1)
    labels = torch.randint(0, 4, (60,), generator=generator)
    similarity = (embeddings @ embeddings.T).double()
    precisions, hits = [], 0
    for query in range(60):
        others = [i for i in range(60) if i != query]
        relevant = (labels[others] == labels[query]).numpy()
        scores = similarity[query, others].numpy()
        precisions.append(metrics_module.average_precision_score(relevant, scores))
        hits += bool(relevant[scores.argmax()])
    expected_map = 100 * sum(precisions) / len(precisions)
    monkeypatch.setattr(ranking_metrics, "QUERY_CHUNK", 7)  # several chunks, one partial
    metrics = retrieval_metrics(embeddings, labels)
    assert metrics["map"] == pytest.approx(expected_map, rel=1e-6)
    assert metrics["recall@1"] == pytest.approx(100 * hits / 60)


def test_per_sample_mean_of_pair_values() -> None:
    # Pairs of 3 items: (0,1)=1, (0,2)=2, (1,2)=4 → item means (1+2)/2, (1+4)/2, (2+4)/2.
    means = per_sample_mean(torch.tensor([1.0, 2.0, 4.0]), 3)
    torch.testing.assert_close(means, torch.tensor([1.5, 2.5, 3.0]))
    assert torch.isnan(per_sample_mean(torch.zeros(0), 1)).all()


def test_tiny_run_through_the_cli(tmp_path: Path) -> None:
    code = cli.main(
        ["bench", "retrieval", "--dataset", "digits", "--epochs", "1", "--seeds", "1",
         "--noise", "0.4", "--methods", "plain,superloss", "--out", str(tmp_path),
         "--no-progress", "--no-report"]
    )  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(r["config"]["method"] for r in records) == ["plain", "superloss"]
    for record in records:
        assert record["config"]["task"] == "retrieval"
        for name in ("map", "recall@1"):
            assert math.isfinite(record["final"][name]) and 0 <= record["final"][name] <= 100
    superloss_run = next(r for r in records if r["config"]["method"] == "superloss")
    # Per-pair σ became one weight per training sample: the loop could score them.
    assert "weight_auroc" in superloss_run["history"][-1]


@pytest.mark.parametrize(
    "extra",
    [
        ["--noise", "1.0"],
        ["--noise", "-0.1"],
        ["--margin", "-1"],
        ["--embedding-dim", "0"],
        ["--class-split", "random"],
    ],
)
def test_bad_input_exits_2(tmp_path: Path, extra: list[str]) -> None:
    argv = ["bench", "retrieval", "--epochs", "1", "--seeds", "1", "--out", str(tmp_path / "x")]
    assert cli.main([*argv, "--no-progress", "--no-report", *extra]) == 2
    assert not (tmp_path / "x").exists()  # nothing written


def test_unknown_task_param_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown retrieval option"):
        TASKS.get("retrieval")(RunConfig(task="retrieval", task_params={"margn": 0.5}))

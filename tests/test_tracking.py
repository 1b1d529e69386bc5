"""ConfidenceTracker: scores against a hand-written reference, ranking, resuming, 2-process gloo."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from superloss import ConfidenceTracker, SuperLoss
from superloss.tracking import SCORE_KINDS

NAN = math.nan

# One scripted run over N = 7 samples: 3 epochs; sample 6 is never seen; sample 5 only in epoch 0;
# repeated indices inside a batch; a batch without a loss; one non-finite σ and one non-finite ℓ.
N = 7
EPOCHS: list[list[tuple[list[int], list[float], list[float] | None]]] = [
    [
        ([0, 1, 2], [1.25, 0.5, 2.0], [0.1, 2.5, 0.3]),
        ([3, 4, 5], [1.0, 0.25, 0.75], [0.9, 3.0, 1.1]),
    ],
    [
        ([4, 0, 4], [0.125, 1.5, 0.375], [3.5, 0.05, 2.0]),  # sample 4 twice: last = 0.375
        ([2, 1, 3], [2.5, NAN, 1.0], None),  # NaN σ is skipped; no loss this batch
    ],
    [
        ([1, 2, 3, 0], [0.625, 2.25, 1.5, 1.75], [1.5, math.inf, 0.4, 0.02]),  # inf ℓ skipped
        ([1, 4, 1], [0.3, 0.2, 0.1], [2.0, 2.2, 2.4]),
    ],
]


def reference_scores(
    num_samples: int, epochs: list[list[tuple[list[int], list[float], list[float] | None]]]
) -> dict[str, list[float]]:
    """Every kind of score by a plain loop over every observation, in float64."""
    confidences: list[list[float]] = [[] for _ in range(num_samples)]
    losses: list[list[float]] = [[] for _ in range(num_samples)]
    for batches in epochs:
        for indices, confidence, loss in batches:
            for position, index in enumerate(indices):
                # The tracker receives float32 tensors: compare with those values.
                sigma = float(torch.tensor(confidence[position], dtype=torch.float32))
                if math.isfinite(sigma):
                    confidences[index].append(sigma)
                if loss is not None:
                    value = float(torch.tensor(loss[position], dtype=torch.float32))
                    if math.isfinite(value):
                        losses[index].append(value)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else NAN

    return {
        "mean_confidence": [mean(values) for values in confidences],
        "last_confidence": [values[-1] if values else NAN for values in confidences],
        "mean_loss": [mean(values) for values in losses],
        "last_loss": [values[-1] if values else NAN for values in losses],
    }


def feed(
    tracker: ConfidenceTracker,
    batches: list[tuple[list[int], list[float], list[float] | None]],
) -> None:
    for indices, confidence, loss in batches:
        tracker.update(
            torch.tensor(indices),
            torch.tensor(confidence, dtype=torch.float32),
            None if loss is None else torch.tensor(loss, dtype=torch.float32),
        )


def run_script(tracker: ConfidenceTracker) -> None:
    for batches in EPOCHS:
        feed(tracker, batches)
        tracker.end_epoch()


def assert_same(actual: torch.Tensor, expected: object) -> None:
    expected_tensor = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual, expected_tensor, equal_nan=True, rtol=1e-12, atol=0.0)


# -- scores ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SCORE_KINDS)
def test_scores_equal_a_manual_computation(kind: str) -> None:
    tracker = ConfidenceTracker(N)
    run_script(tracker)
    expected = reference_scores(N, EPOCHS)[kind]
    assert_same(tracker.scores(kind), expected)


def test_scripted_values_by_hand() -> None:
    # A few entries of the reference, written out, so the reference itself is checked.
    tracker = ConfidenceTracker(N)
    run_script(tracker)
    mean_confidence = tracker.scores("mean_confidence")
    assert mean_confidence[4].item() == pytest.approx((0.25 + 0.125 + 0.375 + 0.2) / 4)
    assert tracker.scores("last_confidence")[4].item() == pytest.approx(0.2)
    assert tracker.scores("last_confidence")[1].item() == pytest.approx(0.1)  # duplicate: last wins
    assert tracker.scores("last_loss")[2].item() == pytest.approx(0.3)  # inf in epoch 2 skipped
    assert tracker.scores("mean_loss")[2].item() == pytest.approx(0.3)
    assert tracker.observations("confidence")[1].item() == 4  # 5 occurrences, one NaN σ
    assert tracker.observations("loss")[2].item() == 1  # one batch without loss, one inf
    assert tracker.observations().dtype == torch.int64
    assert math.isnan(mean_confidence[6].item())
    assert tracker.step.item() == 6 and tracker.epoch.item() == 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_batches_with_repeats_match_reference(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    num_samples = 50
    epochs = []
    for _ in range(4):
        batches = []
        for _ in range(6):
            # Fewer draws than samples, with replacement: repeats and partial coverage.
            indices = torch.randint(0, num_samples - 5, (9,), generator=generator).tolist()
            confidence = (torch.rand(9, generator=generator) * 2.7).tolist()
            loss = (torch.rand(9, generator=generator) * 5).tolist()
            batches.append((indices, confidence, loss))
        epochs.append(batches)
    tracker = ConfidenceTracker(num_samples)
    for batches in epochs:
        feed(tracker, batches)
    expected = reference_scores(num_samples, epochs)
    for kind in SCORE_KINDS:
        assert_same(tracker.scores(kind), expected[kind])


def test_buffer_flushes_and_growth_match_reference() -> None:
    # 300-sample batches fill the pending buffer (4800 observations) every 16 steps; a 6000-sample
    # batch then makes it grow. Repeats across and within batches cross those flush boundaries.
    generator = torch.Generator().manual_seed(3)
    num_samples = 1000
    batches = []
    for size in [300] * 40 + [6000, 300]:
        indices = torch.randint(0, num_samples, (size,), generator=generator).tolist()
        confidence = (torch.rand(size, generator=generator) * 2.7).tolist()
        loss = (torch.rand(size, generator=generator) * 5).tolist()
        batches.append((indices, confidence, loss))
    tracker = ConfidenceTracker(num_samples)
    feed(tracker, batches)
    expected = reference_scores(num_samples, [batches])
    for kind in SCORE_KINDS:
        assert_same(tracker.scores(kind), expected[kind])
    assert tracker.observations().sum().item() == 300 * 41 + 6000


def test_reading_and_saving_flush_pending_observations() -> None:
    tracker = ConfidenceTracker(3)
    tracker.update(torch.tensor([1]), torch.tensor([0.5]))
    assert tracker.statistics[1, 0, 0].item() == 0  # still pending
    state = tracker.state_dict()
    assert state["statistics"][1, 0, 0].item() == 1
    assert "_pending_index" not in state


def test_suspicion_orients_every_kind() -> None:
    tracker = ConfidenceTracker(N)
    run_script(tracker)
    for kind in ("mean_confidence", "last_confidence"):
        assert_same(tracker.suspicion(kind), (-tracker.scores(kind)).tolist())
    for kind in ("mean_loss", "last_loss"):
        assert_same(tracker.suspicion(kind), tracker.scores(kind).tolist())


def test_calling_the_module_updates() -> None:
    called, updated = ConfidenceTracker(3), ConfidenceTracker(3)
    called(torch.tensor([0, 2]), torch.tensor([0.5, 1.5]))
    updated.update(torch.tensor([0, 2]), torch.tensor([0.5, 1.5]))
    assert_same(called.scores(), updated.scores().tolist())


def test_empty_batch_counts_a_step_and_records_nothing() -> None:
    tracker = ConfidenceTracker(3)
    tracker.update(torch.tensor([], dtype=torch.int64), torch.tensor([]))
    assert tracker.step.item() == 1
    assert tracker.scores().isnan().all()


def test_superloss_outputs_feed_the_tracker() -> None:
    criterion = SuperLoss(nn_cross_entropy(), tau="log_classes", num_classes=3)
    tracker = ConfidenceTracker(10)
    logits = torch.tensor([[4.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
    criterion(logits, torch.tensor([0, 1]))  # sample 3 agrees with its label, sample 8 does not
    assert criterion.last_confidence is not None and criterion.last_loss is not None
    tracker.update(torch.tensor([3, 8]), criterion.last_confidence, criterion.last_loss)
    assert tracker.suspects(k=1).tolist() == [8]
    assert tracker.suspects(k=1, kind="mean_loss").tolist() == [8]


def nn_cross_entropy() -> torch.nn.Module:
    return torch.nn.CrossEntropyLoss(reduction="none")


# -- ranking ---------------------------------------------------------------------------------------


def ranked_tracker() -> ConfidenceTracker:
    # mean σ: 0 → 0.5, 1 → 2.0, 2 → 0.25, 3 → 0.5 (tie with 0), 4 → never seen, 5 → 1.0
    tracker = ConfidenceTracker(6)
    tracker.update(
        torch.tensor([0, 1, 2, 3, 5]),
        torch.tensor([0.5, 2.0, 0.25, 0.5, 1.0]),
        torch.tensor([1.0, 0.1, 3.0, 1.0, 0.5]),
    )
    return tracker


def test_suspects_rank_most_suspicious_first_unseen_last() -> None:
    tracker = ranked_tracker()
    assert tracker.suspects().tolist() == [2, 0, 3, 5, 1, 4]  # tie 0/3 keeps index order
    assert tracker.suspects(k=2).tolist() == [2, 0]
    assert tracker.suspects(k=0).tolist() == []
    assert tracker.suspects(kind="mean_loss").tolist() == [2, 0, 3, 5, 1, 4]
    assert tracker.suspects(k=10).tolist() == [2, 0, 3, 5, 1, 4]


def test_suspects_threshold_is_strict_and_leaves_out_unseen() -> None:
    tracker = ranked_tracker()
    assert tracker.suspects(threshold=1.0).tolist() == [2, 0, 3]  # σ strictly below 1
    assert tracker.suspects(threshold=0.5).tolist() == [2]
    assert tracker.suspects(kind="mean_loss", threshold=0.5).tolist() == [2, 0, 3]  # ℓ above
    assert tracker.suspects(k=1, threshold=1.0).tolist() == [2]
    assert tracker.suspects(threshold=-1.0).tolist() == []


# -- state -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_history", [False, True])
def test_state_dict_round_trip_mid_way(keep_history: bool) -> None:
    original = ConfidenceTracker(N, keep_history=keep_history)
    feed(original, EPOCHS[0])
    original.end_epoch()
    feed(original, EPOCHS[1][:1])  # stop in the middle of epoch 1
    resumed = ConfidenceTracker(N, keep_history=keep_history)
    resumed.update(torch.tensor([6]), torch.tensor([0.5]))  # pending, then replaced by the load
    resumed.load_state_dict(original.state_dict())
    for tracker in (original, resumed):
        feed(tracker, EPOCHS[1][1:])
        tracker.end_epoch()
        feed(tracker, EPOCHS[2])
        tracker.end_epoch()
    for kind in SCORE_KINDS:
        assert torch.equal(
            resumed.scores(kind).nan_to_num(-7.0), original.scores(kind).nan_to_num(-7.0)
        )
    assert_same(resumed.scores("last_loss"), reference_scores(N, EPOCHS)["last_loss"])
    if keep_history:
        assert resumed.history().shape == (3, N)
        assert torch.equal(resumed.history().nan_to_num(-7.0), original.history().nan_to_num(-7.0))


def test_history_records_each_epochs_last_values() -> None:
    tracker = ConfidenceTracker(N, keep_history=True)
    run_script(tracker)
    confidence = tracker.history("confidence")
    assert confidence.shape == (3, N)
    assert_same(confidence[0], [1.25, 0.5, 2.0, 1.0, 0.25, 0.75, NAN])
    # epoch 1: sample 1 only had a NaN σ → not seen; 4 twice → the last one; 5 and 6 not seen
    assert_same(confidence[1], [1.5, NAN, 2.5, 1.0, 0.375, NAN, NAN])
    loss = tracker.history("loss")
    assert_same(loss[1], torch.tensor([0.05, NAN, NAN, NAN, 2.0, NAN, NAN]).double().tolist())
    last_row = torch.tensor([0.02, 2.4, NAN, 0.4, 2.2, NAN, NAN]).double().tolist()
    assert_same(loss[2], last_row)


# -- bad input -------------------------------------------------------------------------------------


BAD_UPDATES = [
    ([0, 7], [0.5, 0.5], None, IndexError, r"\[0, 7\).*got 7"),
    ([-1, 2], [0.5, 0.5], None, IndexError, r"\[0, 7\).*got -1"),
    ([0.0, 1.0], [0.5, 0.5], None, TypeError, "integer indices.*torch.float32"),
    ([True, False], [0.5, 0.5], None, TypeError, "integer indices.*torch.bool"),
    ([[0, 1]], [[0.5, 0.5]], None, ValueError, r"indices of shape \(B,\), got shape \(1, 2\)"),
    ([0, 1], [0.5, 0.5, 0.5], None, ValueError, r"confidence of the shape.*\(2,\).*\(3,\)"),
    ([0, 1], [1, 0], None, TypeError, "floating-point confidence.*torch.int64"),
    ([0, 1], [0.5, 0.5], [1.0], ValueError, r"loss of the shape.*\(2,\).*\(1,\)"),
    ([0, 1], [0.5, 0.5], [1, 2], TypeError, "floating-point loss.*torch.int64"),
]


@pytest.mark.parametrize(("indices", "confidence", "loss", "error", "message"), BAD_UPDATES)
def test_bad_input_raises_and_changes_nothing(
    indices: list[object],
    confidence: list[object],
    loss: list[object] | None,
    error: type[Exception],
    message: str,
) -> None:
    tracker = ConfidenceTracker(N, keep_history=True)
    feed(tracker, EPOCHS[0])
    before = {name: value.clone() for name, value in tracker.state_dict().items()}
    with pytest.raises(error, match=message):
        tracker.update(
            torch.tensor(indices),
            torch.tensor(confidence),
            None if loss is None else torch.tensor(loss),
        )
    after = tracker.state_dict()
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(value.nan_to_num(-7.0), after[name].nan_to_num(-7.0)), name


def test_non_tensor_inputs_are_type_errors() -> None:
    tracker = ConfidenceTracker(3)
    with pytest.raises(TypeError, match=r"indices as an integer torch\.Tensor.*got list"):
        tracker.update([0, 1], torch.tensor([0.5, 0.5]))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"confidence as a floating-point torch\.Tensor.*got list"):
        tracker.update(torch.tensor([0, 1]), [0.5, 0.5])  # type: ignore[arg-type]


@pytest.mark.parametrize("num_samples", [0, -3, 2.0, True, "10"])
def test_bad_num_samples(num_samples: object) -> None:
    with pytest.raises(ValueError, match="num_samples must be an int >= 1"):
        ConfidenceTracker(num_samples)  # type: ignore[arg-type]


def test_bad_reading_arguments() -> None:
    tracker = ranked_tracker()
    with pytest.raises(ValueError, match=r"kind must be one of .*got 'median'"):
        tracker.scores("median")
    with pytest.raises(ValueError, match="k must be an int >= 0 or None, got -1"):
        tracker.suspects(k=-1)
    with pytest.raises(ValueError, match=r"threshold must be a number or None, got '0\.5'"):
        tracker.suspects(threshold="0.5")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="keep_history=True"):
        tracker.history()
    with pytest.raises(ValueError, match="quantity must be one of"):
        ConfidenceTracker(3, keep_history=True).history("sigma")
    with pytest.raises(ValueError, match="quantity must be one of"):
        tracker.observations("sigma")


# -- two processes, gloo ---------------------------------------------------------------------------

# Each step, rank 0 gets the first part of the batch and rank 1 the rest; a single process fed the
# whole batch in that order is the reference (a tie between ranks goes to rank 1, the later part).
DISTRIBUTED_EPOCHS: list[list[tuple[list[int], list[float], list[float] | None]]] = [
    [
        ([0, 1, 2, 3, 4, 5], [1.25, 0.5, 2.0, 1.0, 0.25, 0.75], [0.1, 2.5, 0.3, 0.9, 3.0, 1.1]),
        ([6, 7, 8, 9, 10, 11], [0.5, 0.6, 0.7, 1.8, 1.9, 0.1], [1.0, 1.1, 1.2, 0.2, 0.3, 3.3]),
    ],
    [
        # sample 3 on both ranks in the same step: rank 1's σ is the last one
        ([3, 8, 0, 3, 1, 9], [0.4, 1.1, 1.5, 0.9, 0.45, 2.1], [1.7, 0.8, 0.05, 0.6, 2.4, 0.1]),
        # sample 1 on rank 0 after rank 1 saw it in the previous step
        ([1, 2, 10, 5, 4, 6], [0.3, 2.2, 1.6, 0.7, 0.2, 0.55], None),
    ],
]
DISTRIBUTED_N = 13  # sample 12 is never seen


def rank_part(batch: tuple[list[int], list[float], list[float] | None], rank: int) -> tuple:
    indices, confidence, loss = batch
    part = slice(0, 3) if rank == 0 else slice(3, None)
    return indices[part], confidence[part], None if loss is None else loss[part]


def distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        tracker = ConfidenceTracker(DISTRIBUTED_N, keep_history=True)
        for batches in DISTRIBUTED_EPOCHS:
            feed(tracker, [rank_part(batch, rank) for batch in batches])
            tracker.end_epoch()
        results = {kind: tracker.scores(kind) for kind in SCORE_KINDS}
        results["again"] = tracker.scores("mean_confidence")  # a second sync counts nothing twice
        results["suspects"] = tracker.suspects()
        results["history"] = tracker.history()
        results["observations"] = tracker.observations()
        results["local_counts"] = tracker.statistics[:DISTRIBUTED_N, 0].clone()
        unsynced = ConfidenceTracker(DISTRIBUTED_N, sync=False)
        unsynced.load_state_dict(tracker.state_dict(), strict=False)
        results["unsynced"] = unsynced.scores("mean_confidence")
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # no rank tears the group down while another still uses it
    finally:
        dist.destroy_process_group()


def test_two_processes_gloo_hold_the_single_process_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spawned children unpickle the worker by module name: make this file importable for them.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[__name__.count(".")]))
    mp.spawn(distributed_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    single = ConfidenceTracker(DISTRIBUTED_N, keep_history=True)
    for batches in DISTRIBUTED_EPOCHS:
        feed(single, batches)
        single.end_epoch()
    expected = reference_scores(DISTRIBUTED_N, DISTRIBUTED_EPOCHS)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for results in ranks:
        for kind in SCORE_KINDS:
            torch.testing.assert_close(results[kind], single.scores(kind), equal_nan=True)
            assert_same(results[kind], expected[kind])
        assert torch.equal(
            results["again"].nan_to_num(-7.0), results["mean_confidence"].nan_to_num(-7.0)
        )
        assert torch.equal(results["suspects"], single.suspects())
        assert torch.equal(results["history"].nan_to_num(-7.0), single.history().nan_to_num(-7.0))
    assert results["last_confidence"][3].item() == pytest.approx(0.9)  # the rank tie
    assert results["last_confidence"][1].item() == pytest.approx(0.3)
    # Each rank's own state holds its own half only.
    total = ranks[0]["local_counts"] + ranks[1]["local_counts"]
    assert torch.equal(total, single.statistics[:DISTRIBUTED_N, 0])
    assert torch.equal(ranks[0]["observations"], single.observations())
    assert not torch.equal(
        ranks[0]["unsynced"].nan_to_num(-7.0), ranks[1]["unsynced"].nan_to_num(-7.0)
    )


def test_sync_off_or_single_process_needs_no_process_group() -> None:
    assert not dist.is_initialized()
    tracker = ConfidenceTracker(3, sync=True)
    tracker.update(torch.tensor([1]), torch.tensor([0.5]))
    assert_same(tracker.scores(), [NAN, 0.5, NAN])
    assert "sync=True" in repr(tracker)

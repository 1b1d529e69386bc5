"""SuperLoss under torch.distributed: two processes on gloo (CPU) hold the single-process τ."""

from __future__ import annotations

import datetime
import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from superloss import SuperLoss
from superloss.functional import super_loss
from superloss.threshold import all_reduce_statistics, finite_sums

THRESHOLDS = ("ema", "global")
# Constant τ: the automatic λ waits for the losses to leave τ — 1.5 never sees them leave in these
# steps, 3.0 from the second step on (the start read from the reduced statistics on every rank).
AUTO_THRESHOLDS: tuple[str | float, ...] = ("ema", "global", 1.5, 3.0)
STARTS_AT_STEP = {1.5: None, 3.0: 1}
AUTO_MODES = ("auto", "auto-hold")
LAM = 0.5
# normalize=True: the last batch's [Σσ*, n] join the step's one all-reduce, whatever τ and λ.
NORMALIZED: tuple[tuple[str | float, float | str], ...] = (
    ("ema", LAM),
    (1.5, LAM),
    ("global", "auto-hold"),
)

# Per-sample losses of each rank, step by step: uneven sizes, a rank with an empty batch (rank 1 in
# the first step, so the EMA is initialised by rank 0 alone; rank 0 in step 3), a non-finite loss.
STEPS: list[tuple[list[float], list[float]]] = [
    ([0.25, 1.5, 3.0, 0.75, 2.125], []),
    ([1.0, 4.5, 0.5], [2.0, 0.1, 6.0, 1.25, 0.3, 0.9, 2.7]),
    ([], [0.8, 3.3, 1.7, float("nan")]),
    ([5.0, 0.05], [1.1]),
    ([2.2, 0.6, 1.9, 3.7], [0.4, 2.9]),
]


def rank_loss(step: int, rank: int) -> torch.Tensor:
    return torch.tensor(STEPS[step][rank], dtype=torch.float64)


def count_collectives() -> list[tuple[int, ...]]:
    """Record the shape of every all-reduce from now on (in this process)."""
    calls: list[tuple[int, ...]] = []
    all_reduce = dist.all_reduce

    def recorded(tensor: torch.Tensor, *args: object, **kwargs: object) -> object:
        calls.append(tuple(tensor.shape))
        return all_reduce(tensor, *args, **kwargs)  # type: ignore[arg-type]

    dist.all_reduce = recorded  # type: ignore[assignment]
    return calls


def distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    # A short timeout: a collective that one rank misses fails the test instead of hanging it.
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=20),
    )
    collectives = count_collectives()
    try:
        results: dict[str, object] = {}
        for tau in THRESHOLDS:
            for sync in (True, False):
                criterion = SuperLoss(tau=tau, lam=LAM, reduction="none", sync_threshold=sync)
                taus, outputs = [], []
                for step in range(len(STEPS)):
                    before = len(collectives)
                    loss = rank_loss(step, rank).requires_grad_(True)
                    output = criterion(loss)
                    output.sum().backward()  # an empty batch backpropagates too
                    # Exactly one collective a training step when synchronised, none otherwise.
                    assert len(collectives) - before == (1 if sync else 0), collectives
                    assert criterion.last_tau is not None
                    taus.append(criterion.last_tau)
                    outputs.append(output.detach())
                criterion.eval()  # no collective in eval mode: rank 0 alone calls it
                if rank == 0:
                    criterion(torch.tensor([1.0], dtype=torch.float64))
                results[f"{tau}-{sync}"] = {
                    "taus": torch.stack(taus),
                    "outputs": outputs,
                    "state": criterion.state_dict(),
                }
        # lam="auto" / "auto-hold": λ's statistics travel in τ's vector, still one collective a
        # step (the held ratio is read from the reduced statistics: the same on every rank).
        for mode, tau in itertools.product(AUTO_MODES, AUTO_THRESHOLDS):
            criterion = SuperLoss(tau=tau, lam=mode, reduction="none")
            lams, outputs = [], []
            for step in range(len(STEPS)):
                before = len(collectives)
                output = criterion(rank_loss(step, rank).requires_grad_(True))
                output.sum().backward()
                assert len(collectives) - before == 1, collectives
                lams.append(torch.as_tensor(criterion.last_lam))
                outputs.append(output.detach())
            results[f"{mode}-{tau}"] = {
                "lams": torch.stack(lams),
                "outputs": outputs,
                "state": criterion.state_dict(),
            }
        for tau, lam in NORMALIZED:
            criterion = SuperLoss(tau=tau, lam=lam, reduction="none", normalize=True)
            outputs = []
            for step in range(len(STEPS)):
                before = len(collectives)
                output = criterion(rank_loss(step, rank).requires_grad_(True))
                output.sum().backward()
                assert len(collectives) - before == 1, collectives
                outputs.append(output.detach())
            results[f"normalized-{tau}-{lam}"] = {
                "outputs": outputs,
                "state": criterion.state_dict(),
            }
        # Further per-sample sums join the same single all-reduce, after τ's slots.
        before = len(collectives)
        loss = rank_loss(1, rank)
        results["extra"] = all_reduce_statistics(finite_sums(loss, loss * loss, 2 * loss))
        assert len(collectives) - before == 1
        dist.barrier()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def single_process_taus(tau: str, losses: list[torch.Tensor]) -> torch.Tensor:
    criterion = SuperLoss(tau=tau, lam=LAM, reduction="none")
    taus = []
    for loss in losses:
        criterion(loss)
        assert criterion.last_tau is not None
        taus.append(criterion.last_tau)
    return torch.stack(taus)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What each of two gloo processes recorded running :func:`distributed_worker` (spawned once)."""
    folder = tmp_path_factory.mktemp("distributed")
    # Spawned children unpickle the worker by module name: make this file importable for them.
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(Path(__file__).resolve().parents[__name__.count(".")]))
        mp.spawn(distributed_worker, args=(str(folder / "store"), str(folder)), nprocs=2, join=True)
    return [torch.load(folder / f"rank{rank}.pt") for rank in range(2)]


def test_two_processes_gloo_share_the_single_process_tau(ranks: list[dict[str, Any]]) -> None:
    union = [torch.cat([rank_loss(step, 0), rank_loss(step, 1)]) for step in range(len(STEPS))]
    for tau in THRESHOLDS:
        synced = [results[f"{tau}-True"] for results in ranks]
        # Every rank holds the same τ, bit for bit, in every step and in its saved state ...
        assert torch.equal(synced[0]["taus"], synced[1]["taus"])
        for name, value in synced[0]["state"].items():
            assert torch.equal(value, synced[1]["state"][name]), name
        # ... equal to one process fed the concatenated batches (up to the order of summation).
        expected = single_process_taus(tau, union)
        torch.testing.assert_close(synced[0]["taus"], expected, rtol=1e-15, atol=0)
        for rank, results in enumerate(synced):
            for step, output in enumerate(results["outputs"]):
                reference = super_loss(rank_loss(step, rank), results["taus"][step], LAM, "none")
                torch.testing.assert_close(output, reference, rtol=0, atol=0, equal_nan=True)

        # Switched off, each rank follows its own batches.
        for rank, results in enumerate(ranks):
            local = results[f"{tau}-False"]["taus"]
            own = [rank_loss(step, rank) for step in range(len(STEPS))]
            torch.testing.assert_close(local, single_process_taus(tau, own), rtol=0, atol=0)
        assert not torch.equal(ranks[0][f"{tau}-False"]["taus"], ranks[1][f"{tau}-False"]["taus"])

    union = torch.cat([rank_loss(1, 0), rank_loss(1, 1)])
    expected = [union.sum(), union.numel(), (union * union).sum(), (2 * union).sum()]
    for results in ranks:
        torch.testing.assert_close(
            results["extra"], torch.tensor(expected, dtype=torch.float64), rtol=1e-15, atol=0
        )


def test_two_processes_gloo_share_the_single_process_auto_lambda(
    ranks: list[dict[str, Any]],
) -> None:
    union = [torch.cat([rank_loss(step, 0), rank_loss(step, 1)]) for step in range(len(STEPS))]
    for mode, tau in itertools.product(AUTO_MODES, AUTO_THRESHOLDS):
        synced = [results[f"{mode}-{tau}"] for results in ranks]
        # Every rank holds the same λ and state ...
        assert torch.equal(synced[0]["lams"], synced[1]["lams"])
        for name, value in synced[0]["state"].items():
            assert torch.equal(value, synced[1]["state"][name]), name
        # ... that of one process fed the concatenated batches (up to the order of summation).
        single = SuperLoss(tau=tau, lam=mode, reduction="none")
        expected, started = [], []
        for loss in union:
            single(loss)
            expected.append(torch.as_tensor(single.last_lam))
            if single.auto_lambda is not None and single.auto_lambda.wait:
                started.append(bool(single.auto_lambda.started))
        if isinstance(tau, float):
            first = STARTS_AT_STEP[tau]
            assert started == [first is not None and step >= first for step in range(len(union))]
            assert bool(synced[0]["state"]["auto_lambda.started"]) == (first is not None)
        torch.testing.assert_close(synced[0]["lams"], torch.stack(expected), rtol=1e-12, atol=0)
        for name, value in single.state_dict().items():
            torch.testing.assert_close(synced[0]["state"][name], value, rtol=1e-12, atol=0)


def test_two_processes_gloo_share_the_single_process_normalization(
    ranks: list[dict[str, Any]],
) -> None:
    for tau, lam in NORMALIZED:
        synced = [results[f"normalized-{tau}-{lam}"] for results in ranks]
        pending = "confidence_scale.pending"  # each rank's own [Σσ*, n], not yet reduced
        for name, value in synced[0]["state"].items():
            assert name == pending or torch.equal(value, synced[1]["state"][name]), name
        # One process fed the concatenated batches divides by the same mean confidence.
        single = SuperLoss(tau=tau, lam=lam, reduction="none", normalize=True)
        for step in range(len(STEPS)):
            expected = single(torch.cat([rank_loss(step, 0), rank_loss(step, 1)]))
            got = torch.cat([synced[0]["outputs"][step], synced[1]["outputs"][step]])
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=0, equal_nan=True)
        for name, value in single.state_dict().items():
            if name == pending:  # the ranks' together are the one process's
                value_of_ranks = synced[0]["state"][name] + synced[1]["state"][name]
                torch.testing.assert_close(value_of_ranks, value, rtol=1e-12, atol=0)
            else:
                torch.testing.assert_close(synced[0]["state"][name], value, rtol=1e-12, atol=0)

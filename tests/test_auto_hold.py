"""SuperLoss(lam="auto-hold"): the held ratio, scale-freedom, state, edge cases, compile."""

from __future__ import annotations

import math

import pytest
import torch

from superloss import SuperLoss
from superloss.auto_lambda import LOWEST, lambda_from_groups, rms_about
from superloss.functional import confidence, super_loss

F64 = torch.float64
TAU = 2.0


def memorising(step: int, count: int = 256) -> torch.Tensor:
    """Losses of a network that first separates its clean samples (low, near 0.1) from 40 %
    mislabelled ones (near 5), then, from step 20 on, pulls a growing share of the mislabelled
    ones down towards the clean group (memorisation): the low group widens."""
    generator = torch.Generator().manual_seed(step)
    uniform = torch.rand(count, generator=generator, dtype=F64)
    mislabelled = torch.arange(count) % 5 < 2
    clean = 0.05 + 0.1 * uniform
    high = 4.0 + 2.0 * uniform
    share = min(max(step - 60, 0) / 30, 1.0) * 0.6  # of the mislabelled, memorised by now
    memorised = mislabelled & (torch.arange(count) % 10 < 10 * share / 2.5)
    fitted = 0.5 + 1.2 * uniform  # below τ, above the clean group
    return torch.where(memorised, fitted, torch.where(mislabelled, high, clean))


def low_mean(statistics: torch.Tensor) -> float:
    total, sum_, _, high, high_sum, _ = statistics.tolist()
    return (sum_ - high_sum) / (total - high)


def test_hold_is_the_running_minimum_of_the_ratio_to_the_low_groups_distance() -> None:
    held = SuperLoss(tau=TAU, lam="auto-hold", reduction="none")
    raw = SuperLoss(tau=TAU, lam="auto", reduction="none")
    assert raw.auto_lambda is not None and held.auto_lambda is not None
    raw.auto_lambda.lowest_factor = 0.0  # 1/L'(τ) itself: auto-hold has no floor
    held.auto_lambda.wait = raw.auto_lambda.wait = False  # the hold itself (tests/test_wait.py)
    smallest = math.inf
    lams, raws = [], []
    for step in range(120):
        loss = memorising(step)
        held(loss)
        raw(loss)
        # The groups do not depend on λ: both modules hold the same statistics.
        assert torch.equal(held.auto_lambda.statistics, raw.auto_lambda.statistics)
        distance = TAU - low_mean(raw.auto_lambda.statistics)
        lam_raw = float(raw.last_lam)  # type: ignore[arg-type]
        expected = lam_raw  # where the low group is not below τ (the first step: one group)
        if distance > 0:
            smallest = min(smallest, lam_raw / distance)
            expected = min(lam_raw, smallest * distance)
        else:
            assert step == 0
        assert float(held.last_lam) == pytest.approx(expected, rel=1e-12), step  # type: ignore[arg-type]
        assert float(held.auto_lambda.held) == pytest.approx(smallest, rel=1e-12)
        lams.append(float(held.last_lam))  # type: ignore[arg-type]
        raws.append(lam_raw)
    # Memorisation widens the low group: 1/L'(τ) relaxes, the held λ does not.
    assert raws[-1] > 3 * raws[59], (raws[59], raws[-1])
    assert lams[-1] < 0.5 * raws[-1], (lams[-1], raws[-1])
    assert max(lams[60:]) <= 1.05 * lams[59], lams


def test_state_dict_resume_is_exact() -> None:
    straight = SuperLoss(tau="ema", lam="auto-hold", reduction="none")
    first = SuperLoss(tau="ema", lam="auto-hold", reduction="none")
    for step in range(25):
        straight(memorising(step))
        first(memorising(step))
    state = first.state_dict()
    assert "auto_lambda.held" in state and math.isfinite(float(state["auto_lambda.held"]))
    assert "auto_lambda.held" not in SuperLoss(lam="auto").state_dict()  # "auto" unchanged
    resumed = SuperLoss(tau="ema", lam="auto-hold", reduction="none")
    resumed.load_state_dict(state)
    for step in range(25, 40):
        expected = straight(memorising(step))
        assert torch.equal(resumed(memorising(step)), expected)
        assert torch.equal(resumed.last_lam, straight.last_lam)  # type: ignore[arg-type]


def test_held_ratio_moves_in_training_mode_only() -> None:
    criterion = SuperLoss(tau=TAU, lam="auto-hold", reduction="none")
    assert criterion.auto_lambda is not None
    criterion.auto_lambda.wait = False  # the hold itself (tests/test_wait.py)
    for step in range(5):
        criterion(memorising(step))
    assert criterion.auto_lambda is not None
    before = criterion.auto_lambda.held.clone()
    criterion.eval()
    # The next batch of the same run lowers the ratio in training (checked below), not in eval.
    criterion(memorising(5))
    assert torch.equal(criterion.auto_lambda.held, before)
    criterion.train()
    criterion(memorising(5))
    assert float(criterion.auto_lambda.held) < float(before)


def test_compiled_module_matches_eager() -> None:
    # Eager on the CPU keeps the running state in Python floats; a compiled graph in tensors.
    eager = SuperLoss(tau="ema", lam="auto-hold")
    twin = SuperLoss(tau="ema", lam="auto-hold")
    compiled = torch.compile(twin, fullgraph=True, dynamic=False)
    for step in range(0, 40, 4):
        loss = memorising(step).float()
        expected = eager(loss)
        torch.testing.assert_close(compiled(loss), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(twin.last_lam, eager.last_lam, rtol=1e-12, atol=0)
    assert twin.auto_lambda is not None and eager.auto_lambda is not None
    torch.testing.assert_close(twin.auto_lambda.held, eager.auto_lambda.held, rtol=1e-12, atol=0)


def test_the_functional_form_refuses_it() -> None:
    # A single call has no history to hold λ against.
    with pytest.raises(ValueError, match="SuperLoss module"):
        super_loss(torch.ones(3), tau=0.0, lam="auto-hold")
    with pytest.raises(ValueError, match="SuperLoss module"):
        confidence(torch.ones(3), tau=0.0, lam="auto-hold")


def test_a_bad_lam_names_both_modes() -> None:
    with pytest.raises(ValueError, match="'auto' or 'auto-hold'"):
        SuperLoss(lam="auto-held")


@pytest.mark.parametrize("first", [[[0.5]], [[0.1, 5.0], [0.1, 5.0]], [[0.0, 0.0, 5.0, 5.0]]])
def test_groups_without_spread_never_set_the_ratio(first: list[list[float]]) -> None:
    # A single loss, or two values, give 1/L'(τ) = 0 (a group of zero variance): were that ratio
    # held, λ would stay at 0 for the rest of training.
    criterion = SuperLoss(tau=TAU, lam="auto-hold", reduction="none")
    for batch in first:
        criterion(torch.tensor(batch, dtype=F64))
    assert criterion.auto_lambda is not None
    assert math.isinf(float(criterion.auto_lambda.held))
    for step in range(30):
        criterion(memorising(step))
    assert 1e-3 < float(criterion.auto_lambda.held) < math.inf
    assert float(criterion.last_lam) > 1e-3  # type: ignore[arg-type]


@pytest.mark.parametrize("tau", ["ema", "global", "constant"])
def test_the_held_lambda_is_scale_free(tau: str) -> None:
    # The memorising run in its own units and ×250 (τ too, where it is a number): the same σ*,
    # λ ×250 — with a constant τ the hold binds (λ below 1/L'(τ)), with a running one the floor
    # S/(2e) comes after it.
    runs = {}
    for scale in (1.0, 250.0):
        threshold: str | float = TAU * scale if tau == "constant" else tau
        criterion = SuperLoss(tau=threshold, lam="auto-hold", reduction="none")
        sigmas, lams = [], []
        for step in range(100):
            criterion(memorising(step) * scale)
            assert criterion.last_confidence is not None
            sigmas.append(criterion.last_confidence)
            lams.append(torch.as_tensor(criterion.last_lam))
        runs[scale] = (torch.stack(sigmas), torch.stack(lams), criterion)
    (sigma, lam, one), (sigma_scaled, lam_scaled, scaled) = runs[1.0], runs[250.0]
    torch.testing.assert_close(sigma_scaled, sigma, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(lam_scaled, 250.0 * lam, rtol=1e-10, atol=0)
    assert one.auto_lambda is not None and scaled.auto_lambda is not None
    torch.testing.assert_close(scaled.auto_lambda.held, one.auto_lambda.held, rtol=1e-10, atol=0)
    raw = lambda_from_groups(one.auto_lambda.statistics, one.last_tau, lowest_factor=0.0)
    if tau == "constant":
        assert float(lam[-1]) < 0.9 * float(raw)  # the hold binds here


@pytest.mark.parametrize("tau", ["ema", "global", TAU])
def test_the_floor_stays_with_a_running_threshold_only(tau: str | float) -> None:
    # A constant τ (log C) makes S mostly the fitted losses' distance below τ, and S/(2e) would pin
    # λ near τ/(2e): no floor there. A running τ keeps it.
    criterion = SuperLoss(tau=tau, lam="auto-hold", reduction="none")
    floors = []
    for step in range(100):
        criterion(memorising(step))
        assert criterion.auto_lambda is not None and criterion.last_tau is not None
        spread = rms_about(criterion.auto_lambda.statistics, criterion.last_tau.double())
        floors.append(float(criterion.last_lam) / float(spread))  # type: ignore[arg-type]
    if isinstance(tau, str):
        assert min(floors) >= LOWEST * (1 - 1e-12), min(floors)
        assert criterion.auto_lambda.lowest_factor == LOWEST
    else:
        assert min(floors) < 0.5 * LOWEST, min(floors)  # held far below S/(2e)
        assert criterion.auto_lambda.lowest_factor == 0.0

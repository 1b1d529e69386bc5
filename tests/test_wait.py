"""The automatic λ with a constant τ waits for the losses to leave τ before it weighs anything."""

from __future__ import annotations

import math

import pytest
import torch

from superloss import SuperLoss
from superloss.auto_lambda import LEFT_TAU, AutoLambda

F64 = torch.float64
TAU = math.log(10)


def at_chance(step: int, count: int = 128, scale: float = 1.0) -> torch.Tensor:
    """The losses of an untrained network: every one near τ = log C, a small random spread."""
    generator = torch.Generator().manual_seed(step)
    return scale * (TAU + 0.08 * torch.randn(count, generator=generator, dtype=F64))


def separated(step: int, count: int = 128, scale: float = 1.0) -> torch.Tensor:
    """A network that fits 70 % of its samples (losses near 0.1) and contradicts the rest (near 5)."""
    generator = torch.Generator().manual_seed(1000 + step)
    uniform = torch.rand(count, generator=generator, dtype=F64)
    fitted = torch.arange(count) % 10 < 7
    return scale * torch.where(fitted, 0.05 + 0.1 * uniform, 4.0 + 2.0 * uniform)


def waits_at_chance(criterion: SuperLoss, steps: int = 30) -> None:
    """Feeds ``criterion`` losses at chance: the weighting never starts, every σ* stays ≈ 1."""
    state = criterion.auto_lambda
    assert state is not None and state.wait
    for step in range(steps):
        criterion(at_chance(step))
        assert not bool(state.started), step
        confidence = criterion.last_confidence
        assert confidence is not None
        torch.testing.assert_close(confidence, torch.ones_like(confidence), rtol=0, atol=5e-3)
        if state.hold:  # the hold starts with the weighting
            assert math.isinf(float(state.held))


def starts_when_separated(criterion: SuperLoss) -> None:
    """Feeds ``criterion`` separated losses until its weighting starts (within 20 steps)."""
    state = criterion.auto_lambda
    assert state is not None
    steps = 0
    while not bool(state.started):
        criterion(separated(steps))
        steps += 1
        assert steps < 20, "the separated losses never started the weighting"


def test_left_tau_is_the_lower_half_of_one_gaussian_centred_on_tau() -> None:
    # The lower half of N(τ, 1): mean τ − √(2/π), standard deviation √(1 − 2/π).
    assert math.sqrt(2 / math.pi) / math.sqrt(1 - 2 / math.pi) == pytest.approx(LEFT_TAU)
    assert LEFT_TAU == pytest.approx(1.3236, abs=1e-4)


@pytest.mark.parametrize("lam", ["auto", "auto-hold"])
def test_nothing_is_weighed_until_the_losses_leave_tau_then_for_good(lam: str) -> None:
    criterion = SuperLoss(tau="log_classes", num_classes=10, lam=lam, reduction="none")
    state = criterion.auto_lambda
    assert state is not None
    waits_at_chance(criterion)
    starts_when_separated(criterion)
    criterion(separated(100))
    confidence = criterion.last_confidence
    assert confidence is not None
    fitted = torch.arange(128) % 10 < 7
    assert float(confidence[fitted].min()) == pytest.approx(math.e, rel=1e-6)
    assert float(confidence[~fitted].max()) < 0.5
    # Latched: losses back at τ do not stop the weighting.
    for step in range(30):
        criterion(at_chance(100 + step))
        assert bool(state.started)


def test_the_wait_is_scale_free() -> None:
    plain = SuperLoss(tau=TAU, lam="auto-hold", reduction="none")
    scaled = SuperLoss(tau=10 * TAU, lam="auto-hold", reduction="none")
    assert plain.auto_lambda is not None and scaled.auto_lambda is not None
    for step in range(40):
        make = at_chance if step < 20 else separated
        out = plain(make(step))
        torch.testing.assert_close(scaled(make(step, scale=10.0)), 10 * out, rtol=1e-9, atol=1e-9)
        assert bool(plain.auto_lambda.started) == bool(scaled.auto_lambda.started), step
    assert bool(plain.auto_lambda.started)


def test_eval_does_not_start_the_weighting() -> None:
    criterion = SuperLoss(tau=TAU, lam="auto-hold", reduction="none")
    criterion(at_chance(0))
    criterion.eval()
    for step in range(10):
        criterion(separated(step))
    assert criterion.auto_lambda is not None and not bool(criterion.auto_lambda.started)


def test_a_running_tau_does_not_wait_by_default() -> None:
    criterion = SuperLoss(tau="ema", lam="auto-hold", reduction="none")
    assert criterion.auto_lambda is not None and not criterion.auto_lambda.wait
    assert "auto_lambda.started" not in criterion.state_dict()


@pytest.mark.parametrize("tau", ["ema", "global"])
def test_a_running_tau_waits_when_asked(tau: str) -> None:
    # A classifier's untrained losses are one group at chance whatever τ is (wait=True).
    criterion = SuperLoss(tau=tau, lam="auto-hold", normalize=True, reduction="none", wait=True)
    assert "auto_lambda.started" in criterion.state_dict()
    waits_at_chance(criterion)
    starts_when_separated(criterion)


def test_a_constant_tau_need_not_wait() -> None:
    criterion = SuperLoss(tau=TAU, lam="auto-hold", reduction="none", wait=False)
    assert criterion.auto_lambda is not None and not criterion.auto_lambda.wait
    criterion(at_chance(0))
    criterion(at_chance(1))
    confidence = criterion.last_confidence
    assert confidence is not None and float(confidence.min()) < 0.9  # weighed from the start


@pytest.mark.parametrize("wait", [1, "yes", 0.0])
def test_wait_must_be_a_bool_or_none(wait: object) -> None:
    with pytest.raises(TypeError, match="wait must be True, False or None"):
        SuperLoss(tau="ema", lam="auto", wait=wait)  # type: ignore[arg-type]


def test_state_dict_resume_and_older_states() -> None:
    first = SuperLoss(tau=TAU, lam="auto-hold", reduction="none")
    for step in range(25):
        first(at_chance(step) if step < 10 else separated(step))
    state = first.state_dict()
    assert bool(state["auto_lambda.started"])
    resumed = SuperLoss(tau=TAU, lam="auto-hold", reduction="none")
    resumed.load_state_dict(state)
    torch.testing.assert_close(resumed(separated(30)), first(separated(30)), rtol=0, atol=0)
    # A state saved before the wait existed was already weighting: it loads as started.
    older = {key: value for key, value in state.items() if key != "auto_lambda.started"}
    fresh = SuperLoss(tau=TAU, lam="auto-hold", reduction="none")
    fresh.load_state_dict(older)
    assert fresh.auto_lambda is not None and bool(fresh.auto_lambda.started)


def test_compiled_module_matches_eager_across_the_start() -> None:
    # Eager on the CPU keeps the running state in Python floats; a compiled graph in tensors.
    eager = SuperLoss(tau=TAU, lam="auto-hold", normalize=True)
    twin = SuperLoss(tau=TAU, lam="auto-hold", normalize=True)
    compiled = torch.compile(twin, fullgraph=True, dynamic=False)
    for step in range(24):
        loss = (at_chance(step) if step < 12 else separated(step)).float()
        torch.testing.assert_close(compiled(loss), eager(loss), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(twin.last_lam, eager.last_lam, rtol=1e-9, atol=0)
        assert twin.auto_lambda is not None and eager.auto_lambda is not None
        assert bool(twin.auto_lambda.started) == bool(eager.auto_lambda.started), step
    assert eager.auto_lambda is not None and bool(eager.auto_lambda.started)


def test_auto_lambda_repr_names_the_wait() -> None:
    assert "wait=True" in repr(AutoLambda(wait=True))
    assert "wait" not in repr(AutoLambda())

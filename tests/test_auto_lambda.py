"""SuperLoss(lam="auto"): the formula, scale-freedom, adaptivity, state, edge cases, compile."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from superloss import AutoLambda, SuperLoss
from superloss.auto_lambda import batch_lambda, lambda_from_groups
from superloss.functional import confidence, super_loss

F64 = torch.float64


def two_groups(
    count: int, noise: float, gap: float, seed: int = 0, dtype: torch.dtype = F64
) -> torch.Tensor:
    """Losses of a noisy training set: clean ones in [0, 0.5), mislabelled ones in [gap, gap + 2)."""
    generator = torch.Generator().manual_seed(seed)
    noisy = torch.rand(count, generator=generator) < noise
    clean = torch.rand(count, generator=generator, dtype=dtype) * 0.5
    high = gap + 2.0 * torch.rand(count, generator=generator, dtype=dtype)
    return torch.where(noisy, high, clean)


def group_means(losses: list[float], boundary: float) -> list[float]:
    """[1, ℓ, ℓ², h, hℓ, hℓ²] averaged over ``losses``, h = [ℓ > boundary], in Python floats."""
    high = [x > boundary for x in losses]
    return [
        1.0,
        statistics.fmean(losses),
        statistics.fmean([x * x for x in losses]),
        statistics.fmean([float(h) for h in high]),
        statistics.fmean([x if h else 0.0 for x, h in zip(losses, high, strict=True)]),
        statistics.fmean([x * x if h else 0.0 for x, h in zip(losses, high, strict=True)]),
    ]


def reference_lambda(means: list[float], tau: float) -> float:
    """λ = 1/L'(τ) of the two groups whose moments are ``means``, written out in Python floats."""
    total, mean, square, high, high_sum, high_square = means
    low = total - high
    slope = 0.0
    if low > 0:
        mu = (mean - high_sum) / low
        if tau > mu:
            slope += (tau - mu) / ((square - high_square) / low - mu * mu)
    if high > 0:
        mu = high_sum / high
        if mu > tau:
            slope += (mu - tau) / (high_square / high - mu * mu)
    rms = math.sqrt(square - 2 * tau * mean + tau * tau)
    return min(max(1.0 / slope, rms / (2 * math.e)), 1e3 * rms) if slope > 0 else 1e3 * rms


def test_lambda_is_the_inverse_slope_of_the_log_likelihood_ratio() -> None:
    losses = [0.1, 0.3, 0.2, 0.25, 3.0, 4.5, 3.5, 0.05, 5.0, 0.4]
    other = [0.2, 2.5, 0.1, 6.0, 0.15, 0.3]
    tau = 1.2
    # Functional: one batch, split at its mean.
    expected = reference_lambda(group_means(losses, statistics.fmean(losses)), tau)
    assert batch_lambda(torch.tensor(losses, dtype=F64), tau).item() == pytest.approx(
        expected, rel=1e-12
    )
    # Module. First training step: one group (boundary +inf); the boundary then moves to the
    # midpoint of the groups' means — the overall mean while the high group is empty.
    criterion = SuperLoss(tau=tau, lam="auto", reduction="none")
    assert criterion.auto_lambda is not None
    criterion.auto_lambda.wait = False  # the formula itself (the wait: tests/test_wait.py)
    criterion(torch.tensor(losses, dtype=F64))
    first = group_means(losses, math.inf)
    assert criterion.last_lam.item() == pytest.approx(  # type: ignore[union-attr]
        reference_lambda(first, tau), rel=1e-12
    )
    assert criterion.auto_lambda is not None
    boundary = statistics.fmean(losses)
    assert criterion.auto_lambda.boundary.item() == pytest.approx(boundary, rel=1e-15)
    # Second step: the moments are 0.9·(first) + 0.1·(this batch's, split at that boundary).
    criterion(torch.tensor(other, dtype=F64))
    second = [0.9 * a + 0.1 * b for a, b in zip(first, group_means(other, boundary), strict=True)]
    assert criterion.last_lam.item() == pytest.approx(  # type: ignore[union-attr]
        reference_lambda(second, tau), rel=1e-12
    )
    low_mean = (second[1] - second[4]) / (1 - second[3])
    assert criterion.auto_lambda.boundary.item() == pytest.approx(
        0.5 * (low_mean + second[4] / second[3]), rel=1e-12
    )


def _hand_means(values: list[float], high_mask: list[bool]) -> torch.Tensor:
    loss, high = torch.tensor(values, dtype=F64), torch.tensor(high_mask, dtype=F64)
    one = torch.tensor(1.0, dtype=F64)
    quantities = [one, loss.mean(), (loss**2).mean(), high.mean()]
    return torch.stack([*quantities, (high * loss).mean(), (high * loss**2).mean()])


def test_lambda_from_groups_hand_computed_cases() -> None:
    # Low group {0, 6}: mean 3, variance 9; high group {6, 12}: mean 9, variance 9; τ = 6.
    # L'(τ) = (6 − 3)/9 + (9 − 6)/9 = 2/3, so λ = 1.5; S² = (36 + 0 + 0 + 36)/4 = 18, and the
    # floor S/(2e) = 0.780 lies below it.
    means = _hand_means([0.0, 6.0, 6.0, 12.0], [False, False, True, True])
    assert lambda_from_groups(means, torch.tensor(6.0, dtype=F64)).item() == pytest.approx(1.5)
    # Low group {0, 2}: mean 1, variance 1; high group {10, 14}: mean 12, variance 4; τ = 4.
    # L'(τ) = (4 − 1)/1 + (12 − 4)/4 = 5: 1/L' = 0.2 lies below the floor, S = √39 (S² = (16 + 4 +
    # 36 + 100)/4), so λ = √39/(2e) = 1.1487: a loss S above τ keeps σ* = 1/e.
    means = _hand_means([0.0, 2.0, 10.0, 14.0], [False, False, True, True])
    lam = lambda_from_groups(means, torch.tensor(4.0, dtype=F64)).item()
    assert lam == pytest.approx(math.sqrt(39.0) / (2 * math.e))
    sigma = confidence(torch.tensor([4.0 + math.sqrt(39.0)], dtype=F64), tau=4.0, lam=lam)
    assert sigma.item() == pytest.approx(1 / math.e)


@pytest.mark.parametrize("tau", ["ema", "global"])
@pytest.mark.parametrize("scale", [10.0, 1e-3, 37.5])
@pytest.mark.parametrize("mode", ["auto", "auto-hold"])
def test_scale_free_sigma_unchanged_loss_scaled(tau: str, scale: float, mode: str) -> None:
    base, scaled = (SuperLoss(tau=tau, lam=mode, reduction="none") for _ in range(2))
    for step in range(12):
        loss = two_groups(257, 0.4, 4.0, seed=step)
        value = base(loss)
        scaled_value = scaled(loss * scale)
        assert base.last_confidence is not None and scaled.last_confidence is not None
        torch.testing.assert_close(
            scaled.last_confidence, base.last_confidence, rtol=1e-12, atol=1e-14
        )
        torch.testing.assert_close(scaled_value, value * scale, rtol=1e-10, atol=1e-12 * scale)
        assert scaled.last_lam.item() == pytest.approx(  # type: ignore[union-attr]
            scale * base.last_lam.item(),
            rel=1e-12,  # type: ignore[union-attr]
        )


def test_functional_auto_is_scale_free() -> None:
    loss = two_groups(100, 0.3, 3.0)
    torch.testing.assert_close(
        confidence(loss * 7.0, tau=loss.mean() * 7.0, lam="auto"),
        confidence(loss, tau=loss.mean(), lam="auto"),
        rtol=1e-12,
        atol=1e-14,
    )
    value = super_loss(loss, tau=loss.mean(), lam="auto")
    assert super_loss(loss * 7.0, tau=loss.mean() * 7.0, lam="auto").item() == pytest.approx(
        7.0 * value.item(), rel=1e-10
    )


def test_high_group_confidence_falls_as_the_groups_separate() -> None:
    # The same clean and noisy fractions, the mislabelled losses further and further from the clean
    # ones: λ relative to the losses' spread never rises, σ* of the high group falls, and the clean
    # group keeps the cap e. (Here 1/L'(τ) lies below the floor at every gap: λ = S/(2e).)
    ratios, high_sigmas = [], []
    for gap in (1.0, 3.0, 6.0, 12.0):
        losses = [two_groups(512, 0.4, gap, seed=step) for step in range(30)]
        criterion = SuperLoss(tau="ema", lam="auto", reduction="none")
        for loss in losses:
            criterion(loss)
        spread = losses[-1].std().item()
        ratios.append(float(criterion.last_lam) / spread)  # type: ignore[arg-type]
        assert criterion.last_confidence is not None
        high = losses[-1] >= gap
        high_sigmas.append(criterion.last_confidence[high].mean().item())
        low = criterion.last_confidence[~high]
        torch.testing.assert_close(low, torch.full_like(low, math.e), rtol=1e-9, atol=0)
    assert ratios == sorted(ratios, reverse=True), ratios
    assert high_sigmas == sorted(high_sigmas, reverse=True), high_sigmas
    assert high_sigmas[0] < 0.5  # below half the plain loss's weight (1) at every gap


def test_weighting_reacts_to_the_noise_in_the_losses() -> None:
    # τ = 2 (log C-like) over losses that all lie far below it (clean samples only): every σ* is at
    # the cap e, the plain loss's uniform weighting. With 40% mislabelled losses far above τ, those
    # get σ* far below the clean ones'.
    clean = [two_groups(512, 0.0, 5.0, seed=step) for step in range(30)]
    noisy = [two_groups(512, 0.4, 5.0, seed=step) for step in range(30)]
    sigmas = []
    for losses in (clean, noisy):
        criterion = SuperLoss(tau=2.0, lam="auto", reduction="none")
        for loss in losses:
            criterion(loss)
        assert criterion.last_confidence is not None
        sigmas.append(criterion.last_confidence)
    torch.testing.assert_close(sigmas[0], torch.full_like(sigmas[0], math.e), rtol=1e-12, atol=0)
    high = noisy[-1] >= 5.0
    assert sigmas[1][high].max() < 0.25 * sigmas[1][~high].min()


def test_state_dict_resume_is_exact() -> None:
    losses = [two_groups(64, 0.4, 3.0, seed=step) for step in range(8)]
    straight = SuperLoss(tau="ema", lam="auto", reduction="none")
    first = SuperLoss(tau="ema", lam="auto", reduction="none")
    for loss in losses[:4]:
        straight(loss)
        first(loss)
    state = first.state_dict()
    assert {"auto_lambda.statistics", "auto_lambda.boundary", "auto_lambda.lam"} <= set(state)
    resumed = SuperLoss(tau="ema", lam="auto", reduction="none")
    resumed.load_state_dict(state)
    for loss in losses[4:]:
        expected = straight(loss)
        assert torch.equal(resumed(loss), expected)
        assert torch.equal(resumed.last_lam, straight.last_lam)  # type: ignore[arg-type]


def test_updates_only_in_training_mode() -> None:
    criterion = SuperLoss(tau="ema", lam="auto", reduction="none")
    criterion(two_groups(64, 0.4, 3.0))
    assert criterion.auto_lambda is not None
    before = {name: value.clone() for name, value in criterion.auto_lambda.state_dict().items()}
    criterion.eval()
    criterion(two_groups(64, 0.1, 9.0, seed=5))
    after = criterion.auto_lambda.state_dict()
    for name in ("statistics", "boundary", "initialized"):
        assert torch.equal(after[name], before[name]), name
    with torch.no_grad():
        criterion(two_groups(64, 0.1, 9.0, seed=6))
    assert torch.equal(criterion.auto_lambda.statistics, before["statistics"])


def test_eval_before_training_reads_the_batch() -> None:
    criterion = SuperLoss(tau="ema", lam="auto", reduction="none").eval()
    loss = two_groups(64, 0.4, 3.0)
    criterion(loss)
    assert criterion.auto_lambda is not None and not bool(criterion.auto_lambda.initialized)
    assert math.isfinite(float(criterion.last_lam)) and float(criterion.last_lam) > 0  # type: ignore[arg-type]


def test_non_finite_losses_never_enter_the_statistics() -> None:
    loss = two_groups(40, 0.4, 3.0)
    spoiled = torch.cat([loss, torch.tensor([math.nan, math.inf, -math.inf], dtype=F64)])
    clean_run, spoiled_run = (SuperLoss(tau="ema", lam="auto", reduction="none") for _ in range(2))
    clean_run(loss)
    output = spoiled_run(spoiled)
    assert clean_run.auto_lambda is not None and spoiled_run.auto_lambda is not None
    assert torch.equal(clean_run.auto_lambda.statistics, spoiled_run.auto_lambda.statistics)
    assert torch.equal(clean_run.last_lam, spoiled_run.last_lam)  # type: ignore[arg-type]
    assert torch.isfinite(output[:40]).all()


@pytest.mark.parametrize(
    "batches",
    [
        [[2.0, 2.0, 2.0]],  # every loss equal (to τ after the first step)
        [[0.5]],  # a single loss
        [[], [1.0, 3.0], []],  # empty batches
        [[0.0, 0.0, 0.0, 5.0, 5.0]],  # groups without spread
        [[1e30, 1e-30, 0.0]],  # extreme values
        [[0.1, 0.2], [0.1, 0.2], [0.1, 0.2]],  # τ never above the high group
        [[0.0, 0.0, 5.0], [3.0, 3.5, 4.0], [math.nan, 1.0, 2.0]],  # a NaN after two groups
    ],
)
@pytest.mark.parametrize("tau", ["ema", "global", 2.0])
@pytest.mark.parametrize("mode", ["auto", "auto-hold"])
def test_no_nan_anywhere(batches: list[list[float]], tau: str | float, mode: str) -> None:
    criterion = SuperLoss(tau=tau, lam=mode, reduction="none")
    for batch in batches:
        loss = torch.tensor(batch, dtype=torch.float32, requires_grad=True)
        output = criterion(loss)
        output.sum().backward()
        lam = float(criterion.last_lam)  # type: ignore[arg-type]
        assert math.isfinite(lam) and lam > 0, (batch, lam)
        finite = torch.isfinite(loss.detach())  # a NaN loss gives its own element NaN only
        assert not torch.isnan(output[finite]).any(), (batch, output)
        assert loss.grad is not None and not torch.isnan(loss.grad[finite]).any()
    assert criterion.auto_lambda is not None
    for name, value in criterion.auto_lambda.state_dict().items():
        assert not torch.isnan(value).any(), name


def test_gradient_is_sigma() -> None:
    loss = two_groups(50, 0.4, 3.0).requires_grad_(True)
    criterion = SuperLoss(tau="ema", lam="auto", reduction="sum")
    criterion(loss).backward()
    assert loss.grad is not None and criterion.last_confidence is not None
    torch.testing.assert_close(loss.grad, criterion.last_confidence, rtol=0, atol=0)


def test_state_keeps_float64_when_the_model_is_converted() -> None:
    criterion = SuperLoss(tau="ema", lam="auto")
    criterion(two_groups(30, 0.4, 3.0))
    assert criterion.auto_lambda is not None
    before = criterion.auto_lambda.statistics.clone()
    criterion.half()
    assert criterion.auto_lambda.statistics.dtype == F64
    assert torch.equal(criterion.auto_lambda.statistics, before)


def test_compiled_module_matches_eager() -> None:
    eager = SuperLoss(tau="ema", lam="auto")
    twin = SuperLoss(tau="ema", lam="auto")
    compiled = torch.compile(twin, fullgraph=True, dynamic=False)
    for step in range(4):
        loss = two_groups(128, 0.4, 3.0, seed=step, dtype=torch.float32)
        expected = eager(loss)
        result = compiled(loss)
        torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(twin.last_lam, eager.last_lam, rtol=1e-12, atol=0)


@pytest.mark.parametrize("lam", ["Auto", "automatic", "", None, math.nan, -1.0, 0.0, True])
def test_bad_lam_is_a_value_error(lam: object) -> None:
    with pytest.raises(ValueError, match="lam must be"):
        SuperLoss(lam=lam)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lam must be"):
        super_loss(torch.ones(3), tau=0.0, lam=lam)  # type: ignore[arg-type]


def test_bad_past_weight() -> None:
    with pytest.raises(ValueError, match="past_weight"):
        AutoLambda(1.0)

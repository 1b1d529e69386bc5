"""superloss.functional: σ* and the SuperLoss against float64 / mpmath formulas, gradients, compile."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

from superloss.functional import confidence, super_loss

# Tolerances against a float64 reference, per dtype of the computation.
RTOL = {torch.float64: 1e-13, torch.float32: 2e-6}
HALF_DTYPES = (torch.float16, torch.bfloat16)


def reference_confidence(loss: float, tau: float, lam: float) -> float:
    """σ* = exp(−W₀(½·max(−2/e, (ℓ − τ)/λ))) by mpmath."""
    with mpmath.workprec(120):
        half_beta = max(-1 / mpmath.e, (mpmath.mpf(loss) - tau) / lam / 2)
        return float(mpmath.exp(-mpmath.lambertw(half_beta).real))


def reference_super_loss(loss: float, tau: float, lam: float) -> float:
    """(ℓ − τ)·σ* + λ·(log σ*)², σ* by mpmath."""
    with mpmath.workprec(120):
        sigma = mpmath.mpf(reference_confidence(loss, tau, lam))
        return float((mpmath.mpf(loss) - tau) * sigma + lam * mpmath.log(sigma) ** 2)


def sample_losses(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Losses on both sides of τ = 1.5 (λ = 0.5): the clamp region ℓ ≤ τ − 2λ/e, around τ, far above."""
    generator = torch.Generator().manual_seed(1)
    values = torch.cat(
        [
            torch.tensor([0.0, 0.5, 1.5 - 1 / math.e - 1e-3, 1.5 - 1 / math.e + 1e-3, 1.5, 1.6]),
            torch.rand(40, generator=generator) * 8,
            torch.tensor([50.0, 1e3, 1e6]),
        ]
    )
    return values.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_confidence_matches_mpmath(dtype: torch.dtype) -> None:
    loss = sample_losses(dtype)
    sigma = confidence(loss, tau=1.5, lam=0.5)
    assert sigma.dtype == dtype and sigma.shape == loss.shape
    expected = torch.tensor(
        [reference_confidence(v, 1.5, 0.5) for v in loss.double().tolist()], dtype=torch.float64
    )
    torch.testing.assert_close(sigma.double(), expected, rtol=RTOL[dtype], atol=0.0)


def test_confidence_table_of_the_paper_notes() -> None:
    # β = (ℓ − τ)/λ → σ*, as tabulated in the method's description (3 decimals).
    beta = torch.tensor([0.5, 1.0, 2.0, 5.0, 10.0, 100.0], dtype=torch.float64)
    expected = torch.tensor([0.816, 0.703, 0.567, 0.383, 0.265, 0.057], dtype=torch.float64)
    torch.testing.assert_close(confidence(beta, tau=0.0, lam=1.0), expected, rtol=0, atol=6e-4)
    # And with τ and λ scaled: only β matters.
    torch.testing.assert_close(
        confidence(2.0 + 0.25 * beta, tau=2.0, lam=0.25),
        confidence(beta, tau=0.0, lam=1.0),
        rtol=1e-14,
        atol=0.0,
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_confidence_is_the_stationary_point(dtype: torch.dtype) -> None:
    # Independent of any Lambert W: d/dx [(ℓ−τ)eˣ + λx²] = 0 at x = log σ*, i.e.
    # (ℓ − τ)·σ* + 2λ·log σ* = 0 wherever β/2 > −1/e.
    tau, lam = 1.5, 0.5
    loss = sample_losses(dtype)
    loss = loss[(loss.double() - tau) / lam / 2 > -1 / math.e + 1e-3]
    sigma = confidence(loss, tau, lam).double()
    residual = (loss.double() - tau) * sigma + 2 * lam * torch.log(sigma)
    scale = (loss.double() - tau).abs() * sigma + 2 * lam * torch.log(sigma).abs()
    assert (residual.abs() <= 8 * RTOL[dtype] * scale.clamp_min(1e-300)).all()


def test_confidence_minimises_the_loss_over_sigma() -> None:
    tau, lam = 1.5, 0.5
    loss = sample_losses()[:, None]
    sigma_star = confidence(loss, tau, lam)
    grid = torch.logspace(-4, 0.43, 2000, dtype=torch.float64)[None, :]  # σ in [1e-4, ~2.69]

    def objective(sigma: torch.Tensor) -> torch.Tensor:
        return (loss - tau) * sigma + lam * torch.log(sigma) ** 2

    assert (objective(sigma_star) <= objective(grid).min(dim=1, keepdim=True).values + 1e-12).all()


@pytest.mark.parametrize("lam", [0.25, 1.0, 4.0])
def test_confidence_clamp_region_is_exactly_e(lam: float) -> None:
    tau = 2.0
    edge = tau - 2 * lam / math.e
    loss = torch.tensor([edge - 10.0, edge - 1.0, edge - 1e-3, -50.0], dtype=torch.float64)
    sigma = confidence(loss, tau, lam)
    torch.testing.assert_close(sigma, torch.full_like(sigma, math.e), rtol=1e-15, atol=0)
    assert confidence(torch.tensor([tau], dtype=torch.float64), tau, lam).item() == 1.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_clamp_edge_is_exactly_the_branch_point(dtype: torch.dtype) -> None:
    # At ℓ − τ = −2λ/e exactly as computed in the dtype, σ* is e, not NaN (the scipy pitfall).
    loss = torch.tensor([0.0], dtype=dtype)
    tau = torch.tensor(2.0 / math.e, dtype=dtype)
    sigma = confidence(loss, tau, 1.0)
    assert torch.isfinite(sigma).all()
    torch.testing.assert_close(sigma.double(), torch.tensor([math.e], dtype=torch.float64))


def test_confidence_is_monotone_and_positive() -> None:
    loss = torch.linspace(-10, 1e4, 10_001, dtype=torch.float64)
    sigma = confidence(loss, tau=0.0, lam=1.0)
    assert (sigma.diff() <= 0).all() and (sigma > 0).all()


def test_confidence_has_no_gradient() -> None:
    loss = sample_losses().requires_grad_(True)
    sigma = confidence(loss, tau=1.0, lam=1.0)
    assert not sigma.requires_grad and sigma.grad_fn is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_super_loss_matches_mpmath(dtype: torch.dtype) -> None:
    loss = sample_losses(dtype)
    values = super_loss(loss, tau=1.5, lam=0.5, reduction="none")
    assert values.dtype == dtype and values.shape == loss.shape
    expected = torch.tensor(
        [reference_super_loss(v, 1.5, 0.5) for v in loss.double().tolist()], dtype=torch.float64
    )
    # Near ℓ = τ the value is a difference of two terms: an absolute tolerance at the loss's scale.
    scale = loss.double().abs() + 1.5
    assert ((values.double() - expected).abs() <= 4 * RTOL[dtype] * scale).all()


def test_super_loss_hand_computed_values() -> None:
    loss = torch.tensor([1.0, 0.0, 1.0 + 2 * math.e], dtype=torch.float64)
    values = super_loss(loss, tau=1.0, lam=1.0, reduction="none")
    # ℓ = τ: σ* = 1, SL = 0. Clamp: σ* = e, SL = (−1)·e + 1. β = 2e: W(e) = 1, σ* = 1/e,
    # SL = 2e·(1/e) + 1 = 3.
    expected = torch.tensor([0.0, 1.0 - math.e, 3.0], dtype=torch.float64)
    torch.testing.assert_close(values, expected, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_reductions(reduction: str) -> None:
    loss = torch.rand(4, 5, dtype=torch.float64) * 4
    values = super_loss(loss, tau=1.0, lam=1.0, reduction="none")
    result = super_loss(loss, tau=1.0, lam=1.0, reduction=reduction)
    expected = {"none": values, "mean": values.mean(), "sum": values.sum()}[reduction]
    assert result.shape == expected.shape
    torch.testing.assert_close(result, expected, rtol=1e-15, atol=0)


def test_default_reduction_is_mean() -> None:
    loss = torch.rand(7, dtype=torch.float64)
    assert torch.equal(super_loss(loss, 0.5), super_loss(loss, 0.5, 1.0, "mean"))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_empty_loss(reduction: str) -> None:
    loss = torch.empty(0, 3, requires_grad=True)
    result = super_loss(loss, tau=1.0, reduction=reduction)
    if reduction == "none":
        assert result.shape == (0, 3)
        result.sum().backward()
    else:
        assert result.shape == () and result.item() == 0.0
        result.backward()
    assert loss.grad is not None and loss.grad.shape == (0, 3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tau", [1.5, "tensor"])
def test_gradient_equals_confidence(dtype: torch.dtype, tau: float | str) -> None:
    # Envelope theorem: dSL/dℓ = σ*, in the clamp region (σ* = e) and everywhere else.
    tau_value = torch.tensor(1.5, dtype=dtype, requires_grad=True) if tau == "tensor" else 1.5
    loss = sample_losses(dtype).requires_grad_(True)
    super_loss(loss, tau_value, lam=0.5, reduction="sum").backward()
    assert loss.grad is not None
    torch.testing.assert_close(loss.grad, confidence(loss, 1.5, 0.5), rtol=0, atol=0)
    if isinstance(tau_value, torch.Tensor):
        assert tau_value.grad is None  # τ is a constant of the loss


def test_gradient_through_a_task_loss_is_sigma_weighted() -> None:
    logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    per_sample = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    super_loss(per_sample, tau=math.log(4), lam=1.0, reduction="sum").backward()
    assert logits.grad is not None
    sigma = confidence(per_sample, math.log(4), 1.0)
    reference = logits.detach().clone().requires_grad_(True)
    ce = torch.nn.functional.cross_entropy(reference, target, reduction="none")
    (ce * sigma).sum().backward()
    torch.testing.assert_close(logits.grad, reference.grad, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradcheck_float64(reduction: str) -> None:
    # Points away from the kink at ℓ = τ − 2λ/e, on both sides of it.
    loss = torch.tensor([0.0, 0.3, 1.2, 1.5, 2.0, 4.0, 30.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: super_loss(x, tau=1.5, lam=0.5, reduction=reduction),
        (loss.requires_grad_(True),),
    )


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_half_precision_is_computed_in_float32(dtype: torch.dtype) -> None:
    loss = (torch.rand(64, generator=torch.Generator().manual_seed(2)) * 6).to(dtype)
    loss.requires_grad_(True)
    values = super_loss(loss, tau=2.0, lam=0.5, reduction="none")
    assert values.dtype == torch.float32
    sigma = confidence(loss, 2.0, 0.5)
    assert sigma.dtype == torch.float32
    # Against float64 on the same (half-rounded) values: float32 accuracy, well inside 1e-3.
    exact = loss.detach().double()
    expected_values = super_loss(exact, 2.0, 0.5, reduction="none")
    expected_sigma = confidence(exact, 2.0, 0.5)
    torch.testing.assert_close(values.double(), expected_values, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(sigma.double(), expected_sigma, rtol=1e-3, atol=0)
    values.sum().backward()
    assert loss.grad is not None and loss.grad.dtype == dtype
    torch.testing.assert_close(loss.grad, expected_sigma.to(dtype), rtol=1e-2, atol=0)


def test_non_finite_losses_stay_in_their_own_elements() -> None:
    loss = torch.tensor([0.5, math.nan, 2.0, math.inf, 3.0], dtype=torch.float64)
    values = super_loss(loss, tau=1.0, reduction="none")
    finite = torch.tensor([True, False, True, False, True])
    assert torch.isfinite(values[finite]).all()
    assert not torch.isfinite(values[~finite]).any()
    expected = super_loss(loss[finite], tau=1.0, reduction="none")
    assert torch.equal(values[finite], expected)
    assert math.isnan(super_loss(loss, tau=1.0, reduction="mean").item())


@pytest.mark.parametrize("lam", [0.0, -1.0, math.nan, math.inf])
def test_bad_lam_is_a_value_error(lam: float) -> None:
    loss = torch.rand(3)
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        super_loss(loss, tau=1.0, lam=lam)
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        confidence(loss, tau=1.0, lam=lam)


@pytest.mark.parametrize("reduction", ["avg", "Mean", "", None])
def test_bad_reduction_is_a_value_error(reduction: str) -> None:
    with pytest.raises(ValueError, match="reduction must be one of"):
        super_loss(torch.rand(3), tau=1.0, reduction=reduction)


@pytest.mark.parametrize(
    "bad",
    [torch.tensor([1, 2, 3]), torch.tensor([True, False]), torch.tensor([1], dtype=torch.uint8)],
)
def test_integer_or_bool_loss_is_a_type_error(bad: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="expected a floating-point tensor of per-sample losses"):
        super_loss(bad, tau=1.0)
    with pytest.raises(TypeError, match="expected a floating-point tensor of per-sample losses"):
        confidence(bad, tau=1.0)


def test_non_tensor_loss_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"as a torch\.Tensor, got list"):
        super_loss([0.1, 0.2], tau=1.0)  # type: ignore[arg-type]


def test_compiled_matches_eager() -> None:
    compiled = torch.compile(super_loss, fullgraph=True, dynamic=False)
    loss = sample_losses(torch.float32)
    eager_input = loss.clone().requires_grad_(True)
    compiled_input = loss.clone().requires_grad_(True)
    eager = super_loss(eager_input, 1.5, 0.5, "sum")
    result = compiled(compiled_input, 1.5, 0.5, "sum")
    torch.testing.assert_close(result, eager, rtol=1e-6, atol=1e-6)
    eager.backward()
    result.backward()
    torch.testing.assert_close(compiled_input.grad, eager_input.grad, rtol=1e-6, atol=0)


def wide_losses(tau: float, lam: float) -> torch.Tensor:
    """Losses over SuperLoss's whole domain in float32: the clamp region, 1e-7 … 1 above its edge
    τ − 2λ/e, around τ, and large losses up to 1e30."""
    edge = tau - 2 * lam / math.e
    generator = torch.Generator().manual_seed(7)
    values = torch.cat(
        [
            torch.tensor([edge - 5.0, edge - 1e-3, tau, 0.0]),
            edge + torch.logspace(-7, 0, 120, dtype=torch.float64),
            tau + torch.linspace(-0.5, 0.5, 101, dtype=torch.float64),
            torch.rand(500, generator=generator, dtype=torch.float64) * 20,
            torch.logspace(1, 30, 120, dtype=torch.float64),
        ]
    )
    return values.float()


# Pairs where, next to the clamp edge, ℓ − τ is exact in float32 (ℓ within a factor 2 of τ): the
# comparison at the exact input is then fair there too. Eager float32 never divides ℓ − τ by 2λ
# before adding 2λ/e, so λ need not be a power of 2.
@pytest.mark.parametrize(
    ("tau", "lam"), [(1.5, 0.5), (2.0, 1.0), (0.25, 0.125), (2.0, 0.75), (1.0, 0.3)]
)
def test_float32_confidence_matches_mpmath_over_the_whole_domain(tau: float, lam: float) -> None:
    loss = wide_losses(tau, lam)
    sigma = confidence(loss, tau, lam)
    expected = torch.tensor(
        [reference_confidence(v, tau, lam) for v in loss.double().tolist()], dtype=torch.float64
    )
    tiny = torch.finfo(torch.float32).tiny  # beyond ~1e30, σ* itself underflows float32
    represented = expected > tiny
    # σ* = e^{−W} with W in float32: W's own rounding, |W|·2⁻²⁴, is a relative error of σ*.
    allowed = RTOL[torch.float32] + expected.log().abs() * 2.0**-23
    error = (sigma.double() - expected).abs() / expected
    assert (error[represented] <= allowed[represented]).all(), error.max()
    assert (sigma[~represented] <= tiny).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("tau", "lam"), [(1.5, 0.5), (2.302585, 0.3), (0.1, 7.0), (0.0, 1.0)])
def test_confidence_is_exactly_one_at_tau_and_e_below_the_edge(
    dtype: torch.dtype, tau: float, lam: float
) -> None:
    tau_in_dtype = torch.tensor(tau, dtype=dtype)
    loss = torch.stack([tau_in_dtype, tau_in_dtype - 2 * lam / math.e - 1.0])
    sigma = confidence(loss, tau_in_dtype, lam)
    assert sigma[0].item() == 1.0
    assert sigma[1].item() == pytest.approx(math.e, rel=torch.finfo(dtype).eps)
    values = super_loss(loss, tau_in_dtype, lam, reduction="none")
    assert values[0].item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_confidence_of_non_finite_losses(dtype: torch.dtype) -> None:
    # +∞: σ* → 0; −∞: the clamp region, e; NaN of either sign: NaN (never a wrong finite weight).
    loss = torch.tensor([math.inf, -math.inf, math.nan, math.nan], dtype=dtype)
    integer = {8: torch.int64, 4: torch.int32, 2: torch.int16}[loss.element_size()]
    sign = torch.tensor(-(2 ** (8 * loss.element_size() - 1)), dtype=integer)
    loss[3:].view(integer).bitwise_or_(sign)  # a NaN with its sign bit set, as 0·∞ makes on x86
    assert torch.signbit(loss[3]) and not torch.signbit(loss[2]) and torch.isnan(loss[3])
    sigma = confidence(loss, tau=1.0, lam=1.0)
    assert sigma[0].item() == 0.0
    assert sigma[1].item() == pytest.approx(math.e, rel=1e-6)
    assert torch.isnan(sigma[2:]).all()


def test_module_and_function_use_the_same_single_pass() -> None:
    # super_loss_with_confidence (σ* and unreduced values) agrees with both public functions.
    from superloss.functional import super_loss_with_confidence

    loss = wide_losses(1.5, 0.5)
    values, sigma = super_loss_with_confidence(loss, 1.5, 0.5)
    assert torch.equal(sigma, confidence(loss, 1.5, 0.5))
    assert torch.equal(values, super_loss(loss, 1.5, 0.5, reduction="none"))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_compiled_float32_matches_eager_over_the_whole_domain(reduction: str) -> None:
    # Compiled graphs use the elementwise plan, eager float32 the table: both within float32 error.
    # (The elementwise plan takes (ℓ − τ)/(2λ), rounded unless 2λ is a power of 2, which next to
    # the clamp edge costs digits the table keeps; λ = 1 here.)
    compiled = torch.compile(confidence, fullgraph=True, dynamic=False)
    loss = wide_losses(2.0, 1.0)
    eager_sigma = confidence(loss, 2.0, 1.0).double()
    difference = (compiled(loss, 2.0, 1.0).double() - eager_sigma).abs()
    # Each is within float32 error of σ*, the larger one W's rounding, |W|·2⁻²⁴ (W = −log σ*).
    allowed = 2e-6 * eager_sigma + eager_sigma.log().abs() * 2.0**-22 * eager_sigma
    assert (difference <= allowed + 1e-38).all()
    compiled_loss = torch.compile(super_loss, fullgraph=True, dynamic=False)
    first = loss[:300].clone().requires_grad_(True)
    second = loss[:300].clone().requires_grad_(True)
    expected = super_loss(first, 2.0, 1.0, reduction)
    result = compiled_loss(second, 2.0, 1.0, reduction)
    torch.testing.assert_close(result, expected, rtol=2e-6, atol=1e-6)
    expected.sum().backward()
    result.sum().backward()
    torch.testing.assert_close(second.grad, first.grad, rtol=1e-6, atol=0)

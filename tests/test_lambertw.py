"""superloss.lambertw: accuracy against mpmath, special values, autograd, torch.compile."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

from superloss import lambertw

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Relative error allowed against mpmath at the exact input; half precision: one ulp of the dtype.
RTOL = {
    torch.float64: 1e-14,
    torch.float32: 2e-6,
    torch.float16: torch.finfo(torch.float16).eps,
    torch.bfloat16: torch.finfo(torch.bfloat16).eps,
}


def rounded_branch(dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(-1.0 / math.e, dtype=dtype)


def reference(x: torch.Tensor) -> torch.Tensor:
    """W₀ by mpmath at the exact value of each element (NaN below the true −1/e), as float64."""
    values = []
    with mpmath.workprec(120):
        for value in x.double().tolist():
            exact = mpmath.mpf(value)
            if math.isnan(value) or exact < -1 / mpmath.e:
                values.append(math.nan)
            elif math.isinf(value):
                values.append(math.inf)
            else:
                values.append(float(mpmath.lambertw(exact).real))
    return torch.tensor(values, dtype=torch.float64)


def ulps_above(start: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` representable values just above ``start``, in its dtype."""
    values, current = [], start
    for _ in range(count):
        current = torch.nextafter(current, torch.ones_like(current))
        values.append(current)
    return torch.stack(values)


def domain_sample(dtype: torch.dtype) -> torch.Tensor:
    """Points over the whole domain: next to the branch point up to the largest finite value."""
    finfo = torch.finfo(dtype)
    low_exponent = math.log10(finfo.tiny)
    generator = torch.Generator().manual_seed(0)
    parts = [
        ulps_above(rounded_branch(dtype), 40),
        # −1/e + 10^k: the series region, the switch to Fritsch's iteration at p = 0.1 / 0.3, and
        # the switch of first guess at −0.2.
        (-1 / math.e + torch.logspace(-16, math.log10(0.36), 300, dtype=torch.float64)).to(dtype),
        torch.linspace(-0.36, 3.0, 300, dtype=torch.float64).to(dtype),
        torch.logspace(low_exponent, math.log10(finfo.max), 400, dtype=torch.float64).to(dtype),
        -torch.logspace(low_exponent, math.log10(0.36), 200, dtype=torch.float64).to(dtype),
        (torch.rand(300, generator=generator, dtype=torch.float64) * 50 - 1 / math.e).to(dtype),
        torch.tensor(
            [finfo.max, finfo.tiny, -finfo.tiny, -0.25, -0.2, 0.0, 1e-5, -1e-5], dtype=dtype
        ),
    ]
    x = torch.cat(parts)
    x = x[torch.isfinite(x) & (x > rounded_branch(dtype))]
    return x


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    error = (actual.double() - expected).abs() / expected.abs()
    return torch.where(actual.double() == expected, torch.zeros_like(error), error)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_mpmath_over_the_domain(dtype: torch.dtype) -> None:
    x = domain_sample(dtype)
    assert x.numel() > 1000
    w = lambertw(x)
    assert w.dtype == dtype
    error = relative_error(w, reference(x))
    worst = int(error.argmax())
    assert error.max() <= RTOL[dtype], (
        f"x={x[worst].item()!r}: rel. error {error[worst].item():.3g}"
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_within_one_ulp(dtype: torch.dtype) -> None:
    x = domain_sample(dtype)
    w = lambertw(x)
    assert w.dtype == dtype
    assert relative_error(w, reference(x)).max() <= RTOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_identity_w_exp_w(dtype: torch.dtype) -> None:
    # An independent check of the same sample: W·e^W = x, in float64. A relative error r in W is
    # one of (1 + W)·r in x; the branch point, where that factor vanishes, is left out.
    x = domain_sample(dtype)
    x = x[(x > -0.3) & (x < 1e30)].double()
    w = lambertw(x.to(dtype)).double()
    error = (w * torch.exp(w) - x).abs() / x.abs().clamp_min(torch.finfo(torch.float64).tiny)
    allowed = 2 * (1 + w.abs()) * RTOL[dtype]
    assert (error <= allowed).all()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, 0.5671432904097838),  # the omega constant
        (math.e, 1.0),
        (2 * math.e**2, 2.0),
        (-math.log(2) / 2, -math.log(2)),  # W(−ln2/2) = −ln 2
        (10.0, 1.7455280027406994),
        (1e100, 224.84310644511851),
    ],
)
def test_known_values(value: float, expected: float) -> None:
    w = lambertw(torch.tensor(value, dtype=torch.float64))
    assert w.item() == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_branch_point(dtype: torch.dtype) -> None:
    branch = rounded_branch(dtype)
    assert lambertw(branch).item() == -1.0
    below = torch.nextafter(branch, torch.tensor(-1.0, dtype=dtype))
    assert math.isnan(lambertw(below).item())
    above = ulps_above(branch, 3)
    w = lambertw(above)
    assert (w > -1.0).all() and (w.diff() > 0).all()
    assert relative_error(w, reference(above)).max() <= RTOL[dtype]


def test_branch_point_where_scipy_fails() -> None:
    # float64(−1/e) lies 1.2e-17 below the true branch point: scipy gives NaN there, we give −1;
    # the next double up is inside the domain, W = −1 + √(2(ex + 1)) + …, known to the last bit.
    x = torch.tensor([-0.36787944117144233, -0.36787944117144228], dtype=torch.float64)
    w = lambertw(x)
    assert w[0].item() == -1.0
    assert w[1].item() == pytest.approx(reference(x[1:]).item(), rel=1e-14)
    assert w[1].item() > -1.0 + 1e-8


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_special_values(dtype: torch.dtype) -> None:
    x = torch.tensor([math.inf, math.nan, -math.inf, -1.0, -0.5, 0.0, -0.0], dtype=dtype)
    w = lambertw(x)
    assert w[0].item() == math.inf
    assert torch.isnan(w[1:5]).all()
    assert w[5].item() == 0.0 and w[6].item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_subnormal_inputs(dtype: torch.dtype) -> None:
    # W(x) = x − x² + …: x itself for every |x| below the smallest normal, down to the smallest
    # subnormal (which once came out NaN).
    finfo = torch.finfo(dtype)
    smallest = torch.nextafter(torch.tensor(0.0, dtype=dtype), torch.tensor(1.0, dtype=dtype))
    x = torch.stack([smallest, 2 * smallest, torch.tensor(finfo.tiny / 4, dtype=dtype)])
    x = torch.cat([x, -x])
    assert torch.equal(lambertw(x), x)


@pytest.mark.parametrize("shape", [(), (0,), (3, 1, 4), (2, 0, 5)])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_shape_and_dtype_are_kept(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x = torch.rand(shape, dtype=torch.float64).mul(5).to(dtype)
    w = lambertw(x)
    assert w.shape == x.shape and w.dtype == dtype and w.device == x.device


def test_non_contiguous_input() -> None:
    x = torch.linspace(-0.3, 5.0, 24, dtype=torch.float64).reshape(4, 6)
    torch.testing.assert_close(lambertw(x.t()), lambertw(x.t().contiguous()), rtol=0, atol=0)
    torch.testing.assert_close(lambertw(x[:, ::2]), lambertw(x)[:, ::2], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_large_input_equals_its_parts(dtype: torch.dtype) -> None:
    # A large CPU input is computed block by block: the result is the same as piece by piece.
    generator = torch.Generator().manual_seed(4)
    x = (torch.rand(3, 50_001, generator=generator, dtype=torch.float64) * 30 - 0.3).to(dtype)
    x[1, 7] = math.inf
    x[2, 9] = rounded_branch(dtype)
    x[2, 11] = math.nan
    w = lambertw(x.t())  # non-contiguous, too
    assert w.shape == (50_001, 3) and w.dtype == dtype
    pieces = torch.cat([lambertw(x.t()[start : start + 1000]) for start in range(0, 50_001, 1000)])
    torch.testing.assert_close(w, pieces, rtol=0, atol=0, equal_nan=True)
    assert w[7, 1].item() == math.inf and w[9, 2].item() == -1.0


def test_input_is_not_modified() -> None:
    x = torch.linspace(-0.36, 5.0, 50, dtype=torch.float64)
    before = x.clone()
    lambertw(x)
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    "bad",
    [
        torch.tensor([1, 2]),
        torch.tensor([True, False]),
        torch.tensor([1.0 + 0.0j]),
    ],
)
def test_non_floating_tensor_is_a_type_error(bad: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="real floating tensor"):
        lambertw(bad)


def test_non_tensor_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"expects a torch\.Tensor, got float"):
        lambertw(1.0)  # type: ignore[arg-type]


def test_gradient_matches_formula() -> None:
    x = torch.tensor([-0.3, -0.1, 0.0, 0.5, 1.0, 10.0, 1e10], dtype=torch.float64)
    x.requires_grad_(True)
    w = lambertw(x)
    w.sum().backward()
    assert x.grad is not None
    w = w.detach()
    formula = torch.where(x == 0, torch.ones_like(w), w / (x.detach() * (1 + w)))
    torch.testing.assert_close(x.grad, formula, rtol=1e-13, atol=0.0)
    assert x.grad[2].item() == 1.0  # dW/dx = 1 at x = 0


def test_gradient_against_mpmath_derivative() -> None:
    points = [-0.35, -0.2, 0.3, 2.0, 50.0]
    x = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    lambertw(x).sum().backward()
    assert x.grad is not None
    with mpmath.workprec(100):
        expected = [float(mpmath.diff(lambda t: mpmath.lambertw(t).real, p)) for p in points]
    torch.testing.assert_close(
        x.grad, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0
    )


def test_gradcheck_float64() -> None:
    x = torch.tensor([-0.3, -0.2, -0.05, 0.0, 0.7, 3.0, 40.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambertw, (x.requires_grad_(True),))


def test_gradient_at_branch_point_is_infinite() -> None:
    x = rounded_branch(torch.float64).requires_grad_(True)
    lambertw(x).backward()
    assert x.grad is not None and x.grad.item() == math.inf


def test_gradient_in_half_precision_has_input_dtype() -> None:
    x = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float16, requires_grad=True)
    lambertw(x).sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float16
    expected = torch.tensor(
        [1.0, 0.5671 / (1 * 1.5671), 0.8526 / (2 * 1.8526)], dtype=torch.float16
    )
    torch.testing.assert_close(x.grad, expected, rtol=2e-3, atol=0)


def test_compiled_fullgraph_matches_eager() -> None:
    compiled = torch.compile(lambertw, fullgraph=True, dynamic=False)
    x = torch.cat(
        [
            torch.tensor([math.inf, math.nan, -1.0, 0.0, 5e-324, 1e308], dtype=torch.float64),
            ulps_above(rounded_branch(torch.float64), 2),
            rounded_branch(torch.float64).reshape(1),
            torch.linspace(-0.367, 20.0, 23, dtype=torch.float64),
        ]
    )
    eager = lambertw(x)
    result = compiled(x)
    torch.testing.assert_close(result, eager, rtol=1e-15, atol=0.0, equal_nan=True)
    assert result[-24].item() == -1.0  # the rounded branch point


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_nan_of_either_sign_gives_nan(dtype: torch.dtype) -> None:
    x = torch.tensor([math.nan, math.nan, 1.0], dtype=dtype)
    integer = {8: torch.int64, 4: torch.int32, 2: torch.int16}[x.element_size()]
    x[1:2].view(integer).bitwise_or_(
        torch.tensor(-(2 ** (8 * x.element_size() - 1)), dtype=integer)
    )
    assert torch.signbit(x[1]) and torch.isnan(x[1])
    w = lambertw(x)
    assert torch.isnan(w[:2]).all() and w[2].item() == pytest.approx(0.5671432904097838, rel=1e-2)


def test_compiled_float32_matches_eager_over_the_domain() -> None:
    # Eager float32 reads the table, a compiled graph runs the elementwise plan: both are within
    # float32 accuracy of W, so within twice that of each other.
    x = domain_sample(torch.float32)
    compiled = torch.compile(lambertw, fullgraph=True, dynamic=False)
    eager = lambertw(x)
    difference = relative_error(compiled(x), eager.double())
    assert difference.max() <= 2 * RTOL[torch.float32]
    assert torch.equal(lambertw(torch.zeros(3)), torch.zeros(3))

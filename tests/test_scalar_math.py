"""The running state's arithmetic on Python floats (CPU, eager) gives the tensors' bits."""

from __future__ import annotations

import math

import pytest
import torch

import superloss.auto_lambda as auto_lambda
import superloss.threshold as threshold
from superloss import AutoLambda, SuperLoss
from superloss.auto_lambda import group_quantities, group_sums, lambda_from_groups
from superloss.scalar_math import FLOATS, TENSORS, on_host
from superloss.threshold import EMAThreshold, GlobalMeanThreshold, finite_sums

F64 = torch.float64
SPECIAL = [0.0, -0.0, 1.0, -2.5, 1e-300, 1e300, math.inf, -math.inf, math.nan]


def same(a: float, b: float) -> bool:
    """Equal to the bit (NaN equals NaN; 0.0 and −0.0 differ)."""
    return (math.isnan(a) and math.isnan(b)) or (
        a == b and math.copysign(1, a) == math.copysign(1, b)
    )


@pytest.mark.parametrize("x", SPECIAL)
@pytest.mark.parametrize("y", SPECIAL)
def test_float_operations_follow_torch(x: float, y: float) -> None:
    tx, ty = torch.tensor(x, dtype=F64), torch.tensor(y, dtype=F64)
    assert same(FLOATS.div(x, y), (tx / ty).item())
    assert same(FLOATS.clamp_min(x, y), torch.clamp_min(tx, ty).item())
    root = torch.sqrt(tx).item()
    assert same(FLOATS.sqrt(x), root) or abs(FLOATS.sqrt(x) - root) <= math.ulp(root)
    assert same(FLOATS.where(x > y, x, y), torch.where(tx > ty, tx, ty).item())


def random_means(generator: torch.Generator) -> list[float]:
    """Moments [1, ℓ, ℓ², h, hℓ, hℓ²] of a random batch, sometimes with an empty or flat group."""
    count = int(torch.randint(1, 40, (1,), generator=generator))
    kind = int(torch.randint(0, 4, (1,), generator=generator))
    losses = torch.rand(count, generator=generator, dtype=F64) * 10.0 ** float(
        torch.randint(-3, 4, (1,), generator=generator)
    )
    if kind == 1:
        losses = torch.full_like(losses, float(losses[0]))  # no spread at all
    boundary = {
        0: losses.mean(),
        1: losses.mean(),
        2: torch.tensor(math.inf),
        3: -torch.tensor(1.0),
    }
    high = (losses > boundary[kind]).double()
    parts = [torch.ones_like(losses), losses, losses**2, high, high * losses, high * losses**2]
    return [float(part.mean()) for part in parts]


def test_lambda_from_groups_is_the_same_on_floats_and_tensors() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(500):
        means = random_means(generator)
        tau = float(torch.rand((), generator=generator, dtype=F64) * 4 * means[1])
        on_floats = lambda_from_groups(means, tau, FLOATS)
        on_tensors = lambda_from_groups(
            torch.tensor(means, dtype=F64), torch.tensor(tau, dtype=F64)
        )
        # torch's CPU square root is not always correctly rounded (math.sqrt is): an ulp apart.
        assert abs(on_floats - on_tensors.item()) <= 2 * math.ulp(on_floats), (means, tau)
        assert math.isfinite(on_floats) and on_floats > 0
    flat = lambda_from_groups([1.0, 2.0, 4.0, 0.0, 0.0, 0.0], 2.0, FLOATS)  # every loss at τ
    assert flat == lambda_from_groups(torch.tensor([1.0, 2.0, 4.0, 0, 0, 0], dtype=F64),
                                      torch.tensor(2.0, dtype=F64), TENSORS).item() > 0  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_group_sums_are_finite_sums_of_the_group_quantities(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(1)
    loss = torch.rand(300, generator=generator, dtype=dtype) * 7.0
    loss[[3, 50, 77, 120]] = torch.tensor([math.nan, math.inf, -math.inf, 1e30], dtype=dtype)
    for boundary in (torch.tensor(3.0, dtype=F64), torch.tensor(math.inf, dtype=F64)):
        wide = loss.to(F64)
        expected = finite_sums(wide, *group_quantities(wide, boundary))
        assert torch.equal(group_sums(loss, boundary), expected)


def run_steps(
    module: torch.nn.Module, calls: list[tuple[torch.Tensor, bool]]
) -> list[torch.Tensor]:
    outputs = []
    for loss, train in calls:
        module.train(train)
        outputs.append(module(loss).detach().clone())
        outputs.append(torch.as_tensor(module.last_tau).clone())
        outputs.append(torch.as_tensor(module.last_lam).clone())
    return outputs


@pytest.mark.parametrize(
    ("tau", "lam"),
    [("ema", 1.0), ("global", 1.0), ("ema", "auto"), ("global", "auto"), (0.5, "auto")],
)
def test_host_and_tensor_paths_agree_to_the_bit(
    monkeypatch: pytest.MonkeyPatch, tau: str | float, lam: str | float
) -> None:
    """Training and evaluation batches, a batch with no finite loss, one with some: the outputs and
    every buffer are the same on Python floats as on tensors — τ to the bit, λ to an ulp (the
    square root in its floor) and the loss values within float32 rounding of that."""
    generator = torch.Generator().manual_seed(2)
    calls = [(torch.rand(16, generator=generator) * 3.0, False)]  # before any training batch
    for step in range(12):
        loss = torch.rand(16, generator=generator) * (1.0 + step)
        loss[step % 5] = math.nan if step % 3 == 0 else loss[step % 5]
        calls.append((loss, step % 4 != 3))
    calls.insert(5, (torch.full((8,), math.nan), True))  # nothing finite: the state stays
    calls.append((torch.full((8,), math.inf), False))
    on_floats = SuperLoss(tau=tau, lam=lam)
    assert on_host(torch.zeros(2, dtype=F64))
    floats_out = run_steps(on_floats, calls)
    for module in (threshold, auto_lambda):
        monkeypatch.setattr(module, "on_host", lambda stats: False)
    on_tensors = SuperLoss(tau=tau, lam=lam)
    tensors_out = run_steps(on_tensors, calls)
    for index, (a, b) in enumerate(zip(floats_out, tensors_out, strict=True)):
        kind = ("loss", "tau", "lam")[index % 3]
        if kind == "tau":
            assert torch.equal(a, b) or (a.isnan().all() and b.isnan().all())
        else:
            tolerance = 1e-6 if kind == "loss" else 1e-15
            torch.testing.assert_close(a, b, rtol=tolerance, atol=0.0, equal_nan=True)
    for (name, a), (_, b) in zip(
        on_floats.state_dict().items(), on_tensors.state_dict().items(), strict=True
    ):
        assert a.dtype == b.dtype, name
        if name.endswith("lam"):
            torch.testing.assert_close(a, b, rtol=1e-15, atol=0.0, equal_nan=True)
        else:
            assert torch.equal(a, b) or (a.isnan().all() and b.isnan().all()), name


def test_host_path_keeps_the_threshold_types() -> None:
    """τ returned by an update is a copy: the buffer moving on later does not change it."""
    for module in (EMAThreshold(), GlobalMeanThreshold()):
        first = module(torch.tensor([2.0, 1.0], dtype=F64), update=True)
        module(torch.tensor([8.0, 1.0], dtype=F64), update=True)
        assert first.item() == 2.0 and first.dtype == F64
    state = AutoLambda()
    lam = state(torch.tensor([2.0, 2.0, 2.5, 0.0, 0.0, 0.0], dtype=F64), torch.tensor(1.0), True)
    state(torch.tensor([9.0, 2.0, 45.0, 0.0, 0.0, 0.0], dtype=F64), torch.tensor(1.0), True)
    assert lam.item() != state.lam.item()

"""``SuperLoss(normalize=True)``: the loss divided by the running mean confidence of the training
batches before this one, so the weights average one."""

from __future__ import annotations

import math

import pytest
import torch

from superloss import SuperLoss
from superloss.functional import super_loss_with_confidence

F64 = torch.float64


def batch(step: int, count: int = 64, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(step)
    return scale * 4.0 * torch.rand(count, generator=generator, dtype=F64)


def test_the_first_step_is_the_papers_loss_then_the_mean_confidence_divides() -> None:
    criterion = SuperLoss(tau="log_classes", num_classes=10, lam=0.5, normalize=True)
    first, second = batch(0), batch(1)
    plain_first, sigma_first = super_loss_with_confidence(first, math.log(10), 0.5)
    torch.testing.assert_close(criterion(first), plain_first.mean(), rtol=1e-12, atol=0)
    plain_second, sigma_second = super_loss_with_confidence(second, math.log(10), 0.5)
    # m is the first batch's mean σ* (the EMA starts from it); σ* itself is untouched.
    expected = plain_second.mean() / sigma_first.mean()
    torch.testing.assert_close(criterion(second), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(criterion.last_confidence, sigma_second, rtol=0, atol=0)
    third = batch(2)
    plain_third, _ = super_loss_with_confidence(third, math.log(10), 0.5)
    m = 0.9 * sigma_first.mean() + 0.1 * sigma_second.mean()
    torch.testing.assert_close(criterion(third), plain_third.mean() / m, rtol=1e-12, atol=0)


def test_the_weights_average_one_on_a_steady_batch() -> None:
    # The same batch again and again: m converges to its mean σ*, and the gradient reaching each
    # loss is σ*_i / m, whose mean is then one.
    criterion = SuperLoss(tau=2.0, lam=0.25, reduction="sum", normalize=True)
    steady = batch(3)
    for _ in range(300):
        criterion(steady)
    loss = steady.clone().requires_grad_(True)
    criterion(loss).backward()
    assert loss.grad is not None
    torch.testing.assert_close(loss.grad.mean(), torch.tensor(1.0, dtype=F64), rtol=1e-9, atol=0)
    sigma = criterion.last_confidence
    assert sigma is not None and float(sigma.max()) > 2.0  # weights up to e before dividing
    torch.testing.assert_close(loss.grad, sigma / sigma.mean(), rtol=1e-9, atol=0)


def test_state_dict_resume_is_exact_and_eval_changes_nothing() -> None:
    criterion = SuperLoss(tau="ema", lam="auto-hold", reduction="none", normalize=True)
    for step in range(7):
        criterion(batch(step))
    resumed = SuperLoss(tau="ema", lam="auto-hold", reduction="none", normalize=True)
    resumed.load_state_dict(criterion.state_dict())
    before = {name: value.clone() for name, value in criterion.state_dict().items()}
    criterion.eval()
    criterion(batch(50))
    for name, value in criterion.state_dict().items():
        assert torch.equal(value, before[name]) or (
            value.isnan().all() and before[name].isnan().all()
        ), name
    criterion.train()
    for step in range(7, 12):
        torch.testing.assert_close(resumed(batch(step)), criterion(batch(step)), rtol=0, atol=0)


def test_non_finite_losses_are_left_out_of_the_mean_confidence() -> None:
    criterion = SuperLoss(tau=2.0, lam=1.0, reduction="none", normalize=True)
    loss = batch(4, count=8)
    with_nan = torch.cat([loss, torch.tensor([math.nan, math.inf], dtype=F64)])
    output = criterion(with_nan)
    assert output[:8].isfinite().all() and output[8:].isnan().all()
    _, sigma = super_loss_with_confidence(loss, 2.0, 1.0)
    assert criterion.confidence_scale is not None
    torch.testing.assert_close(
        criterion.confidence_scale.pending, torch.stack([sigma.sum(), torch.tensor(8.0, dtype=F64)])
    )
    criterion(loss)
    torch.testing.assert_close(criterion.confidence_scale.mean, sigma.mean(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("tau", ["ema", "global"])
def test_normalized_loss_stays_scale_free(tau: str) -> None:
    # Losses ×c with a running τ and the automatic λ: σ* and m unchanged, the loss ×c.
    plain = SuperLoss(tau=tau, lam="auto", reduction="none", normalize=True)
    scaled = SuperLoss(tau=tau, lam="auto", reduction="none", normalize=True)
    for step in range(10):
        output = plain(batch(step))
        torch.testing.assert_close(
            scaled(batch(step, scale=10.0)), 10.0 * output, rtol=1e-9, atol=1e-12
        )
        torch.testing.assert_close(scaled.last_confidence, plain.last_confidence, rtol=1e-9, atol=0)


def test_an_empty_batch_leaves_the_mean_confidence_alone() -> None:
    criterion = SuperLoss(tau=2.0, lam=1.0, normalize=True)
    criterion(batch(5))
    criterion(batch(6))
    assert criterion.confidence_scale is not None
    mean = criterion.confidence_scale.mean.clone()
    criterion(torch.zeros(0, dtype=F64))  # folds batch 6's σ*, records nothing
    after_empty = criterion.confidence_scale.mean.clone()
    assert not torch.equal(after_empty, mean)
    criterion(batch(7))  # nothing carried from the empty batch: m stays
    torch.testing.assert_close(criterion.confidence_scale.mean, after_empty, rtol=0, atol=0)


def test_compiled_module_matches_eager() -> None:
    eager = SuperLoss(tau="log_classes", num_classes=10, lam="auto-hold", normalize=True)
    twin = SuperLoss(tau="log_classes", num_classes=10, lam="auto-hold", normalize=True)
    compiled = torch.compile(twin, fullgraph=True, dynamic=False)
    for step in range(6):
        loss = batch(step).float()
        torch.testing.assert_close(compiled(loss), eager(loss), rtol=1e-5, atol=1e-6)
    assert twin.confidence_scale is not None and eager.confidence_scale is not None
    torch.testing.assert_close(
        twin.confidence_scale.mean, eager.confidence_scale.mean, rtol=1e-6, atol=0
    )


def test_bad_normalize_is_refused() -> None:
    with pytest.raises(TypeError, match="normalize must be True or False"):
        SuperLoss(normalize="yes")  # type: ignore[arg-type]


def test_the_tensor_path_holds_the_host_paths_state_to_the_bit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On the CPU in eager mode m lives on Python floats; elsewhere (GPU, compiled graphs) on
    # tensors. Both give the same state and output.
    host = SuperLoss(tau="ema", lam="auto", reduction="none", normalize=True)
    outputs = [host(batch(step)) for step in range(6)]
    host.eval()
    outputs.append(host(batch(6)))
    monkeypatch.setattr("superloss.normalization.on_host", lambda _: False)
    tensors = SuperLoss(tau="ema", lam="auto", reduction="none", normalize=True)
    for step in range(6):
        assert torch.equal(tensors(batch(step)), outputs[step])
    tensors.eval()
    assert torch.equal(tensors(batch(6)), outputs[6])
    for name, value in host.state_dict().items():
        assert torch.equal(value, tensors.state_dict()[name]), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_every_dtype_and_reduction_is_the_plain_loss_over_m(
    dtype: torch.dtype, reduction: str
) -> None:
    normalized = SuperLoss(tau="ema", lam="auto", reduction=reduction, normalize=True)
    plain = SuperLoss(tau="ema", lam="auto", reduction=reduction)
    for step in range(3):
        loss = batch(step, count=16).to(dtype)
        got, expected = normalized(loss), plain(loss)
        assert got.dtype == expected.dtype and got.shape == expected.shape
    assert normalized.confidence_scale is not None
    m = normalized.confidence_scale.mean.to(expected.dtype)
    torch.testing.assert_close(got, expected / m)

"""superloss.SuperLoss: module == functional, thresholds, state, bad input, torch.compile."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from superloss import SuperLoss
from superloss.functional import confidence, super_loss

REDUCTIONS = ("none", "mean", "sum")


def batches(count: int, size: int = 8, seed: int = 0) -> list[torch.Tensor]:
    """Per-sample losses of varying scale, float64."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.rand(size, generator=generator, dtype=torch.float64) * (1 + step)
        for step in range(count)
    ]


def ema_reference(losses: list[torch.Tensor], past_weight: float = 0.9) -> list[float]:
    """τ used at each training step: the first batch's mean, then the moving average."""
    taus: list[float] = []
    for loss in losses:
        mean = sum(loss.tolist()) / loss.numel()
        taus.append(mean if not taus else past_weight * taus[-1] + (1 - past_weight) * mean)
    return taus


def global_reference(losses: list[torch.Tensor]) -> list[float]:
    """τ used at each training step: the mean of every loss seen so far, this batch included."""
    seen: list[float] = []
    taus = []
    for loss in losses:
        seen.extend(loss.tolist())
        taus.append(sum(seen) / len(seen))
    return taus


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(8,), (4, 3), ()])
def test_module_equals_functional(reduction: str, shape: tuple[int, ...]) -> None:
    criterion = SuperLoss(tau=1.2, lam=0.5, reduction=reduction)
    loss = torch.rand(shape, dtype=torch.float64) * 3
    result = criterion(loss)
    expected = super_loss(loss, 1.2, 0.5, reduction)
    assert result.shape == expected.shape
    assert torch.equal(result, expected)
    assert criterion.last_confidence is not None
    assert torch.equal(criterion.last_confidence, confidence(loss, 1.2, 0.5))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_module_with_base_criterion(reduction: str) -> None:
    logits = torch.randn(16, 10, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 10, (16,))
    criterion = SuperLoss(
        nn.CrossEntropyLoss(reduction="none"),
        tau="log_classes",
        num_classes=10,
        lam=0.25,
        reduction=reduction,
    )
    result = criterion(logits, target)
    per_sample = nn.functional.cross_entropy(logits, target, reduction="none")
    assert torch.equal(result, super_loss(per_sample, math.log(10), 0.25, reduction))
    assert criterion.last_tau is not None and criterion.last_tau.item() == math.log(10)
    assert criterion.last_loss is not None and torch.equal(criterion.last_loss, per_sample.detach())


def test_base_criterion_keyword_arguments_are_passed_on() -> None:
    criterion = SuperLoss(nn.MSELoss(reduction="none"), tau=0.5, reduction="none")
    prediction = torch.tensor([[0.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    result = criterion(input=prediction, target=target)
    assert torch.equal(result, super_loss((prediction - target) ** 2, 0.5, reduction="none"))


@pytest.mark.parametrize("past_weight", [0.9, 0.5, 0.0])
def test_ema_threshold_follows_the_moving_average(past_weight: float) -> None:
    losses = batches(6)
    criterion = SuperLoss(tau="ema", ema_past_weight=past_weight, lam=0.5, reduction="sum")
    for loss, tau in zip(losses, ema_reference(losses, past_weight), strict=True):
        result = criterion(loss)
        assert criterion.last_tau is not None
        assert criterion.last_tau.item() == pytest.approx(tau, rel=1e-15)
        torch.testing.assert_close(result, super_loss(loss, tau, 0.5, "sum"), rtol=1e-14, atol=0)


def test_ema_default_past_weight_is_0_9() -> None:
    criterion = SuperLoss()  # tau="ema" by default
    criterion(torch.tensor([1.0, 3.0], dtype=torch.float64))
    criterion(torch.tensor([10.0], dtype=torch.float64))
    assert criterion.threshold.tau.item() == pytest.approx(0.9 * 2.0 + 0.1 * 10.0, rel=1e-15)


def test_global_threshold_is_the_mean_of_all_losses_seen() -> None:
    losses = batches(5)
    losses[2] = losses[2][:3]  # uneven batch sizes: a mean of losses, not of batch means
    criterion = SuperLoss(tau="global", reduction="none")
    for loss, tau in zip(losses, global_reference(losses), strict=True):
        result = criterion(loss)
        assert criterion.last_tau is not None
        assert criterion.last_tau.item() == pytest.approx(tau, rel=1e-14)
        torch.testing.assert_close(
            result, super_loss(loss, tau, reduction="none"), rtol=1e-14, atol=0
        )


@pytest.mark.parametrize("tau", ["ema", "global"])
def test_running_threshold_updates_only_in_training_mode(tau: str) -> None:
    criterion = SuperLoss(tau=tau)
    for loss in batches(3):
        criterion(loss)
    state = {name: value.clone() for name, value in criterion.state_dict().items()}
    trained_tau = criterion.last_tau
    criterion.eval()
    for loss in batches(3, seed=5):
        evaluated = criterion(loss)
        assert torch.equal(criterion.last_tau, trained_tau)
        assert torch.equal(evaluated, super_loss(loss, trained_tau, reduction="mean"))
    for name, value in criterion.state_dict().items():
        assert torch.equal(value, state[name]), name
    criterion.train()
    criterion(batches(1, seed=7)[0])
    assert not torch.equal(criterion.last_tau, trained_tau)


@pytest.mark.parametrize("tau", ["ema", "global"])
def test_eval_before_any_training_uses_the_batch_mean(tau: str) -> None:
    criterion = SuperLoss(tau=tau).eval()
    loss = torch.tensor([1.0, 2.0, 6.0], dtype=torch.float64)
    criterion(loss)
    assert criterion.last_tau is not None and criterion.last_tau.item() == 3.0
    assert all(value.sum().item() == 0 for value in criterion.state_dict().values())


@pytest.mark.parametrize("tau", ["ema", "global"])
def test_gradient_is_sigma_even_with_a_batch_dependent_threshold(tau: str) -> None:
    # τ is computed from the detached losses: no gradient flows through the batch mean.
    loss = batches(1)[0].requires_grad_(True)
    criterion = SuperLoss(tau=tau, reduction="sum")
    criterion(loss).backward()
    assert loss.grad is not None and criterion.last_confidence is not None
    assert torch.equal(loss.grad, criterion.last_confidence)
    assert not criterion.last_confidence.requires_grad
    assert all(not buffer.requires_grad for buffer in criterion.buffers())


def test_last_confidence_has_the_shape_of_the_per_sample_loss() -> None:
    criterion = SuperLoss(tau=1.0, reduction="mean")
    assert criterion.last_confidence is None
    loss = torch.rand(5, 7)
    criterion(loss)
    assert criterion.last_confidence is not None and criterion.last_confidence.shape == (5, 7)
    assert torch.equal(criterion.last_confidence, confidence(loss, 1.0, 1.0))


@pytest.mark.parametrize("tau", ["ema", "global"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch(tau: str, reduction: str) -> None:
    criterion = SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau=tau, reduction=reduction)
    logits = torch.randn(6, 4, requires_grad=True)
    criterion(logits, torch.tensor([0, 1, 2, 3, 0, 1]))
    before = {name: value.clone() for name, value in criterion.state_dict().items()}
    empty_logits = torch.randn(0, 4, requires_grad=True)
    result = criterion(empty_logits, torch.empty(0, dtype=torch.long))
    if reduction == "none":
        assert result.shape == (0,)
        result = result.sum()
    assert result.item() == 0.0
    result.backward()
    assert empty_logits.grad is not None and empty_logits.grad.shape == (0, 4)
    for name, value in criterion.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("tau", ["ema", "global"])
def test_empty_batch_leaves_tau_bit_for_bit(tau: str) -> None:
    # 0.9·τ + 0.1·τ rounds away from τ for some τ (0.1234 is one): an empty batch must not blend.
    values = [0.1234, *torch.rand(30, generator=torch.Generator().manual_seed(3)).tolist()]
    for value in values:
        criterion = SuperLoss(tau=tau)
        criterion(torch.tensor([value], dtype=torch.float64))
        before = criterion.threshold.state_dict()
        before = {name: tensor.clone() for name, tensor in before.items()}
        criterion(torch.empty(0, dtype=torch.float64))
        criterion(torch.tensor([math.nan, math.inf], dtype=torch.float64))  # nothing finite
        for name, tensor in criterion.threshold.state_dict().items():
            assert torch.equal(tensor, before[name]), (value, name)


def test_empty_first_batch_does_not_initialise_the_ema() -> None:
    criterion = SuperLoss(tau="ema")
    assert criterion(torch.empty(0)).item() == 0.0
    criterion(torch.tensor([2.0, 4.0], dtype=torch.float64))
    assert criterion.threshold.tau.item() == 3.0


@pytest.mark.parametrize("tau", ["ema", "global"])
def test_non_finite_losses_never_enter_tau(tau: str) -> None:
    criterion = SuperLoss(tau=tau, reduction="none")
    loss = torch.tensor([1.0, math.nan, 3.0, math.inf, -math.inf], dtype=torch.float64)
    result = criterion(loss)
    assert criterion.last_tau is not None and criterion.last_tau.item() == 2.0
    assert torch.isfinite(result[[0, 2]]).all()
    assert not torch.isfinite(result[[1, 3, 4]]).any()
    assert torch.equal(result[[0, 2]], super_loss(loss[[0, 2]], 2.0, reduction="none"))
    criterion(torch.tensor([5.0], dtype=torch.float64))
    expected = 0.9 * 2.0 + 0.1 * 5.0 if tau == "ema" else 3.0
    assert criterion.threshold(torch.zeros(2, dtype=torch.float64), False).item() == pytest.approx(
        expected, rel=1e-15
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_loss(dtype: torch.dtype) -> None:
    loss = (torch.rand(32) * 4).to(dtype).requires_grad_(True)
    criterion = SuperLoss(tau="ema", reduction="sum")
    result = criterion(loss)
    assert result.dtype == torch.float32
    assert (
        criterion.last_confidence is not None and criterion.last_confidence.dtype == torch.float32
    )
    reference = SuperLoss(tau="ema", reduction="sum")(loss.detach().float())
    torch.testing.assert_close(result, reference, rtol=1e-6, atol=1e-6)
    result.backward()
    assert loss.grad is not None and loss.grad.dtype == dtype


@pytest.mark.parametrize("tau", ["ema", "global"])
def test_state_dict_round_trip_in_the_middle_of_training(tau: str) -> None:
    torch.manual_seed(0)
    model_a = nn.Linear(5, 3).double()
    criterion_a = SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau=tau, lam=0.5)
    data = [(torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))) for _ in range(7)]
    optimizer_a = torch.optim.SGD(model_a.parameters(), lr=0.5)

    def step(model: nn.Module, criterion: SuperLoss, optimizer: torch.optim.Optimizer, i: int):
        x, y = data[i]
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    for i in range(3):
        step(model_a, criterion_a, optimizer_a, i)
    saved = {
        "model": model_a.state_dict(),
        "criterion": criterion_a.state_dict(),
        "optimizer": optimizer_a.state_dict(),
    }
    saved = {key: {k: v for k, v in value.items()} for key, value in saved.items()}
    buffer_names = set(saved["criterion"])
    assert buffer_names == (
        {"threshold.tau", "threshold.initialized"}
        if tau == "ema"
        else {"threshold.total", "threshold.count"}
    )

    model_b = nn.Linear(5, 3).double()
    criterion_b = SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau=tau, lam=0.5)
    optimizer_b = torch.optim.SGD(model_b.parameters(), lr=0.5)
    model_b.load_state_dict(saved["model"])
    criterion_b.load_state_dict(saved["criterion"])
    optimizer_b.load_state_dict(saved["optimizer"])
    for i in range(3, 7):
        loss_a = step(model_a, criterion_a, optimizer_a, i)
        loss_b = step(model_b, criterion_b, optimizer_b, i)
        assert torch.equal(loss_a, loss_b)
        assert torch.equal(criterion_a.last_tau, criterion_b.last_tau)
        assert torch.equal(criterion_a.last_confidence, criterion_b.last_confidence)
    for name, value in criterion_a.state_dict().items():
        assert torch.equal(value, criterion_b.state_dict()[name])


def test_constant_threshold_is_a_buffer_and_log_classes_is_log_c() -> None:
    criterion = SuperLoss(tau="log_classes", num_classes=100)
    assert set(criterion.state_dict()) == {"threshold.tau"}
    assert criterion.threshold.tau.item() == math.log(100)
    criterion(torch.rand(4))
    assert criterion.threshold.tau.item() == math.log(100)
    assert SuperLoss(tau=3).threshold.tau.item() == 3.0


@pytest.mark.parametrize("lam", [0, 0.0, -1.0, math.nan, math.inf, True, "1"])
def test_bad_lam(lam: object) -> None:
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        SuperLoss(tau=1.0, lam=lam)  # type: ignore[arg-type]


@pytest.mark.parametrize("weight", [1.0, -0.1, 1.5, math.nan])
def test_bad_ema_past_weight(weight: float) -> None:
    with pytest.raises(ValueError, match=r"ema_past_weight must be in \[0, 1\)"):
        SuperLoss(tau="ema", ema_past_weight=weight)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tau": "median"}, "unknown threshold 'median'"),
        ({"tau": "EMA"}, "unknown threshold 'EMA'"),
        ({"tau": None}, "tau must be a number or one of"),
        ({"tau": True}, "tau must be a number or one of"),
        ({"tau": math.inf}, "tau must be finite"),
        ({"tau": math.nan}, "tau must be finite"),
        ({"tau": "log_classes"}, "needs num_classes"),
        ({"tau": "log_classes", "num_classes": 1}, "needs num_classes"),
        ({"tau": 1.0, "num_classes": 10}, "num_classes is only used"),
        ({"reduction": "avg"}, "reduction must be one of"),
        ({"reduction": None}, "reduction must be one of"),
    ],
)
def test_bad_construction_is_a_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SuperLoss(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reducing_base_criterion_is_refused(reduction: str) -> None:
    with pytest.raises(
        ValueError, match=r"reduces its loss .* pass CrossEntropyLoss\(reduction='none'\)"
    ):
        SuperLoss(nn.CrossEntropyLoss(reduction=reduction))
    with pytest.raises(ValueError, match="reduces its loss"):
        SuperLoss(nn.CrossEntropyLoss())  # torch's default reduces


def test_non_callable_criterion_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="criterion must be callable"):
        SuperLoss("cross_entropy")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [torch.tensor([1, 2, 3]), torch.tensor([True, False]), torch.tensor([1], dtype=torch.int8)],
)
def test_integer_or_bool_loss_is_a_type_error_and_changes_nothing(bad: torch.Tensor) -> None:
    criterion = SuperLoss(tau="ema")
    with pytest.raises(TypeError, match="expected a floating-point tensor of per-sample losses"):
        criterion(bad)
    assert not criterion.threshold.initialized.item()
    assert criterion.last_confidence is None


def test_criterion_returning_integers_is_a_type_error() -> None:
    criterion = SuperLoss(lambda x: x.argmax(dim=1), tau=1.0)
    with pytest.raises(TypeError, match="expected a floating-point tensor"):
        criterion(torch.randn(4, 3))


def test_several_tensors_without_a_base_criterion_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="takes one tensor of per-sample losses"):
        SuperLoss(tau=1.0)(torch.rand(3), torch.rand(3))


def test_module_moves_with_to_and_keeps_float64_state() -> None:
    criterion = SuperLoss(tau="global").to(torch.device("cpu"))
    criterion(torch.tensor([0.1, 0.2], dtype=torch.float32))
    assert criterion.threshold.total.dtype == torch.float64


def test_compiled_module_matches_eager() -> None:
    torch.manual_seed(0)
    eager = SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau="ema", lam=0.5)
    twin = SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau="ema", lam=0.5)
    compiled = torch.compile(twin, fullgraph=True, dynamic=False)
    for _ in range(3):
        logits = torch.randn(16, 5)
        target = torch.randint(0, 5, (16,))
        eager_logits = logits.clone().requires_grad_(True)
        compiled_logits = logits.clone().requires_grad_(True)
        expected = eager(eager_logits, target)
        result = compiled(compiled_logits, target)
        torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-6)
        expected.backward()
        result.backward()
        torch.testing.assert_close(compiled_logits.grad, eager_logits.grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(twin.threshold.tau, eager.threshold.tau, rtol=1e-12, atol=0)
        assert twin.last_confidence is not None and eager.last_confidence is not None
        torch.testing.assert_close(twin.last_confidence, eager.last_confidence, rtol=1e-6, atol=0)


@pytest.mark.parametrize("tau", ["ema", "global", "log_classes", 0.75])
def test_every_threshold_exposes_tau(tau: str | float) -> None:
    extra = {"num_classes": 4} if tau == "log_classes" else {}
    criterion = SuperLoss(tau=tau, **extra)  # type: ignore[arg-type]
    before = criterion.threshold.tau.clone()
    assert before.shape == () and before.dtype == torch.float64
    losses = batches(4)
    for loss in losses:
        criterion(loss)
    expected = {
        "ema": ema_reference(losses)[-1],
        "global": global_reference(losses)[-1],
        "log_classes": math.log(4),
        0.75: 0.75,
    }[tau]
    assert criterion.threshold.tau.item() == pytest.approx(expected, rel=1e-14)
    assert criterion.last_tau is not None
    assert torch.equal(criterion.last_tau, criterion.threshold.tau)
    if tau in ("ema", "global"):  # 0 before the first training batch, as a running τ starts
        assert before.item() == 0.0


def test_last_tau_is_a_snapshot() -> None:
    criterion = SuperLoss(tau="ema")
    criterion(torch.tensor([1.0, 3.0], dtype=torch.float64))
    first = criterion.last_tau
    assert first is not None
    criterion(torch.tensor([10.0], dtype=torch.float64))
    assert first.item() == 2.0 and criterion.threshold.tau.item() == pytest.approx(2.8)


CONVERSIONS = {
    "half": lambda module: module.half(),
    "bfloat16": lambda module: module.bfloat16(),
    "float": lambda module: module.float(),
    "to(float16)": lambda module: module.to(torch.float16),
    "to(cpu, bfloat16)": lambda module: module.to("cpu", torch.bfloat16),
}


@pytest.mark.parametrize("conversion", CONVERSIONS)
@pytest.mark.parametrize("tau", ["ema", "global", "log_classes"])
def test_threshold_state_keeps_float64_when_the_model_is_converted(
    conversion: str, tau: str
) -> None:
    extra = {"num_classes": 7} if tau == "log_classes" else {}
    losses = batches(6, seed=3)
    converted, twin = (SuperLoss(tau=tau, **extra) for _ in range(2))  # type: ignore[arg-type]
    for loss in losses[:3]:
        converted(loss)
        twin(loss)
    # A model holding the loss, converted as a whole (the loss is part of the model's state).
    model = nn.ModuleDict({"net": nn.Linear(3, 2), "loss": converted})
    CONVERSIONS[conversion](model)
    assert model["net"].weight.dtype != torch.float64
    for name, value in converted.state_dict().items():
        assert value.dtype == twin.state_dict()[name].dtype, name
        assert torch.equal(value, twin.state_dict()[name]), name  # not a digit lost
    for loss in losses[3:]:  # and training goes on as if nothing had happened
        converted(loss)
        twin(loss)
        assert converted.last_tau is not None and twin.last_tau is not None
        assert torch.equal(converted.last_tau, twin.last_tau)
    assert converted.threshold.tau.dtype == torch.float64


@pytest.mark.parametrize("tau", ["ema", "global"])
def test_threshold_state_stays_float64_under_autocast(tau: str) -> None:
    torch.manual_seed(0)
    model = nn.Linear(6, 4)
    criterion = SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau=tau)
    seen = []
    for _ in range(4):
        x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = criterion(model(x), y)
        loss.backward()
        assert criterion.last_loss is not None
        seen.append(criterion.last_loss.double())
    assert criterion.threshold.tau.dtype == torch.float64
    reference = ema_reference(seen)[-1] if tau == "ema" else global_reference(seen)[-1]
    assert criterion.threshold.tau.item() == pytest.approx(reference, rel=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(), (5,), (2, 3)])
def test_module_keeps_the_loss_dtype_and_a_float64_last_tau(
    dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    criterion = SuperLoss(tau="ema", reduction="none")
    loss = (torch.rand(shape, dtype=torch.float64) * 3).to(dtype)
    result = criterion(loss)
    assert result.dtype == dtype and result.shape == shape
    assert criterion.last_tau is not None and criterion.last_tau.dtype == torch.float64
    assert criterion.last_confidence is not None and criterion.last_confidence.dtype == dtype


def test_finite_sums_of_the_loss_and_of_more_quantities() -> None:
    from superloss.threshold import COUNT, SUM, finite_sums

    loss = torch.tensor([[1.0, math.nan], [3.0, math.inf], [-math.inf, 0.5]], dtype=torch.float32)
    weight = torch.tensor([[2.0, 1.0], [math.nan, 1.0], [1.0, 4.0]], dtype=torch.float32)
    stats = finite_sums(loss, weight, loss * loss)
    assert stats.dtype == torch.float64 and stats.shape == (4,)
    # Slots: Σℓ and n over the finite ℓ, then each quantity summed where ℓ (and it) is finite.
    assert (stats[SUM].item(), stats[COUNT].item()) == (4.5, 3.0)
    assert stats[2:].tolist() == [2.0 + 4.0, 1.0 + 9.0 + 0.25]
    assert torch.equal(finite_sums(torch.empty(0)), torch.zeros(2, dtype=torch.float64))
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert finite_sums(loss.to(dtype)).tolist() == [4.5, 3.0]


def test_finite_sums_compiled_equal_eager() -> None:
    from superloss.threshold import finite_sums

    loss = torch.tensor([1.0, math.nan, 3.0, math.inf, 0.5, 2.0])
    weight = torch.tensor([2.0, 1.0, math.nan, 1.0, 4.0, -1.0])
    compiled = torch.compile(finite_sums, fullgraph=True, dynamic=False)
    assert torch.equal(compiled(loss, weight), finite_sums(loss, weight))
    assert torch.equal(compiled(loss), finite_sums(loss))

"""Baseline methods (gce, sce, bootstrap, spl, data-params): formulas against float64 references
written out by hand here, gradients, SPL's schedule, Data Parameters' sparse optimizer, the registry
contract and one tiny end-to-end run each."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from superloss.bench.config import RunConfig
from superloss.bench.methods import METHODS, Method, MethodContext, build_method
from superloss.bench.methods.bootstrap import HardBootstrap
from superloss.bench.methods.data_params import DataParameters, SparseSGD
from superloss.bench.methods.gce import GeneralizedCrossEntropy
from superloss.bench.methods.sce import SymmetricCrossEntropy
from superloss.bench.methods.spl import SelfPacedLearning

NAMES = ("gce", "sce", "bootstrap", "spl", "data-params")
CLASSES = {
    "gce": GeneralizedCrossEntropy,
    "sce": SymmetricCrossEntropy,
    "bootstrap": HardBootstrap,
    "spl": SelfPacedLearning,
    "data-params": DataParameters,
}
# The published values; changing one is a decision to document, not a tweak.
PUBLISHED_DEFAULTS = {
    "gce": {"q": 0.7},
    "sce": {"alpha": 0.1, "beta": 1.0, "one_hot_floor": 1e-4},
    "bootstrap": {"beta": 0.8},
    "spl": {"growth": 1.3, "start_fraction": 0.5},
    "data-params": {
        "curriculum": "instance",
        "init_class": 1.0,
        "init_instance": 1.0,
        "lr_class": 0.1,
        "lr_instance": 0.2,
        "wd_class": 1e-4,
        "wd_instance": 0.0,
        "momentum": 0.9,
        "sigma_min": 0.05,
        "sigma_max": 20.0,
    },
}

# Small logits: confident right (0), unsure (1), confident wrong (2), label = runner-up (3).
LOGITS = [[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-3.0, 4.0, 1.0], [1.5, 1.0, -2.0]]
LABELS = [0, 2, 0, 1]
NUM_CLASSES = 3
NUM_TRAIN = 8


def cross_entropy_none(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


def make_context(
    task: str = "classification",
    base_loss: Callable[[Tensor, Tensor], Tensor] = cross_entropy_none,
    num_classes: int | None = NUM_CLASSES,
    num_train: int = NUM_TRAIN,
) -> MethodContext:
    return MethodContext(task, base_loss, num_classes, num_train, epochs=3)


def batch(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    outputs = torch.tensor(LOGITS, dtype=dtype, requires_grad=True)
    return outputs, torch.tensor(LABELS), torch.tensor([5, 0, 7, 2])


# ---- float64 references, element by element ----


def softmax_ref(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(z - top) for z in row]
    total = sum(exps)
    return [e / total for e in exps]


def ce_ref(row: list[float], label: int) -> float:
    return -math.log(softmax_ref(row)[label])


def gce_ref(row: list[float], label: int, q: float) -> float:
    return (1.0 - softmax_ref(row)[label] ** q) / q


def sce_ref(row: list[float], label: int, alpha: float, beta: float, floor: float) -> float:
    p = softmax_ref(row)
    one_hot = [1.0 if k == label else 0.0 for k in range(len(row))]
    ce = -sum(t * math.log(pk) for t, pk in zip(one_hot, p, strict=True))
    rce = -sum(pk * math.log(max(t, floor)) for t, pk in zip(one_hot, p, strict=True))
    return alpha * ce + beta * rce


def bootstrap_ref(row: list[float], label: int, beta: float) -> float:
    p = softmax_ref(row)
    predicted = max(range(len(row)), key=lambda k: p[k])
    target = [beta * (k == label) + (1.0 - beta) * (k == predicted) for k in range(len(row))]
    return -sum(t * math.log(pk) for t, pk in zip(target, p, strict=True))


def refs(fn: Callable[..., float], *args: float) -> np.ndarray:
    return np.array([fn(row, label, *args) for row, label in zip(LOGITS, LABELS, strict=True)])


REFERENCE_CASES = [
    ("gce", {}, lambda: refs(gce_ref, 0.7)),
    ("gce", {"q": 0.3}, lambda: refs(gce_ref, 0.3)),
    ("gce", {"q": 1.0}, lambda: refs(gce_ref, 1.0)),
    ("sce", {}, lambda: refs(sce_ref, 0.1, 1.0, 1e-4)),
    ("sce", {"alpha": 6.0, "beta": 0.1}, lambda: refs(sce_ref, 6.0, 0.1, 1e-4)),
    ("sce", {"one_hot_floor": math.exp(-4)}, lambda: refs(sce_ref, 0.1, 1.0, math.exp(-4))),
    ("bootstrap", {}, lambda: refs(bootstrap_ref, 0.8)),
    ("bootstrap", {"beta": 0.95}, lambda: refs(bootstrap_ref, 0.95)),
    ("bootstrap", {"beta": 1.0}, lambda: refs(ce_ref)),
]


@pytest.mark.parametrize(("name", "params", "reference"), REFERENCE_CASES)
@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_per_sample_matches_reference(
    name: str,
    params: dict[str, float],
    reference: Callable[[], np.ndarray],
    dtype: torch.dtype,
    rtol: float,
) -> None:
    method = build_method(name, make_context(), params)
    outputs, targets, indices = batch(dtype)
    losses = method(outputs, targets, indices).losses
    assert losses.shape == (4,) and losses.dtype == dtype
    np.testing.assert_allclose(losses.detach().double().numpy(), reference(), rtol=rtol, atol=0)
    mean = method(outputs, targets, indices).loss()
    assert mean.item() == pytest.approx(float(reference().mean()), rel=rtol)


def test_sce_default_log_zero_is_natural_log_of_the_floor() -> None:
    # RCE = −A·(1 − p_y), A = ln 1e-4 ≈ −9.2103: a uniform prediction over 3 classes gives ⅔·9.21.
    method = build_method("sce", make_context(), {"alpha": 0.0})
    loss = method(
        torch.zeros(1, 3, dtype=torch.float64), torch.tensor([1]), torch.tensor([0])
    ).losses
    assert loss.item() == pytest.approx(2 / 3 * 9.210340371976184, rel=1e-12)


def test_gce_limits() -> None:
    # q → 0: cross-entropy (1 − e^{q log p})/q → −log p; q = 1: 1 − p_y.
    outputs, targets, indices = batch()
    small = build_method("gce", make_context(), {"q": 1e-7})(outputs, targets, indices).losses
    np.testing.assert_allclose(small.detach().numpy(), refs(ce_ref), rtol=1e-5)
    mae = build_method("gce", make_context(), {"q": 1.0})(outputs, targets, indices).losses
    expected = [1 - softmax_ref(row)[label] for row, label in zip(LOGITS, LABELS, strict=True)]
    np.testing.assert_allclose(mae.detach().numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["gce", "sce", "bootstrap"])
def test_gradcheck(name: str) -> None:
    method = build_method(name, make_context(), {})
    outputs, targets, indices = batch()
    assert torch.autograd.gradcheck(lambda z: method(z, targets, indices).losses, (outputs,))


def test_gce_and_bootstrap_gradients_match_closed_forms() -> None:
    # d/dz (1 − p_y^q)/q = p_y^q (p − e_y); hard bootstrap: p − target (the target is constant).
    for name, weight_target in (
        ("gce", None),
        ("bootstrap", 0.8),
    ):
        method = build_method(name, make_context(), {})
        outputs, targets, indices = batch()
        method(outputs, targets, indices).losses.sum().backward()
        assert outputs.grad is not None
        for row, label, grad in zip(LOGITS, LABELS, outputs.grad.numpy(), strict=True):
            p = np.array(softmax_ref(row))
            one_hot = np.eye(NUM_CLASSES)[label]
            if weight_target is None:
                expected = p[label] ** 0.7 * (p - one_hot)
            else:
                predicted = np.eye(NUM_CLASSES)[int(np.argmax(p))]
                expected = p - (weight_target * one_hot + (1 - weight_target) * predicted)
            np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_flow_to_outputs(name: str) -> None:
    method = build_method(name, make_context(), {})
    for opt in method.optimizers():
        opt.zero_grad()
    outputs, targets, indices = batch(torch.float32)
    loss = method(outputs, targets, indices).loss()
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert outputs.grad is not None
    assert torch.isfinite(outputs.grad).all()
    assert outputs.grad.abs().sum() > 0


# ---- self-paced learning ----


def identity_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    return outputs  # the scripted "losses" are the outputs themselves


def spl_step(method: Method, losses: list[float]) -> tuple[list[float], list[float], list[float]]:
    outputs = torch.tensor(losses, dtype=torch.float64, requires_grad=True)
    output = method(outputs, torch.zeros(len(losses)), torch.arange(len(losses)))
    output.losses.sum().backward()
    assert output.weights is not None and outputs.grad is not None
    assert output.weights.dtype == torch.float64
    return output.losses.tolist(), output.weights.tolist(), outputs.grad.tolist()


def test_spl_threshold_schedule_and_selection() -> None:
    # A regression-like task: SPL applies to any task through the base loss.
    method = build_method("spl", make_context("regression", identity_loss, None), {})
    assert isinstance(method, SelfPacedLearning)
    assert math.isnan(method.threshold().item())
    method.start_epoch(0)
    # First batch: λ₀ = median of [1, 4, 9, 16] = 6.5 (midpoint), half selected.
    values, weights, grads = spl_step(method, [9.0, 1.0, 16.0, 4.0])
    assert method.threshold().item() == pytest.approx(6.5)
    assert weights == [0.0, 1.0, 0.0, 1.0]
    assert values == [0.0, 1.0, 0.0, 4.0]
    assert grads == [0.0, 1.0, 0.0, 1.0]
    # Same epoch, later batch: the threshold is not re-initialised from this batch.
    _, weights, _ = spl_step(method, [0.25, 7.0, 6.4, 100.0, 6.6])
    assert weights == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert method.threshold().item() == pytest.approx(6.5)
    # Epoch 1: 6.5·1.3 = 8.45; epoch 2: 6.5·1.69 = 10.985; epoch 5: 6.5·1.3⁵ = 24.13...
    for epoch, threshold, losses, expected in (
        (1, 8.45, [8.3, 8.6, 6.6, 0.1], [1.0, 0.0, 1.0, 1.0]),
        (2, 10.985, [10.9, 11.1], [1.0, 0.0]),
        (5, 6.5 * 1.3**5, [24.0, 24.3], [1.0, 0.0]),
    ):
        method.start_epoch(epoch)
        assert method.threshold().item() == pytest.approx(threshold, rel=1e-6)
        _, weights, _ = spl_step(method, losses)
        assert weights == expected
    # The mean over the batch counts unselected samples as zeros.
    mean = method(torch.tensor([1.0, 30.0], dtype=torch.float64), torch.zeros(2), torch.arange(2))
    assert mean.loss().item() == pytest.approx(0.5)


def test_spl_start_fraction_and_growth_parameters() -> None:
    method = build_method(
        "spl",
        make_context("regression", identity_loss, None),
        {"growth": 2.0, "start_fraction": 0.25},
    )
    # Quantile 0.25 of [1, 2, 3, 4, 5] (linear) = 2: only the strictly smaller loss is selected.
    _, weights, _ = spl_step(method, [5.0, 4.0, 3.0, 2.0, 1.0])
    assert weights == [0.0, 0.0, 0.0, 0.0, 1.0]
    method.start_epoch(3)
    assert method.threshold().item() == pytest.approx(16.0)


def test_spl_threshold_is_a_buffer_that_resumes() -> None:
    context = make_context("regression", identity_loss, None)
    first = build_method("spl", context, {})
    spl_step(first, [1.0, 2.0, 3.0])  # λ₀ = 2
    resumed = build_method("spl", context, {})
    resumed.load_state_dict(first.state_dict())
    _, weights, _ = spl_step(resumed, [100.0, 1.5, 50.0])  # not re-initialised to 50
    assert weights == [0.0, 1.0, 0.0]
    assert resumed.threshold().item() == pytest.approx(2.0)


def test_spl_on_classification_uses_cross_entropy() -> None:
    method = build_method("spl", make_context(), {})
    outputs, targets, indices = batch()
    losses = method(outputs, targets, indices).losses
    ce = refs(ce_ref)
    selected = ce < np.median(ce)
    np.testing.assert_allclose(losses.detach().numpy(), np.where(selected, ce, 0.0), rtol=1e-12)


# ---- data parameters ----


def data_params(**params: object) -> DataParameters:
    method = build_method("data-params", make_context(), dict(params))
    assert isinstance(method, DataParameters)
    return method


@pytest.mark.parametrize(
    ("curriculum", "sigma"), [("instance", 1.0), ("class", 1.0), ("joint", 2.0)]
)
def test_data_params_at_init_is_cross_entropy_of_scaled_logits(
    curriculum: str, sigma: float
) -> None:
    method = data_params(curriculum=curriculum)
    outputs, targets, indices = batch()
    losses = method(outputs, targets, indices).losses
    expected = [
        ce_ref([z / sigma for z in row], label) for row, label in zip(LOGITS, LABELS, strict=True)
    ]
    np.testing.assert_allclose(losses.detach().numpy(), expected, rtol=1e-7)
    if curriculum != "joint":
        np.testing.assert_allclose(losses.detach().numpy(), refs(ce_ref), rtol=1e-7)


def test_data_params_joint_sigma_is_class_plus_instance() -> None:
    method = data_params(curriculum="joint")
    class_sigma = [0.5, 2.0, 3.0]
    instance_sigma = [0.1 * (i + 1) for i in range(NUM_TRAIN)]
    with torch.no_grad():
        method.class_log_sigma.copy_(torch.tensor(class_sigma).log())
        method.instance_log_sigma.copy_(torch.tensor(instance_sigma).log())
    outputs, targets, indices = batch()
    losses = method(outputs, targets, indices).losses
    expected = []
    for row, label, index in zip(LOGITS, LABELS, indices.tolist(), strict=True):
        sigma = class_sigma[label] + instance_sigma[index]
        expected.append(ce_ref([z / sigma for z in row], label))
    np.testing.assert_allclose(losses.detach().numpy(), expected, rtol=1e-6)


def _train_step(method: DataParameters, targets: list[int], indices: list[int]) -> Tensor:
    optimizer = method.optimizers()[0]
    optimizer.zero_grad(set_to_none=True)
    generator = torch.Generator().manual_seed(len(indices) + indices[0])
    outputs = torch.randn(len(targets), NUM_CLASSES, generator=generator, requires_grad=True)
    method(outputs, torch.tensor(targets), torch.tensor(indices)).loss().backward()
    grads = torch.cat([method.class_log_sigma.grad.clone(), method.instance_log_sigma.grad.clone()])
    optimizer.step()
    return grads


def test_data_params_optimizer_updates_only_the_batch() -> None:
    method = data_params(curriculum="joint")
    assert method.optimizers()[0] is method.optimizers()[0]  # built once: it holds momentum
    before = torch.cat([method.class_log_sigma, method.instance_log_sigma]).detach().clone()
    grads = _train_step(method, targets=[0, 2], indices=[1, 5])
    after = torch.cat([method.class_log_sigma, method.instance_log_sigma]).detach().clone()
    changed = (after != before).nonzero().flatten().tolist()
    # Classes 0 and 2, instances 1 and 5 (offset by the 3 class entries).
    assert changed == [0, 2, 3 + 1, 3 + 5]
    # First step: the momentum buffer is the gradient; lr 0.1 (class) and 0.2 (instance).
    lrs = torch.tensor([0.1] * NUM_CLASSES + [0.2] * NUM_TRAIN)
    torch.testing.assert_close(after, before - lrs * grads)
    # A second batch with other classes and samples: the first batch's entries do not move, although
    # their momentum buffers are non-zero (dense SGD with momentum would move them).
    grads_2 = _train_step(method, targets=[1, 1], indices=[2, 3])
    final = torch.cat([method.class_log_sigma, method.instance_log_sigma]).detach().clone()
    changed = (final != after).nonzero().flatten().tolist()
    assert changed == [1, 3 + 2, 3 + 3]
    # Third step touching instance 1 again: momentum 0.9 on its old buffer.
    grads_3 = _train_step(method, targets=[1], indices=[1])
    entry = 3 + 1
    expected = final[entry] - 0.2 * (0.9 * grads[entry] + grads_3[entry])
    assert method.instance_log_sigma[1].item() == pytest.approx(expected.item(), rel=1e-6)
    assert grads_2[entry] == 0


def test_data_params_instance_curriculum_leaves_class_parameters_alone() -> None:
    method = data_params()
    assert not method.class_log_sigma.requires_grad
    optimizer = method.optimizers()[0]
    assert [p for group in optimizer.param_groups for p in group["params"]] == [
        method.instance_log_sigma
    ]
    outputs, targets, indices = batch(torch.float32)
    method(outputs, targets, indices).loss().backward()
    optimizer.step()
    changed = (method.instance_log_sigma != 0).nonzero().flatten().tolist()
    assert changed == sorted(indices.tolist())


def test_data_params_are_clamped_to_the_official_range() -> None:
    method = data_params(curriculum="joint", lr_class=1e4, lr_instance=1e4)
    _train_step(method, targets=[0, 1, 2], indices=[0, 1, 2])
    for values in (method.class_log_sigma, method.instance_log_sigma):
        assert values.min() >= math.log(1 / 20) - 1e-6
        assert values.max() <= math.log(20) + 1e-6
    touched = torch.cat([method.class_log_sigma, method.instance_log_sigma[:3]]).detach()
    assert torch.isclose(touched.abs(), torch.tensor(math.log(20))).all()  # pushed to a bound


def test_data_params_weight_decay_on_batch_log_parameters() -> None:
    method = data_params(curriculum="joint", wd_class=0.4, wd_instance=0.5)
    with torch.no_grad():
        method.class_log_sigma.copy_(torch.tensor([0.1, 0.2, 0.3]))
        method.instance_log_sigma.fill_(-0.25)
    outputs, targets, indices = batch()
    mean = method(outputs, targets, indices).losses.mean()
    total = method(outputs, targets, indices).loss()
    # Classes of LABELS = [0, 2, 0, 1], each occurrence counted; 4 instances at log σ = −0.25.
    penalty = 0.5 * 0.4 * (0.1**2 + 0.3**2 + 0.1**2 + 0.2**2) + 0.5 * 0.5 * 4 * 0.25**2
    assert (total - mean).item() == pytest.approx(penalty, rel=1e-6)
    # Defaults (instance curriculum, wd_instance 0): no penalty.
    plain = data_params()
    assert plain(outputs, targets, indices).loss().item() == pytest.approx(
        plain(outputs, targets, indices).losses.mean().item(), rel=1e-12
    )


def test_sparse_sgd_skips_parameters_without_gradient() -> None:
    used, unused = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    optimizer = SparseSGD([used, unused], lr=0.5, momentum=0.9, min_value=-1.0, max_value=2.0)
    (used * torch.tensor([1.0, 0.0, -4.0])).sum().backward()
    optimizer.step()
    assert used.tolist() == [0.5, 1.0, 2.0]  # 1 + 0.5·4 = 3, clamped to 2
    assert unused.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="momentum"):
        SparseSGD([used], lr=0.1, momentum=1.5)


# ---- registry, hyper-parameters, tasks ----


def test_registered_names_and_classes() -> None:
    assert set(NAMES) <= set(METHODS.names())
    for name, cls in CLASSES.items():
        assert METHODS.get(name) is cls
        method = build_method(name, make_context(), {})
        assert isinstance(method, cls)
        assert method.params == PUBLISHED_DEFAULTS[name]
        assert cls.defaults == PUBLISHED_DEFAULTS[name]
        assert cls.__doc__ and "Hyper-parameters" in cls.__doc__


def test_parameters_reach_the_method() -> None:
    context = make_context()
    gce = build_method("gce", context, {"q": 0.5})
    assert isinstance(gce, GeneralizedCrossEntropy) and gce.q == 0.5
    sce = build_method("sce", context, {"alpha": 0.01})
    assert isinstance(sce, SymmetricCrossEntropy) and (sce.alpha, sce.beta) == (0.01, 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_hyper_parameter_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        build_method(name, make_context(), {"not_a_parameter": 1})


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("gce", {"q": 0.0}),
        ("gce", {"q": 1.5}),
        ("sce", {"beta": -1.0}),
        ("sce", {"one_hot_floor": 0.0}),
        ("bootstrap", {"beta": 1.2}),
        ("spl", {"growth": 0.0}),
        ("spl", {"start_fraction": 2.0}),
        ("data-params", {"curriculum": "both"}),
        ("data-params", {"sigma_min": 30.0}),
        ("data-params", {"init_instance": 0.0}),
        ("data-params", {"lr_class": -0.1}),
    ],
)
def test_bad_hyper_parameter_value_is_refused(name: str, params: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=name):
        build_method(name, make_context(), params)


@pytest.mark.parametrize("name", ["gce", "sce", "bootstrap", "data-params"])
def test_classification_only_methods_refuse_other_tasks(name: str) -> None:
    context = make_context("regression", lambda o, t: (o - t) ** 2, None)
    with pytest.raises(ValueError, match="applies to classification"):
        build_method(name, context, {})


def test_spl_applies_to_any_task() -> None:
    assert SelfPacedLearning.tasks is None
    method = build_method("spl", make_context("regression", lambda o, t: (o - t) ** 2, None), {})
    assert isinstance(method, SelfPacedLearning)


# ---- end to end ----


@pytest.mark.parametrize("name", NAMES)
def test_tiny_run(name: str) -> None:
    from superloss.bench.runner import run

    record = run(
        RunConfig(dataset="digits", method=name, epochs=1, train_size=200, noise=0.4)
    ).as_dict()
    assert len(record["history"]) == 1
    entry = record["history"][0]
    assert entry["epoch"] == 1
    for value in (entry["accuracy"], record["final"]["accuracy"], entry["train_loss"]):
        assert math.isfinite(value)
    assert 0.0 <= record["final"]["accuracy"] <= 100.0
    assert record["config"]["method"] == name
    if name == "spl":
        assert "weight_auroc" in entry  # SPL exposes its 0/1 weights


# ---- SuperLoss: λ as given, and on top of a robust base loss ----


def test_superloss_hands_lam_to_the_core_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    import superloss.bench.methods.superloss as module

    received: list[object] = []
    real = module.SuperLoss

    def recorder(*args: object, **kwargs: object) -> object:
        received.append(kwargs["lam"])
        return real(*args, **{**kwargs, "lam": 1.0})  # type: ignore[arg-type]

    monkeypatch.setattr(module, "SuperLoss", recorder)
    build_method("superloss", make_context(), {"lam": "auto"})
    build_method("superloss", make_context(), {"lam": "auto-hold"})
    build_method("superloss", make_context(), {"lam": 2})
    assert received == ["auto", "auto-hold", 2.0] and isinstance(received[2], float)
    monkeypatch.undo()
    held = build_method("superloss", make_context(), {"lam": "auto-hold"}).criterion
    assert held.auto_lambda is not None and held.auto_lambda.hold


def test_superloss_default_is_the_held_automatic_lambda_normalised() -> None:
    # 0.3.0: no λ to tune, and the step kept at the plain loss's size.
    default = build_method("superloss", make_context(), {}).criterion
    assert default.lam == "auto-hold" and default.auto_lambda is not None
    assert default.auto_lambda.hold and default.confidence_scale is not None
    paper = build_method("superloss", make_context(), {"lam": 1.0, "normalize": False}).criterion
    assert paper.lam == 1.0 and paper.auto_lambda is None and paper.confidence_scale is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"lam": "abc"},
            "superloss lam must be one of auto, auto-hold, or a number > 0, got 'abc'",
        ),
        ({"lam": 0.0}, "superloss lam must be a number > 0 or one of auto, auto-hold, got 0.0"),
        ({"base": "ce"}, "superloss base must be one of task, gce, sce, got 'ce'"),
        ({"base": "gce", "base_params": {"q": 5}}, r"gce q must be in \(0, 1\], got 5"),
        ({"base_params": {"q": 0.5}}, "base_params needs a base method"),
    ],
)
def test_superloss_bad_hyper_parameters(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_method("superloss", make_context(), params)


def test_superloss_base_on_regression_is_refused() -> None:
    context = make_context("regression", lambda o, t: (o - t) ** 2, None)
    with pytest.raises(ValueError, match="'gce' applies to classification"):
        build_method("superloss", context, {"base": "gce"})


@pytest.mark.parametrize(
    ("base", "params", "reference"),
    [
        ("gce", {"q": 0.3}, lambda: refs(gce_ref, 0.3)),
        ("sce", {}, lambda: refs(sce_ref, 0.1, 1.0, 1e-4)),
    ],
)
def test_superloss_on_a_robust_base_weighs_its_loss_with_an_ema_threshold(
    base: str, params: dict[str, float], reference: Callable[[], np.ndarray]
) -> None:
    from superloss import SuperLoss

    method = build_method(
        "superloss", make_context(), {"base": base, "base_params": params, "lam": 0.5}
    )
    outputs, targets, indices = batch()
    out = method(outputs, targets, indices)
    # ℓ is the base method's loss, against the float64 reference written out above.
    assert out.task_losses is not None
    np.testing.assert_allclose(out.task_losses.numpy(), reference(), rtol=1e-12)
    # τ: the EMA (initialised from the first batch's mean ℓ), not log C.
    expected = SuperLoss(tau="ema", lam=0.5, reduction="none")(torch.tensor(reference()))
    np.testing.assert_allclose(out.losses.detach().numpy(), expected.numpy(), rtol=1e-10)
    assert out.tau is not None and float(out.tau) == pytest.approx(reference().mean())
    default = build_method("superloss", make_context(), {})
    assert default.criterion.threshold.__class__.__name__ == "ConstantThreshold"  # log C


def test_superloss_on_a_base_trains_end_to_end() -> None:
    from superloss.bench.runner import run

    for base in ("gce", "sce"):
        config = RunConfig(
            method="superloss",
            method_params={"base": base},
            epochs=1,
            train_size=200,
            noise=0.4,
        )
        record = run(config).as_dict()
        assert math.isfinite(record["final"]["accuracy"])
        assert "weight_auroc" in record["history"][0]  # σ of the base loss is recorded


@pytest.mark.parametrize("base", ["task", "gce", "sce"])
def test_superloss_waits_on_a_classifier_whatever_its_tau(base: str) -> None:
    # A classifier starts at chance whatever its base loss: the automatic λ waits for its losses
    # to leave τ, the running τ of a GCE or SCE base included.
    method = build_method("superloss", make_context(), {"base": base})
    state = method.criterion.auto_lambda
    assert state is not None and state.wait


def test_superloss_on_a_regression_keeps_the_core_default() -> None:
    context = make_context("regression", lambda o, t: (o - t).pow(2).sum(1), None)
    method = build_method("superloss", context, {})
    state = method.criterion.auto_lambda
    assert state is not None and not state.wait  # a running τ: the core's default

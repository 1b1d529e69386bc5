"""SuperLossReducer against a per-element SuperLoss computed by hand from PML's unreduced losses."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_reducers = pytest.importorskip("pytorch_metric_learning.reducers")

from superloss.functional import super_loss  # noqa: E402
from superloss.integrations.metric_learning import SuperLossReducer  # noqa: E402

LOSSES = {
    "contrastive": lambda **kw: pml_losses.ContrastiveLoss(pos_margin=0.1, neg_margin=1.2, **kw),
    "triplet": lambda **kw: pml_losses.TripletMarginLoss(margin=0.3, **kw),
    "multi_similarity": lambda **kw: pml_losses.MultiSimilarityLoss(**kw),
}


def batch(seed: int = 0, size: int = 24, dim: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(size, dim, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (size,), generator=generator)
    return embeddings, labels


def manual(name: str, embeddings: torch.Tensor, labels: torch.Tensor, lam: float) -> torch.Tensor:
    """Σ over the loss's terms of mean_i SL(ℓ_i, τ = this batch's mean), from unreduced losses."""
    terms = LOSSES[name](reducer=pml_reducers.DoNothingReducer())(embeddings, labels)
    total = torch.zeros((), dtype=embeddings.dtype)
    for term in terms.values():
        losses = term["losses"]
        assert torch.is_tensor(losses) and losses.numel() > 0
        # A first batch: the EMA threshold starts at the batch mean.
        total = total + super_loss(losses, tau=losses.detach().mean(), lam=lam, reduction="mean")
    return total


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("lam", [0.25, 1.0])
def test_equals_manual_per_element_superloss_with_gradients(name: str, lam: float) -> None:
    embeddings, labels = batch()
    ours = embeddings.clone().requires_grad_(True)
    reference = embeddings.clone().requires_grad_(True)
    value = LOSSES[name](reducer=SuperLossReducer(lam=lam))(ours, labels)
    expected = manual(name, reference, labels, lam)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)
    value.backward()
    expected.backward()
    assert ours.grad is not None and reference.grad is not None
    assert ours.grad.abs().sum() > 0  # gradients reach the embeddings
    torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-9, atol=1e-12)


def test_contrastive_terms_have_separate_thresholds_and_confidences() -> None:
    embeddings, labels = batch()
    loss_fn = LOSSES["contrastive"](reducer=SuperLossReducer())
    loss_fn(embeddings, labels)
    terms = LOSSES["contrastive"](reducer=pml_reducers.DoNothingReducer())(embeddings, labels)
    for term in ("pos_loss", "neg_loss"):
        reducer = loss_fn.reducer.reducers[term]
        losses = terms[term]["losses"]
        assert reducer.last_tau is not None and reducer.last_confidence is not None
        torch.testing.assert_close(reducer.last_tau, losses.mean())
        assert reducer.last_confidence.shape == losses.shape
    taus = [loss_fn.reducer.reducers[t].last_tau for t in ("pos_loss", "neg_loss")]
    assert not torch.equal(taus[0], taus[1])


def test_large_lambda_gives_the_mean_reduction() -> None:
    embeddings, labels = batch(seed=1)
    for name in sorted(LOSSES):
        plain_emb = embeddings.clone().requires_grad_(True)
        plain = LOSSES[name](reducer=pml_reducers.MeanReducer())(plain_emb, labels)
        plain.backward()
        # τ = 0: the value itself is the mean.
        constant = LOSSES[name](reducer=SuperLossReducer(tau=0.0, lam=1e8))(embeddings, labels)
        torch.testing.assert_close(constant, plain.detach(), rtol=1e-6, atol=1e-8)
        # τ = EMA: the value is the mean minus τ (per term), the gradients are the mean's.
        ema_emb = embeddings.clone().requires_grad_(True)
        loss_fn = LOSSES[name](reducer=SuperLossReducer(lam=1e8))
        value = loss_fn(ema_emb, labels)
        value.backward()
        reducers = [m for m in loss_fn.modules() if isinstance(m, SuperLossReducer)]
        total_tau = sum(float(r.last_tau) for r in reducers if r.last_tau is not None)
        torch.testing.assert_close(
            float(value.detach()) + total_tau, float(plain.detach()), rtol=1e-6, atol=1e-8
        )
        assert ema_emb.grad is not None and plain_emb.grad is not None
        torch.testing.assert_close(ema_emb.grad, plain_emb.grad, rtol=1e-6, atol=1e-10)


def test_nonzero_only_with_large_lambda_gives_avg_non_zero() -> None:
    embeddings, labels = batch(seed=2)
    loss_fn = LOSSES["triplet"]
    expected = loss_fn(reducer=pml_reducers.AvgNonZeroReducer())(embeddings, labels)
    reducer = SuperLossReducer(tau=0.0, lam=1e8, nonzero_only=True)
    value = loss_fn(reducer=reducer)(embeddings, labels)
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-8)
    # and differs from the mean over every triplet, zeros included (the test can fail)
    mean = loss_fn(reducer=pml_reducers.MeanReducer())(embeddings, labels)
    assert abs(float(mean) - float(expected)) > 1e-3


def test_sum_reduction() -> None:
    embeddings, labels = batch(seed=3)
    terms = LOSSES["triplet"](reducer=pml_reducers.DoNothingReducer())(embeddings, labels)
    losses = terms["loss"]["losses"]
    value = LOSSES["triplet"](reducer=SuperLossReducer(reduction="sum", lam=0.5))(
        embeddings, labels
    )
    expected = super_loss(losses, tau=losses.mean(), lam=0.5, reduction="sum")
    torch.testing.assert_close(value, expected)


def test_state_dict_round_trip_resumes_the_threshold() -> None:
    embeddings, labels = batch(seed=4)
    later, later_labels = batch(seed=5)
    loss_fn = LOSSES["contrastive"](reducer=SuperLossReducer())
    loss_fn(embeddings, labels)
    state = copy.deepcopy(loss_fn.state_dict())
    keys = [k for k in state if k.endswith("threshold.tau")]
    assert sorted(keys) == [
        "reducer.reducers.neg_loss.super_loss.threshold.tau",
        "reducer.reducers.pos_loss.super_loss.threshold.tau",
    ]
    resumed = LOSSES["contrastive"](reducer=SuperLossReducer())
    resumed.load_state_dict(state)
    for key in keys:
        torch.testing.assert_close(resumed.state_dict()[key], state[key])
    torch.testing.assert_close(resumed(later, later_labels), loss_fn(later, later_labels))
    # A fresh reducer starts τ from the new batch instead: a different value.
    fresh = LOSSES["contrastive"](reducer=SuperLossReducer())(later, later_labels)
    assert not torch.allclose(fresh, loss_fn(later, later_labels))


def test_ema_moves_across_calls_and_eval_does_not_update() -> None:
    first, first_labels = batch(seed=6)
    second, second_labels = batch(seed=7)
    loss_fn = LOSSES["triplet"](reducer=SuperLossReducer())
    loss_fn(first, first_labels)
    tau_first = loss_fn.reducer.last_tau.clone()
    terms = LOSSES["triplet"](reducer=pml_reducers.DoNothingReducer())(second, second_labels)
    second_mean = terms["loss"]["losses"].mean()
    loss_fn.eval()
    loss_fn(second, second_labels)
    torch.testing.assert_close(loss_fn.reducer.last_tau, tau_first)  # eval: τ kept
    loss_fn.train()
    loss_fn(second, second_labels)
    expected = 0.9 * tau_first + 0.1 * second_mean.double()
    torch.testing.assert_close(loss_fn.reducer.last_tau, expected)


def test_no_pairs_gives_pml_zero_loss_and_keeps_tau() -> None:
    embeddings, labels = batch(seed=8)
    loss_fn = LOSSES["triplet"](reducer=SuperLossReducer())
    loss_fn(embeddings, labels)
    tau = loss_fn.reducer.last_tau.clone()
    lonely = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    value = loss_fn(lonely, torch.arange(4))  # every label distinct: no triplet
    assert float(value.detach()) == 0.0
    value.backward()  # still part of the graph, as PML's own zero loss
    assert loss_fn.reducer.last_confidence is not None
    assert loss_fn.reducer.last_confidence.numel() == 0
    torch.testing.assert_close(loss_fn.reducer.super_loss.threshold.tau, tau)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="reduction must be one of"):
        SuperLossReducer(reduction="none")
    with pytest.raises(ValueError, match="lam must be"):
        SuperLossReducer(lam=0.0)
    with pytest.raises(ValueError, match="unknown threshold"):
        SuperLossReducer(tau="median")


def test_importing_superloss_does_not_import_pml() -> None:
    code = (
        "import sys, superloss, superloss.integrations; "
        "assert 'pytorch_metric_learning' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_normalize_divides_each_term_by_its_own_mean_confidence() -> None:
    embeddings, labels = batch()
    loss_fn = LOSSES["contrastive"](reducer=SuperLossReducer(lam=0.5, normalize=True))
    first = loss_fn(embeddings, labels)
    torch.testing.assert_close(first, manual("contrastive", embeddings, labels, 0.5))
    second = loss_fn(embeddings, labels)
    terms = LOSSES["contrastive"](reducer=pml_reducers.DoNothingReducer())(embeddings, labels)
    expected = torch.zeros((), dtype=embeddings.dtype)
    for term in ("pos_loss", "neg_loss"):
        losses = terms[term]["losses"]
        sigma = loss_fn.reducer.reducers[term].last_confidence
        # Same batch, same τ: the second call is the first divided by the first's mean σ*.
        plain = super_loss(losses, tau=losses.mean(), lam=0.5, reduction="mean")
        expected = expected + plain / sigma.mean()
    torch.testing.assert_close(second, expected, rtol=1e-10, atol=1e-12)

"""SuperLossForTrainer in a real Hugging Face Trainer: tiny models built from configs, nothing downloaded.

The references are transformers' own losses: ``fixed_cross_entropy`` / ``ForTokenClassification``
(which honour ``num_items_in_batch``) and, for the causal LM, the model's own loss in the Trainer's
default path. BERT's classification heads are not a reference under gradient accumulation: their
loss is a per-micro-batch mean that ignores ``num_items_in_batch``, while the Trainer, seeing a
forward that takes ``**kwargs``, no longer divides by the accumulation steps
(``test_bert_head_loss_is_not_scaled_for_accumulation`` shows it).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.loss.loss_utils import fixed_cross_entropy

from superloss.functional import confidence, super_loss
from superloss.integrations.transformers import SuperLossForTrainer

VOCAB, LENGTH, CLASSES = 32, 8, 3
NEUTRAL = {"tau": 0.0, "lam": 1e30}  # (ℓ − τ)/2λ < 1e-28: σ* = exp(−W) rounds to exactly 1


def bert_config(**overrides: Any) -> BertConfig:
    settings: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": LENGTH,
        "num_labels": CLASSES,
        "hidden_dropout_prob": 0.0,  # the compared runs must be deterministic
        "attention_probs_dropout_prob": 0.0,
    }
    return BertConfig(**{**settings, **overrides})


def tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=LENGTH,
    )
    return LlamaForCausalLM(config)


def synthetic(task: str, count: int = 16, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Token ids and labels; unlabelled elements (−100) spread unevenly over the micro-batches."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (count, LENGTH), generator=generator)
    lengths = torch.randint(2, LENGTH + 1, (count,), generator=generator)
    lengths[5] = 1  # a causal-LM sequence without any prediction target
    padded = torch.arange(LENGTH) >= lengths[:, None]
    if task == "sequence_classification":
        labels = ids[:, 1] % CLASSES
        labels[[1, 2, 3, 9]] = -100
        return [{"input_ids": i, "labels": label} for i, label in zip(ids, labels, strict=True)]
    ids = ids.masked_fill(padded, 0)
    labels = (ids % CLASSES if task == "token_classification" else ids).masked_fill(padded, -100)
    mask = (~padded).long()
    return [
        {"input_ids": i, "attention_mask": m, "labels": label}
        for i, m, label in zip(ids, mask, labels, strict=True)
    ]


def model_for(task: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if task == "sequence_classification":
        return BertForSequenceClassification(bert_config())
    if task == "token_classification":
        return BertForTokenClassification(bert_config())
    return tiny_llama()


class GradientRecorder(TrainerCallback):  # type: ignore[misc]
    """The accumulated gradients of every optimizer step, just before the step."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.steps: list[list[torch.Tensor]] = []

    def on_pre_optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        self.steps.append([p.grad.clone() for p in self.model.parameters() if p.grad is not None])


def make_trainer(
    model: torch.nn.Module,
    data: list[dict[str, torch.Tensor]],
    loss: Callable[..., torch.Tensor] | None,
    out: Path,
    *,
    batch_size: int = 4,
    accumulation: int = 2,
    **settings: Any,
) -> tuple[Trainer, GradientRecorder]:
    """A CPU Trainer, by default for two plain SGD steps, recording each step's gradients."""
    recorder = GradientRecorder(model)
    arguments: dict[str, Any] = {
        "output_dir": str(out),
        "per_device_train_batch_size": batch_size,
        "gradient_accumulation_steps": accumulation,
        "max_steps": 2,
        "learning_rate": 0.1,
        "optim": "sgd",
        "lr_scheduler_type": "constant",
        "report_to": "none",
        "disable_tqdm": True,
        "save_strategy": "no",
        "logging_strategy": "no",
        "use_cpu": True,
        "seed": 0,  # the same sample order in every run
        **settings,
    }
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**arguments),
        train_dataset=data,
        compute_loss_func=loss,
        callbacks=[recorder],
    )
    return trainer, recorder


def train(*args: Any, **kwargs: Any) -> list[list[torch.Tensor]]:
    """Train as :func:`make_trainer` sets up; the gradients of the two optimizer steps."""
    trainer, recorder = make_trainer(*args, **kwargs)
    trainer.train()
    assert len(recorder.steps) == 2
    return recorder.steps


def assert_same_gradients(
    actual: list[list[torch.Tensor]], expected: list[list[torch.Tensor]], atol: float = 1e-7
) -> None:
    assert len(actual) == len(expected)
    for step_actual, step_expected in zip(actual, expected, strict=True):
        assert len(step_actual) == len(step_expected)
        for a, e in zip(step_actual, step_expected, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=atol)


def largest_difference(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> float:
    return max(
        (x - y).abs().max().item()
        for step_a, step_b in zip(a, b, strict=True)
        for x, y in zip(step_a, step_b, strict=True)
    )


def library_loss() -> Callable[..., torch.Tensor]:
    """transformers' own cross-entropy with num_items_in_batch, as its loss functions call it."""

    def loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs.logits
        return fixed_cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), num_items_in_batch
        )

    return loss


# -- against transformers' own losses, in a real Trainer with gradient accumulation ---------------


@pytest.mark.parametrize(
    ("task", "per"),
    [
        ("sequence_classification", "token"),
        ("token_classification", "token"),
        ("token_classification", "sequence"),
    ],
)
def test_neutral_superloss_gives_the_library_gradients(task: str, per: str, tmp_path: Path) -> None:
    model = model_for(task)
    data = synthetic(task)
    expected = train(copy.deepcopy(model), data, library_loss(), tmp_path / "reference")
    neutral = SuperLossForTrainer(task, per=per, **NEUTRAL)
    actual = train(copy.deepcopy(model), data, neutral, tmp_path / "superloss")
    assert_same_gradients(actual, expected)
    assert neutral.last_confidence is not None
    labelled = neutral.last_confidence[~neutral.last_confidence.isnan()]
    assert labelled.numel() > 0 and bool((labelled == 1.0).all())


@pytest.mark.parametrize("per", ["token", "sequence"])
def test_neutral_superloss_gives_the_causal_lm_default_gradients(per: str, tmp_path: Path) -> None:
    model = model_for("causal_lm")
    data = synthetic("causal_lm")
    expected = train(copy.deepcopy(model), data, None, tmp_path / "default")  # the model's loss
    neutral = SuperLossForTrainer("causal_lm", per=per, **NEUTRAL)
    actual = train(copy.deepcopy(model), data, neutral, tmp_path / "superloss")
    assert_same_gradients(actual, expected)


@pytest.mark.parametrize(
    ("task", "per"), [("sequence_classification", "token"), ("causal_lm", "sequence")]
)
def test_accumulation_equals_one_big_batch(task: str, per: str, tmp_path: Path) -> None:
    # A constant τ makes σ* a function of each element's own loss, so two accumulated
    # micro-batches of 4 must give the gradient of one batch of 8 — with σ* far from 1.
    model = model_for(task)
    data = synthetic(task)

    def superloss() -> SuperLossForTrainer:
        return SuperLossForTrainer(task, per=per, tau=math.log(CLASSES), lam=0.5)

    accumulated = train(copy.deepcopy(model), data, superloss(), tmp_path / "accumulated")
    whole = train(
        copy.deepcopy(model), data, superloss(), tmp_path / "whole", batch_size=8, accumulation=1
    )
    assert_same_gradients(accumulated, whole)
    # The check can fail: these gradients are far from the plain cross-entropy's.
    plain = train(copy.deepcopy(model), data, library_loss(), tmp_path / "plain")
    assert largest_difference(accumulated, plain) > 1e-3


def test_bert_head_loss_is_not_scaled_for_accumulation(tmp_path: Path) -> None:
    # Why the references above are transformers' loss functions, not BERT's own head loss.
    model = model_for("sequence_classification")
    data = synthetic("sequence_classification")
    head = train(copy.deepcopy(model), data, None, tmp_path / "head")
    library = train(copy.deepcopy(model), data, library_loss(), tmp_path / "library")
    assert largest_difference(head, library) > 1e-3


# -- training on noisy labels ----------------------------------------------------------------------


def test_trainer_learns_through_label_noise_and_sigma_flags_the_flipped(tmp_path: Path) -> None:
    torch.manual_seed(0)
    count = 192
    model = BertForSequenceClassification(bert_config(hidden_size=32, intermediate_size=64))
    ids = torch.randint(0, VOCAB, (count, LENGTH))
    clean = ids[:, 0] % CLASSES  # the class is the first token's: learnable in a few epochs
    flipped = torch.rand(count) < 0.2
    noisy = torch.where(flipped, (clean + torch.randint(1, CLASSES, (count,))) % CLASSES, clean)
    data = [{"input_ids": i, "labels": label} for i, label in zip(ids, noisy, strict=True)]
    loss = SuperLossForTrainer(tau="ema", lam=1.0)
    trainer, _ = make_trainer(
        model,
        data,
        loss,
        tmp_path,
        batch_size=16,
        max_steps=-1,
        num_train_epochs=3,
        optim="adamw_torch",
        learning_rate=3e-3,
        lr_scheduler_type="linear",
    )
    trainer.train()
    tau_before = loss.super_loss.threshold.tau.clone()
    model.eval()
    test_ids = torch.randint(0, VOCAB, (512, LENGTH))
    with torch.no_grad():
        accuracy = (model(input_ids=test_ids).logits.argmax(1) == test_ids[:, 0] % CLASSES).float()
        train_loss = F.cross_entropy(model(input_ids=ids).logits, noisy, reduction="none")
    assert accuracy.mean() > 0.8  # the clean rule, despite 20% wrong labels
    # The samples of lowest σ* are mostly the flipped ones (about 1 in 5 at random).
    sigma = confidence(train_loss, loss.super_loss.threshold.tau, 1.0)
    lowest = sigma.argsort()[: int(flipped.sum())]
    assert flipped[lowest].float().mean() > 0.6
    assert sigma[flipped].mean() < sigma[~flipped].mean()
    # Evaluation calls the loss under no_grad: τ does not move.
    metrics = trainer.evaluate(eval_dataset=data)
    assert math.isfinite(metrics["eval_loss"])
    assert torch.equal(loss.super_loss.threshold.tau, tau_before)


# -- the loss by hand --------------------------------------------------------------------------------


def token_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, CLASSES, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, CLASSES, (3, 5), generator=generator)
    labels[0, 3:] = -100
    labels[2, :] = -100  # a sequence without labelled tokens
    return logits, labels


def test_per_token_value_and_threshold_by_hand() -> None:
    logits, labels = token_batch()
    loss = SuperLossForTrainer("token_classification", tau="ema", lam=0.5)
    value = loss({"logits": logits}, labels, num_items_in_batch=torch.tensor(20))
    labelled = labels != -100
    ell = F.cross_entropy(logits[labelled], labels[labelled], reduction="none")
    tau = ell.mean()  # the EMA starts at the first batch's mean over labelled tokens only
    torch.testing.assert_close(loss.last_tau, tau)
    torch.testing.assert_close(value, super_loss(ell, tau, 0.5, reduction="sum") / 20)
    assert loss.last_confidence is not None and loss.last_confidence.shape == labels.shape
    assert bool(loss.last_confidence[~labelled].isnan().all())
    torch.testing.assert_close(loss.last_confidence[labelled], confidence(ell, tau, 0.5))


def test_per_sequence_value_by_hand() -> None:
    logits, labels = token_batch()
    loss = SuperLossForTrainer("token_classification", per="sequence", tau=1.0, lam=0.5)
    value = loss((logits,), labels)  # no num_items_in_batch: the mean over labelled tokens
    terms, tokens = [], 0
    for row_logits, row_labels in zip(logits, labels, strict=True):
        kept = row_labels != -100
        if kept.any():
            mean = F.cross_entropy(row_logits[kept], row_labels[kept])
            terms.append(int(kept.sum()) * super_loss(mean, 1.0, 0.5, reduction="sum"))
            tokens += int(kept.sum())
    torch.testing.assert_close(value, torch.stack(terms).sum() / tokens)
    assert loss.last_confidence is not None and loss.last_confidence.shape == (3,)
    assert bool(loss.last_confidence[2].isnan())


def test_causal_lm_shifts_the_labels() -> None:
    logits, labels = token_batch()
    loss = SuperLossForTrainer("causal_lm", **NEUTRAL)
    value = loss({"logits": logits}, labels, num_items_in_batch=7)
    shifted = labels[:, 1:]
    reference = F.cross_entropy(
        logits[:, :-1].reshape(-1, CLASSES), shifted.reshape(-1), reduction="sum"
    )
    torch.testing.assert_close(value, reference / 7)  # τ = 0, σ* = 1: Σℓ / N


def test_bad_input_is_refused_with_a_clear_message() -> None:
    logits, labels = token_batch()
    with pytest.raises(ValueError, match="task must be one of"):
        SuperLossForTrainer("regression")
    with pytest.raises(ValueError, match="per must be one of"):
        SuperLossForTrainer("causal_lm", per="batch")
    with pytest.raises(ValueError, match="per='sequence' is for the token tasks"):
        SuperLossForTrainer(per="sequence")
    loss = SuperLossForTrainer("token_classification")
    with pytest.raises(ValueError, match="needs the labels"):
        loss({"logits": logits}, None)
    with pytest.raises(TypeError, match="integer class labels"):
        loss({"logits": logits}, labels.double())
    with pytest.raises(ValueError, match=r"expects \(B, T, C\) logits and \(B, T\) labels"):
        loss({"logits": logits}, labels[:, :4])
    with pytest.raises(TypeError, match="with logits"):
        loss({"loss": logits}, labels)
    assert loss.last_tau is None  # nothing was computed by the refused calls


def test_normalize_divides_the_second_step_by_the_first_steps_mean_confidence() -> None:
    logits, labels = token_batch()
    loss = SuperLossForTrainer("token_classification", tau=1.0, lam=0.5, normalize=True)
    labelled = labels != -100
    ell = F.cross_entropy(logits[labelled], labels[labelled], reduction="none")
    first = loss({"logits": logits}, labels, num_items_in_batch=torch.tensor(20))
    torch.testing.assert_close(first, super_loss(ell, 1.0, 0.5, reduction="sum") / 20)
    second = loss({"logits": logits}, labels, num_items_in_batch=torch.tensor(20))
    # Ignored tokens are left out of the mean confidence, as out of τ.
    mean_confidence = confidence(ell, 1.0, 0.5).mean()
    torch.testing.assert_close(second, first / mean_confidence)


@pytest.mark.parametrize("task", ["sequence_classification", "token_classification", "causal_lm"])
def test_an_automatic_lambda_waits_whatever_tau(task: str) -> None:
    # Every task here is a softmax classifier, which starts at chance whatever τ is.
    loss = SuperLossForTrainer(task, lam="auto-hold", tau="ema")
    state = loss.super_loss.auto_lambda
    assert state is not None and state.wait
    core = SuperLossForTrainer(task, lam="auto-hold", tau="ema", wait=None)
    assert core.super_loss.auto_lambda is not None and not core.super_loss.auto_lambda.wait

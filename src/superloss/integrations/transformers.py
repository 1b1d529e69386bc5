r"""SuperLoss for the Hugging Face ``Trainer``: a ``compute_loss_func`` for classification and LMs.

:class:`SuperLossForTrainer` is what ``Trainer(compute_loss_func=...)`` calls with the model's outputs,
the labels and ``num_items_in_batch``. It computes the per-element cross-entropy ℓ from the logits,
applies SuperLoss to it and reduces it the way transformers' own losses do:

- ``task="sequence_classification"``: one ℓ per sequence, logits (B, C), labels (B,).
- ``task="token_classification"``: one ℓ per token, logits (B, T, C), labels (B, T).
- ``task="causal_lm"``: one ℓ per token, the logits at position t predicting the label at t + 1
  (logits (B, T, V), labels (B, T), shifted here as transformers' ``ForCausalLMLoss`` does).

Labels equal to ``ignore_index`` (−100: padding, prompt tokens, unlabelled sequences) are no
sample: they enter neither the loss nor τ, and their σ* in ``last_confidence`` is NaN.

For the token tasks, ``per`` chooses what SuperLoss weighs:

- ``per="token"`` (default): each token is a sample, SL(ℓ_t) with its own σ*_t;
- ``per="sequence"``: each sequence is a sample, judged by the mean loss of its n_s labelled tokens,
  ℓ̄_s = (1/n_s) Σ_t ℓ_t, and its term counts n_s times: n_s·SL(ℓ̄_s). Every token of a sequence
  then gets the same weight σ*_s (a mislabelled or garbled sequence is down-weighted as a whole),
  and with σ* ≡ 1 the gradient is the token-level one.

Gradient accumulation. The Trainer counts the labelled elements of all the micro-batches of one
optimizer step (``num_items_in_batch``; for a causal LM, of ``labels[..., 1:]``), and transformers'
losses (``fixed_cross_entropy``) return Σ ℓ / num_items_in_batch for each micro-batch; the Trainer
then does not divide by the number of accumulation steps. This loss returns
Σ SL / num_items_in_batch the same way (Σ_s n_s·SL(ℓ̄_s) for ``per="sequence"``), so the accumulated
gradient is that of the whole batch: Σ σ*·∂ℓ/∂θ / N. Without ``num_items_in_batch`` (a call by hand,
or labels the Trainer cannot count) it is the mean over this batch's labelled elements. With σ*
held at 1 (λ → ∞) the gradients are exactly those of transformers' cross-entropy; the value is the
SuperLoss, (ℓ − τ)·σ* + λ(log σ*)², not the cross-entropy (it may be negative).

Training or evaluation. The Trainer calls the loss in evaluation too, under ``torch.no_grad()``;
τ moves only in calls with gradients enabled, i.e. in training steps. Under several processes τ's
statistics are all-reduced in every training step (``sync_threshold``), so every rank holds the
same τ; the Trainer's own scaling (``average_tokens_across_devices``) applies to this loss as to its
own.

State. τ's state is in this module (``state_dict``), not in the model: a constant
``tau="log_classes"`` needs none; a running τ (``"ema"``, ``"global"``) restarts from the first
batch when training resumes from a checkpoint, unless you save and load ``loss.state_dict()``.

Importing this module needs only torch: the loss reads the logits of whatever the model returns.
The ``transformers`` extra installs the Trainer itself (transformers and accelerate).

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from superloss.integrations.transformers import SuperLossForTrainer
    >>> config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
    ...                     num_attention_heads=2, intermediate_size=32, num_labels=3)
    >>> model = BertForSequenceClassification(config)
    >>> loss_fn = SuperLossForTrainer("sequence_classification", tau="log_classes", num_classes=3)
    >>> outputs = model(input_ids=torch.randint(0, 32, (4, 6)))
    >>> loss = loss_fn(outputs, torch.tensor([0, 2, -100, 1]), num_items_in_batch=torch.tensor(6))
    >>> loss.backward()
    >>> loss_fn.last_confidence.shape, bool(loss_fn.last_confidence[2].isnan())
    (torch.Size([4]), True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from superloss.integrations import HoldsSuperLoss
from superloss.loss import SuperLoss

__all__ = ["PER", "TASKS", "SuperLossForTrainer"]

TASKS = ("sequence_classification", "token_classification", "causal_lm")
PER = ("token", "sequence")


class SuperLossForTrainer(HoldsSuperLoss, nn.Module):
    r"""SuperLoss as a Hugging Face ``Trainer(compute_loss_func=...)`` (module docstring).

    Args:
        task: ``"sequence_classification"`` (default), ``"token_classification"`` or
            ``"causal_lm"``.
        per: for the token tasks, ``"token"`` (default: one σ* per token) or ``"sequence"`` (one σ*
            per sequence, from its mean token loss).
        tau: the threshold τ (see :class:`superloss.SuperLoss`): ``"ema"`` (default), ``"global"``,
            a number, or ``"log_classes"`` with ``num_classes`` (log C, the loss of a uniform
            prediction).
        lam: the regularisation λ > 0 (default 1), or ``"auto"`` / ``"auto-hold"`` (read from the
            losses; see :class:`superloss.SuperLoss`).
        num_classes: C for ``tau="log_classes"`` (the number of labels, or the vocabulary size).
        ignore_index: the label of elements that are no sample (default −100, transformers').
        ema_past_weight: for ``tau="ema"``, the weight of the previous τ (default 0.9).
        sync_threshold: all-reduce τ's statistics under torch.distributed (default True).
        normalize: divide by the running mean confidence, so the weights average one
            (default False; see :class:`superloss.SuperLoss`).
        wait: with an automatic λ, weigh nothing until the losses have left τ (default True, with
            any τ: all three tasks are softmax classifiers, which start at chance whatever τ is;
            see :class:`superloss.SuperLoss`). None: the core's default (a constant τ only).
            Ignored with a fixed λ.

    Attributes:
        super_loss: the :class:`superloss.SuperLoss` module; τ is in its ``threshold``.
        last_confidence: σ* of the last call: (B,) for sequence classification and
            ``per="sequence"``, the labels' shape (B, T) for ``per="token"``; NaN for ignored
            elements (and sequences without a labelled token).

    Shape:
        - outputs: the model's output, holding ``logits`` (a ``ModelOutput``, a dict, or a tuple
          whose first element is the logits): (B, C) or (B, T, C).
        - labels: (B,) or (B, T), integer.
        - Output: scalar.
    """

    def __init__(
        self,
        task: str = "sequence_classification",
        *,
        per: str = "token",
        tau: float | str = "ema",
        lam: float | str = 1.0,
        num_classes: int | None = None,
        ignore_index: int = -100,
        ema_past_weight: float = 0.9,
        sync_threshold: bool = True,
        normalize: bool = False,
        wait: bool | None = True,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if per not in PER:
            raise ValueError(f"per must be one of {PER}, got {per!r}")
        if per == "sequence" and task == "sequence_classification":
            raise ValueError(
                "per='sequence' is for the token tasks; sequence classification already has "
                "one loss per sequence"
            )
        self.task = task
        self.per = per
        self.ignore_index = int(ignore_index)
        self.super_loss = SuperLoss(
            tau=tau,
            lam=lam,
            reduction="none",
            num_classes=num_classes,
            ema_past_weight=ema_past_weight,
            sync_threshold=sync_threshold,
            normalize=normalize,
            wait=wait,
        )

    def forward(
        self,
        outputs: Any,
        labels: Tensor | None,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor:
        logits = _logits(outputs)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()  # as transformers' losses do, for precision
        labels = self._check_labels(labels, logits)
        # τ moves in training steps only; the Trainer evaluates under torch.no_grad().
        self.super_loss.train(torch.is_grad_enabled())
        if any(buffer.device != logits.device for buffer in self.super_loss.buffers()):
            self.super_loss.to(logits.device)  # τ's state follows the model
        if self.task == "causal_lm":  # position t predicts label t + 1; the last predicts nothing
            labels = F.pad(labels, (0, 1), value=self.ignore_index)[..., 1:]
        labelled = labels != self.ignore_index
        losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=self.ignore_index,
            reduction="none",
        ).view(labels.shape)
        if num_items_in_batch is None:
            num_items_in_batch = labelled.sum().clamp_min(1)  # this batch's mean
        elif isinstance(num_items_in_batch, Tensor):
            num_items_in_batch = num_items_in_batch.to(logits.device)
        if self.per == "sequence":
            return self._per_sequence(losses, labelled) / num_items_in_batch
        # NaN keeps unlabelled elements out of τ (SuperLoss skips non-finite losses) without a
        # boolean index, which would wait for the device; torch.where then keeps them out of the
        # sum and of the gradient.
        values = self.super_loss(torch.where(labelled, losses, torch.nan))
        return torch.where(labelled, values, 0.0).sum() / num_items_in_batch

    def _per_sequence(self, token_losses: Tensor, labelled: Tensor) -> Tensor:
        """Σ_s n_s·SL(ℓ̄_s): one σ* per sequence, the token-level gradient when σ* = 1."""
        counts = labelled.sum(dim=-1).to(token_losses.dtype)
        has_tokens = counts > 0
        means = token_losses.sum(dim=-1) / counts.clamp_min(1.0)  # ignored tokens' ℓ is 0
        values = self.super_loss(torch.where(has_tokens, means, torch.nan))
        return torch.where(has_tokens, counts * values, 0.0).sum()

    def _check_labels(self, labels: Tensor | None, logits: Tensor) -> Tensor:
        if labels is None:
            raise ValueError(
                "SuperLossForTrainer needs the labels: the Trainer passes the batch's 'labels' "
                "(check that the dataset yields them and label_names)"
            )
        if not isinstance(labels, Tensor) or labels.dtype.is_floating_point:
            raise TypeError(
                "SuperLossForTrainer uses cross-entropy: expected integer class labels, got "
                + (f"dtype {labels.dtype}" if isinstance(labels, Tensor) else type(labels).__name__)
            )
        expected = "(B, C) logits and (B,) labels"
        if self.task != "sequence_classification":
            expected = "(B, T, C) logits and (B, T) labels"
        token_task = self.task != "sequence_classification"
        if logits.dim() != (3 if token_task else 2) or labels.shape != logits.shape[:-1]:
            raise ValueError(
                f"task={self.task!r} expects {expected}, got logits of shape "
                f"{tuple(logits.shape)} and labels of shape {tuple(labels.shape)}"
            )
        return labels.to(logits.device)

    def extra_repr(self) -> str:
        return f"task={self.task!r}, per={self.per!r}, ignore_index={self.ignore_index}"


def _logits(outputs: Any) -> Tensor:
    """The logits of a model's output: a ``ModelOutput`` or dict with ``logits``, or a tuple."""
    if isinstance(outputs, Mapping):
        logits = outputs.get("logits")
    elif isinstance(outputs, (tuple, list)) and outputs:
        logits = outputs[0]
    else:
        logits = outputs
    if not isinstance(logits, Tensor):
        raise TypeError(
            "expected the model's outputs with logits (a ModelOutput, a dict with 'logits', or a "
            f"tuple starting with them), got {type(outputs).__name__}"
        )
    return logits

"""SuperLoss in a plain PyTorch loop: digits with 30% wrong labels, against plain cross-entropy.

    python examples/plain_pytorch.py

Trains the same small network twice, with cross-entropy and with SuperLoss, and prints the clean test
accuracy of each; a ConfidenceTracker fed by the SuperLoss run ranks the training samples, and the
share of truly mislabelled samples among the most suspicious is printed. Runs in seconds on a CPU.
"""

from __future__ import annotations

import torch
from noisy_digits import noisy_digits
from torch import nn

from superloss import ConfidenceTracker, SuperLoss

EPOCHS, BATCH = 30, 64


def train(criterion: nn.Module, tracker: ConfidenceTracker | None = None) -> nn.Module:
    data = noisy_digits(noise=0.3)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(data.train_labels)).split(BATCH):  # dataset indices
            loss = criterion(model(data.train_inputs[batch]), data.train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if tracker is not None:  # SuperLoss keeps the batch's σ* and loss: nothing recomputed
                tracker.update(batch, criterion.last_confidence, criterion.last_loss)
        if tracker is not None:
            tracker.end_epoch()
    return model


def test_accuracy(model: nn.Module) -> float:
    data = noisy_digits(noise=0.3)
    with torch.no_grad():
        return (model(data.test_inputs).argmax(1) == data.test_labels).float().mean().item()


def main() -> None:
    data = noisy_digits(noise=0.3)
    plain = train(nn.CrossEntropyLoss())
    # No λ to tune: read from the losses and held (lam="auto-hold"); normalize=True keeps the step
    # at the plain loss's size, so the learning rate tuned for cross-entropy still fits.
    superloss = SuperLoss(
        nn.CrossEntropyLoss(reduction="none"),
        tau="log_classes",
        num_classes=10,
        lam="auto-hold",
        normalize=True,
    )
    tracker = ConfidenceTracker(len(data.train_labels))
    robust = train(superloss, tracker)
    print(f"clean test accuracy, cross-entropy: {test_accuracy(plain):.3f}")
    print(f"clean test accuracy, SuperLoss:     {test_accuracy(robust):.3f}")
    k = int(data.flipped.sum())
    suspects = tracker.suspects(k=k)  # lowest mean σ* first
    print(f"mislabelled among the {k} lowest mean σ*: {data.flipped[suspects].float().mean():.3f}")


if __name__ == "__main__":
    main()

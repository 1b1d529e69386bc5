"""SuperLoss in PyTorch Lightning: digits with 30% wrong labels, τ and σ* logged, suspects written.

    pip install "superloss[lightning]"
    python examples/lightning_digits.py --out lightning-example

The LightningModule holds its SuperLoss as a submodule and returns it from ``training_step`` as any
loss. ``SuperLossMonitor`` logs τ every step and, every epoch, the mean σ*, the share of samples at
the cap σ* = e and below 1 (here to a CSV file: ``OUT/logs/.../metrics.csv``), feeds a
``ConfidenceTracker`` from the indices each batch carries, and writes the most suspicious samples to
``OUT/suspects.csv`` at the end. Runs in well under a minute on a CPU.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from noisy_digits import noisy_digits
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from superloss import ConfidenceTracker, SuperLoss
from superloss.integrations.lightning import SuperLossMonitor


class DigitClassifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        # A submodule: the monitor finds it, and its state (λ's statistics, m) is in the checkpoint.
        # No λ to tune: read from the losses and held; normalize keeps the plain loss's step size.
        self.criterion = SuperLoss(
            nn.CrossEntropyLoss(reduction="none"),
            tau=math.log(10),
            lam="auto-hold",
            normalize=True,
        )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs, labels, _indices = batch  # the indices are for the monitor's tracker
        loss: Tensor = self.criterion(self.model(inputs), labels)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: a new temporary one)"
    )
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="superloss-lightning-"))
    out.mkdir(parents=True, exist_ok=True)

    data = noisy_digits(noise=0.3)
    count = len(data.train_labels)
    # Each batch: (inputs, labels, dataset indices).
    train_set = TensorDataset(data.train_inputs, data.train_labels, torch.arange(count))
    monitor = SuperLossMonitor(
        tracker=ConfidenceTracker(count), suspects_path=out / "suspects.csv", num_suspects=100
    )
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        callbacks=[monitor],
        logger=CSVLogger(out, name="logs"),
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    L.seed_everything(0, verbose=False)
    module = DigitClassifier()
    trainer.fit(module, DataLoader(train_set, batch_size=64, shuffle=True))

    last = monitor.history["criterion"][-1]
    print(
        f"last epoch: τ = {last.tau:.3f}, mean σ* = {last.mean:.3f}, "
        f"at the cap e: {last.at_cap:.1%}, below 1: {last.below_one:.1%}"
    )
    with torch.no_grad():
        accuracy = (module.model(data.test_inputs).argmax(1) == data.test_labels).float().mean()
    print(f"clean test accuracy: {accuracy:.3f}")
    assert monitor.suspects is not None
    share = data.flipped[monitor.suspects].float().mean()
    print(
        f"mislabelled among the 100 most suspicious: {share:.0%} (written to {out / 'suspects.csv'})"
    )


if __name__ == "__main__":
    main()

"""Trace the automatic λ through one training run: λ, τ and the losses' spread every 5 epochs.

A small self-contained loop on scikit-learn's digits (an MLP, SGD, 60 epochs, symmetric label
noise), SuperLoss with ``tau="ema"`` (or ``--tau log_classes``, the suite's τ for cross-entropy) on
cross-entropy or on GCE (q = 0.7) as the base loss. It prints, every 5 epochs, the clean test
accuracy, τ, λ, S (the root mean square of ℓ − τ over the whole training set), λ/S — where λ/S
sits at 1/(2e) ≈ 0.184, the automatic λ is at its floor — and the two groups of the training
losses as the automatic λ splits them (share of the high group, each group's mean ± std).

    python experiments/auto_lambda_trace.py --noise 0.4 --base ce
    python experiments/auto_lambda_trace.py --noise 0.4 --base ce --tau log_classes
    python experiments/auto_lambda_trace.py --noise 0 --base gce
    python experiments/auto_lambda_trace.py --noise 0.4 --tau log_classes --lowest-factor 1e-6
    python experiments/auto_lambda_trace.py --noise 0.4 --tau log_classes --lam 0.1

``--lowest-factor`` sets the automatic λ's floor in units of S (1e-6: practically none; the
shipped floor is 1/(2e)); ``--lam`` replaces the automatic λ by a fixed one, for comparison.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor

from superloss import SuperLoss

TRAIN, TEST_FROM = 1100, 1400


def gce(logits: Tensor, target: Tensor, q: float = 0.7) -> Tensor:
    p = logits.softmax(1).gather(1, target[:, None]).squeeze(1).clamp_min(1e-7)
    return (1 - p**q) / q


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--base", choices=("ce", "gce"), default="ce")
    parser.add_argument("--tau", choices=("ema", "log_classes"), default="ema")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lowest-factor", type=float, default=None)
    parser.add_argument("--lam", default="auto", help="auto, or a fixed λ > 0")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    x_all, y_all = load_digits(return_X_y=True)
    x, y = torch.tensor(x_all / 16.0, dtype=torch.float32), torch.tensor(y_all)
    order = torch.randperm(len(y))
    x, y = x[order], y[order]
    x_train, y_train, x_test, y_test = x[:TRAIN], y[:TRAIN].clone(), x[TEST_FROM:], y[TEST_FROM:]
    flip = torch.rand(TRAIN) < args.noise
    y_train[flip] = (y_train[flip] + torch.randint(1, 10, (int(flip.sum()),))) % 10
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    classes = {"num_classes": 10} if args.tau == "log_classes" else {}
    lam = args.lam if args.lam == "auto" else float(args.lam)
    criterion = SuperLoss(tau=args.tau, lam=lam, **classes)
    if args.lowest_factor is not None:
        assert criterion.auto_lambda is not None, "--lowest-factor needs the automatic λ"
        criterion.auto_lambda.lowest_factor = args.lowest_factor

    def per_sample(logits: Tensor, target: Tensor) -> Tensor:
        if args.base == "gce":
            return gce(logits, target)
        return F.cross_entropy(logits, target, reduction="none")

    for epoch in range(60):
        model.train()
        for batch in torch.randperm(TRAIN).split(32):
            loss = criterion(per_sample(model(x_train[batch]), y_train[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if epoch % 5 == 0 or epoch == 59:
            model.eval()
            with torch.no_grad():
                accuracy = (model(x_test).argmax(1) == y_test).float().mean().item() * 100
                losses = per_sample(model(x_train), y_train)
                tau = float(criterion.threshold.tau)
                spread = ((losses - tau) ** 2).mean().sqrt().item()
                # The automatic λ's split, or τ for a fixed λ.
                state = criterion.auto_lambda
                high = losses > (float(state.boundary) if state is not None else tau)
            lam = float(criterion.last_lam)  # type: ignore[arg-type]
            print(
                f"epoch {epoch + 1:2d}: accuracy {accuracy:5.1f}  tau {tau:.3f}  lambda {lam:.4g}  "
                f"S {spread:.3f}  lambda/S {lam / spread:.3f}  "
                f"high {float(high.float().mean()):.2f}"
                f" at {_spread(losses[high])}, low at {_spread(losses[~high])}"
            )


def _spread(values: Tensor) -> str:
    if values.numel() < 2:
        return "-"
    return f"{float(values.mean()):.2f} ± {float(values.std()):.2f}"


if __name__ == "__main__":
    main()

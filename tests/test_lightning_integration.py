"""SuperLossMonitor in real Lightning fits on the CPU: one process, and two with DDP on gloo.

A second callback in the same fit records every step's σ*, loss and τ straight from the SuperLoss
module; the monitor's logs, summaries, histograms and tracker must agree with that record.
"""

from __future__ import annotations

import csv
import datetime
import math
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy
from tensorboardX.proto import event_pb2
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from superloss import ConfidenceTracker, SuperLoss
from superloss.integrations.lightning import (
    CONFIDENCE_CAP,
    IndexedDataset,
    SuperLossMonitor,
)

SAMPLES, FEATURES, CLASSES = 256, 12, 4
QUIET = {
    "accelerator": "cpu",
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
}


def noisy_data(seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs, labels with 25% of them moved to another class, and which ones were moved."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(SAMPLES, FEATURES, generator=generator)
    clean = inputs[:, :CLASSES].argmax(dim=1)
    flipped = torch.rand(SAMPLES, generator=generator) < 0.25
    shift = torch.randint(1, CLASSES, (SAMPLES,), generator=generator)
    return inputs, torch.where(flipped, (clean + shift) % CLASSES, clean), flipped


class Classifier(L.LightningModule):
    def __init__(self, tau: float | str = "log_classes", lam: float = 0.25) -> None:
        super().__init__()
        self.model = nn.Linear(FEATURES, CLASSES)
        self.criterion = SuperLoss(
            nn.CrossEntropyLoss(reduction="none"),
            tau=tau,
            lam=lam,
            num_classes=CLASSES if tau == "log_classes" else None,
        )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs, labels = (
            (batch["inputs"], batch["labels"]) if isinstance(batch, dict) else batch[:2]
        )
        loss: Tensor = self.criterion(self.model(inputs), labels)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.9)


class Recorder(L.Callback):
    """Every training step's σ*, loss and τ, read from the SuperLoss module itself."""

    def __init__(self) -> None:
        self.confidence: list[list[Tensor]] = []  # per epoch, per step
        self.losses: list[Tensor] = []
        self.taus: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.confidence.append([])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        criterion = pl_module.criterion
        self.confidence[-1].append(criterion.last_confidence.clone())
        self.losses.append(criterion.last_loss.clone())
        self.taus.append(float(criterion.last_tau))


def loader(inputs: Tensor, labels: Tensor, **kwargs: Any) -> DataLoader[Any]:
    dataset = IndexedDataset(TensorDataset(inputs, labels))  # batches: (inputs, labels, indices)
    return DataLoader(dataset, batch_size=32, **kwargs)


def read_histograms(folder: Path) -> dict[str, list[Any]]:
    """The histogram summaries of every TensorBoard event file under ``folder``, by tag."""
    found: dict[str, list[Any]] = {}
    for path in folder.rglob("events.out.tfevents.*"):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):  # TFRecord: length (8), its CRC (4), payload, payload CRC (4)
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 16 + length
            for value in event.summary.value:
                if value.HasField("histo"):
                    found.setdefault(value.tag, []).append(value.histo)
    return found


def expected_summary(sigma: Tensor, bins: int) -> dict[str, Any]:
    sigma = sigma.double()
    width = CONFIDENCE_CAP / bins
    bin_of = (sigma / width).floor().clamp(max=bins - 1).long()
    return {
        "count": sigma.numel(),
        "mean": sigma.mean().item(),
        "at_cap": (sigma > CONFIDENCE_CAP - 1e-5).double().mean().item(),
        "below_one": (sigma < 1).double().mean().item(),
        "minimum": sigma.min().item(),
        "maximum": sigma.max().item(),
        "histogram": torch.bincount(bin_of, minlength=bins).double(),
    }


def test_fit_logs_tau_and_confidence_and_ranks_the_flipped_labels(tmp_path: Path) -> None:
    inputs, labels, flipped = noisy_data()
    epochs, bins = 4, 20
    tracker = ConfidenceTracker(SAMPLES)
    monitor = SuperLossMonitor(
        tracker=tracker, suspects_path=tmp_path / "suspects.csv", num_suspects=40, bins=bins
    )
    recorder = Recorder()
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[monitor, recorder],
        logger=[CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")],
        log_every_n_steps=1,
        **QUIET,
    )
    torch.manual_seed(0)
    trainer.fit(Classifier(), loader(inputs, labels, shuffle=True))

    # Epoch summaries against every σ* the SuperLoss computed.
    assert monitor.names == ["criterion"]
    summaries = monitor.history["criterion"]
    assert [summary.epoch for summary in summaries] == list(range(epochs))
    for summary, steps in zip(summaries, recorder.confidence, strict=True):
        expected = expected_summary(torch.cat(steps), bins)
        assert summary.count == expected["count"] == SAMPLES
        for name in ("mean", "at_cap", "below_one", "minimum", "maximum"):
            assert getattr(summary, name) == pytest.approx(expected[name], rel=1e-9), name
        torch.testing.assert_close(summary.histogram, expected["histogram"])
        assert summary.tau == pytest.approx(math.log(CLASSES))
    assert 0 < summaries[-1].at_cap < 1 and 0 < summaries[-1].below_one < 1

    # What reached the loggers: τ every step, the epoch scalars, the histogram (TensorBoard).
    rows = list(csv.DictReader(open(next((tmp_path / "csv").rglob("metrics.csv")))))
    taus = [float(row["superloss/criterion/tau"]) for row in rows if row["superloss/criterion/tau"]]
    assert taus == pytest.approx(recorder.taus)
    means = [row["superloss/criterion/confidence_mean"] for row in rows]
    logged = [float(value) for value in means if value]
    assert logged == pytest.approx([summary.mean for summary in summaries], rel=1e-6)
    histograms = read_histograms(tmp_path / "tb")["superloss/criterion/confidence"]
    assert len(histograms) == epochs
    assert histograms[-1].num == SAMPLES
    assert list(histograms[-1].bucket) == summaries[-1].histogram.tolist()

    # The tracker saw every sample once an epoch; its suspects are mostly the flipped labels.
    assert torch.equal(tracker.observations(), torch.full((SAMPLES,), epochs))
    assert tracker.epoch.item() == epochs
    assert monitor.suspects is not None and len(monitor.suspects) == 40
    assert flipped[monitor.suspects].float().mean() > 0.8  # 25% at random
    written = list(csv.reader(open(tmp_path / "suspects.csv")))
    assert written[0] == ["index", "score"]
    assert [int(row[0]) for row in written[1:]] == monitor.suspects.tolist()
    scores = [float(row[1]) for row in written[1:]]
    assert scores == sorted(scores)  # mean σ*, lowest (most suspicious) first


def test_dict_batches_and_a_function_give_the_indices(tmp_path: Path) -> None:
    inputs, labels, _ = noisy_data()
    dicts = [
        {"inputs": x, "labels": y, "index": i}
        for i, (x, y) in enumerate(zip(inputs, labels, strict=True))
    ]
    for batch_indices in ("index", lambda batch: batch["index"]):
        tracker = ConfidenceTracker(SAMPLES)
        monitor = SuperLossMonitor(tracker=tracker, batch_indices=batch_indices)
        trainer = L.Trainer(max_epochs=1, callbacks=[monitor], logger=False, **QUIET)
        trainer.fit(Classifier(), DataLoader(dicts, batch_size=64))  # type: ignore[arg-type]
        assert torch.equal(tracker.observations(), torch.ones(SAMPLES, dtype=torch.int64))


def test_tracker_state_goes_into_the_callback_checkpoint(tmp_path: Path) -> None:
    inputs, labels, _ = noisy_data()
    monitor = SuperLossMonitor(tracker=ConfidenceTracker(SAMPLES))
    trainer = L.Trainer(max_epochs=1, callbacks=[monitor], logger=False, **QUIET)
    trainer.fit(Classifier(), loader(inputs, labels))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    resumed = SuperLossMonitor(tracker=ConfidenceTracker(SAMPLES))
    trainer = L.Trainer(max_epochs=2, callbacks=[resumed], logger=False, **QUIET)
    trainer.fit(Classifier(), loader(inputs, labels), ckpt_path=tmp_path / "last.ckpt")
    assert resumed.tracker is not None
    assert torch.equal(resumed.tracker.observations(), torch.full((SAMPLES,), 2))


def test_misuse_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    inputs, labels, _ = noisy_data()

    def fit(module: L.LightningModule, monitor: SuperLossMonitor, data: Any = None) -> None:
        trainer = L.Trainer(max_steps=1, callbacks=[monitor], logger=False, **QUIET)
        trainer.fit(module, data or loader(inputs, labels))

    class Plain(Classifier):
        def __init__(self) -> None:
            super().__init__()
            self.criterion = nn.CrossEntropyLoss()  # type: ignore[assignment]

    class Two(Classifier):
        def __init__(self) -> None:
            super().__init__()
            self.auxiliary = SuperLoss(tau="ema")

    with pytest.raises(ValueError, match="found no SuperLoss module in Plain"):
        fit(Plain(), SuperLossMonitor())
    with pytest.raises(ValueError, match=r"several SuperLoss modules \(criterion, auxiliary\)"):
        fit(Two(), SuperLossMonitor(tracker=ConfidenceTracker(SAMPLES)))
    with pytest.raises(ValueError, match="tracked='head' is not a SuperLoss module"):
        fit(Classifier(), SuperLossMonitor(tracker=ConfidenceTracker(SAMPLES), tracked="head"))
    with pytest.raises(ValueError, match="batch_indices='index' needs dict batches"):
        fit(
            Classifier(),
            SuperLossMonitor(tracker=ConfidenceTracker(SAMPLES), batch_indices="index"),
        )
    unindexed = DataLoader(TensorDataset(inputs, labels, inputs), batch_size=32)
    with pytest.raises(TypeError, match="integer"):  # the last element is no index tensor
        fit(Classifier(), SuperLossMonitor(tracker=ConfidenceTracker(SAMPLES)), unindexed)
    with pytest.raises(TypeError, match=r"superloss\.ConfidenceTracker"):
        SuperLossMonitor(tracker=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="suspects_path needs a tracker"):
        SuperLossMonitor(suspects_path=tmp_path / "s.csv")
    with pytest.raises(ValueError, match="bins must be"):
        SuperLossMonitor(bins=0)
    with pytest.raises(ValueError, match="kind must be one of"):
        SuperLossMonitor(kind="median")

    # One σ* per token cannot be tracked per sample: said before anything is recorded.
    class PerToken(Classifier):
        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            logits = self.model(batch[0])
            per_token = logits[:, :, None].expand(-1, -1, 3)  # (B, C, T): 3 "tokens" a sample
            loss: Tensor = self.criterion(per_token, batch[1][:, None].expand(-1, 3))
            return loss

    tracker = ConfidenceTracker(SAMPLES)
    with pytest.raises(ValueError, match="one σ\\* per sample"):
        fit(PerToken(), SuperLossMonitor(tracker=tracker))
    assert tracker.step.item() == 0


# -- two processes -----------------------------------------------------------------------------------

DDP_EPOCHS = 2


class SaveRank(L.Callback):
    """Each process's view at the end of fit, after the monitor's own end-of-fit collectives."""

    def __init__(self, out_dir: Path, monitor: SuperLossMonitor, recorder: Recorder) -> None:
        self.out_dir, self.monitor, self.recorder = out_dir, monitor, recorder

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        tracker = self.monitor.tracker
        assert tracker is not None
        result = {
            "tau": pl_module.criterion.threshold.tau.clone(),
            "losses": self.recorder.losses,
            "confidence": self.recorder.confidence,
            "history": self.monitor.history["criterion"],
            "observations": tracker.observations(),
            "local_counts": tracker.statistics[:SAMPLES, 0, 0].clone(),  # this rank's own
            "suspects": self.monitor.suspects,
        }
        torch.save(result, self.out_dir / f"rank{trainer.global_rank}.pt")


def ddp_fit(out_dir: Path) -> None:
    """Two forked processes fit with the monitor; each saves its view into ``out_dir``."""
    inputs, labels, _ = noisy_data()
    monitor = SuperLossMonitor(tracker=ConfidenceTracker(SAMPLES), num_suspects=20)
    recorder = Recorder()
    # Forked processes (no re-import: fast), gloo on the CPU; a missed collective times out.
    strategy = DDPStrategy(
        start_method="fork", process_group_backend="gloo", timeout=datetime.timedelta(seconds=60)
    )
    trainer = L.Trainer(
        max_epochs=DDP_EPOCHS,
        devices=2,
        strategy=strategy,
        callbacks=[monitor, recorder, SaveRank(out_dir, monitor, recorder)],
        logger=False,
        **QUIET,
    )
    with warnings.catch_warnings():  # inherited by the forked processes
        warnings.filterwarnings("error", message=".*sync_dist=True")  # no unsynchronised log
        trainer.fit(Classifier(tau="ema"), loader(inputs, labels, shuffle=True))


def test_ddp_two_processes_share_tau_and_merge_the_tracker(tmp_path: Path) -> None:
    # The fit forks from a fresh interpreter: autograd refuses to run in a child forked from a
    # process that has used torch.compile and autograd before (as this test session has).
    script = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
    script += f"import {Path(__file__).stem} as t; t.ddp_fit(t.Path({str(tmp_path)!r}))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    # τ: the same on both ranks, and the single-process EMA over the union of each step's batches.
    assert torch.equal(ranks[0]["tau"], ranks[1]["tau"])
    tau = None
    for loss_0, loss_1 in zip(ranks[0]["losses"], ranks[1]["losses"], strict=True):
        mean = torch.cat([loss_0, loss_1]).double().mean()
        tau = mean if tau is None else 0.9 * tau + 0.1 * mean
    assert tau is not None
    torch.testing.assert_close(ranks[0]["tau"], tau)

    # The tracker: each rank saw half the samples, the merged statistics count every one.
    for rank in ranks:
        assert torch.equal(rank["observations"], torch.full((SAMPLES,), DDP_EPOCHS))
        assert rank["local_counts"].sum() == DDP_EPOCHS * SAMPLES // 2
    assert torch.equal(ranks[0]["suspects"], ranks[1]["suspects"])

    # The epoch summaries cover both ranks' σ*, identically on each.
    for epoch in range(DDP_EPOCHS):
        everything = torch.cat([s for rank in ranks for s in rank["confidence"][epoch]])
        for rank in ranks:
            summary = rank["history"][epoch]
            assert summary.count == SAMPLES
            assert summary.mean == pytest.approx(everything.double().mean().item(), rel=1e-9)
        first, second = (rank["history"][epoch] for rank in ranks)
        assert (first.mean, first.at_cap, first.below_one, first.tau) == (
            second.mean,
            second.at_cap,
            second.below_one,
            second.tau,
        )
        assert torch.equal(first.histogram, second.histogram)

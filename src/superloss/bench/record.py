"""A finished run's record: typed here, one JSON line in ``results.jsonl`` (:meth:`RunRecord.as_dict`).

Every protocol builds its record with :func:`build_record`; a training run's final, best and
validation-selected metrics come from its per-epoch history by :func:`summarise`.
"""

from __future__ import annotations

import dataclasses
import functools
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

import superloss
from superloss.bench.config import RunConfig

# Entries of an epoch that are not metrics of the model.
NOT_METRICS = ("epoch", "train_loss", "weight_auroc", "tau")


@functools.lru_cache(maxsize=1)
def source_commit() -> str | None:
    """The git commit of the superloss source tree (``+dirty`` if it holds changes), or None where
    the package is not a git checkout (an installed wheel) or git is missing."""
    folder = Path(superloss.__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10
        )

    try:
        # The package's own file must be tracked there: a wheel inside another project's
        # repository is not a checkout of superloss.
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return None
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    found["superloss"] = superloss.__version__
    found["superloss_commit"] = source_commit()
    for module in ("numpy", "sklearn"):
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            pass
    return found


class Summary(NamedTuple):
    """Metrics at the last epoch, best over epochs (an oracle), and at the epoch chosen on
    validation (with that ``epoch``)."""

    final: dict[str, Any]
    best: dict[str, Any]
    selected: dict[str, Any]


@dataclass
class RunRecord:
    """What a run leaves: its config, per-epoch history, summary metrics and diagnostics."""

    config: RunConfig
    history: list[dict[str, Any]]
    final: dict[str, Any]
    best: dict[str, Any]
    selected: dict[str, Any]
    realised_noise: float | None
    weight_histograms: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str | None] = field(default_factory=versions)
    wall_time_s: float | None = None
    detection: dict[str, Any] | None = None  # the noise-detection protocol's own results
    retrain: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return self.config.key()

    def as_dict(self) -> dict[str, Any]:
        """The results line: plain JSON types; optional parts only where present."""
        values = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        values["config"] = self.config.as_dict()
        values["key"] = self.key
        return {name: v for name, v in values.items() if v is not None or name not in _OPTIONAL}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunRecord:
        names = {item.name for item in dataclasses.fields(cls)}
        fields = {name: value for name, value in values.items() if name in names}
        return cls(**{**fields, "config": RunConfig.from_dict(values["config"])})


_OPTIONAL = ("detection", "retrain")  # left out of the line where absent


def build_record(
    config: RunConfig,
    history: list[dict[str, Any]],
    summary: Summary,
    *,
    realised_noise: float | None,
    weight_histograms: list[dict[str, Any]] | None = None,
    wall_time_s: float | None = None,
    detection: dict[str, Any] | None = None,
) -> RunRecord:
    """The record of a run of ``config``: the one place a record is put together."""
    return RunRecord(
        config=config,
        history=history,
        final=summary.final,
        best=summary.best,
        selected=summary.selected,
        realised_noise=realised_noise,
        weight_histograms=list(weight_histograms or []),
        wall_time_s=wall_time_s,
        detection=detection,
    )


def summarise(
    history: Sequence[dict[str, Any]],
    higher_is_better: bool,
    selection: str,
    metrics: Sequence[str] | None = None,
) -> Summary:
    """Final, best and selected values of ``metrics`` (default: every test metric of the history).

    The selected epoch is the first with the best ``selection`` entry (a validation metric).
    """
    pick = max if higher_is_better else min
    if metrics is None:
        metrics = [m for m in history[-1] if m not in NOT_METRICS and not m.startswith("val_")]
    chosen = pick(history, key=lambda entry: entry[selection])  # first epoch with the best score
    return Summary(
        final={m: history[-1][m] for m in metrics},
        best={m: pick(entry[m] for entry in history) for m in metrics},
        selected={m: chosen[m] for m in metrics} | {"epoch": chosen["epoch"]},
    )

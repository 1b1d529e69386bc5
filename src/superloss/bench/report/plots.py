"""The report's PNG plots, drawn by matplotlib's Agg renderer (``Figure`` objects, no pyplot)

Per table: the metrics against the noise rate; the test metric per epoch; for methods that expose
per-sample weights, histograms of σ on clean and mislabelled samples and the AUROC of σ per epoch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from superloss.bench.report.summary import STATS, Group, Table

PLOTS_DIR = "plots"
STAT_NAMES = {
    "final": "final epoch",
    "best": "best epoch (oracle)",
    "selected": "validation-selected",
}
CLEAN_COLOUR, CORRUPTED_COLOUR = "tab:blue", "tab:red"


@dataclass
class TablePlots:
    """Paths of one table's plots, relative to the results folder."""

    vs_noise: dict[str, str] = field(default_factory=dict)  # per metric
    curves: str | None = None
    weights: list[tuple[str, str]] = field(default_factory=list)  # (row label, path)
    auroc: str | None = None


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(figure: Any, out_dir: Path, name: str) -> str:
    relative = f"{PLOTS_DIR}/{name}.png"
    # No "Software" stamp: the same results give the same bytes.
    figure.savefig(out_dir / relative, dpi=110, metadata={"Software": None})
    return relative


def _colours(table: Table) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {row: palette(i % 10) for i, row in enumerate(table.rows)}


def _axis_label(table: Table, metric: str) -> str:
    return f"test {metric} ({'higher' if table.higher_is_better else 'lower'} is better)"


def _title(table: Table) -> str:
    f = table.fields
    split = "".join(f" · {name}={value}" for name, value in table.split.items())
    return f"{f['task']} · {f['dataset']} · {f['model']} · {f['epochs']} epochs{split}"


def _columns(count: int) -> tuple[int, int]:
    columns = min(count, 3)
    return (count + columns - 1) // columns, columns


def plot_vs_noise(table: Table, metric: str, out_dir: Path, name: str) -> str:
    """Final, best and selected metric against the noise rate, one line per row; bars: std."""
    colours = _colours(table)
    figure = _figure(4.2 * len(STATS), 3.8)
    axes = figure.subplots(1, len(STATS), sharey=True, squeeze=False)[0]
    for ax, stat in zip(axes, STATS, strict=True):
        for row in table.rows:
            points = [(g.noise, g.stat(stat, metric)) for g in table.row_groups(row)]
            points = [(x, s) for x, s in points if s.mean is not None]
            if not points:
                continue
            ax.errorbar(
                [x for x, _ in points],
                [s.mean for _, s in points],
                yerr=[s.std for _, s in points],
                label=row,
                color=colours[row],
                marker="o",
                capsize=3,
            )
        ax.set_title(STAT_NAMES[stat])
        ax.set_xlabel(f"noise rate ({table.fields['noise_type']})")
        ax.set_xticks(table.noises)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(_axis_label(table, metric))
    axes[0].legend(fontsize="small")
    figure.suptitle(f"{_title(table)}: {metric} vs noise (mean ± std over seeds)")
    return _save(figure, out_dir, name)


def _per_epoch(group: Group, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Epochs, mean and std (ddof = 1; 0 with one seed) of ``key`` over the group's seeds."""
    series = []
    for record in group.records:
        points = {
            int(h["epoch"]): float(h[key])
            for h in record["history"]
            if isinstance(h, dict) and isinstance(h.get(key), (int, float)) and "epoch" in h
        }
        if points:
            series.append(points)
    if not series:
        return None
    # Epochs every seed recorded, so that each point averages the same runs.
    epochs = sorted(set.intersection(*(set(s) for s in series)))
    if not epochs:
        return None
    values = np.array([[s[e] for e in epochs] for s in series])
    std = values.std(axis=0, ddof=1) if len(series) > 1 else np.zeros(len(epochs))
    return np.array(epochs), values.mean(axis=0), std


def plot_curves(table: Table, key: str, ylabel: str, out_dir: Path, name: str) -> str | None:
    """``key`` of the history per epoch, one panel per noise rate; shading: std over seeds."""
    colours = _colours(table)
    panels = [
        (noise, [(row, table.cell(row, noise)) for row in table.rows]) for noise in table.noises
    ]
    curves = [
        (noise, [(row, c) for row, g in cells if g is not None for c in [_per_epoch(g, key)] if c])
        for noise, cells in panels
    ]
    curves = [(noise, lines) for noise, lines in curves if lines]
    if not curves:
        return None
    rows, columns = _columns(len(curves))
    figure = _figure(4.2 * columns, 3.4 * rows)
    axes = figure.subplots(rows, columns, sharey=True, squeeze=False).ravel()
    for ax, (noise, lines) in zip(axes, curves, strict=False):
        for row, (epochs, mean, std) in lines:
            ax.plot(epochs, mean, label=row, color=colours[row])
            ax.fill_between(epochs, mean - std, mean + std, color=colours[row], alpha=0.2)
        ax.set_title(f"noise {noise:g}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in axes[len(curves) :]:
        ax.set_visible(False)
    for ax in axes[::columns]:
        ax.set_ylabel(ylabel)
    axes[0].legend(fontsize="small")
    figure.suptitle(f"{_title(table)}: test {key} per epoch (mean ± std over seeds)")
    return _save(figure, out_dir, name)


def _summed_histograms(group: Group) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per recorded epoch: bin edges, clean and corrupted counts summed over seeds."""
    summed: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for record in group.records:
        for entry in record.get("weight_histograms") or []:
            edges = np.asarray(entry["edges"], dtype=float)
            clean = np.asarray(entry["clean"], dtype=float)
            corrupted = np.asarray(entry["corrupted"], dtype=float)
            epoch = int(entry["epoch"])
            if epoch in summed and np.array_equal(summed[epoch][0], edges):
                _, total_clean, total_corrupted = summed[epoch]
                summed[epoch] = (edges, total_clean + clean, total_corrupted + corrupted)
            elif epoch not in summed:
                summed[epoch] = (edges, clean, corrupted)
    return summed


def plot_weights(table: Table, row: str, out_dir: Path, name: str) -> str | None:
    """σ histograms of one row: one panel per noise rate × recorded epoch, clean vs mislabelled."""
    by_noise = [(g.noise, _summed_histograms(g)) for g in table.row_groups(row)]
    by_noise = [(noise, h) for noise, h in by_noise if h]
    if not by_noise:
        return None
    epochs = sorted({e for _, h in by_noise for e in h})
    figure = _figure(3.6 * len(epochs), 2.8 * len(by_noise))
    axes = figure.subplots(len(by_noise), len(epochs), sharex=True, squeeze=False)
    for i, (noise, histograms) in enumerate(by_noise):
        for j, epoch in enumerate(epochs):
            ax = axes[i][j]
            if epoch not in histograms:
                ax.set_visible(False)
                continue
            edges, clean, corrupted = histograms[epoch]
            for counts, colour, kind in (
                (clean, CLEAN_COLOUR, "clean"),
                (corrupted, CORRUPTED_COLOUR, "mislabelled"),
            ):
                total = counts.sum()
                if total > 0:
                    ax.stairs(
                        counts / total,
                        edges,
                        fill=True,
                        alpha=0.45,
                        color=colour,
                        label=f"{kind} (n={int(total)})",
                    )
            ax.set_title(f"noise {noise:g} · epoch {epoch}", fontsize="medium")
            ax.legend(fontsize="x-small")
            ax.grid(alpha=0.3)
            if i == len(by_noise) - 1:
                ax.set_xlabel("σ (per-sample weight)")
            if j == 0:
                ax.set_ylabel("share of samples")
    figure.suptitle(f"{_title(table)}: σ of {row}, counts summed over seeds")
    return _save(figure, out_dir, name)


def plot_auroc(table: Table, out_dir: Path, name: str) -> str | None:
    """AUROC of −σ for mislabelled samples per epoch: one line per row × noise rate."""
    lines = [
        (f"{row}, noise {g.noise:g}", curve)
        for row in table.rows
        for g in table.row_groups(row)
        for curve in [_per_epoch(g, "weight_auroc")]
        if curve is not None
    ]
    if not lines:
        return None
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    figure = _figure(6.5, 4.0)
    ax = figure.subplots()
    for i, (label, (epochs, mean, std)) in enumerate(lines):
        ax.plot(epochs, mean, label=label, color=palette(i % 10))
        ax.fill_between(epochs, mean - std, mean + std, color=palette(i % 10), alpha=0.2)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xlabel("epoch")
    ax.set_ylabel("AUROC of −σ (mislabelled = positive)")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"{_title(table)}:\nhow well σ singles out mislabelled samples (mean ± std)")
    return _save(figure, out_dir, name)


def draw(tables: list[Table], out_dir: Path) -> list[TablePlots]:
    """Draw every plot into ``out_dir/plots``; remove PNGs there that this report did not draw."""
    folder = out_dir / PLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    drawn = []
    for table in tables:
        f = table.fields
        split = "".join(f"_{name}-{value}" for name, value in table.split.items())
        prefix = slug(
            f"{f['task']}_{f['dataset']}_{f['model']}_{f['noise_type']}_{f['epochs']}ep{split}"
        )
        plots = TablePlots()
        for metric in table.metrics:
            plots.vs_noise[metric] = plot_vs_noise(
                table, metric, out_dir, f"{prefix}_{slug(metric)}_vs_noise"
            )
        plots.curves = plot_curves(
            table,
            table.primary,
            _axis_label(table, table.primary),
            out_dir,
            f"{prefix}_{slug(table.primary)}_per_epoch",
        )
        for row in table.rows:
            path = plot_weights(table, row, out_dir, f"{prefix}_weights_{slug(row)}")
            if path is not None:
                plots.weights.append((row, path))
        plots.auroc = plot_auroc(table, out_dir, f"{prefix}_weight_auroc")
        drawn.append(plots)
    kept = {
        Path(p).name
        for plots in drawn
        for p in [
            *plots.vs_noise.values(),
            plots.curves,
            plots.auroc,
            *(w for _, w in plots.weights),
        ]
        if p
    }
    for stale in folder.glob("*.png"):
        if stale.name not in kept:
            stale.unlink()
    return drawn

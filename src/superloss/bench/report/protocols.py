"""report.md's protocol sections: paper defaults vs tuned on noisy validation, ranks, grid scores;
and, for noise detection, each approach's time against cleanlab's.

The rows and choices come from :func:`superloss.bench.tuning.settings`; this module only lays them
out. The headline is the validation-selected test metric, with the final epoch's beside it and the
best epoch's, a test-set oracle, last.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from superloss.bench.report.summary import Stat, Table, decimals, describe, flat_settings
from superloss.bench.tuning import ProtocolRow, Setting, settings, variant_label

PROTOCOLS = (
    ("defaults", "Paper defaults", "each method at its declared defaults (the sources are in "
     "each method's file)"),
    ("tuned", "Tuned on noisy validation", "each method's grid point with the best mean "
     "validation score over the seeds, chosen per noise rate from the noisy validation split "
     "alone (ties: the paper default); a method with nothing to tune, and SuperLoss's auto "
     "mode, as in the defaults"),
)  # fmt: skip
COLUMNS = ("selected", "final", "best")
TARGET_SLACK = 1.05  # the time target: ≤ 1.05 / (K − 1) of cleanlab's K-fold time


def _stat(records: list[dict[str, Any]], stat: str, metric: str) -> Stat:
    values = []
    for record in records:
        value = record.get(stat, {}).get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values.append(float(value))
    return describe(values)


def _cell(stat: Stat, places: int) -> str:
    if stat.n == 0:
        return "—"
    if stat.mean is None or stat.std is None:
        return f"non-finite ({stat.n})"
    return f"{stat.mean:.{places}f} ± {stat.std:.{places}f} ({stat.n})"


def ranks(rows: list[ProtocolRow], metric: str, higher_is_better: bool) -> dict[str, int]:
    """Competition ranks (1, 2, 2, 4) of the rows of one noise rate on the validation-selected
    test metric's mean; rows without a finite mean are not ranked."""
    means = {}
    for row in rows:
        mean = _stat(row.records, "selected", metric).mean
        if mean is not None:
            means[row.label] = mean
    sign = -1.0 if higher_is_better else 1.0
    return {
        label: 1 + sum(sign * other < sign * mean for other in means.values())
        for label, mean in means.items()
    }


def _protocol_table(
    rows: list[ProtocolRow], noises: list[float], table: Table, places: int
) -> list[str]:
    metric = table.primary
    lines = [
        f"| noise | method | hyper-parameters | **validation-selected {metric}** | rank | "
        f"final epoch | best epoch (test-set oracle) |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for noise in noises:
        at_noise = [row for row in rows if row.noise == noise]
        ranked = ranks(at_noise, metric, table.higher_is_better)
        for row in at_noise:
            cells = [_cell(_stat(row.records, stat, metric), places) for stat in COLUMNS]
            rank = str(ranked[row.label]) if row.label in ranked else "—"
            lines.append(
                f"| {noise:g} | {row.label} | {row.params} | **{cells[0]}** | {rank} | "
                f"{cells[1]} | {cells[2]} |"
            )
    return lines


def _rank_table(setting: Setting, table: Table) -> list[str]:
    noises = setting.noises
    columns = [(key, noise) for key, _, _ in PROTOCOLS for noise in noises]
    labels = list(dict.fromkeys(row.label for row in [*setting.defaults, *setting.tuned]))
    found: dict[tuple[str, float], dict[str, int]] = {}
    for key, noise in columns:
        rows = [row for row in getattr(setting, key) if row.noise == noise]
        found[(key, noise)] = ranks(rows, table.primary, table.higher_is_better)
    header = " | ".join(f"{key} {noise:g}" for key, noise in columns)
    lines = [f"| method | {header} |", "|---|" + "---:|" * len(columns)]
    for label in labels:
        cells = [str(found[column].get(label, "—")) for column in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _grid_table(setting: Setting, places: int) -> list[str]:
    choices = [choice for choice in setting.choices if choice.scores]
    if not choices:
        return []
    lines = [
        "**Grid scores** (mean over seeds of each run's best noisy-validation score; the "
        "choice reads nothing else)",
        "",
        "| method | noise | " + " | ".join(f"point {i + 1}" for i in range(_width(setting)))
        + " | chosen | why |",
        "|---|---:|" + "---|" * _width(setting) + "---|---|",
    ]  # fmt: skip
    for choice in choices:
        cells = []
        for score in choice.scores:
            value = score["validation_score"]
            text = ", ".join(f"{k}={v}" for k, v in score["values"].items())
            shown = "NaN" if not math.isfinite(value) else f"{value:.{places}f}"
            chosen = choice.chosen is not None and score["values"] == choice.chosen
            cells.append(f"**{text}: {shown}**" if chosen else f"{text}: {shown}")
        cells += [""] * (_width(setting) - len(cells))
        chosen_text = ", ".join(f"{k}={v}" for k, v in (choice.chosen or {}).items()) or "—"
        label = variant_label(choice.method, choice.variant)
        lines.append(
            f"| {label} | {choice.noise:g} | "
            + " | ".join(cells)
            + f" | {chosen_text} | {choice.reason} |"
        )
    return [*lines, ""]


def _width(setting: Setting) -> int:
    return max((len(choice.scores) for choice in setting.choices), default=0)


def _places(setting: Setting, metric: str) -> int:
    means = [
        mean
        for row in [*setting.defaults, *setting.tuned]
        for stat in COLUMNS
        for mean in [_stat(row.records, stat, metric).mean]
        if mean is not None
    ]
    return decimals(means)


def _setting_title(setting: Setting, table: Table) -> str | None:
    """The setting's fields (its task's options among them) that are not the same in every row of
    the table, if any."""
    shared = table.settings
    differ = {
        k: v
        for k, v in flat_settings(setting.fields).items()
        if k not in table.fields and k not in table.split and (k not in shared or shared[k] != v)
    }
    return ", ".join(f"{k}={v}" for k, v in sorted(differ.items())) or None


def protocol_section(table: Table) -> list[str]:
    """The two protocols' tables, the ranks and the grid scores of each setting of ``table``."""
    records = [record for group in table.groups for record in group.records]
    found = [
        s
        for s in settings(records, table.primary, table.higher_is_better)
        if len({row.label for row in s.defaults}) >= 2
    ]
    if not found:
        return []
    lines = [
        f"### Paper defaults and tuned on noisy validation ({table.primary})",
        "",
        f"Headline: the **validation-selected** test {table.primary} (the epoch of the best "
        "noisy-validation score), with the final epoch's beside it; the best epoch's reads the "
        "test set to pick the epoch, a test-set oracle. Ranks are per noise rate, on the "
        "validation-selected mean (1 = best; ties share a rank).",
        "",
    ]
    for setting in found:
        lines += _setting_lines(setting, table)
    return lines


def _setting_lines(setting: Setting, table: Table) -> list[str]:
    title = _setting_title(setting, table)
    lines = [f"#### {title}", ""] if title else []
    places = _places(setting, table.primary)
    tuned = any(choice.chosen is not None for choice in setting.choices)
    for key, name, explained in PROTOCOLS:
        lines += [f"**{name}**: {explained}.", ""]
        if key == "tuned" and not tuned:
            lines += [
                "Not tuned in this folder: `superloss tune TASK …` (or a `tune-*` preset) runs "
                "every method's grid.",
                "",
            ]
            continue
        lines += _protocol_table(getattr(setting, key), setting.noises, table, places)
        lines.append("")
    if tuned:
        lines += ["**Ranks** (validation-selected)", "", *_rank_table(setting, table), ""]
        lines += _grid_table(setting, places)
    return lines


# -- noise detection: time against cleanlab ----------------------------------------------------------


def _mean_time(records: list[dict[str, Any]], key: str) -> float | None:
    values = [
        float(r["detection"][key])
        for r in records
        if isinstance(r.get("detection"), dict)
        and isinstance(r["detection"].get(key), (int, float))
    ]
    return statistics.fmean(values) if values else None


def time_section(table: Table) -> list[str]:
    """Noise detection: each approach's time and its ratio to cleanlab's, against the target."""
    if table.fields["task"] != "noise-detection":
        return []
    lines = [
        "### Time against cleanlab",
        "",
        "What each approach needs, mean over seeds: the SuperLoss and CE trackers' training and "
        "scoring (`time_without_evaluation_s`: detecting needs no per-epoch evaluation); "
        "cleanlab's K fold trainings, the held-out evaluation that selects each fold's epoch, "
        "and its scoring (`time_s`). Target: the tracker ≤ 1.05 / (K − 1) of cleanlab's time "
        "(K − 1 single runs is what cleanlab's K folds on (K−1)/K of the data cost; one run "
        "cannot beat 1 / (K − 1)).",
        "",
        "| noise | K | tracker | tracker s | cleanlab s | tracker / cleanlab | target | met |",
        "|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for noise in table.noises:
        groups = [g for g in table.groups if g.noise == noise]
        cleanlab = next((g for g in groups if g.method == "cleanlab"), None)
        if cleanlab is None:
            continue
        folds = int(cleanlab.config.get("task_params", {}).get("folds", 5))
        target = TARGET_SLACK / (folds - 1)
        theirs = _mean_time(cleanlab.records, "time_s")
        # One row per tracker: every SuperLoss variant (its own label) and CE's trajectory.
        for group in sorted(groups, key=lambda g: (g.method != "superloss", g.label)):
            if group is cleanlab:
                continue
            ours = _mean_time(group.records, "time_without_evaluation_s")
            ratio = ours / theirs if ours is not None and theirs else None
            met = "—" if ratio is None else ("yes" if ratio <= target else "**no**")
            shown = [f"{t:.2f}" if t is not None else "—" for t in (ours, theirs)]
            lines.append(
                f"| {noise:g} | {folds} | {group.label or group.method} | {' | '.join(shown)} | "
                f"{'—' if ratio is None else f'{ratio:.3f}'} | ≤ {target:.3f} | {met} |"
            )
    return [*lines, ""]

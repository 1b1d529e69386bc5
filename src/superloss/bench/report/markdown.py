"""report.md: the tables, the SuperLoss-vs-plain-loss comparison and the plots, as Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from superloss.bench.report.plots import TablePlots
from superloss.bench.report.protocols import protocol_section, time_section
from superloss.bench.report.summary import STATS, Comparison, Stat, Table, comparisons, decimals
from superloss.bench.timing import SESSIONS, Session, duration

# The headline first: what one can pick without clean labels; then the last epoch; the oracle last.
SHOWN = ("selected", "final", "best")

STAT_TITLES = {
    "final": "Final epoch",
    "best": "Best epoch (oracle)",
    "selected": "Validation-selected",
}
STAT_EXPLAINED = {
    "final": "the test metric after the last epoch: what training to the end gives.",
    "best": "the best test metric over all epochs: an optimistic oracle, since it reads the test "
    "set to pick the epoch.",
    "selected": "the test metric at the epoch of the best validation score, where the validation "
    "labels carry the same noise as the training labels: what one can pick without clean labels.",
}
VERDICTS = {
    "better": "SuperLoss better, beyond the seed spread",
    "worse": "SuperLoss worse, beyond the seed spread",
    "within": "within the seed spread",
    "one seed": "one seed: spread unknown, not judged",
    "n/a": "non-finite values: not judged",
}


def _number(value: float, places: int) -> str:
    return f"{value:.{places}f}"


def cell(stat: Stat | None, places: int, bold: bool = False) -> str:
    if stat is None or stat.n == 0:
        return "—"
    if stat.mean is None or stat.std is None:
        return f"non-finite ({stat.n})"
    text = f"{_number(stat.mean, places)} ± {_number(stat.std, places)} ({stat.n})"
    return f"**{text}**" if bold else text


def _noise(noise: float) -> str:
    return f"{noise:g}"


def _versions(records: list[dict[str, Any]]) -> str:
    seen: dict[str, dict[str, int]] = {}
    for record in records:
        versions = record.get("versions")
        for name, version in (versions if isinstance(versions, dict) else {}).items():
            counts = seen.setdefault(name, {})
            counts[str(version)] = counts.get(str(version), 0) + 1
    if not seen:
        return "not recorded"
    parts = []
    for name in sorted(seen):
        counts = seen[name]
        if len(counts) == 1:
            parts.append(f"{name} {next(iter(counts))}")
        else:
            mixed = ", ".join(f"{v} ({n} runs)" for v, n in sorted(counts.items()))
            parts.append(f"{name} {mixed}")
    return "; ".join(parts)


def _direction(table: Table) -> str:
    word = "Higher" if table.higher_is_better else "Lower"
    text = f"{word} is better (metrics of the `{table.fields['task']}` task)."
    if not table.direction_known:
        text += " The task is not registered here, so the direction is assumed, not known."
    return text


def metric_table(table: Table, metric: str, stat: str, places: int) -> list[str]:
    """One Markdown table: rows × noise rates, the best mean of each column in bold."""
    lines = [
        "| method | " + " | ".join(f"noise {_noise(n)}" for n in table.noises) + " |",
        "|---|" + "---:|" * len(table.noises),
    ]
    winners: dict[float, set[str]] = {}
    for noise in table.noises:
        means = {}
        for row in table.rows:
            group = table.cell(row, noise)
            mean = group.stat(stat, metric).mean if group is not None else None
            if mean is not None:
                means[row] = mean
        if len(means) >= 2:
            best = max(means.values()) if table.higher_is_better else min(means.values())
            winners[noise] = {row for row, mean in means.items() if mean == best}
    for row in table.rows:
        cells = []
        for noise in table.noises:
            group = table.cell(row, noise)
            described = group.stat(stat, metric) if group is not None else None
            cells.append(cell(described, places, row in winners.get(noise, set())))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def _realised_noise(table: Table) -> str | None:
    parts = []
    for noise in table.noises:
        values = [
            float(r["realised_noise"])
            for g in table.groups
            if g.noise == noise
            for r in g.records
            if isinstance(r.get("realised_noise"), (int, float))
        ]
        if values:
            parts.append(f"{_noise(noise)} → {sum(values) / len(values):.3f}")
    return ", ".join(parts) if parts else None


def _comparison_section(table: Table, places: int) -> list[str]:
    found = comparisons(table)
    if not found:
        return []
    metric = table.primary
    favours = "Δ > 0" if table.higher_is_better else "Δ < 0"
    lines = [
        f"### SuperLoss vs the plain loss ({metric})",
        "",
        f"Δ = mean(SuperLoss) − mean(plain loss); {favours} favours SuperLoss. "
        "Beyond the seed spread: |Δ| is larger than the larger of the two standard deviations. "
        "Seeds won: seeds where SuperLoss beats the plain loss on the same seed (the same data "
        "and label noise). Every noise rate and stat is listed.",
        "",
    ]
    for row, baseline, rows in found:
        lines += [
            f"**{row}** vs **{baseline}**",
            "",
            f"| stat | noise | {row} | {baseline} | Δ | larger std | seeds won | verdict |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for c in rows:
            delta = "—" if c.delta is None else f"{c.delta:+.{places}f}"
            spread = "—" if c.spread is None else _number(c.spread, places)
            lines.append(
                f"| {STAT_TITLES[c.stat]} | {_noise(c.noise)} | {cell(c.superloss, places)} | "
                f"{cell(c.baseline, places)} | {delta} | {spread} | "
                f"{c.seeds_won}/{c.seeds_paired} | {VERDICTS[c.verdict]} |"
            )
        lines.append("")
        lines += [f"- {line}" for line in _verdict_lines(rows)]
        lines.append("")
    return lines


def _verdict_lines(rows: list[Comparison]) -> list[str]:
    lines = []
    for stat in STATS:
        of_stat = [c for c in rows if c.stat == stat]
        if not of_stat:
            continue
        parts = []
        for verdict, words in (
            ("better", "better beyond the spread"),
            ("worse", "worse beyond the spread"),
            ("within", "within the spread"),
            ("one seed", "not judged (one seed)"),
            ("n/a", "not judged (non-finite)"),
        ):
            noises = [_noise(c.noise) for c in of_stat if c.verdict == verdict]
            if noises:
                parts.append(f"{words} at noise {', '.join(noises)}")
        lines.append(f"{STAT_TITLES[stat]}: SuperLoss is " + "; ".join(parts) + ".")
    return lines


def _image(alt: str, path: str | None) -> list[str]:
    return [f"![{alt}]({path})", ""] if path else []


def _times(records: list[dict[str, Any]], sessions: Sequence[Session]) -> list[str]:
    """The sweep's elapsed wall time (its sessions) and its summed run time, each labelled."""
    wall = [
        float(r["wall_time_s"]) for r in records if isinstance(r.get("wall_time_s"), (int, float))
    ]
    lines = []
    if sessions:
        count = len(sessions)
        elapsed = sum(session.elapsed_s for session in sessions)
        lines.append(
            f"- Elapsed wall time: {duration(elapsed)}, from the command's start to its last run, "
            f"summed over its {count} session{'' if count == 1 else 's'} in this folder "
            f"(`{SESSIONS}`)."
        )
        unrecorded = len(records) - sum(session.runs for session in sessions)
        if unrecorded > 0:
            lines.append(
                f"- {unrecorded} run(s) finished in sessions that left no record (killed, or an "
                "older version): their time is not in the elapsed time."
            )
    else:
        lines.append(f"- Elapsed wall time: not recorded (no `{SESSIONS}` in this folder).")
    if wall:
        lines.append(
            f"- Summed run time: {duration(sum(wall))}, the {len(wall)} runs' own times added up "
            f"({duration(sum(wall) / len(wall))} per run on average; runs trained at once under "
            "--jobs overlap, so it can exceed the elapsed time)."
        )
    return lines


def _header(
    tables: list[Table],
    records: list[dict[str, Any]],
    notes: list[str],
    sessions: Sequence[Session] = (),
) -> list[str]:
    groups = sum(len(t.groups) for t in tables)
    lines = [
        "# SuperLoss benchmark report",
        "",
        f"Rebuilt from `results.jsonl`: {len(records)} runs in {groups} groups (a group: one "
        f"config over seeds), in {len(tables)} table{'' if len(tables) == 1 else 's'}.",
        "",
        f"- Versions: {_versions(records)}.",
        *_times(records, sessions),
    ]
    lines += [f"- {note}" for note in notes]
    lines += [
        "",
        "Each cell is mean ± std (n) over n seeds; std is the sample standard deviation "
        "(ddof = 1), shown as 0 when n = 1. A smaller n than elsewhere means runs of that cell are "
        "missing (an unfinished sweep). The best mean of each column is in bold.",
        "",
    ]
    lines += [f"- **{STAT_TITLES[s]}**: {STAT_EXPLAINED[s]}" for s in SHOWN]
    lines.append("")
    return lines


def _table_preamble(table: Table) -> list[str]:
    lines = [f"## {table.title}", "", _direction(table)]
    if table.settings:
        shared = ", ".join(f"{k}={v}" for k, v in table.settings.items())
        lines += ["", f"Settings of every row: {shared}."]
    if table.params:
        off = "; ".join(
            f"{method} " + ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
            for method, params in table.params.items()
        )
        lines += [
            "",
            f"Hyper-parameters off their defaults, in every row of the method: {off}.",
        ]
    realised = _realised_noise(table)
    if realised:
        lines += [
            "",
            f"Realised share of corrupted training labels (mean over runs): {realised}.",
        ]
    lines.append("")
    return lines


def _metric_section(table: Table, table_plots: TablePlots, metric: str) -> list[str]:
    means = [
        v for g in table.groups for s in STATS for v in [g.stat(s, metric).mean] if v is not None
    ]
    places = decimals(means)
    primary = " (primary metric)" if metric == table.primary else ""
    lines = [f"### {metric}{primary}", ""]
    for stat in SHOWN:
        lines += [f"**{STAT_TITLES[stat]}**", ""]
        lines += metric_table(table, metric, stat, places)
        lines.append("")
    lines += _image(f"{metric} vs noise rate", table_plots.vs_noise.get(metric))
    if metric == table.primary:
        lines += _image(f"test {metric} per epoch", table_plots.curves)
        lines += _comparison_section(table, places)
    return lines


def _weights_section(table_plots: TablePlots) -> list[str]:
    if not (table_plots.weights or table_plots.auroc):
        return []
    lines = [
        "### Per-sample weights σ on clean and mislabelled training samples",
        "",
        "Histograms of σ at the recorded epochs (counts summed over seeds, shown as the "
        "share of each kind of sample); AUROC of −σ for picking out mislabelled samples "
        "(0.5: no better than chance).",
        "",
    ]
    for label, path in table_plots.weights:
        lines += _image(f"σ histograms of {label}", path)
    return lines + _image("AUROC of σ per epoch", table_plots.auroc)


def render(
    tables: list[Table],
    records: list[dict[str, Any]],
    plots: list[TablePlots],
    notes: list[str],
    sessions: Sequence[Session] = (),
) -> str:
    lines = _header(tables, records, notes, sessions)
    for table, table_plots in zip(tables, plots, strict=True):
        lines += _table_preamble(table)
        lines += time_section(table)
        if table.fields["task"] != "noise-detection":  # its rows are approaches, not methods
            lines += protocol_section(table)
        for metric in table.metrics:
            lines += _metric_section(table, table_plots, metric)
        lines += _weights_section(table_plots)
    return "\n".join(lines).rstrip() + "\n"

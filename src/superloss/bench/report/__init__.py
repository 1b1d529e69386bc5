"""The report of a results folder, rebuilt from ``results.jsonl`` alone.

``write_report(DIR)`` writes:

- ``DIR/summary.json``: one row per group (a config over seeds) × metric × stat (final, best,
  selected), with mean, sample std (ddof = 1; 0 when n = 1) and n;
- ``DIR/report.md``: the sweep's elapsed wall time (``DIR/sessions.jsonl``) and summed run time;
  per task, dataset, model, noise type and epoch count, tables of methods × noise rates, a
  SuperLoss-vs-plain-loss comparison, and the plots, linked relatively;
- ``DIR/plots/*.png``: metrics vs noise rate, the test metric per epoch, σ histograms and σ AUROC;
- ``DIR/tuning.json``, where the folder holds a tuning sweep: the grid point chosen on the noisy
  validation split per setting, method variant and noise rate, with every point's score.

Only the records of one package version are reported: the running one's, else the latest found;
the others are left out, and the report says so.

Which way a metric is better comes from the task or protocol that ran it (``protocols.experiment``);
every key of a record's ``final`` is a metric.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from superloss.bench.registry import UnknownName
from superloss.bench.report.markdown import render
from superloss.bench.report.plots import TablePlots, draw
from superloss.bench.report.summary import (
    Table,
    build_tables,
    is_complete,
    summary_rows,
)
from superloss.bench.results import load_results, record_version, results_path
from superloss.bench.timing import load_sessions

REPORT = "report.md"
SUMMARY = "summary.json"
TUNING = "tuning.json"

__all__ = ["REPORT", "SUMMARY", "TUNING", "build", "write_report"]


def _release(version: str | None) -> tuple[int, ...]:
    parts = []
    for part in (version or "").split("."):
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def one_version(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of the running superloss version (else of the latest found), and a note on
    those left out."""
    import superloss

    found = {record_version(r) for r in records}
    if not found:
        return records, []
    chosen = superloss.__version__ if superloss.__version__ in found else max(found, key=_release)
    kept = [r for r in records if record_version(r) == chosen]
    left = sorted({str(v) for v in found if v != chosen})
    notes = []
    if chosen != superloss.__version__:
        notes.append(
            f"No record of superloss {superloss.__version__} (the running version): the report "
            f"uses {chosen}'s."
        )
    if left:
        notes.append(
            f"{len(records) - len(kept)} record(s) of superloss {', '.join(left)} left out: the "
            f"report uses {chosen}'s only (numbers change between versions; rerun the sweep)."
        )
    return kept, notes


def task_info(name: str) -> tuple[str, bool] | None:
    """The task's primary metric and whether higher is better; None if no task has that name."""
    from superloss.bench.protocols import experiment

    try:
        chosen = experiment(name)
    except UnknownName:
        return None
    return chosen.metric, chosen.higher_is_better


def table_options(name: str) -> dict[str, Any]:
    """The task's options that split tables (``Task.table_options``), with their defaults; none
    for a name that is not a task (a protocol's own command)."""
    from superloss.bench.options import defaults_of
    from superloss.bench.tasks import TASKS

    if name not in TASKS:
        return {}
    task = TASKS.get(name)
    defaults = defaults_of(task.Options)
    return {option: defaults[option] for option in task.table_options}


def method_defaults(name: str) -> dict[str, Any]:
    from superloss.bench.methods import METHODS

    try:
        return dict(METHODS.get(name).defaults)
    except UnknownName:
        return {}


def build(records: list[dict[str, Any]]) -> tuple[list[Table], list[dict[str, Any]], list[str]]:
    """Tables, kept records and notes from loaded records: incomplete and repeated runs left out."""
    complete = [r for r in records if is_complete(r)]
    notes = []
    if len(complete) < len(records):
        notes.append(f"{len(records) - len(complete)} incomplete record(s) left out.")
    complete, version_notes = one_version(complete)
    notes += version_notes
    kept: dict[str, dict[str, Any]] = {}
    for record in complete:
        kept.setdefault(str(record["key"]), record)  # the first of repeated runs
    if len(kept) < len(complete):
        notes.append(
            f"{len(complete) - len(kept)} repeated run(s) left out (the first one is kept)."
        )
    unique = list(kept.values())
    tables = build_tables(unique, task_info, method_defaults, table_options)
    seed_counts = {len(g.records) for t in tables for g in t.groups}
    if len(seed_counts) > 1:
        notes.append(
            f"Groups hold {min(seed_counts)} to {max(seed_counts)} seeds: the sweep is unfinished "
            "or was extended; n is given in every cell."
        )
    return tables, unique, notes


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_report(out_dir: Path) -> Path:
    """Write summary.json, report.md and plots/ from ``out_dir/results.jsonl``.

    Returns:
        The path of report.md.

    Raises:
        ValueError: the results file holds no complete record (or does not exist).
    """
    out_dir = Path(out_dir)
    path = results_path(out_dir)
    tables, records, notes = build(load_results(path))
    if not records:
        raise ValueError(f"{path} holds no complete result record to report on")
    _write_atomically(
        out_dir / SUMMARY, json.dumps(summary_rows(tables), indent=1, sort_keys=True) + "\n"
    )
    if importlib.util.find_spec("matplotlib") is not None:
        plots = draw(tables, out_dir)
    else:  # matplotlib is an optional dependency of the suite
        plots = [TablePlots() for _ in tables]
        notes.append("No plots: matplotlib is not installed.")
    choices = tuning_choices(tables)
    if choices:
        _write_atomically(out_dir / TUNING, json.dumps(choices, indent=1, sort_keys=True) + "\n")
    report = out_dir / REPORT
    _write_atomically(report, render(tables, records, plots, notes, load_sessions(out_dir)))
    return report


def tuning_choices(tables: list[Table]) -> list[dict[str, Any]]:
    """The choices of every tuning sweep in ``tables`` (none where no grid is complete)."""
    from superloss.bench.tuning import choices_json, settings

    found = []
    for table in tables:
        if table.fields["task"] == "noise-detection":
            continue
        records = [record for group in table.groups for record in group.records]
        chosen = settings(records, table.primary, table.higher_is_better)
        found += [c for c in choices_json(chosen) if c["chosen"] is not None]
    return found

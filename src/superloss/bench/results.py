"""The results file: one JSON line per finished run, appended atomically; the sweep's plan beside it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS = "results.jsonl"
PLAN = "sweep.json"


def results_path(out_dir: Path) -> Path:
    return Path(out_dir) / RESULTS


def append_result(path: Path, record: dict[str, Any]) -> None:
    """Append one line with a single write on an O_APPEND descriptor, then fsync.

    If an earlier writer died mid-line, the torn line is closed with a newline first (it is skipped
    on reading), so the new record always stands on a line of its own.
    """
    line = json.dumps(record, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as existing:
                existing.seek(size - 1)
                if existing.read(1) != b"\n":
                    line = "\n" + line
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def load_results(path: Path) -> list[dict[str, Any]]:
    """Every complete record of ``path``; torn or blank lines (a run killed mid-write) are skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "key" in record:
            records.append(record)
    return records


def record_version(record: dict[str, Any]) -> str | None:
    """The superloss version that made a record (None where it was not recorded)."""
    versions = record.get("versions")
    found = versions.get("superloss") if isinstance(versions, dict) else None
    return str(found) if found is not None else None


def finished_keys(path: Path, version: str | None = None) -> set[str]:
    """The keys of the finished runs of ``path``; with ``version``, of those it made only."""
    return {
        record["key"]
        for record in load_results(path)
        if version is None or record_version(record) == version
    }


def other_versions(path: Path, version: str) -> dict[str, int]:
    """How many records of ``path`` each superloss version other than ``version`` made."""
    counts: dict[str, int] = {}
    for record in load_results(path):
        found = record_version(record)
        if found != version:
            name = found or "an unrecorded version"
            counts[name] = counts.get(name, 0) + 1
    return counts


class PlanMismatch(ValueError):
    """A different sweep asked of a folder that already holds one."""


def check_plan(out_dir: Path, keys: list[str], add: bool) -> list[str]:
    """The plan to record for ``out_dir``: refuse a different one unless ``add`` (then the union)."""
    path = Path(out_dir) / PLAN
    if not path.exists():
        if results_path(out_dir).exists() and not add:
            raise PlanMismatch(
                f"{out_dir} already holds results of another sweep; pass --add to add to it or choose another --out"
            )
        return keys
    planned = json.loads(path.read_text())["runs"]
    if set(keys) <= set(planned):
        return planned
    if not add:
        raise PlanMismatch(
            f"{out_dir} holds a different sweep ({len(planned)} runs); pass --add to add these runs to it, "
            "or choose another --out"
        )
    return planned + [k for k in keys if k not in set(planned)]


def write_plan(out_dir: Path, keys: list[str]) -> None:
    path = Path(out_dir) / PLAN
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"runs": keys}, indent=1))
    os.replace(temporary, path)

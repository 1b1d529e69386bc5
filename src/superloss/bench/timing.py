"""How long a sweep took: each session of the command that trained in a folder, and how times read.

A results line holds its own run's time (``wall_time_s``); what those cannot tell is the elapsed
time — runs overlap under ``--jobs``, and an interrupted sweep resumed later has a gap. So every
command that trains appends one line to ``DIR/sessions.jsonl`` when it ends, stopped or not: when it
started, how long it ran (from its start, data checks included, to its last run), how many runs it
finished. The report's elapsed wall time is the sum over the sessions.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SESSIONS = "sessions.jsonl"


@dataclass(frozen=True)
class Session:
    """One command's stay in a results folder."""

    started_at: str  # ISO 8601, the machine's local time with its offset
    elapsed_s: float
    runs: int  # runs it finished
    jobs: int
    stopped_by: str | None = None  # SIGINT or SIGTERM when it was stopped


def record_session(out_dir: Path, started: float, ended: float, **fields: Any) -> None:
    """Append the session that ran from ``started`` to ``ended`` (``time.time()`` values)."""
    moment = datetime.datetime.fromtimestamp(started).astimezone()
    session = Session(moment.isoformat(timespec="seconds"), round(ended - started, 3), **fields)
    path = Path(out_dir) / SESSIONS
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(asdict(session)) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def load_sessions(out_dir: Path) -> list[Session]:
    """The recorded sessions of ``out_dir``; unreadable lines (a session killed mid-write) skipped."""
    path = Path(out_dir) / SESSIONS
    if not path.is_file():
        return []
    sessions = []
    for line in path.read_text().splitlines():
        try:
            sessions.append(Session(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue
    return sessions


def duration(seconds: float) -> str:
    """``4.2 s``, ``3 min 7 s``, ``2 h 5 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"

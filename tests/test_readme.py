"""The README's Python blocks run, and .ci/run runs the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)


def _setup_commands() -> list[str]:
    section = README.split("## Set-up commands", 1)[1]
    return [c.strip() for c in re.findall(r"```\n(.*?)```", section, flags=re.S)]


def test_readme_has_exactly_two_setup_commands() -> None:
    main_job, tests = _setup_commands()
    assert "superloss reproduce" in main_job and "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    _, tests = _setup_commands()
    assert tests in (ROOT / ".ci" / "run").read_text()

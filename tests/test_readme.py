"""The README's Python blocks run, and .ci/run runs the README's test command."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_each_readme_python_block_runs_alone_and_writes_only_to_a_temporary_folder(
    number: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block pasted on its own runs (its imports and data are its own) and leaves the current
    folder as it was: what it writes goes to a temporary folder."""
    here, temporary = tmp_path / "here", tmp_path / "temporary"
    here.mkdir()
    temporary.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    exec(compile(BLOCKS[number], f"README.md block {number + 1}", "exec"), {"__name__": "readme"})
    assert sorted(p.name for p in here.iterdir()) == []


def _setup_commands() -> list[str]:
    section = README.split("## Set-up commands", 1)[1]
    return [c.strip() for c in re.findall(r"```\n(.*?)```", section, flags=re.S)]


def test_readme_has_exactly_two_setup_commands() -> None:
    main_job, tests = _setup_commands()
    assert "superloss reproduce" in main_job and "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    _, tests = _setup_commands()
    assert tests in (ROOT / ".ci" / "run").read_text()

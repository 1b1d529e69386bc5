"""Integrations import their framework only when imported, and name the extra when it is missing."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

INTEGRATIONS = [
    ("lightning", ("lightning",), "lightning"),
    ("torchvision", ("torchvision",), "detection"),
    ("metric_learning", ("pytorch_metric_learning",), "metric-learning"),
]


@pytest.mark.parametrize(("integration", "frameworks", "extra"), INTEGRATIONS)
def test_a_missing_framework_names_the_extra_in_one_line(
    integration: str, frameworks: tuple[str, ...], extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every module of the framework, submodules already imported included: importing any of them
    # now fails, as if the framework were not installed.
    for name in list(sys.modules):
        if name.split(".")[0] in frameworks:
            monkeypatch.setitem(sys.modules, name, None)
    for framework in frameworks:
        monkeypatch.setitem(sys.modules, framework, None)
    monkeypatch.delitem(sys.modules, f"superloss.integrations.{integration}", raising=False)
    with pytest.raises(ImportError) as raised:
        importlib.import_module(f"superloss.integrations.{integration}")
    message = str(raised.value)
    assert f'pip install "superloss[{extra}]"' in message
    assert f"superloss.integrations.{integration}" in message
    assert "\n" not in message


def test_importing_superloss_imports_no_framework() -> None:
    code = (
        "import sys, superloss, superloss.integrations, superloss.integrations.transformers; "
        "loaded = {m.split('.')[0] for m in sys.modules}; "
        "extra = loaded & {'lightning', 'transformers', 'torchvision', 'pytorch_metric_learning'}; "
        "assert not extra, extra"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

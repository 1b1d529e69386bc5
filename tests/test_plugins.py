"""The plug-in contracts: registries, typed hyper-parameters and options, what each task accepts."""

from __future__ import annotations

import dataclasses

import pytest

from superloss.bench.config import RunConfig
from superloss.bench.data import DATASETS
from superloss.bench.methods import METHODS
from superloss.bench.models import MODELS
from superloss.bench.noise import NOISES
from superloss.bench.options import options_of, parse
from superloss.bench.protocols import PROTOCOLS, experiment
from superloss.bench.protocols.base import experiment_names
from superloss.bench.registry import Registry, UnknownName
from superloss.bench.tasks import TASKS


def test_registry_names_aliases_and_clashes() -> None:
    registry: Registry[object] = Registry("thing")
    registry.register("one", "uno")(len)
    assert registry.get("uno") is len and "uno" in registry and registry.names() == ["one"]
    assert registry.entries() == [("one", len)]
    with pytest.raises(ValueError, match="thing 'one' is registered twice"):
        registry.register("one")(abs)
    with pytest.raises(UnknownName, match="unknown thing 'two'; expected one of: one, uno"):
        registry.get("two")


def test_plain_is_an_alias_of_ce() -> None:
    assert METHODS.get("plain") is METHODS.get("ce")
    assert "plain" not in METHODS.names() and "plain" in METHODS.names(aliases=True)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_hyper_parameter_is_declared_with_a_help_and_a_valid_default(name: str) -> None:
    method = METHODS.get(name)
    assert method.name == name
    for item in options_of(method.hyper_parameters):
        assert item.spec.help and item.spec.help[0].islower(), (name, item.name)
        item.check(item.default, name)  # the declared default passes its own declaration


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("gce", {"q": 5}, r"gce q must be in \(0, 1\], got 5"),
        (
            "superloss",
            {"lam": "abc"},
            "superloss lam must be one of auto, auto-hold, or a number > 0, got 'abc'",
        ),
        (
            "superloss",
            {"lam": -1},
            "superloss lam must be a number > 0 or one of auto, auto-hold, got -1",
        ),
        ("superloss", {"tau": "median"}, "superloss tau must be one of auto, log_classes"),
        ("spl", {"growth": float("inf")}, "spl growth must be a finite number"),
        ("sce", {"alpha": True}, "sce alpha must be a number, got True"),
    ],
)
def test_hyper_parameters_are_checked_from_their_declaration(
    method: str, params: dict[str, object], message: str
) -> None:
    # What a command line can check before anything is written: no method is built.
    with pytest.raises(ValueError, match=message):
        parse(METHODS.get(method).hyper_parameters, params, method, noun="hyper-parameter")


def test_tasks_declare_what_they_accept() -> None:
    classification, regression = TASKS.get("classification"), TASKS.get("regression")
    detection = TASKS.get("detection")
    assert set(classification.choices("dataset")) == set(DATASETS.names())
    assert "detector" not in classification.choices("model")
    assert "mlp" not in detection.choices("model")
    assert set(detection.choices("model")) == {"detector", "fasterrcnn"}
    assert set(regression.choices("noise_type")) == {"uniform", "heavy-tailed"}
    assert "uniform" not in classification.choices("noise_type")
    assert {"symmetric", "asymmetric"} <= set(classification.choices("noise_type"))
    assert set(detection.choices("noise_type")) <= set(NOISES.names())
    assert detection.accepts("noise_type", "symmetric")  # an alias of box-flip
    assert "gce" in classification.choices("method") and "gce" not in regression.choices("method")
    assert "mnist1d" not in regression.choices("dataset")
    for task in (classification, regression, detection):
        assert set(task.choices("model")) <= set(MODELS.names())


def test_tasks_are_built_per_run_with_typed_options() -> None:
    first = TASKS.get("regression")(RunConfig(task="regression", task_params={"base_loss": "l1"}))
    second = TASKS.get("regression")(RunConfig(task="regression"))
    assert first is not second
    assert first.options.base_loss == "l1" and second.options.base_loss == "l2"
    assert dataclasses.is_dataclass(first.options)


def test_commands_are_tasks_and_protocols_with_a_command() -> None:
    assert set(experiment_names()) == {*TASKS.names(), "noise-detection"}
    assert "training" in PROTOCOLS and "training" not in experiment_names()
    noise_detection = experiment("noise-detection")
    assert noise_detection.task.name == "classification" and noise_detection.metric == "auroc"
    assert noise_detection.methods() == ["superloss", "ce", "cleanlab"]
    assert experiment("regression").protocol is PROTOCOLS.get("training")
    with pytest.raises(UnknownName, match="unknown task 'nope'"):
        experiment("nope")

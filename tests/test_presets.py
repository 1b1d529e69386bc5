"""The presets hold what the acceptance measures: the noise settings, every method and SuperLoss on
each robust base, the regression losses and the units check, and a tuning sweep of the same."""

from __future__ import annotations

from superloss.bench.config import RunConfig
from superloss.bench.presets import PRESETS, preset


def _configs(name: str) -> list[RunConfig]:
    return [config for sweep in preset(name) for config in sweep.configs()]


def _rows(configs: list[RunConfig], task: str) -> set[tuple[str, str]]:
    return {(c.method, str(sorted(c.method_params.items()))) for c in configs if c.task == task}


def test_presets_are_named_and_unknown_ones_refused() -> None:
    assert set(PRESETS) == {"quick", "full", "tune-quick", "tune-full"}
    try:
        preset("nope")
    except ValueError as error:
        assert "expected one of quick, full, tune-quick, tune-full" in str(error)
    else:
        raise AssertionError("an unknown preset was accepted")


def test_quick_and_full_hold_the_acceptance_settings() -> None:
    methods = {"ce", "superloss", "gce", "sce", "bootstrap", "spl", "data-params"}
    for name, dataset in (("quick", "digits"), ("full", "mnist")):
        configs = _configs(name)
        classification = [c for c in configs if c.task == "classification"]
        assert {c.dataset for c in classification} == {dataset}
        settings = {(c.noise_type, c.noise) for c in classification}
        # Symmetric 0.2: in full, and in tune-quick (trimmed from quick for time).
        rates = (0.0, 0.2, 0.4, 0.6) if name == "full" else (0.0, 0.4, 0.6)
        assert settings == {("symmetric", r) for r in rates} | {("asymmetric", 0.4)}
        for noise_type, noise in settings:
            here = [c for c in classification if (c.noise_type, c.noise) == (noise_type, noise)]
            assert {c.method for c in here if not c.method_params} == methods
            bases = {c.method_params.get("base") for c in here if c.method_params}
            # SuperLoss on GCE / SCE: in full, and in tune-quick (trimmed from quick for time).
            assert bases == ({"gce", "sce"} if name == "full" else set())
            assert {c.seed for c in here} == {0, 1, 2}
        regression = [c for c in configs if c.task == "regression" and c.dataset == dataset]
        standard = {
            (c.task_params["base_loss"], c.noise)
            for c in regression
            if not c.task_params["target_units"]
        }
        every_loss = {(loss, n) for loss in ("l1", "l2", "smooth-l1") for n in (0.0, 0.4, 0.6)}
        # The SGD sweep on normalised targets: full only (trimmed from quick for time).
        assert every_loss <= standard if name == "full" else not standard
        units = [c for c in regression if c.task_params["target_units"]]
        assert {c.task_params["target_scale"] for c in units} == {1.0, 10.0}
        assert {(c.optimizer, c.weight_decay) for c in units} == {("adam", 0.0)}
        assert {c.method for c in units} == {"plain", "superloss"}
        # Every base loss in full; L2's alone in quick (trimmed for time).
        losses = {"l1", "l2", "smooth-l1"} if name == "full" else {"l2"}
        assert {c.task_params["base_loss"] for c in units} == losses
        assert {c.noise for c in units} == {0.4, 0.6}


def test_tuning_presets_are_the_classification_sweeps_with_grids() -> None:
    for name, tuned in (("quick", "tune-quick"), ("full", "tune-full")):
        plain = {c.key() for c in _configs(name) if c.task == "classification"}
        grid = _configs(tuned)
        assert {c.task for c in grid} == {"classification"}
        assert plain < {c.key() for c in grid}  # the defaults, and every grid point beside them


def test_tune_quick_holds_every_setting_with_superloss_on_each_robust_base() -> None:
    every = {("symmetric", r) for r in (0.0, 0.2, 0.4, 0.6)} | {("asymmetric", 0.4)}
    defaults = [c for c in _configs("tune-quick") if not c.method_params]
    assert {(c.noise_type, c.noise) for c in defaults} == every
    assert len(defaults) == len(every) * 7 * 3  # the seven methods at their defaults, three seeds
    configs = [c for c in _configs("tune-quick") if c.method == "superloss"]
    for base in ("gce", "sce"):
        on_base = [c for c in configs if c.method_params.get("base") == base]
        assert {(c.noise_type, c.noise) for c in on_base} == every
        on_base_defaults = [c for c in on_base if c.method_params == {"base": base}]  # λ = auto
        assert len(on_base_defaults) == 5 * 3

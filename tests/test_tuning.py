"""The fair tuning protocol: grids declared beside the hyper-parameters, the sweep that runs them, the
choice on the noisy validation split (hand-checked, and blind to test metrics), the two protocols'
tables in the report, and ``superloss tune`` end to end."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from superloss.bench.cli import main
from superloss.bench.config import RunConfig
from superloss.bench.methods import METHODS
from superloss.bench.options import options_of
from superloss.bench.presets import Sweep, preset
from superloss.bench.report import write_report
from superloss.bench.tuning import (
    GRID_SIZE,
    Candidate,
    choose,
    expand,
    method_grid,
    settings,
    validation_score,
)

TUNED = ("superloss", "gce", "sce", "bootstrap", "spl", "data-params")
# Each grid as declared, with the published values it must hold (the sources in the docstrings).
EXPECTED_POINTS = {
    "superloss": [{"lam": 0.1}, {"lam": 0.25}, {"lam": 0.5}, {"lam": 1.0}],
    "gce": [{"q": 0.1}, {"q": 0.4}, {"q": 0.7}, {"q": 1.0}],
    "sce": [
        {"alpha": 0.01, "beta": 1.0},  # the authors' MNIST command
        {"alpha": 0.1, "beta": 1.0},  # CIFAR-10
        {"alpha": 1.0, "beta": 1.0},  # their train() default
        {"alpha": 6.0, "beta": 0.1},  # CIFAR-100
    ],
    "bootstrap": [{"beta": 0.6}, {"beta": 0.8}, {"beta": 0.9}, {"beta": 0.95}],
    "spl": [{"growth": 1.1}, {"growth": 1.3}, {"growth": 1.5}, {"growth": 2.0}],
    "data-params": [
        {"lr_instance": 0.05},
        {"lr_instance": 0.1},
        {"lr_instance": 0.2},
        {"lr_instance": 0.4},
    ],
}


# -- the grids -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TUNED)
def test_every_tuned_method_declares_a_grid_of_the_same_size(name: str) -> None:
    grid = method_grid(name)
    assert grid is not None
    assert len(grid.points) == GRID_SIZE >= 4
    assert list(grid.points) == EXPECTED_POINTS[name]
    assert all(source for source in grid.sources.values())
    defaults = METHODS.get(name).defaults
    assert grid.paper_default in grid.points  # a tie has a point to go to
    for item in options_of(METHODS.get(name).hyper_parameters):
        if item.spec.grid is not None:
            for value in item.spec.grid.values:
                item.check(value, name)  # every grid value is valid for its declaration
    # The declared default is a grid point (or a mode, which is never tuned).
    default_values = {n: defaults[n] for n in grid.names}
    assert default_values in grid.points or any(defaults[n] in grid.modes[n] for n in grid.names)


def test_methods_without_hyper_parameters_have_no_grid() -> None:
    assert method_grid("ce") is None and method_grid("plain") is None
    assert method_grid("not-a-method") is None
    suite = [n for n, cls in METHODS.entries() if cls.__module__.startswith("superloss.")]
    assert sorted(suite) == sorted([*TUNED, "ce"])  # every suite method is one or the other


def test_superloss_paper_default_is_one_and_auto_is_a_mode() -> None:
    grid = method_grid("superloss")
    assert grid is not None
    assert grid.paper_default == {"lam": 1.0}
    assert grid.modes["lam"] == ("auto", "auto-hold")
    assert "auto" not in [point["lam"] for point in grid.points]


# -- the sweep -------------------------------------------------------------------------------------


def test_expand_adds_each_grid_point_once_with_the_default_as_the_plain_run() -> None:
    configs = [RunConfig(method=m, noise=0.4) for m in ("ce", "gce", "sce")]
    expanded = expand(configs)
    by_method: dict[str, list[dict[str, Any]]] = {}
    for config in expanded:
        by_method.setdefault(config.method, []).append(config.method_params)
    assert by_method["ce"] == [{}]
    assert by_method["gce"] == [{}, {"q": 0.1}, {"q": 0.4}, {"q": 1.0}]  # q = 0.7 is {}
    assert by_method["sce"] == [{}, {"alpha": 0.01}, {"alpha": 1.0}, {"alpha": 6.0, "beta": 0.1}]
    assert len({c.key() for c in expanded}) == len(expanded) == 1 + 4 + 4


def test_expand_keeps_what_is_set_and_never_tunes_auto() -> None:
    fixed = expand([RunConfig(method="gce", method_params={"q": 0.3})])
    assert [c.method_params for c in fixed] == [{"q": 0.3}]
    auto = expand([RunConfig(method="superloss", method_params={"lam": "auto"})])
    assert [c.method_params for c in auto] == [{"lam": "auto"}]
    # The default λ is auto, a mode: the default run, then each of the four fixed λ of the grid.
    variant = expand([RunConfig(method="superloss", method_params={"base": "gce"})])
    assert [c.method_params for c in variant] == [
        {"base": "gce"},
        {"base": "gce", "lam": 0.1},
        {"base": "gce", "lam": 0.25},
        {"base": "gce", "lam": 0.5},
        {"base": "gce", "lam": 1.0},
    ]


def test_sweep_tune_expands_and_tune_presets_hold_every_grid() -> None:
    plain = Sweep("classification", "digits", ("ce", "gce"), (0.4,), seeds=2)
    tuned = Sweep("classification", "digits", ("ce", "gce"), (0.4,), seeds=2, tune=True)
    assert len(plain.configs()) == 4 and len(tuned.configs()) == 2 * (1 + 4)
    assert {c.key() for c in plain.configs()} <= {c.key() for c in tuned.configs()}
    configs = [c for sweep in preset("tune-quick") for c in sweep.configs()]
    quick = {c.key() for sweep in preset("quick") for c in sweep.configs()}
    settings_seen = {(c.noise_type, c.noise) for c in configs}
    assert settings_seen == {("symmetric", r) for r in (0.0, 0.2, 0.4, 0.6)} | {("asymmetric", 0.4)}
    for noise_type, noise in settings_seen:
        here = [c for c in configs if (c.noise_type, c.noise, c.seed) == (noise_type, noise, 0)]
        # ce once; 4 points for each of the 6 tuned methods and the 2 SuperLoss-on-base variants;
        # the 3 SuperLoss variants' default runs (λ = auto, a mode, not a grid point) on top.
        assert len(here) == 1 + GRID_SIZE * 8 + 3
        # The default runs are the quick preset's (SuperLoss on GCE / SCE is tune-quick's own): a
        # tuning sweep added to its folder reuses them.
        defaults = [c for c in here if c.method_params == {}]
        assert len(defaults) == 7
        if (noise_type, noise) != ("symmetric", 0.2):  # 0.2: trimmed from quick for time
            assert {c.key() for c in defaults} <= quick


# -- the choice ------------------------------------------------------------------------------------


def _run(
    method: str,
    params: dict[str, Any],
    seed: int,
    val: list[float],
    test: list[float],
    noise: float = 0.4,
) -> dict[str, Any]:
    """A hand-written record: per-epoch validation and test accuracies."""
    config = RunConfig(method=method, method_params=params, noise=noise, seed=seed, epochs=len(val))
    history = [
        {"epoch": e + 1, "train_loss": 1.0, "accuracy": t, "val_accuracy": v}
        for e, (v, t) in enumerate(zip(val, test, strict=True))
    ]
    chosen = max(range(len(val)), key=lambda e: val[e])
    return {
        "config": config.as_dict(),
        "key": config.key(),
        "versions": {"superloss": "0.2.0"},
        "history": history,
        "final": {"accuracy": test[-1]},
        "best": {"accuracy": max(test)},
        "selected": {"accuracy": test[chosen], "epoch": chosen + 1},
        "realised_noise": noise,
        "weight_histograms": [],
    }


# gce on two seeds. Best validation accuracy per run (seed 0, seed 1) and their mean:
#   q=0.1: (60, 62) → 61;  q=0.4: (70, 74) → 72;  q=0.7: (71, 71) → 71;  q=1.0: (50, 90) → 70.
# Chosen: q = 0.4 (72). The test accuracies are made to favour q = 1.0 everywhere.
GCE_VAL = {0.1: ([50, 60], [62, 40]), 0.4: ([65, 70], [74, 73]), 0.7: ([71, 10], [71, 71]),
           1.0: ([50, 20], [90, 80])}  # fmt: skip


def _gce_sweep(val: dict[float, tuple[list[float], list[float]]]) -> list[dict[str, Any]]:
    records = []
    for q, per_seed in val.items():
        params = {} if q == 0.7 else {"q": q}
        for seed, curve in enumerate(per_seed):
            test = [99.0 if q == 1.0 else 10.0 + e for e in range(len(curve))]
            records.append(_run("gce", params, seed, curve, test))
    return records


def _choice(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    (setting,) = settings(records, "accuracy", True)
    (choice,) = setting.choices
    return choice.chosen


def test_validation_score_is_the_best_validation_entry() -> None:
    record = _run("ce", {}, 0, [50.0, 70.0, 60.0], [1.0, 2.0, 3.0])
    assert validation_score(record, "accuracy", True) == 70.0
    assert validation_score(record, "accuracy", False) == 50.0
    record["history"][1]["val_accuracy"] = math.nan
    assert validation_score(record, "accuracy", True) == 60.0


def test_the_choice_is_the_hand_computed_one() -> None:
    records = _gce_sweep(GCE_VAL)
    assert _choice(records) == {"q": 0.4}
    (setting,) = settings(records, "accuracy", True)
    (choice,) = setting.choices
    assert [s["validation_score"] for s in choice.scores] == [61.0, 72.0, 71.0, 70.0]
    assert choice.seeds == [0, 1] and choice.reason == "best validation score"
    tuned = [row for row in setting.tuned if row.label == "gce"]
    assert len(tuned) == 1 and tuned[0].params == "q=0.4"
    assert {r["config"]["method_params"].get("q") for r in tuned[0].records} == {0.4}
    defaults = [row for row in setting.defaults if row.label == "gce"]
    assert len(defaults) == 1 and defaults[0].params == "q=0.7"


def test_a_tie_goes_to_the_paper_default_else_the_first_point() -> None:
    tie = copy.deepcopy(GCE_VAL)
    tie[0.7] = ([72, 10], [72, 72])  # q = 0.7 now ties q = 0.4 at 72
    records = _gce_sweep(tie)
    assert _choice(records) == {"q": 0.7}
    (setting,) = settings(records, "accuracy", True)
    assert setting.choices[0].reason == "tie of 2 points: the paper default"
    no_default = copy.deepcopy(GCE_VAL)
    no_default[0.1] = ([72, 0], [72, 0])  # q = 0.1 ties q = 0.4, the default is not tied
    assert _choice(_gce_sweep(no_default)) == {"q": 0.1}


def test_no_choice_on_an_incomplete_grid() -> None:
    records = [r for r in _gce_sweep(GCE_VAL) if r["config"]["method_params"] != {"q": 1.0}]
    assert _choice(records) is None
    uneven = [r for r in _gce_sweep(GCE_VAL) if not (r["config"]["seed"] == 1 and
              r["config"]["method_params"] == {"q": 0.1})]  # fmt: skip
    assert _choice(uneven) is None  # every point must have run on the same seeds


def test_lower_is_better_picks_the_smallest_score() -> None:
    grid = method_grid("gce")
    assert grid is not None
    candidates = [
        Candidate(point, [_run("gce", point, 0, [float(i + 1)], [0.0])])
        for i, point in enumerate(grid.points)
    ]
    assert choose(grid, candidates, "accuracy", False)[0] == grid.points[0]
    assert choose(grid, candidates, "accuracy", True)[0] == grid.points[-1]


def _perturb_test_metrics(records: list[dict[str, Any]], rng: random.Random) -> None:
    for record in records:
        for stat in ("final", "best", "selected"):
            record[stat]["accuracy"] = rng.uniform(0, 100)
        for entry in record["history"]:
            entry["accuracy"] = rng.uniform(0, 100)
            entry["train_loss"] = rng.uniform(0, 5)


@pytest.mark.parametrize("seed", range(5))
def test_the_choice_never_reads_test_metrics(seed: int) -> None:
    records = _gce_sweep(GCE_VAL)
    rng = random.Random(seed)
    perturbed = copy.deepcopy(records)
    _perturb_test_metrics(perturbed, rng)
    assert _choice(perturbed) == _choice(records) == {"q": 0.4}
    # The same perturbation of the validation entries does move it: the check can fail.
    moved = copy.deepcopy(records)
    for record in moved:
        if record["config"]["method_params"] == {"q": 1.0}:
            for entry in record["history"]:
                entry["val_accuracy"] += 10.0
    assert _choice(moved) == {"q": 1.0}


def test_auto_is_one_untuned_row_in_both_protocols() -> None:
    records = _gce_sweep(GCE_VAL)
    records += [_run("ce", {}, s, [60.0, 50.0], [80.0, 70.0]) for s in (0, 1)]
    records += [_run("superloss", {"lam": "auto"}, s, [65.0, 66.0], [85.0, 86.0]) for s in (0, 1)]
    hold = {"lam": "auto-hold"}
    records += [_run("superloss", hold, s, [64.0, 67.0], [84.0, 87.0]) for s in (0, 1)]
    records += [_run("superloss", {"base": "gce"}, s, [60.0, 55.0], [70.0, 71.0]) for s in (0, 1)]
    fixed = {"base": "gce", "lam": 0.5}
    records += [_run("superloss", fixed, s, [61.0, 56.0], [71.0, 72.0]) for s in (0, 1)]
    (setting,) = settings(records, "accuracy", True)
    order = list(dict.fromkeys(row.label for row in setting.defaults))
    assert order == [
        "ce",
        "superloss (lam=auto)",
        "superloss (lam=auto-hold)",
        "superloss (base=gce, lam=auto-hold)",  # the default mode shown
        "gce",
    ]
    for rows in (setting.defaults, setting.tuned):
        labels = [row.label for row in rows]
        assert labels.count("superloss (lam=auto)") == 1 and labels.count("ce") == 1
        for mode in ("auto", "auto-hold"):  # each mode one untuned row of its own
            assert labels.count(f"superloss (lam={mode})") == 1
            row = next(row for row in rows if row.label == f"superloss (lam={mode})")
            assert row.params == f"lam={mode} (untuned)" and not row.tuned
    # No choice for auto (a mode), nor ce; superloss (base=gce) has one fixed-λ grid point of
    # four: incomplete, so no choice either.
    assert [(c.method, c.chosen) for c in setting.choices] == [
        ("superloss", None),
        ("gce", {"q": 0.4}),
    ]


# -- the report ------------------------------------------------------------------------------------


def test_report_shows_both_protocols_ranks_and_grid_scores(tmp_path: Path) -> None:
    records = _gce_sweep(GCE_VAL)
    # ce: validation-selected test accuracy 80 (seed 0) and 70 (seed 1): mean 75.
    records += [_run("ce", {}, s, [60.0, 50.0], [80.0 - 10 * s, 0.0]) for s in (0, 1)]
    folder = tmp_path / "tuned"
    folder.mkdir()
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_report(folder)
    text = (folder / "report.md").read_text()
    assert "**Paper defaults**" in text and "**Tuned on noisy validation**" in text
    assert "best epoch (test-set oracle)" in text
    lines = text.splitlines()
    # Defaults: gce q=0.7's selected test accuracy is 10 (epoch 1) on both seeds: ce ranks 1.
    ce = [line for line in lines if line.startswith("| 0.4 | ce | — | **75.00 ± 7.07 (2)** | 1 |")]
    assert len(ce) == 2  # untuned: the same row in both protocols
    assert any(
        line.startswith("| 0.4 | gce | q=0.7 | **10.00 ± 0.00 (2)** | 2 |") for line in lines
    )
    # Tuned: q = 0.4, whose selected epoch is the second on seed 0 (11) and first on seed 1 (10).
    assert any(
        line.startswith("| 0.4 | gce | q=0.4 | **10.50 ± 0.71 (2)** | 2 |") for line in lines
    )
    assert "| ce | 1 | 1 |" in text and "| gce | 2 | 2 |" in text
    assert "**q=0.4: 72.00**" in text and "q=1.0: 70.00" in text
    choices = json.loads((folder / "tuning.json").read_text())
    assert [(c["method"], c["chosen"]) for c in choices] == [("gce", {"q": 0.4})]


# -- end to end ------------------------------------------------------------------------------------


def test_tune_command_runs_every_grid_point_and_records_the_choice(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    argv = ["tune", "classification", "--methods", "ce,gce", "--noise", "0.4", "--seeds", "1",
            "--epochs", "2", "--train-size", "100", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(json.dumps(r["config"]["method_params"]) for r in records) == sorted(
        ["{}", "{}", '{"q": 0.1}', '{"q": 0.4}', '{"q": 1.0}']
    )
    # The choice, computed here from the validation entries alone.
    scores = {
        r["config"]["method_params"].get("q", 0.7): max(e["val_accuracy"] for e in r["history"])
        for r in records
        if r["config"]["method"] == "gce"
    }
    best = max(scores.values())
    tied = [q for q, s in scores.items() if s == best]
    expected = 0.7 if 0.7 in tied else min(tied)
    (choice,) = json.loads((out / "tuning.json").read_text())
    assert choice["chosen"] == {"q": expected}
    assert "**Tuned on noisy validation**" in (out / "report.md").read_text()
    assert main(argv) == 0  # a rerun finds every run done
    assert len((out / "results.jsonl").read_text().splitlines()) == 5


def test_tune_help_and_tasks_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "classification", "--help"])
    assert exit_info.value.code == 0 and "--superloss-lam" in capsys.readouterr().out
    assert main(["tune", "noise-detection", "--out", "x"]) == 2  # a protocol's own command

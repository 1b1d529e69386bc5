"""Tuning on the noisy validation split, the same protocol for every method.

Each method declares a grid beside each hyper-parameter it tunes (``option(..., grid=Grid(...))``,
with the values' source); a method's grids are zipped into its grid points (:func:`method_grid`).
Every method gets as many points (``GRID_SIZE``): the same budget.

A tuning sweep (``superloss tune TASK``, or a preset's ``Sweep(..., tune=True)``) runs, for every
method of the sweep, its default config and each of its grid points (:func:`expand`), each an
ordinary training run in ``results.jsonl`` (resumable, ``--jobs`` apart). A hyper-parameter set
on the command line is fixed, not tuned; a *mode* (a ``Literal`` word such as SuperLoss's
``lam="auto"``) is never a grid value, so a run in that mode is reported untuned.

The choice is made from the results file alone (:func:`settings`), per setting (task, dataset,
model, noise type, epochs and every other training option), method variant (the method and its
hyper-parameters that are not tuned, e.g. ``superloss (base=gce)``) and noise rate: the grid point
with the best validation score, the mean over seeds of each run's best validation metric (the
noisy validation split's, at the validation-selected epoch), every point on the same seeds. Ties
go to the method's paper default. :func:`validation_score` reads only the ``val_*`` entries of a
run's history: no test metric takes part in the choice.

Two protocols come out of it, per setting and noise rate (:class:`ProtocolRow`): *defaults* (each
variant at its declared defaults) and *tuned* (each variant at its chosen point; a variant with
nothing to tune, and each mode, as in defaults).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from superloss.bench.config import RunConfig
from superloss.bench.methods.base import METHODS
from superloss.bench.options import literal_values, options_of
from superloss.bench.registry import UnknownName

GRID_SIZE = 4  # the grid points of every method: the same tuning budget for each
# Config fields that do not define a setting: what varies inside it, and what does not change numbers.
NOT_SETTING = ("method", "method_params", "noise", "seed", "data_root", "device")
RELATIVE_TIE = 1e-9  # scores this close (relative) are a tie


@dataclass(frozen=True)
class MethodGrid:
    """A method's grid: the tuned hyper-parameters, the zipped points, the tie-break point."""

    method: str
    names: tuple[str, ...]
    points: tuple[dict[str, Any], ...]
    paper_default: dict[str, Any]
    sources: dict[str, str]
    modes: dict[str, tuple[Any, ...]]  # per name, its words that are never tuned ("auto")


def method_grid(method: str) -> MethodGrid | None:
    """The grid ``method`` declares; None for an unknown method or one with no grid.

    Raises:
        ValueError: the method's grids differ in length (they are zipped).
    """
    try:
        cls = METHODS.get(method)
    except UnknownName:
        return None
    tuned = [item for item in options_of(cls.hyper_parameters) if item.spec.grid is not None]
    if not tuned:
        return None
    grids = {item.name: item.spec.grid for item in tuned}
    lengths = {len(grid.values) for grid in grids.values() if grid is not None}
    if len(lengths) != 1:
        raise ValueError(f"the grids of {method} differ in length: {sorted(lengths)}")
    names = tuple(grids)
    columns = [grid.values for grid in grids.values() if grid is not None]
    points = tuple(dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True))
    paper_default = {
        item.name: item.default
        if item.spec.grid is None or item.spec.grid.paper_default is None
        else item.spec.grid.paper_default
        for item in tuned
    }
    return MethodGrid(
        method,
        names,
        points,
        paper_default,
        {name: grid.source for name, grid in grids.items() if grid is not None},
        {item.name: literal_values(item.type) for item in tuned},
    )


def method_defaults(method: str) -> dict[str, Any]:
    try:
        return dict(METHODS.get(method).defaults)
    except UnknownName:
        return {}


# -- the sweep ---------------------------------------------------------------------------------------


def expand(configs: Iterable[RunConfig]) -> list[RunConfig]:
    """Each config, then one per grid point of its method's hyper-parameters not set in it.

    A grid value equal to the method's default is left out of ``method_params``, so that a grid
    point at the defaults is the default run itself (one key, one run). Repeats are dropped.
    """
    out: dict[str, RunConfig] = {}
    for config in configs:
        out.setdefault(config.key(), config)
        grid = method_grid(config.method)
        if grid is None:
            continue
        free = [name for name in grid.names if name not in config.method_params]
        defaults = method_defaults(config.method)
        for point in grid.points:
            params = dict(config.method_params)
            for name in free:
                if _canonical(point[name]) == _canonical(defaults.get(name)):
                    params.pop(name, None)
                else:
                    params[name] = point[name]
            tuned = dataclasses.replace(config, method_params=params)
            out.setdefault(tuned.key(), tuned)
    return list(out.values())


# -- the choice --------------------------------------------------------------------------------------


def validation_score(record: dict[str, Any], metric: str, higher_is_better: bool) -> float:
    """The run's best ``val_<metric>`` over its epochs (the validation-selected epoch's); NaN if
    none is finite. Reads the history's validation entries and nothing else."""
    key = f"val_{metric}"
    values = [
        float(entry[key])
        for entry in record.get("history", [])
        if isinstance(entry.get(key), (int, float)) and math.isfinite(float(entry[key]))
    ]
    if not values:
        return math.nan
    return max(values) if higher_is_better else min(values)


@dataclass
class Candidate:
    """The runs of one method variant at one set of tuned values, in one setting and noise rate."""

    values: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted(int(r["config"]["seed"]) for r in self.records)


@dataclass(frozen=True)
class Choice:
    """The grid point chosen for one variant, setting and noise rate (None: grid incomplete)."""

    setting: dict[str, Any]
    method: str
    variant: dict[str, Any]
    noise: float
    chosen: dict[str, Any] | None
    scores: list[dict[str, Any]]  # per grid point: values, mean validation score, n
    seeds: list[int]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def choose(
    grid: MethodGrid, candidates: Sequence[Candidate], metric: str, higher_is_better: bool
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[int], str]:
    """The grid point with the best mean validation score: (values, scores, seeds, reason).

    Every point must have runs on the same seeds; else no choice (values None). Ties, within
    ``RELATIVE_TIE``, go to the paper default if it is tied, else to the first tied point.
    """
    by_point = {_canonical(c.values): c for c in candidates}
    found = [by_point.get(_canonical(point)) for point in grid.points]
    present = [c for c in found if c is not None]
    seeds = present[0].seeds if present else []
    if len(present) < len(grid.points) or any(c.seeds != seeds for c in present):
        missing = sum(c is None for c in found)
        return None, [], seeds, f"grid incomplete ({missing} point(s) missing or seeds differ)"
    scores: list[dict[str, Any]] = []
    for point, candidate in zip(grid.points, present, strict=True):
        values = [validation_score(r, metric, higher_is_better) for r in candidate.records]
        mean = statistics.fmean(values) if all(math.isfinite(v) for v in values) else math.nan
        scores.append({"values": point, "validation_score": mean, "n": len(values)})
    finite = [s["validation_score"] for s in scores if math.isfinite(s["validation_score"])]
    if not finite:
        return None, scores, seeds, "no finite validation score"
    best = max(finite) if higher_is_better else min(finite)
    tied = [
        s["values"]
        for s in scores
        if math.isfinite(s["validation_score"])
        and abs(s["validation_score"] - best) <= RELATIVE_TIE * max(1.0, abs(best))
    ]
    paper = {name: grid.paper_default[name] for name in grid.names}
    if len(tied) == 1:
        return tied[0], scores, seeds, "best validation score"
    if any(_canonical(t) == _canonical(paper) for t in tied):
        return paper, scores, seeds, f"tie of {len(tied)} points: the paper default"
    return tied[0], scores, seeds, f"tie of {len(tied)} points: the first in the grid"


# -- the two protocols -------------------------------------------------------------------------------


@dataclass
class ProtocolRow:
    """One row of a protocol's table at one noise rate: what is reported and how it was set."""

    label: str
    noise: float
    params: str  # the hyper-parameter values used ("q=0.4", "lam=auto (untuned)", "—")
    records: list[dict[str, Any]]
    tuned: bool = False


@dataclass
class Setting:
    """The protocol tables of one setting: its config fields, rows per protocol, choices."""

    fields: dict[str, Any]
    defaults: list[ProtocolRow] = field(default_factory=list)
    tuned: list[ProtocolRow] = field(default_factory=list)
    choices: list[Choice] = field(default_factory=list)

    @property
    def noises(self) -> list[float]:
        return sorted({row.noise for row in [*self.defaults, *self.tuned]})


@dataclass
class _Variant:
    method: str
    variant: dict[str, Any]
    grid: MethodGrid | None
    by_noise: dict[float, dict[str, Candidate]] = field(default_factory=dict)


def settings(
    records: Iterable[dict[str, Any]], metric: str, higher_is_better: bool
) -> list[Setting]:
    """The defaults and tuned protocols of each setting found in ``records`` (complete records,
    one per run key), with the choices made; settings in a fixed order."""
    config_defaults = RunConfig().as_dict()
    variants: dict[str, dict[str, _Variant]] = {}
    fields_of: dict[str, dict[str, Any]] = {}
    for record in records:
        config = {**config_defaults, **record["config"]}
        fields = {k: v for k, v in config.items() if k not in NOT_SETTING}
        setting_key = _canonical(fields)
        fields_of[setting_key] = fields
        method = str(config["method"])
        grid = method_grid(method)
        names = grid.names if grid is not None else ()
        effective = {**method_defaults(method), **config["method_params"]}
        defaults = method_defaults(method)
        variant = {
            k: v
            for k, v in sorted(effective.items())
            if k not in names and _canonical(v) != _canonical(defaults.get(k))
        }
        entry = variants.setdefault(setting_key, {}).setdefault(
            _canonical([method, variant]), _Variant(method, variant, grid)
        )
        values = {name: effective.get(name) for name in names}
        at_noise = entry.by_noise.setdefault(float(config["noise"]), {})
        at_noise.setdefault(_canonical(values), Candidate(values)).records.append(record)
    found = []
    for setting_key in sorted(variants):
        setting = Setting(fields_of[setting_key])
        for entry in sorted(variants[setting_key].values(), key=_variant_order):
            _add_rows(setting, entry, metric, higher_is_better)
        found.append(setting)
    return found


def _add_rows(setting: Setting, entry: _Variant, metric: str, higher_is_better: bool) -> None:
    """The variant's rows in both protocols, and its choices, at each noise rate."""
    defaults = method_defaults(entry.method)
    label = variant_label(entry.method, entry.variant)
    grid = entry.grid
    names = grid.names if grid is not None else ()
    default_values = {name: defaults.get(name) for name in names}
    for noise in sorted(entry.by_noise):
        candidates = entry.by_noise[noise]
        for candidate in candidates.values():
            mode = _is_mode(grid, candidate.values)
            is_default = _canonical(candidate.values) == _canonical(default_values)
            if not (mode or is_default):
                continue
            row_label = label
            if mode:
                row_label = variant_label(entry.method, {**entry.variant, **candidate.values})
            text = _params_text(candidate.values) + (" (untuned)" if mode else "")
            row = ProtocolRow(row_label, noise, text, candidate.records)
            setting.defaults.append(row)
            if mode or grid is None:  # untuned: the same row in both protocols
                setting.tuned.append(dataclasses.replace(row))
        points = [_canonical(point) for point in grid.points] if grid is not None else []
        if grid is None or not any(key in points for key in candidates):
            continue  # nothing to tune, or only modes
        values, scores, seeds, reason = choose(
            grid, list(candidates.values()), metric, higher_is_better
        )
        setting.choices.append(
            Choice(
                setting.fields, entry.method, entry.variant, noise, values, scores, seeds, reason
            )
        )
        records = candidates[_canonical(values)].records if values is not None else []
        text = _params_text(values) if values is not None else f"— ({reason})"
        setting.tuned.append(ProtocolRow(label, noise, text, records, tuned=True))


def _is_mode(grid: MethodGrid | None, values: dict[str, Any]) -> bool:
    if grid is None:
        return False
    return any(isinstance(v, str) and v in grid.modes.get(n, ()) for n, v in values.items())


def _variant_order(entry: _Variant) -> tuple[int, str, bool, str]:
    """The plain loss first, then SuperLoss (its default variant before the others), then the
    other methods by name."""
    order = 0 if entry.method in ("ce", "plain") else 1 if entry.method == "superloss" else 2
    return (order, entry.method, bool(entry.variant), _canonical(entry.variant))


def variant_label(method: str, params: dict[str, Any]) -> str:
    """``method``, then its given hyper-parameters in brackets: ``superloss (base=gce)``."""
    if not params:
        return method
    return f"{method} ({_params_text(params)})"


def _params_text(params: dict[str, Any] | None) -> str:
    if not params:
        return "—"
    return ", ".join(f"{k}={v if isinstance(v, str) else _canonical(v)}" for k, v in params.items())


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def choices_json(found: Sequence[Setting]) -> list[dict[str, Any]]:
    """Every choice of ``found`` as plain JSON (``tuning.json``)."""
    return [choice.as_dict() for setting in found for choice in setting.choices]


def describe_grids(methods: Iterable[str]) -> list[tuple[str, str, str]]:
    """(method, the grid as text, its sources) of each method with a grid, for docs and reports."""
    rows = []
    for method in methods:
        grid = method_grid(method)
        if grid is None:
            continue
        points = "; ".join(_params_text(point) for point in grid.points)
        sources = " ".join(dict.fromkeys(grid.sources.values()))
        rows.append((method, points, sources))
    return rows


__all__ = [
    "GRID_SIZE",
    "Choice",
    "MethodGrid",
    "ProtocolRow",
    "Setting",
    "choices_json",
    "choose",
    "describe_grids",
    "expand",
    "method_grid",
    "settings",
    "validation_score",
    "variant_label",
]

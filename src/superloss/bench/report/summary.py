"""From result records to tables: runs grouped over seeds, mean ± std per group, metric and stat.

A *group* is every run whose config is equal except for the seed. A *table* gathers the groups of
one task, dataset, model, noise type and epoch count: its rows are methods (with their settings),
its columns noise rates.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from superloss.bench.config import RunConfig

STATS = ("final", "best", "selected")
TABLE_FIELDS = ("task", "dataset", "model", "noise_type", "epochs")
# The seed varies inside a group; data_root and device do not change what a run computes (they are
# left out of the run's key too, see config.py).
NOT_GROUPED = ("seed", "data_root", "device")
REQUIRED_CONFIG = ("task", "dataset", "model", "method", "noise_type", "noise", "seed", "epochs")
BASELINES = ("ce", "plain")  # the task's plain loss, registered under both names
SUPERLOSS = "superloss"

# (primary metric, higher is better) of a task; None when the task is not registered here.
TaskInfo = Callable[[str], "tuple[str, bool] | None"]
MethodDefaults = Callable[[str], dict[str, Any]]
# A task's options that split tables (``Task.table_options``), with their defaults.
TableOptions = Callable[[str], dict[str, Any]]


@dataclass(frozen=True)
class Stat:
    """Mean and sample std (ddof = 1; 0 when n = 1) of n values; None if any is non-finite."""

    mean: float | None
    std: float | None
    n: int


def _significant(value: float) -> float:
    # 10 significant digits: no float noise such as 82.00000000000001 in summary.json.
    return float(f"{value:.10g}")


def describe(values: list[float]) -> Stat:
    if not values:
        return Stat(None, None, 0)
    if not all(math.isfinite(v) for v in values):
        return Stat(None, None, len(values))
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Stat(_significant(statistics.fmean(values)), _significant(std), len(values))


def decimals(values: list[float]) -> int:
    """Decimals that show about three significant digits of the largest value."""
    largest = max((abs(v) for v in values if v != 0), default=0.0)
    if largest == 0:
        return 2
    return min(6, max(1, 3 - math.floor(math.log10(largest))))


def is_complete(record: Any) -> bool:
    """Whether a record holds all the report reads: config, final/best/selected and history."""
    if not isinstance(record, dict):
        return False
    config = record.get("config")
    if not isinstance(config, dict) or any(name not in config for name in REQUIRED_CONFIG):
        return False
    return all(isinstance(record.get(s), dict) for s in STATS) and isinstance(
        record.get("history"), list
    )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass
class Group:
    """The runs of one config over seeds (sorted by seed)."""

    config: dict[str, Any]  # without seed, data_root and device
    records: list[dict[str, Any]]
    label: str = ""

    @property
    def method(self) -> str:
        return str(self.config["method"])

    @property
    def noise(self) -> float:
        return float(self.config["noise"])

    @property
    def row_key(self) -> str:
        """Everything but the noise rate: what makes a table row."""
        return _canonical({k: v for k, v in self.config.items() if k != "noise"})

    def values(self, stat: str, metric: str) -> dict[int, float]:
        """Per seed, the metric's value under ``stat`` (runs that lack it are left out)."""
        found = {}
        for record in self.records:
            value = record[stat].get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found[int(record["config"]["seed"])] = float(value)
        return found

    def stat(self, stat: str, metric: str) -> Stat:
        return describe(list(self.values(stat, metric).values()))


@dataclass
class Table:
    """The groups of one (task, dataset, model, noise type, epochs): rows × noise rates."""

    key: tuple[Any, ...]
    groups: list[Group]
    primary: str
    higher_is_better: bool
    direction_known: bool
    metrics: list[str] = field(default_factory=list)  # primary first
    rows: list[str] = field(default_factory=list)  # row labels, baseline first
    noises: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  # the same for every row
    # Per method, hyper-parameters off their defaults and the same in every row of that method.
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The task's table options off their defaults (regression's --target-scale 10): own tables.
    split: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        f = self.fields
        parts = [
            f["task"],
            f["dataset"],
            f["model"],
            f"{f['noise_type']} noise",
            f"{f['epochs']} epochs",
        ]
        parts += [f"{name}={value}" for name, value in self.split.items()]
        return " · ".join(str(part) for part in parts)

    @property
    def fields(self) -> dict[str, Any]:
        return dict(zip(TABLE_FIELDS, self.key, strict=True))

    def cell(self, row: str, noise: float) -> Group | None:
        for group in self.groups:
            if group.label == row and group.noise == noise:
                return group
        return None

    def row_groups(self, row: str) -> list[Group]:
        return sorted((g for g in self.groups if g.label == row), key=lambda g: g.noise)

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b


def _method_order(method: str) -> tuple[int, str]:
    if method in BASELINES:
        return (0, method)
    return (1 if method == SUPERLOSS else 2, method)


def _format_value(value: Any) -> str:
    return value if isinstance(value, str) else _canonical(value)


def _label_rows(
    groups: list[Group], defaults: MethodDefaults
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Label each group's row; return the settings shared by every row, and shared non-default
    hyper-parameters per method.

    A row is labelled by its method, then by the hyper-parameters that differ between rows of that
    method in this table (``superloss(lam=0.5)``), then by other settings that differ between rows
    (``ce [lr=0.1]``). What is the same throughout is returned, to be stated once above the table.

    """
    rows: dict[str, Group] = {}
    for group in groups:
        rows.setdefault(group.row_key, group)
    effective = {
        key: {**defaults(g.method), **g.config.get("method_params", {})} for key, g in rows.items()
    }
    other = {
        key: {
            k: v
            for k, v in flat_settings(g.config).items()
            if k not in (*TABLE_FIELDS, "noise", "method", "method_params")
        }
        for key, g in rows.items()
    }
    setting_names = sorted({name for s in other.values() for name in s})
    varying_settings = [
        n for n in setting_names if len({_canonical(s.get(n)) for s in other.values()}) > 1
    ]
    labels: dict[str, str] = {}
    shared_params: dict[str, dict[str, Any]] = {}
    for method in sorted({g.method for g in rows.values()}):
        keys = [key for key, g in rows.items() if g.method == method]
        names = sorted({name for key in keys for name in effective[key]})
        varying = [n for n in names if len({_canonical(effective[k].get(n)) for k in keys}) > 1]
        constant_non_default = {
            n: effective[keys[0]][n]
            for n in names
            if n not in varying
            and n in effective[keys[0]]
            and _canonical(effective[keys[0]][n]) != _canonical(defaults(method).get(n))
        }
        if constant_non_default:
            shared_params[method] = constant_non_default
        for key in keys:
            label = method
            if varying:
                params = ", ".join(f"{n}={_format_value(effective[key].get(n))}" for n in varying)
                label += f"({params})"
            if varying_settings:
                settings = ", ".join(
                    f"{n}={_format_value(other[key].get(n))}" for n in varying_settings
                )
                label += f" [{settings}]"
            labels[key] = label
    # Two configs that resolve to the same effective parameters: tell them apart by their raw ones.
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    for key, label in labels.items():
        if counts[label] > 1:
            labels[key] = f"{label} {_canonical(rows[key].config.get('method_params', {}))}"
    for group in groups:
        group.label = labels[group.row_key]
    first = next(iter(other.values()))
    shared = {n: v for n, v in sorted(first.items()) if n not in varying_settings}
    return shared, shared_params


def flat_settings(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the task's options (``task_params``) as settings of their own."""
    flat = {k: v for k, v in config.items() if k != "task_params"}
    flat.update(config.get("task_params") or {})
    return flat


def _split(config: dict[str, Any], table_options: TableOptions) -> dict[str, Any]:
    """The config's table options that are off their defaults."""
    given = config.get("task_params") or {}
    return {
        name: given[name]
        for name, default in table_options(str(config["task"])).items()
        if _canonical(given.get(name, default)) != _canonical(default)
    }


def _table_order(canonical_key: str) -> tuple[str, bool, str]:
    """Tables in the order of their fields; the default table options' before the others."""
    *values, split = json.loads(canonical_key)
    return (_canonical(values), bool(split), _canonical(split))


def build_tables(
    records: list[dict[str, Any]],
    task_info: TaskInfo,
    defaults: MethodDefaults,
    table_options: TableOptions = lambda task: {},
) -> list[Table]:
    """Group complete records over seeds, and the groups into tables, in a fixed order."""
    # A field a record predates takes its default: old and new records of one config group together.
    config_defaults = RunConfig().as_dict()
    by_config: dict[str, Group] = {}
    for record in records:
        config = {**config_defaults, **record["config"]}
        config = {k: v for k, v in config.items() if k not in NOT_GROUPED}
        # Likewise a table option: a record without it ran at its default.
        given = config.get("task_params") or {}
        config["task_params"] = {**table_options(str(config["task"])), **given}
        group = by_config.setdefault(_canonical(config), Group(config, []))
        group.records.append(record)
    by_table: dict[str, list[Group]] = {}
    for group in by_config.values():
        group.records.sort(key=lambda r: int(r["config"]["seed"]))
        fields = [group.config[name] for name in TABLE_FIELDS]
        split = _split(group.config, table_options)
        by_table.setdefault(_canonical([*fields, split]), []).append(group)

    tables = []
    for canonical_key in sorted(by_table, key=_table_order):
        groups = by_table[canonical_key]
        *values, split = json.loads(canonical_key)
        key = tuple(values)
        metrics = sorted({m for g in groups for r in g.records for m in r["final"] if m != "epoch"})
        info = task_info(str(key[0]))
        primary, higher = info if info is not None else (metrics[0] if metrics else "", True)
        if primary in metrics:
            metrics = [primary, *(m for m in metrics if m != primary)]
        elif metrics:
            primary = metrics[0]
        settings, params = _label_rows(groups, defaults)
        groups.sort(key=lambda g: (_method_order(g.method), g.label, g.noise))
        rows = list(dict.fromkeys(g.label for g in groups))
        noises = sorted({g.noise for g in groups})
        tables.append(
            Table(
                key,
                groups,
                primary,
                higher,
                info is not None,
                metrics,
                rows,
                noises,
                settings,
                params,
                split,
            )
        )
    return tables


def summary_rows(tables: list[Table]) -> list[dict[str, Any]]:
    """One row per group × metric × stat, in table, row, noise, metric and stat order."""
    out = []
    for table in tables:
        for row in table.rows:
            for group in table.row_groups(row):
                for metric in table.metrics:
                    for stat in STATS:
                        described = group.stat(stat, metric)
                        out.append(
                            {
                                **table.fields,
                                "method": group.method,
                                "method_params": group.config.get("method_params", {}),
                                "label": group.label,
                                "noise": group.noise,
                                "metric": metric,
                                "higher_is_better": table.higher_is_better,
                                "stat": stat,
                                "mean": described.mean,
                                "std": described.std,
                                "n": described.n,
                                "seeds": sorted(group.values(stat, metric)),
                                "config": group.config,
                            }
                        )
    return out


@dataclass(frozen=True)
class Comparison:
    """SuperLoss against the plain loss at one noise rate, for one stat of the primary metric."""

    stat: str
    noise: float
    superloss: Stat
    baseline: Stat
    delta: float | None  # mean(superloss) − mean(baseline)
    spread: float | None  # the larger of the two seed standard deviations
    seeds_won: int  # seeds where SuperLoss beats the plain loss on the same seed (same data, noise)
    seeds_paired: int
    verdict: str  # "better" | "worse" | "within" | "one seed" | "n/a"


def _settings_key(group: Group) -> str:
    return _canonical(
        {k: v for k, v in group.config.items() if k not in ("method", "method_params", "noise")}
    )


def comparisons(table: Table) -> list[tuple[str, str, list[Comparison]]]:
    """For each SuperLoss row with a plain-loss row of the same settings: (row, baseline row, rows).

    Every noise rate and every stat is listed, whichever way it goes. "Beyond the seed spread":
    |Δ| is larger than the larger of the two sample standard deviations; one seed is not judged.
    """
    found = []
    for row in table.rows:
        groups = table.row_groups(row)
        if groups[0].method != SUPERLOSS:
            continue
        baseline_row = next(
            (
                other
                for other in table.rows
                if table.row_groups(other)[0].method in BASELINES
                and _settings_key(table.row_groups(other)[0]) == _settings_key(groups[0])
            ),
            None,
        )
        if baseline_row is None:
            continue
        rows = []
        for stat in STATS:
            for group in groups:
                baseline = table.cell(baseline_row, group.noise)
                if baseline is None:
                    continue
                rows.append(_compare(table, stat, group, baseline))
        found.append((row, baseline_row, rows))
    return found


def _compare(table: Table, stat: str, group: Group, baseline: Group) -> Comparison:
    ours, theirs = group.stat(stat, table.primary), baseline.stat(stat, table.primary)
    ours_by_seed = group.values(stat, table.primary)
    theirs_by_seed = baseline.values(stat, table.primary)
    paired = sorted(set(ours_by_seed) & set(theirs_by_seed))
    won = sum(table.better(ours_by_seed[s], theirs_by_seed[s]) for s in paired)
    if ours.mean is None or theirs.mean is None or ours.std is None or theirs.std is None:
        return Comparison(stat, group.noise, ours, theirs, None, None, won, len(paired), "n/a")
    delta = _significant(ours.mean - theirs.mean)
    spread = max(ours.std, theirs.std)
    if min(ours.n, theirs.n) < 2:
        verdict = "one seed"
    elif abs(delta) > spread:
        verdict = "better" if table.better(ours.mean, theirs.mean) else "worse"
    else:
        verdict = "within"
    return Comparison(stat, group.noise, ours, theirs, delta, spread, won, len(paired), verdict)

"""The ``superloss`` command: ``bench NAME``, ``tune NAME``, ``reproduce`` and ``report``.

The options of ``bench NAME`` are derived from the declarations they come from: every
:class:`~superloss.bench.config.RunConfig` field marked for the command line, each method's
hyper-parameters (``--METHOD-PARAM``), and the options of the task or protocol (``--base-loss``,
``--folds``, …). Every input is checked before anything is written; a bad one ends with a one-line
error and exit 2. Under ``torchrun`` every process runs the command and rank 0 writes the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from superloss.bench import distributed
from superloss.bench.config import RunConfig
from superloss.bench.data import DATASETS
from superloss.bench.methods import METHODS
from superloss.bench.models import MODELS
from superloss.bench.noise import NOISES
from superloss.bench.options import FLAG, Option, add_arguments, options_of, value_type
from superloss.bench.presets import PRESETS, Sweep, preset
from superloss.bench.protocols import Experiment, experiment
from superloss.bench.protocols.base import experiment_names
from superloss.bench.registry import Registry

T = TypeVar("T")
REGISTRIES: dict[str, Registry[Any]] = {"dataset": DATASETS, "model": MODELS, "noise_type": NOISES}
OPTION_PREFIX = "option__"


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _parse_value(text: str) -> Any:
    if text.lstrip().startswith("{"):  # a dict of hyper-parameters, e.g. superloss base_params
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise UsageError(f"expected a JSON object, got {text!r}") from None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _param_dest(method: str, param: str) -> str:
    return f"param__{method}__{param}"


def _param_flag(method: str, param: str) -> str:
    return f"--{method}-{param.replace('_', '-')}"


def _hyper_parameters() -> list[tuple[str, Option]]:
    """(method, hyper-parameter) for every registered method, in registry order."""
    return [
        (name, item)
        for name, method in METHODS.entries()
        for item in options_of(method.hyper_parameters)
    ]


# -- the parser --------------------------------------------------------------------------------------


def _add_run_config(parser: argparse.ArgumentParser, chosen: Experiment) -> None:
    """A ``--NAME`` option for every RunConfig field marked for the command line."""
    for item in options_of(RunConfig):
        if item.spec.cli != FLAG:
            continue
        text = item.spec.help
        default = None if item.spec.per_dataset else item.default
        if item.name == "noise_type":
            default = chosen.task.default_noise_type
        if item.name in REGISTRIES:
            text += f": one of {', '.join(REGISTRIES[item.name].names())}"
        if item.type is bool:
            parser.add_argument(item.flag, action="store_true", help=item.spec.help)
            continue
        text += " (default per dataset)" if item.spec.per_dataset else " (default %(default)s)"
        parser.add_argument(
            item.flag,
            type=value_type(item.type),
            default=default,
            choices=item.spec.choices,
            metavar=item.spec.metavar,
            help=text,
        )


def _add_experiment(commands: Any, chosen: Experiment) -> None:
    sub = commands.add_parser(
        chosen.name,
        help=f"the {chosen.name} task",
        description=f"A sweep of the {chosen.name} task.",
    )
    sub.add_argument(
        "--noise",
        default=chosen.default_noise,
        help="comma-separated noise rates in [0, 1) (default %(default)s)",
    )
    sub.add_argument(
        "--methods",
        default=chosen.default_methods,
        help=f"comma-separated, of {', '.join(chosen.methods())} (default %(default)s)",
    )
    sub.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, …)")
    _add_run_config(sub, chosen)
    sub.add_argument("--out", required=True, help="results folder")
    sub.add_argument(
        "--add", action="store_true", help="add these runs to a folder holding another sweep"
    )
    sub.add_argument("--no-report", action="store_true", help="skip the report after the sweep")
    sub.add_argument("--jobs", type=int, default=1, help="runs trained at once in worker processes")
    sub.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = sub.add_argument_group("method hyper-parameters (defaults fixed in each method's file)")
    for method, item in _hyper_parameters():
        group.add_argument(
            _param_flag(method, item.name),
            dest=_param_dest(method, item.name),
            type=_parse_value,
            default=None,
            metavar="V",
            help=f"{method} {item.name}: {item.spec.help} (default {item.default})".replace(
                "%", "%%"
            ),
        )
    options, hold_defaults = chosen.options
    add_arguments(
        sub.add_argument_group(f"{chosen.name} options"),
        options,
        defaults=hold_defaults,
        dest=lambda item: OPTION_PREFIX + item.name,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="superloss", description="SuperLoss benchmark suite.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    bench = commands.add_parser("bench", help="run a sweep of one task")
    names = bench.add_subparsers(dest="task", required=True, parser_class=_Parser)
    for name in experiment_names():
        _add_experiment(names, experiment(name))
    tune = commands.add_parser(
        "tune",
        help="a tuning sweep: each method's grid, chosen on the noisy validation split",
        description="Every method's default config and grid points (bench NAME's options; a "
        "hyper-parameter given as --METHOD-PARAM is fixed, not tuned), then the report with its "
        "paper-defaults and tuned-on-noisy-validation tables and DIR/tuning.json (the choices).",
    )
    tuned = tune.add_subparsers(dest="task", required=True, parser_class=_Parser)
    for name in experiment_names():
        if not experiment(name).own_command:  # tasks, trained by the training protocol
            _add_experiment(tuned, experiment(name))

    reproduce = commands.add_parser(
        "reproduce", help="the main job: a preset's sweeps of every task, then the report"
    )
    reproduce.add_argument("--preset", choices=tuple(PRESETS), default="quick")
    reproduce.add_argument(
        "--out", default=None, help="results folder (default superloss-results/PRESET)"
    )
    reproduce.add_argument("--data-root", default=None, help="folder holding datasets' files")
    reproduce.add_argument("--device", default="cpu", help="cpu or cuda")
    reproduce.add_argument(
        "--add", action="store_true", help="add to a folder holding another sweep"
    )
    reproduce.add_argument("--no-progress", action="store_true")
    reproduce.add_argument(
        "--jobs", type=int, default=None, help="runs trained at once (default: one per CPU core)"
    )
    report = commands.add_parser(
        "report", help="rebuild report.md, summary.json and plots from DIR/results.jsonl"
    )
    report.add_argument("dir", help="a results folder")
    return parser


# -- checks ------------------------------------------------------------------------------------------


def _usage(check: Callable[..., T], *args: Any) -> T:
    """``check(*args)``, its ValueError (UnknownName included) turned into a one-line usage error."""
    try:
        return check(*args)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _check_device(device: str) -> None:
    import torch

    if device == "cpu":
        return
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA device is available here")
        return
    raise UsageError(f"--device must be cpu or cuda, got {device!r}")


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--noise expects comma-separated rates in [0, 1), got {text!r}") from None
    if not values:
        raise UsageError("--noise expects at least one rate")
    for value in values:
        if not 0.0 <= value < 1.0:
            raise UsageError(f"noise rate {value} is outside [0, 1)")
    return values


def _methods(args: argparse.Namespace, chosen: Experiment) -> tuple[str, ...]:
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if not methods:
        raise UsageError("--methods expects at least one method")
    approaches = chosen.protocol.approaches if chosen.own_command else None
    for method in methods:
        if approaches is not None:
            if method not in approaches:
                raise UsageError(
                    f"unknown method {method!r} for the {chosen.name} task; expected one of: "
                    f"{', '.join(approaches)}"
                )
            continue
        cls = _usage(METHODS.get, method)
        if not cls.applies_to(chosen.task.name):
            assert cls.tasks is not None
            raise UsageError(
                f"method {method!r} applies to {', '.join(cls.tasks)}, not {chosen.name!r}"
            )
    return methods


def _method_params(args: argparse.Namespace, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    params: dict[str, dict[str, Any]] = {}
    for method, item in _hyper_parameters():
        value = getattr(args, _param_dest(method, item.name))
        if value is not None:
            if method not in methods:
                raise UsageError(
                    f"{_param_flag(method, item.name)} given but {method!r} is not in --methods"
                )
            params.setdefault(method, {})[item.name] = value
    return params


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig fields given on the command line, checked against their declarations."""
    settings: dict[str, Any] = {}
    for item in options_of(RunConfig):
        if item.spec.cli != FLAG:
            continue
        value = getattr(args, item.name)
        if item.name in REGISTRIES:
            if value is not None:
                _usage(REGISTRIES[item.name].get, value)
        elif isinstance(value, int) and not isinstance(value, bool) and item.spec.low is not None:
            if value < item.spec.low:
                raise UsageError(f"{item.flag} must be at least {item.spec.low:g}, got {value}")
        elif value is not None:
            _usage(item.check, value)
        settings[item.name] = value
    _check_device(settings["device"])
    return settings


def _task_params(args: argparse.Namespace, chosen: Experiment) -> dict[str, Any]:
    options, hold_defaults = chosen.options
    given = {item.name: getattr(args, OPTION_PREFIX + item.name) for item in options_of(options)}
    if not hold_defaults:
        given = {name: value for name, value in given.items() if value is not None}
    for item in options_of(options):
        if item.name in given:
            _usage(item.check, given[item.name])
    return given


def _sweep_from_args(args: argparse.Namespace, world: int | None) -> Sweep:
    chosen = experiment(args.task)
    methods = _methods(args, chosen)
    settings = _settings(args)
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    if world is not None:  # torchrun: its processes are the run's
        if settings["nproc"] not in (1, world):
            raise UsageError(f"--nproc {settings['nproc']} disagrees with torchrun's {world}")
        settings["nproc"] = world
    settings["task_params"] = _task_params(args, chosen)
    sweep = Sweep(
        args.task,
        settings.pop("dataset"),
        methods,
        _floats(args.noise),
        args.seeds,
        settings=settings,
        method_params=_method_params(args, methods),
    )
    for config in sweep.configs():
        _usage(chosen.check, config)
    return sweep


def _check_data(sweeps: Sequence[Sweep]) -> None:
    """Prepare the data of each (dataset, noise) once before anything is written, so that a missing
    dataset or a noise model that does not fit it fails up front rather than mid-sweep."""
    from superloss.bench.data import DataUnavailable

    checked = set()
    for sweep in sweeps:
        for config in sweep.configs():
            what = (
                config.task,
                config.dataset,
                config.data_root,
                config.train_size,
                config.noise_type,
                config.noise,
                json.dumps(config.task_params, sort_keys=True),
            )
            if what in checked:
                continue
            checked.add(what)
            try:
                experiment(config.task).protocol(config).prepare()
            except (DataUnavailable, ValueError) as error:
                raise UsageError(str(error)) from None


# -- running -----------------------------------------------------------------------------------------


def _on_rank_zero(action: Callable[[], T]) -> T | None:
    """``action()`` on rank 0 alone; its usage error, if any, raised on every rank."""
    rank = distributed.world()[0]
    result, message = None, None
    if rank == 0:
        try:
            result = action()
        except UsageError as error:
            message = str(error)
    message = distributed.broadcast(message)
    if message is not None:
        raise UsageError(message)
    return result


def _run(
    sweeps: Sequence[Sweep], out: Path, add: bool, progress: bool, report: bool, jobs: int = 1
) -> int:
    from superloss.bench.results import PlanMismatch, check_plan, write_plan
    from superloss.bench.runner import run_sweep

    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    if distributed.world()[1] > 1 and jobs > 1:
        raise UsageError("--jobs must be 1 under torchrun: every process trains each run together")
    _check_data(sweeps)
    configs = [config for sweep in sweeps for config in sweep.configs()]

    def plan() -> None:
        try:
            write_plan(out, check_plan(out, [c.key() for c in configs], add))
        except PlanMismatch as error:
            raise UsageError(str(error)) from None

    _on_rank_zero(plan)
    run_sweep(configs, out, progress=progress, jobs=jobs)
    if report and distributed.world()[0] == 0:
        from superloss.bench.report import write_report

        print(f"report: {write_report(out)}")
    return 0


def _bench(args: argparse.Namespace, world: int | None) -> int:
    sweep = _sweep_from_args(args, world)
    progress, report = not args.no_progress, not args.no_report
    return _run([sweep], Path(args.out), args.add, progress, report, args.jobs)


def _tune(args: argparse.Namespace, world: int | None) -> int:
    sweep = dataclasses.replace(_sweep_from_args(args, world), tune=True)
    progress, report = not args.no_progress, not args.no_report
    return _run([sweep], Path(args.out), args.add, progress, report, args.jobs)


def _reproduce(args: argparse.Namespace, world: int | None) -> int:
    _check_device(args.device)
    sweeps = preset(args.preset)
    for sweep in sweeps:
        sweep.settings.update(device=args.device, data_root=args.data_root)
        if world is not None:
            sweep.settings["nproc"] = world
    out = Path(args.out or f"superloss-results/{args.preset}")
    jobs = args.jobs if args.jobs is not None else (1 if world else os.cpu_count() or 1)
    return _run(sweeps, out, args.add, not args.no_progress, report=True, jobs=jobs)


def _report(args: argparse.Namespace) -> int:
    from superloss.bench.report import write_report
    from superloss.bench.results import results_path

    folder = Path(args.dir)
    if not results_path(folder).is_file():
        raise UsageError(f"{folder} holds no results.jsonl to report on")
    print(f"report: {write_report(folder)}")
    return 0


def _command(args: argparse.Namespace) -> int:
    """Run the parsed command; under torchrun, inside its process group."""
    if args.command == "report":
        return _report(args)
    world = distributed.torchrun_world_size()
    handler = {"bench": _bench, "tune": _tune, "reproduce": _reproduce}[args.command]
    if world is None:
        return handler(args, None)
    with distributed.from_torchrun(args.device):
        return handler(args, world)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _command(build_parser().parse_args(argv))
    except UsageError as error:
        message = str(error)
        print(
            message if message.startswith("superloss") else f"superloss: error: {message}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(
            "superloss: interrupted; finished runs are kept, rerun the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

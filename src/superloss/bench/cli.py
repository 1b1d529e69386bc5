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
import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from superloss import __version__
from superloss.bench import distributed
from superloss.bench.config import RunConfig
from superloss.bench.data import DATASETS
from superloss.bench.methods import METHODS
from superloss.bench.models import MODELS
from superloss.bench.noise import NOISES
from superloss.bench.options import FLAG, Option, add_arguments, options_of, value_type
from superloss.bench.presets import PRESETS, Sweep, dataset_defaults, preset
from superloss.bench.processes import Stopped, stop_on_signals
from superloss.bench.protocols import Experiment, experiment
from superloss.bench.protocols.base import experiment_names
from superloss.bench.registry import Registry
from superloss.bench.results import RESULTS

T = TypeVar("T")
REGISTRIES: dict[str, Registry[Any]] = {"dataset": DATASETS, "model": MODELS, "noise_type": NOISES}
OPTION_PREFIX = "option__"
COMMANDS = {
    "bench": ("bench NAME", "a sweep of one task: its methods × noise rates × seeds"),
    "tune": (
        "tune NAME",
        "bench NAME plus every method's grid, each value chosen on the noisy validation split",
    ),
    "reproduce": ("reproduce", "the main job: a preset's sweeps of every task, then the report"),
    "report": ("report DIR", "rebuild report.md, summary.json and plots from DIR/results.jsonl"),
}
# Exit codes: 0 done; 2 bad input, or no command given (the commands are listed); 130 stopped by
# SIGINT (Ctrl-C), 143 by SIGTERM — the shell's 128 + signal number. Finished runs are kept.
USAGE_EXIT = 2


class UsageError(Exception):
    """Bad command-line input: printed as one line, ``PROG: error: MESSAGE``, exit code 2."""

    def __init__(self, message: str, prog: str = "superloss") -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)


def _value_parser(flag: str) -> Callable[[str], Any]:
    """The parser of a hyper-parameter flag's value: a JSON object, an int, a float, true or false,
    or a word."""

    def parse(text: str) -> Any:
        if text.lstrip().startswith("{"):  # a dict of hyper-parameters, e.g. superloss base_params
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise UsageError(f"{flag} expects a JSON object, got {text!r}") from None
        if text.lower() in ("true", "false"):  # a switch, e.g. superloss normalize
            return text.lower() == "true"
        for convert in (int, float):
            try:
                return convert(text)
            except ValueError:
                pass
        return text

    return parse


def _param_dest(method: str, param: str) -> str:
    return f"param__{method}__{param}"


def _param_flag(method: str, param: str) -> str:
    return f"--{method}-{param.replace('_', '-')}"


def _hyper_parameters(chosen: Experiment) -> list[tuple[str, Option]]:
    """(method, hyper-parameter) of every registered method the command takes, in registry order."""
    names = set(chosen.methods())
    return [
        (name, item)
        for name, method in METHODS.entries()
        if name in names
        for item in options_of(method.hyper_parameters)
    ]


def _summary(cls: type[Any], fallback: str) -> str:
    """The first line of the docstring of the module that defines ``cls``."""
    text = sys.modules[cls.__module__].__doc__ or ""
    return text.strip().splitlines()[0] if text.strip() else fallback


def _listing(title: str, rows: Sequence[tuple[str, str]], hint: str) -> str:
    width = max(len(name) for name, _ in rows) + 3
    return "\n".join([title, *(f"  {name:<{width}}{text}" for name, text in rows), hint])


def _commands_listing() -> str:
    tasks = ", ".join(experiment_names())
    rows = [COMMANDS["bench"], *(COMMANDS[name] for name in ("tune", "reproduce", "report"))]
    rows[0] = (rows[0][0], f"{rows[0][1]} (NAME: {tasks})")
    return _listing(
        "commands:",
        rows,
        "`superloss COMMAND --help` lists a command's options; `superloss --version` the version.",
    )


def _tasks_listing() -> str:
    rows = [(name, _experiment_summary(experiment(name))) for name in experiment_names()]
    return _listing("tasks:", rows, "`superloss bench NAME --help` lists what NAME takes.")


def _experiment_summary(chosen: Experiment) -> str:
    owner: type[Any] = chosen.protocol if chosen.own_command else chosen.task
    return _summary(owner, f"the {chosen.name} task")


# -- the parser --------------------------------------------------------------------------------------


def _per_dataset_default(name: str, chosen: Experiment) -> str:
    """The command's default of a per-dataset field: the task's own, or each dataset's value."""
    task = chosen.task
    if name in task.training_defaults:
        return f"default {task.training_defaults[name]}"
    datasets: dict[str, list[str]] = {}
    default = RunConfig.dataset
    for dataset in sorted(task.choices("dataset"), key=lambda name: name != default):
        datasets.setdefault(str(dataset_defaults(dataset)[name]), []).append(dataset)
    return "default per dataset: " + "; ".join(
        f"{', '.join(names)}: {value}" for value, names in datasets.items()
    )


def _add_run_config(parser: argparse.ArgumentParser, chosen: Experiment) -> None:
    """A ``--NAME`` option for every RunConfig field marked for the command line; the registered
    names it takes are the task's, its default the task's or the dataset's actual value."""
    for item in options_of(RunConfig):
        if item.spec.cli != FLAG:
            continue
        if item.type is bool:
            parser.add_argument(item.flag, action="store_true", help=item.spec.help)
            continue
        text = item.spec.help
        default = None if item.spec.per_dataset else item.default
        if item.name == "noise_type":
            default = chosen.task.default_noise_type
        if item.name in REGISTRIES:
            text += f": one of {', '.join(chosen.task.choices(item.name))}"
        if item.spec.per_dataset:
            text += f" ({_per_dataset_default(item.name, chosen)})"
        elif default is not None:
            text += f" (default {default})"
        parser.add_argument(
            item.flag,
            type=value_type(item.type),
            default=default,
            choices=item.spec.choices,
            metavar=item.spec.metavar,
            help=text.replace("%", "%%"),
        )


def _add_hyper_parameters(parser: argparse.ArgumentParser, chosen: Experiment) -> None:
    group = parser.add_argument_group(
        "hyper-parameters of the methods this task takes (defaults fixed in each method's file)"
    )
    for method, item in _hyper_parameters(chosen):
        text = f"{method} {item.name}: {item.spec.help}; {item.allowed()} (default {item.default})"
        flag = _param_flag(method, item.name)
        group.add_argument(
            flag,
            dest=_param_dest(method, item.name),
            type=_value_parser(flag),
            default=None,
            metavar="V",
            help=text.replace("%", "%%"),
        )


def _add_experiment(commands: Any, chosen: Experiment) -> None:
    summary = _experiment_summary(chosen)
    sub = commands.add_parser(chosen.name, help=summary.replace("%", "%%"), description=summary)
    sub.add_argument(
        "--noise",
        default=chosen.default_noise,
        help="comma-separated noise rates in [0, 1) (default %(default)s)",
    )
    # The plain loss is registered as "ce" and "plain": listed under the name the task's default
    # uses ("plain" for regression, retrieval, detection).
    plain = "plain" if "plain" in chosen.default_methods.split(",") else "ce"
    names = [plain if name == "ce" else name for name in chosen.methods()]
    sub.add_argument(
        "--methods",
        default=chosen.default_methods,
        help=f"comma-separated, of {', '.join(names)} (default %(default)s)",
    )
    sub.add_argument(
        "--seeds", type=int, default=3, help="number of seeds: 0, 1, … (default %(default)s)"
    )
    _add_run_config(sub, chosen)
    sub.add_argument("--out", required=True, help="results folder (required)")
    sub.add_argument(
        "--add", action="store_true", help="add these runs to a folder holding another sweep"
    )
    sub.add_argument("--no-report", action="store_true", help="skip the report after the sweep")
    sub.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at once, in worker processes (default %(default)s)",
    )
    sub.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    _add_hyper_parameters(sub, chosen)
    options, hold_defaults = chosen.options
    add_arguments(
        sub.add_argument_group(f"{chosen.name} options"),
        options,
        defaults=hold_defaults,
        dest=lambda item: OPTION_PREFIX + item.name,
    )


def _describe_sweep(sweep: Sweep) -> str:
    """One line: what a sweep of a preset trains, and how many runs."""
    configs = sweep.configs()
    first = configs[0]
    setting = [first.model, f"{first.epochs} epochs", f"{first.noise_type} noise"]
    if first.train_size is not None:
        setting.append(f"first {first.train_size} training samples")
    setting += [f"{key} {value}" for key, value in first.task_params.items()]
    noises = ", ".join(f"{noise:g}" for noise in sweep.noises)
    methods = ", ".join(
        method
        + "".join(f" ({k} {v})" for k, v in sweep.method_params.get(method, {}).items())
        + (" and its grid" if sweep.tune else "")
        for method in sweep.methods
    )
    return (
        f"{sweep.task} on {sweep.dataset} ({', '.join(setting)}): {methods} × "
        f"noise {noises} × {sweep.seeds} seeds = {len(configs)} runs"
    )


def _reproduce_description() -> str:
    lines = [
        "Runs every sweep of a preset (each: methods × noise rates × seeds), skipping the runs "
        "already in --out, then writes the report (report.md, summary.json, plots/).",
    ]
    for name, make in PRESETS.items():
        sweeps = make()
        runs = sum(len(sweep.configs()) for sweep in sweeps)
        meant = (make.__doc__ or "").strip().split("\n\n")[0]  # the docstring's first paragraph
        meant = " ".join(meant.split())
        meant = meant[:1].lower() + meant[1:]
        lines += ["", f"--preset {name}: {runs} runs, meant to take {meant}"]
        lines += [f"  - {_describe_sweep(sweep)}" for sweep in sweeps]
    return "\n".join(lines)


def _add_reproduce(commands: Any) -> None:
    reproduce = commands.add_parser(
        "reproduce",
        help=COMMANDS["reproduce"][1],
        description=_reproduce_description(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reproduce.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="quick",
        help="which sweeps to run, as above (default %(default)s)",
    )
    reproduce.add_argument(
        "--out", default=None, help="results folder (default superloss-results/PRESET)"
    )
    reproduce.add_argument(
        "--data-root", default=None, help="folder holding datasets' files (default: none)"
    )
    reproduce.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    reproduce.add_argument(
        "--add", action="store_true", help="add to a folder holding another sweep"
    )
    reproduce.add_argument("--no-progress", action="store_true", help="no progress bar or lines")
    reproduce.add_argument(
        "--no-report", action="store_true", help="skip the report after the sweeps"
    )
    reproduce.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=f"runs trained at once (default: one per CPU core, {os.cpu_count() or 1} here)",
    )
    reproduce.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds 0, 1, … of every sweep (default: each sweep's, as above); runs of the "
        "first seeds already in --out are reused",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="superloss",
        description="SuperLoss benchmark suite.",
        epilog=_commands_listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"superloss {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    bench = commands.add_parser(
        "bench",
        help=COMMANDS["bench"][1],
        epilog=_tasks_listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    names = bench.add_subparsers(dest="task", parser_class=_Parser, metavar="NAME")
    for name in experiment_names():
        _add_experiment(names, experiment(name))
    tune = commands.add_parser(
        "tune",
        help=COMMANDS["tune"][1],
        description="Every method's default config and grid points (bench NAME's options; a "
        "hyper-parameter given as --METHOD-PARAM is fixed, not tuned), then the report with its "
        "paper-defaults and tuned-on-noisy-validation tables and DIR/tuning.json (the choices).",
    )
    tuned = tune.add_subparsers(dest="task", parser_class=_Parser, metavar="NAME")
    for name in experiment_names():
        if not experiment(name).own_command:  # tasks, trained by the training protocol
            _add_experiment(tuned, experiment(name))
    _add_reproduce(commands)
    report = commands.add_parser("report", help=COMMANDS["report"][1])
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


def _check_seeds(seeds: int) -> None:
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")


def _check_jobs(jobs: int) -> None:
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    if distributed.world()[1] > 1 and jobs > 1:
        raise UsageError("--jobs must be 1 under torchrun: every process trains each run together")


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--noise expects comma-separated rates in [0, 1), got {text!r}") from None
    if not values:
        raise UsageError("--noise expects at least one rate")
    for value in values:
        if not 0.0 <= value < 1.0:
            raise UsageError(f"--noise rates must be in [0, 1), got {value}")
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


def _method_params(
    args: argparse.Namespace, chosen: Experiment, methods: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The ``--METHOD-PARAM`` values given, each checked against its declaration, then each method's
    set checked by the method itself (``Method.check``)."""
    params: dict[str, dict[str, Any]] = {}
    for method, item in _hyper_parameters(chosen):
        value = getattr(args, _param_dest(method, item.name))
        if value is None:
            continue
        flag = _param_flag(method, item.name)
        if method not in methods:
            raise UsageError(f"{flag} given but {method!r} is not in --methods")
        _usage(functools.partial(item.check, label=flag), value)
        params.setdefault(method, {})[item.name] = value
    for method, given in params.items():
        _usage(METHODS.get(method).check, given)
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


def _check_accepts(chosen: Experiment, configs: Sequence[RunConfig]) -> None:
    """The dataset, model and noise type of each config are among those the task takes."""
    for kind in ("dataset", "model", "noise_type"):
        for value in sorted({getattr(config, kind) for config in configs}):
            if not chosen.task.accepts(kind, value):
                raise UsageError(
                    f"--{kind.replace('_', '-')} must be one of "
                    f"{', '.join(chosen.task.choices(kind))} for the {chosen.name} task, "
                    f"got {value!r}"
                )


def _sweep_from_args(args: argparse.Namespace, world: int | None) -> Sweep:
    chosen = experiment(args.task)
    methods = _methods(args, chosen)
    settings = _settings(args)
    _check_seeds(args.seeds)
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
        method_params=_method_params(args, chosen, methods),
    )
    configs = sweep.configs()
    for config in configs:
        _usage(chosen.check, config)
    _check_accepts(chosen, configs)
    return sweep


def _check_folder(out: Path) -> None:
    """A usage error unless ``out`` is a folder this process can create, or write in."""
    place = out.absolute()
    try:
        while not place.exists():  # the folder that the sweep's folders would be made in
            place = place.parent
        if not place.is_dir():
            what = "an existing file" if place == out.absolute() else f"{place} is a file"
            raise UsageError(f"--out must be a folder, got {str(out)!r}: {what}")
        with tempfile.TemporaryDirectory(dir=place, prefix=".superloss-check-"):
            pass  # a folder made and removed: what the sweep will need
    except OSError as error:
        raise UsageError(
            f"--out must be a folder this user can create or write in, got {str(out)!r}: "
            f"cannot write in {place} ({error.strerror or error})"
        ) from None


def _check_out(out: Path, keys: list[str], add: bool) -> list[str]:
    """``--out`` usable, and holding this sweep or none (or ``add``); the plan to record there."""
    from superloss.bench.results import PlanMismatch, check_plan

    _check_folder(out)
    try:
        return check_plan(out, keys, add)
    except PlanMismatch as error:
        raise UsageError(f"--out {error}") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"--out {out}: its sweep.json cannot be read ({error})") from None


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


def _run(sweeps: Sequence[Sweep], out: Path, args: argparse.Namespace, jobs: int) -> int:
    """Check ``--out`` and the data, record the plan, run the sweeps, write the report."""
    from superloss.bench.results import write_plan
    from superloss.bench.runner import run_sweep

    _check_jobs(jobs)
    configs = [config for sweep in sweeps for config in sweep.configs()]
    plan = _on_rank_zero(lambda: _check_out(out, [c.key() for c in configs], args.add))
    _check_data(sweeps)
    if distributed.world()[0] == 0:
        assert plan is not None
        write_plan(out, plan)
    run_sweep(configs, out, progress=not args.no_progress, jobs=jobs, started=args.started)
    if not getattr(args, "no_report", False) and distributed.world()[0] == 0:
        from superloss.bench.report import write_report

        print(f"report: {write_report(out)}")
    return 0


def _bench(args: argparse.Namespace, world: int | None) -> int:
    sweep = _sweep_from_args(args, world)
    return _run([sweep], _out_dir(args), args, args.jobs)


def _tune(args: argparse.Namespace, world: int | None) -> int:
    sweep = dataclasses.replace(_sweep_from_args(args, world), tune=True)
    return _run([sweep], _out_dir(args), args, args.jobs)


def _reproduce(args: argparse.Namespace, world: int | None) -> int:
    _check_device(args.device)
    sweeps = preset(args.preset)
    if args.seeds is not None:
        _check_seeds(args.seeds)
        sweeps = [dataclasses.replace(sweep, seeds=args.seeds) for sweep in sweeps]
    for sweep in sweeps:
        sweep.settings.update(device=args.device, data_root=args.data_root)
        if world is not None:
            sweep.settings["nproc"] = world
    jobs = args.jobs if args.jobs is not None else (1 if world else os.cpu_count() or 1)
    return _run(sweeps, _out_dir(args), args, jobs)


def _report(args: argparse.Namespace) -> int:
    from superloss.bench.report import write_report
    from superloss.bench.results import results_path

    folder = Path(args.dir)
    if not results_path(folder).is_file():
        raise UsageError(f"{folder} holds no results.jsonl to report on")
    print(f"report: {write_report(folder)}")
    return 0


def _out_dir(args: argparse.Namespace) -> Path:
    return Path(args.out or f"superloss-results/{args.preset}")


def _command(args: argparse.Namespace) -> int:
    """Run the parsed command; under torchrun, inside its process group."""
    if args.command is None or (args.command in ("bench", "tune") and args.task is None):
        listing = _commands_listing() if args.command is None else _tasks_listing()
        print(
            f"superloss: a {'command' if args.command is None else 'task'} is needed",
            file=sys.stderr,
        )
        print(listing, file=sys.stderr)
        return USAGE_EXIT
    if args.command == "report":
        return _report(args)
    world = distributed.torchrun_world_size()
    handler = {"bench": _bench, "tune": _tune, "reproduce": _reproduce}[args.command]
    if world is None:
        return handler(args, None)
    with distributed.from_torchrun(args.device):
        return handler(args, world)


def _unrecognized(unknown: Sequence[str], args: argparse.Namespace) -> str:
    """What is wrong with arguments the command does not take: a method's hyper-parameter for a
    task the method does not apply to is named as such."""
    task = getattr(args, "task", None)
    for name, method in METHODS.entries():
        flags = {_param_flag(name, item.name) for item in options_of(method.hyper_parameters)}
        given = next((flag for flag in flags if flag in unknown), None)
        if given is not None and task is not None:
            takes = ", ".join(experiment(task).methods())
            return f"{given}: the {task} task does not take method {name!r}; it takes {takes}"
    return f"unrecognized arguments: {' '.join(unknown)}"


def _stop_message(stop: BaseException, args: argparse.Namespace | None) -> str:
    """One line: which signal stopped the command, and where the finished runs are."""
    name = stop.args[0] if isinstance(stop, Stopped) else "SIGINT"
    if args is None or args.command not in ("bench", "reproduce"):
        return f"superloss: stopped by {name}"
    results = _out_dir(args) / RESULTS
    return (
        f"superloss: stopped by {name}; the runs finished are kept in {results}, "
        "rerun the same command to resume"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The ``superloss`` command. Exit codes: 0 done; 2 bad input or no command (the commands are
    listed); 130 stopped by SIGINT (Ctrl-C), 143 by SIGTERM. A stop ends every child process and
    keeps every finished run; later signals are ignored while it does."""
    started = time.time()
    args = None
    with stop_on_signals():
        try:
            args, unknown = build_parser().parse_known_args(argv)
            if unknown:
                raise UsageError(_unrecognized(unknown, args))
            args.started = started
            return _command(args)
        except UsageError as error:
            print(f"{error.prog}: error: {error}", file=sys.stderr)
            return USAGE_EXIT
        except (Stopped, KeyboardInterrupt) as stop:
            print(_stop_message(stop, args), file=sys.stderr)
            return stop.exit_code if isinstance(stop, Stopped) else 130


if __name__ == "__main__":
    raise SystemExit(main())

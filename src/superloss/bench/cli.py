"""The ``superloss`` command: ``bench TASK``, ``reproduce`` and ``report``.

Every input is checked before anything is written; a bad one ends with a one-line error and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from superloss.bench.presets import PRESETS, Sweep, preset
from superloss.bench.registry import DATASETS, METHODS, MODELS, NOISES, TASKS, UnknownName

DEFAULT_NOISE = "0,0.2,0.4,0.6"


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _parse_value(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _param_dest(method: str, param: str) -> str:
    return f"param__{method}__{param}"


def _add_method_params(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "method hyper-parameters (defaults fixed in each method's file)"
    )
    for method in METHODS.names():
        for param, default in METHODS.get(method).defaults.items():
            group.add_argument(
                f"--{method}-{param.replace('_', '-')}",
                dest=_param_dest(method, param),
                type=_parse_value,
                default=None,
                metavar="V",
                help=f"{method} {param} (default {default})",
            )


def _method_params(args: argparse.Namespace, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    params: dict[str, dict[str, Any]] = {}
    for method in METHODS.names():
        for param in METHODS.get(method).defaults:
            value = getattr(args, _param_dest(method, param))
            if value is not None:
                if method not in methods:
                    raise UsageError(
                        f"--{method}-{param.replace('_', '-')} given but {method!r} is not in --methods"
                    )
                params.setdefault(method, {})[param] = value
    return params


def _method_names(task: str) -> list[str]:
    """What ``--methods`` takes for ``task``: its own approaches, or the registered methods."""
    own = TASKS.get(task).methods
    return list(own) if own is not None else METHODS.names()


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="superloss", description="SuperLoss benchmark suite.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    bench = commands.add_parser("bench", help="run a sweep of one task")
    tasks = bench.add_subparsers(dest="task", required=True, parser_class=_Parser)
    for task in TASKS.names():
        sub = tasks.add_parser(
            task, help=f"the {task} task", description=f"A sweep of the {task} task."
        )
        sub.add_argument(
            "--dataset", default="digits", help=f"one of {', '.join(DATASETS.names())}"
        )
        sub.add_argument(
            "--model",
            default=None,
            help=f"one of {', '.join(MODELS.names())} (default per dataset)",
        )
        sub.add_argument(
            "--noise",
            default=TASKS.get(task).default_noise,
            help="comma-separated noise rates in [0, 1) (default %(default)s)",
        )
        sub.add_argument(
            "--noise-type",
            default=TASKS.get(task).default_noise_type,
            help=f"one of {', '.join(NOISES.names())} (default %(default)s)",
        )
        sub.add_argument(
            "--methods",
            default=TASKS.get(task).default_methods,
            help=f"comma-separated, of {', '.join(_method_names(task))} (default %(default)s)",
        )
        sub.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, …)")
        sub.add_argument("--epochs", type=int, default=None, help="default per dataset")
        sub.add_argument("--batch-size", type=int, default=None, help="default per dataset")
        sub.add_argument("--lr", type=float, default=None, help="default per dataset")
        sub.add_argument("--lr-schedule", choices=("constant", "cosine"), default=None)
        sub.add_argument("--weight-decay", type=float, default=5e-4)
        sub.add_argument(
            "--train-size", type=int, default=None, help="use the first N training samples"
        )
        sub.add_argument("--data-root", default=None, help="folder holding the dataset's files")
        sub.add_argument("--device", default="cpu", help="cpu or cuda")
        sub.add_argument(
            "--nproc",
            type=int,
            default=1,
            help="processes of torch.distributed DDP (gloo on CPU, nccl on CUDA)",
        )
        sub.add_argument("--compile", action="store_true", help="torch.compile the model")
        sub.add_argument(
            "--amp",
            action="store_true",
            help="autocast: bf16 on CPU, fp16 on CUDA (σ stays float32)",
        )
        sub.add_argument("--out", required=True, help="results folder")
        sub.add_argument(
            "--add", action="store_true", help="add these runs to a folder holding another sweep"
        )
        sub.add_argument("--no-report", action="store_true", help="skip the report after the sweep")
        sub.add_argument(
            "--jobs", type=int, default=1, help="runs trained at once in worker processes"
        )
        sub.add_argument("--no-progress", action="store_true", help="no progress bar")
        _add_method_params(sub)
        TASKS.get(task).add_arguments(sub)

    reproduce = commands.add_parser(
        "reproduce", help="the main job: a preset's sweeps of every task, then the report"
    )
    reproduce.add_argument("--preset", choices=PRESETS, default="quick")
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


def _check_device(device: str) -> None:
    import torch

    if device == "cpu":
        return
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA device is available here")
        return
    raise UsageError(f"--device must be cpu or cuda, got {device!r}")


def _check_name(registry: Any, name: str) -> None:
    try:
        registry.get(name)
    except UnknownName as error:
        raise UsageError(str(error)) from None


def _sweep_from_args(args: argparse.Namespace) -> Sweep:
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if not methods:
        raise UsageError("--methods expects at least one method")
    for name, registry in ((args.dataset, DATASETS), (args.noise_type, NOISES)):
        _check_name(registry, name)
    if args.model is not None:
        _check_name(MODELS, args.model)
    own = TASKS.get(args.task).methods
    for method in methods:
        if own is not None:
            if method not in own:
                raise UsageError(
                    f"unknown method {method!r} for the {args.task} task; expected one of: "
                    f"{', '.join(own)}"
                )
            continue
        _check_name(METHODS, method)
        applies = METHODS.get(method).tasks
        if applies is not None and args.task not in applies:
            raise UsageError(
                f"method {method!r} applies to {', '.join(applies)}, not {args.task!r}"
            )
    for flag, value in (
        ("--seeds", args.seeds),
        ("--epochs", args.epochs),
        ("--batch-size", args.batch_size),
        ("--train-size", args.train_size),
        ("--nproc", args.nproc),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if args.lr is not None and not args.lr > 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    _check_device(args.device)
    try:
        task_params = TASKS.get(args.task).task_params(args)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return Sweep(
        task=args.task,
        dataset=args.dataset,
        methods=methods,
        noises=_floats(args.noise),
        seeds=args.seeds,
        noise_type=args.noise_type,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        weight_decay=args.weight_decay,
        train_size=args.train_size,
        nproc=args.nproc,
        compile=args.compile,
        amp=args.amp,
        method_params=_method_params(args, methods),
        task_params=task_params,
        data_root=args.data_root,
        device=args.device,
    )


def _check_data(sweeps: Sequence[Sweep]) -> None:
    """Prepare the data of each (dataset, noise) once before anything is written, so that a missing
    dataset or a noise model that does not fit it fails up front rather than mid-sweep."""
    from superloss.bench.data import DataUnavailable
    from superloss.bench.runner import get_task

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
                get_task(config.task).prepare(config)
            except (DataUnavailable, ValueError) as error:
                raise UsageError(str(error)) from None


def _run(
    sweeps: Sequence[Sweep], out: Path, add: bool, progress: bool, report: bool, jobs: int = 1
) -> int:
    from superloss.bench.results import PlanMismatch, check_plan, write_plan
    from superloss.bench.runner import run_sweep

    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    _check_data(sweeps)
    configs = [config for sweep in sweeps for config in sweep.configs()]
    try:
        plan = check_plan(out, [c.key() for c in configs], add)
    except PlanMismatch as error:
        raise UsageError(str(error)) from None
    write_plan(out, plan)
    run_sweep(configs, out, progress=progress, jobs=jobs)
    if report:
        from superloss.bench.report import write_report

        written = write_report(out)
        print(f"report: {written}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command == "bench":
            sweep = _sweep_from_args(args)
            return _run(
                [sweep],
                Path(args.out),
                args.add,
                not args.no_progress,
                not args.no_report,
                args.jobs,
            )
        if args.command == "reproduce":
            _check_device(args.device)
            sweeps = preset(args.preset)
            for sweep in sweeps:
                sweep.device = args.device
                sweep.data_root = args.data_root
            out = Path(args.out or f"superloss-results/{args.preset}")
            jobs = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
            return _run(sweeps, out, args.add, not args.no_progress, report=True, jobs=jobs)
        if args.command == "report":
            from superloss.bench.report import write_report
            from superloss.bench.results import results_path

            folder = Path(args.dir)
            if not results_path(folder).is_file():
                raise UsageError(f"{folder} holds no results.jsonl to report on")
            print(f"report: {write_report(folder)}")
            return 0
        raise UsageError(f"unknown command {args.command!r}")
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

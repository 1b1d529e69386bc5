"""Training defaults per dataset, and the sweeps of ``superloss reproduce``.

Every value here was fixed before any result of the suite was seen, from the sources named beside it,
and is not to be tuned to a result. SGD with momentum 0.9 and weight decay 5e-4 throughout (the usual
setting of the noisy-label literature, e.g. CurBench and the SuperLoss paper's CIFAR runs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from superloss.bench.config import RunConfig
from superloss.bench.noise.boxes import BOX_NOISE_TYPES
from superloss.bench.options import defaults_of, options_of
from superloss.bench.protocols import experiment
from superloss.bench.tasks.detection import Detection
from superloss.bench.tasks.regression import Regression
from superloss.bench.tuning import expand

# Per dataset: model, epochs, batch size, learning rate and schedule.
# digits: a small MLP on ~1,100 images, constant LR, long enough for CE to memorise noisy labels (the
#   earlier quick check in the shared notes used an MLP, SGD and a constant LR on digits).
# mnist / mnist1d: MLP / CNN with a cosine schedule (the shared notes' MNIST check used cosine).
# cifar: ResNet-18, 120 epochs, cosine (CurBench uses 200; 120 keeps one run under a GPU-hour).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {
        "model": "mlp",
        "epochs": 60,
        "batch_size": 32,
        "lr": 0.05,
        "lr_schedule": "constant",
    },
    "mnist": {"model": "mlp", "epochs": 20, "batch_size": 128, "lr": 0.05, "lr_schedule": "cosine"},
    "mnist1d": {
        "model": "cnn",
        "epochs": 60,
        "batch_size": 128,
        "lr": 0.05,
        "lr_schedule": "cosine",
    },
    "digits-rotation": {
        "model": "mlp",
        "epochs": 30,
        "batch_size": 128,
        "lr": 0.05,
        "lr_schedule": "cosine",
    },
    "mnist-rotation": {
        "model": "mlp",
        "epochs": 20,
        "batch_size": 128,
        "lr": 0.05,
        "lr_schedule": "cosine",
    },
    "utkface": {
        "model": "cnn",
        "epochs": 60,
        "batch_size": 64,
        "lr": 0.05,
        "lr_schedule": "cosine",
    },
    "cifar10": {
        "model": "resnet18",
        "epochs": 120,
        "batch_size": 128,
        "lr": 0.1,
        "lr_schedule": "cosine",
    },
    "cifar100": {
        "model": "resnet18",
        "epochs": 120,
        "batch_size": 128,
        "lr": 0.1,
        "lr_schedule": "cosine",
    },
}
FALLBACK_DEFAULTS: dict[str, Any] = {
    "model": "mlp",
    "epochs": 30,
    "batch_size": 128,
    "lr": 0.05,
    "lr_schedule": "cosine",
}


def dataset_defaults(dataset: str) -> dict[str, Any]:
    return dict(DATASET_DEFAULTS.get(dataset, FALLBACK_DEFAULTS))


@dataclass
class Sweep:
    """A grid: every method × noise rate × seed of one task (``superloss bench NAME``) and dataset.

    ``settings`` sets any other :class:`RunConfig` field for every run. Unset, a per-dataset field
    (model, epochs, batch size, learning rate and schedule) takes the task's training default, else
    the dataset's (:func:`dataset_defaults`); the noise type, the task's default; any other field, its
    :class:`RunConfig` default. A task's alias of a noise type (detection's ``symmetric``) is resolved.
    ``tune``: a tuning sweep, each method's default config and its grid points
    (:func:`superloss.bench.tuning.expand`).
    """

    task: str
    dataset: str
    methods: tuple[str, ...]
    noises: tuple[float, ...]
    seeds: int = 3
    settings: dict[str, Any] = field(default_factory=dict)
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    tune: bool = False

    def __post_init__(self) -> None:
        fields = {item.name for item in dataclasses.fields(RunConfig)}
        unknown = set(self.settings) - (fields - set(_GRID))
        if unknown:
            raise ValueError(
                f"unknown sweep setting(s) {sorted(unknown)}; expected RunConfig fields"
            )

    def configs(self) -> list[RunConfig]:
        chosen = experiment(self.task)
        task = chosen.task
        shared: dict[str, Any] = {
            **dataset_defaults(self.dataset),
            "noise_type": task.default_noise_type,
            **task.training_defaults,
            **{name: value for name, value in self.settings.items() if value is not None},
        }
        shared["noise_type"] = task.noise_aliases.get(shared["noise_type"], shared["noise_type"])
        options, hold_defaults = chosen.options
        task_params = dict(shared.get("task_params", {}))
        if hold_defaults:  # every option, defaults included: a preset's run is the command line's
            task_params = {**defaults_of(options), **task_params}
        configs = [
            RunConfig(
                task=self.task,
                dataset=self.dataset,
                method=method,
                method_params=dict(self.method_params.get(method, {})),
                noise=noise,
                seed=seed,
                **{**shared, "task_params": dict(task_params)},
            )
            for noise in self.noises
            for seed in range(self.seeds)
            for method in self.methods
        ]
        return expand(configs) if self.tune else configs


_GRID = ("task", "dataset", "method", "method_params", "noise", "seed")

# The full preset trains on the first 10,000 MNIST training images (the size of an earlier quick
# check on this kind of machine, see the shared notes): the whole sweep then takes hours, not days, on
# 2 CPU cores. The test set is always MNIST's full 10,000 clean images.
FULL_MNIST_TRAIN = 10_000
# Detection: the detection task's training defaults (tasks/detection.py). Faster R-CNN (full preset):
# lr 0.05, 40 epochs, extrapolated from a 24-epoch validation run still rising at 0.64.
FASTER_RCNN: dict[str, Any] = {"model": "fasterrcnn", "epochs": 40, "lr": 0.05}


PAIR = ("plain", "superloss")  # the plain loss against SuperLoss
WITH_SPL = (*PAIR, "spl")


def methods_for(task: str) -> tuple[str, ...]:
    """Every registered method ``task`` takes (its approaches, for a protocol's command)."""
    return tuple(experiment(task).methods())


def base_losses() -> tuple[str, ...]:
    """The regression task's base losses, as its ``--base-loss`` option declares them."""
    (base_loss,) = [item for item in options_of(Regression.Options) if item.name == "base_loss"]
    assert base_loss.spec.choices is not None
    return tuple(base_loss.spec.choices)


def _per_base_loss(
    dataset: str,
    methods: tuple[str, ...],
    noises: tuple[float, ...],
    task_params: dict[str, Any] | None = None,
    **settings: Any,
) -> list[Sweep]:
    return [
        Sweep(
            "regression",
            dataset,
            methods,
            noises,
            settings={**settings, "task_params": {**(task_params or {}), "base_loss": loss}},
        )
        for loss in base_losses()
    ]


# SuperLoss on top of the robust losses (its ``base`` option): rows of their own in every table.
ROBUST_BASES = ("gce", "sce")
# The classification noise settings of the acceptance: symmetric at these rates, asymmetric at 0.4.
SYMMETRIC_RATES = (0.0, 0.2, 0.4, 0.6)
ASYMMETRIC_RATES = (0.4,)


def classification_sweeps(
    dataset: str,
    tune: bool = False,
    bases: bool = True,
    symmetric: tuple[float, ...] = SYMMETRIC_RATES,
    **settings: Any,
) -> list[Sweep]:
    """Every classification method under symmetric (at ``symmetric``) and asymmetric noise, and
    (``bases``) SuperLoss on each robust base loss; ``tune``: each method's grid too."""
    sweeps = []
    for noise_type, rates in (("symmetric", symmetric), ("asymmetric", ASYMMETRIC_RATES)):
        shared = {**settings, "noise_type": noise_type}
        sweeps.append(
            Sweep(
                "classification",
                dataset,
                methods_for("classification"),
                rates,
                settings=shared,
                tune=tune,
            )
        )
        sweeps += [
            Sweep(
                "classification",
                dataset,
                ("superloss",),
                rates,
                settings=shared,
                method_params={"superloss": {"base": base}},
                tune=tune,
            )
            for base in ROBUST_BASES
            if bases
        ]
    return sweeps


# The regression scale check: the base loss in the targets' units, the targets ×1 and ×10, with
# Adam (its step does not scale with the loss, SGD's does) at its usual rate (Kingma & Ba) and no
# weight decay (added to the gradient, it would weigh 100× less against an L2 loss ×100).
TARGET_SCALES = (1.0, 10.0)
SCALE_CHECK: dict[str, Any] = {"optimizer": "adam", "lr": 0.001, "weight_decay": 0.0}


def scale_check_sweeps(
    dataset: str,
    noises: tuple[float, ...],
    losses: tuple[str, ...] | None = None,
    **settings: Any,
) -> list[Sweep]:
    """Plain loss and SuperLoss, each base loss (default: all) in the targets' units, targets ×1
    and ×10."""
    return [
        sweep
        for scale in TARGET_SCALES
        for sweep in _per_base_loss(
            dataset,
            PAIR,
            noises,
            {"target_units": True, "target_scale": scale},
            **SCALE_CHECK,
            **settings,
        )
        if losses is None or sweep.settings["task_params"]["base_loss"] in losses
    ]


# The quick preset's classification noise settings: the acceptance's, less symmetric 0.2 (in
# tune-quick with the others), to fit its time limit.
QUICK_SYMMETRIC_RATES = (0.0, 0.4, 0.6)


def _quick() -> list[Sweep]:
    """≤ 10 minutes on 2 CPU cores, under load.

    The seven classification methods at symmetric noise 0 / 0.4 / 0.6 and asymmetric 0.4, the
    regression units check, retrieval and noise detection at one noisy rate each.

    Trimmed to fit (measured, docs/results.md): symmetric 0.2 and SuperLoss on GCE / SCE are in
    ``tune-quick`` (defaults and grids); the SGD regression sweep, the rotation angle, detection and
    the units check of L1 and smooth-L1 are in ``full`` only (quick's is L2's, a unit-free shape).
    """
    noise_detection = {"task_params": {"folds": 5, "retrain": True}}
    return [
        *classification_sweeps("digits", bases=False, symmetric=QUICK_SYMMETRIC_RATES),
        *scale_check_sweeps("digits", (0.4, 0.6), losses=("l2",)),
        Sweep("retrieval", "digits", PAIR, (0.6,)),
        Sweep(
            "noise-detection",
            "digits",
            methods_for("noise-detection"),
            (0.4,),
            settings=noise_detection,
        ),
    ]


def _full() -> list[Sweep]:
    """Hours on 2 CPU cores."""
    noises = (0.0, 0.2, 0.4, 0.6)
    subset: dict[str, Any] = {"train_size": FULL_MNIST_TRAIN}
    noise_detection = {**subset, "task_params": {"folds": 5, "retrain": True}}
    box_kinds = [kind for kind in BOX_NOISE_TYPES if kind != Detection.default_noise_type]
    return [
        *classification_sweeps("mnist", **subset),
        *_per_base_loss("mnist", WITH_SPL, noises, **subset),
        *scale_check_sweeps("mnist", (0.4, 0.6), **subset),
        Sweep(
            "regression",
            "mnist-rotation",
            WITH_SPL,
            noises,
            settings={**subset, "task_params": {"base_loss": "l2"}},
        ),
        Sweep("retrieval", "mnist", PAIR, noises, settings=subset),
        Sweep("detection", "digits", PAIR, noises),
        *(
            Sweep("detection", "digits", PAIR, (0.4,), settings={"noise_type": kind})
            for kind in box_kinds
        ),
        Sweep(
            "noise-detection",
            "mnist",
            methods_for("noise-detection"),
            noises[1:],
            settings=noise_detection,
        ),
        # Last: hours on 2 CPU cores (about 10 minutes a run).
        Sweep("detection", "digits", PAIR, (0.0, 0.4), settings=FASTER_RCNN),
    ]


def _tune_quick() -> list[Sweep]:
    """About 15 minutes on 2 CPU cores, added to the quick folder (measured, docs/results.md).

    The quick preset's classification sweeps with every method's grid, and SuperLoss on GCE / SCE
    (digits); its other default runs are the quick preset's, so ``--add`` into the quick folder
    reuses them.
    """
    return classification_sweeps("digits", tune=True)


def _tune_full() -> list[Sweep]:
    """Hours on 2 CPU cores.

    The full preset's classification sweeps with every method's grid (MNIST).
    """
    return classification_sweeps("mnist", tune=True, train_size=FULL_MNIST_TRAIN)


PRESETS = {"quick": _quick, "full": _full, "tune-quick": _tune_quick, "tune-full": _tune_full}


def preset(name: str) -> list[Sweep]:
    """The sweeps of a preset: ``quick`` (≤ 10 minutes on 2 CPU cores), ``full`` (hours), and
    their tuning sweeps ``tune-quick`` and ``tune-full``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]()

"""Human label noise: the CIFAR-N labels (Wei et al., "Learning with Noisy Labels Revisited: A Study
Using Real-World Human Annotations", ICLR 2022), given by Amazon Mechanical Turk annotators.

Each ``human-*`` noise type replaces every training and validation label by one of CIFAR-N's label
sets, which the cifar loaders put in ``Splits.extra_train_labels`` / ``extra_val_labels`` when
``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt`` lies in the data folder. Names follow the noise
types of the official code (https://github.com/UCSC-REAL/cifar-10-100n); the rates are the paper's:

==================  ========  =================  ==========
noise type          dataset   label set          noise rate
==================  ========  =================  ==========
``human-aggre``     cifar10   ``aggre_label``    9.03%
``human-rand1``     cifar10   ``random_label1``  17.23%
``human-rand2``     cifar10   ``random_label2``  18.12%
``human-rand3``     cifar10   ``random_label3``  17.64%
``human-worst``     cifar10   ``worse_label``    40.21%
``human-noisy100``  cifar100  ``noisy_label``    40.20%
==================  ========  =================  ==========

The annotators fix the noise, not a rate: these types accept only rate 0 (``--noise 0``) and
raise ``ValueError`` for any other, rather than ignore it, so that a sweep never holds identical
runs under different rates. The realised rate is recorded with each run as for any noise type.
The random generator is not used. A dataset without the label set raises ``ValueError`` (another
dataset) or ``DataUnavailable`` saying where to get the file (cifar10 / cifar100 without it).
"""

from __future__ import annotations

from torch import Tensor

from superloss.bench.data.base import DataUnavailable
from superloss.bench.noise.base import NOISES, NoiseContext

CIFAR_N_URL = "https://github.com/UCSC-REAL/cifar-10-100n"
# noise type: (dataset, key in the CIFAR-N file)
HUMAN_LABEL_SETS = {
    "human-aggre": ("cifar10", "aggre_label"),
    "human-rand1": ("cifar10", "random_label1"),
    "human-rand2": ("cifar10", "random_label2"),
    "human-rand3": ("cifar10", "random_label3"),
    "human-worst": ("cifar10", "worse_label"),
    "human-noisy100": ("cifar100", "noisy_label"),
}
HUMAN_FILES = {"cifar10": "CIFAR-10_human.pt", "cifar100": "CIFAR-100_human.pt"}


def human_labels(
    name: str,
    labels: Tensor,
    rate: float,
    *,
    num_classes: int,
    dataset: str,
    extra: dict[str, Tensor],
) -> Tensor:
    """The ``name`` label set from ``extra``, checked against the dataset, rate and labels."""
    applies_to, key = HUMAN_LABEL_SETS[name]
    if rate != 0:
        raise ValueError(
            f"noise type {name!r} uses the annotators' labels, whose noise rate is fixed: "
            f"give the noise rate 0 (--noise 0), not {rate}"
        )
    if dataset != applies_to:
        raise ValueError(f"noise type {name!r} holds labels of {applies_to}, not of {dataset!r}")
    if key not in extra:
        file = HUMAN_FILES[applies_to]
        raise DataUnavailable(
            f"noise type {name!r} needs {file} (CIFAR-N's human labels) in the {applies_to} data "
            f"folder: get data/{file} from {CIFAR_N_URL}"
        )
    noisy = extra[key]
    if noisy.shape != labels.shape:
        raise ValueError(
            f"{key!r} holds {tuple(noisy.shape)} labels, the split has {tuple(labels.shape)}"
        )
    if len(noisy) and (int(noisy.min()) < 0 or int(noisy.max()) >= num_classes):
        raise ValueError(f"{key!r} holds labels outside 0…{num_classes - 1}")
    return noisy.to(dtype=labels.dtype, copy=True)


def _register(name: str) -> None:
    @NOISES.register(name)
    def noise(labels: Tensor, rate: float, context: NoiseContext) -> Tensor:
        return human_labels(
            name,
            labels,
            rate,
            num_classes=context.num_classes,
            dataset=context.dataset,
            extra=context.extra,
        )


for _name in HUMAN_LABEL_SETS:
    _register(_name)

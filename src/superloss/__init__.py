"""SuperLoss (Castells, Weinzaepfel & Revaud, NeurIPS 2020) for PyTorch.

Read in the order the data flows: :mod:`superloss.lambertw` → :mod:`superloss.functional` (σ*, the loss)
→ :mod:`superloss.threshold` (τ state) → :mod:`superloss.auto_lambda` (``lam="auto"``) →
:mod:`superloss.normalization` (``normalize=True``) → :class:`superloss.SuperLoss` → :mod:`superloss.tracking`.
The core imports only torch.
"""

from superloss.auto_lambda import AutoLambda
from superloss.functional import confidence, super_loss
from superloss.lambertw import lambertw
from superloss.loss import SuperLoss
from superloss.threshold import ConstantThreshold, EMAThreshold, GlobalMeanThreshold
from superloss.tracking import ConfidenceTracker

__version__ = "0.5.0"

__all__ = [
    "AutoLambda",
    "ConfidenceTracker",
    "ConstantThreshold",
    "EMAThreshold",
    "GlobalMeanThreshold",
    "SuperLoss",
    "__version__",
    "confidence",
    "lambertw",
    "super_loss",
]

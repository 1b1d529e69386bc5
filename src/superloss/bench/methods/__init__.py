"""Methods: one file each, registered by name. Each is a per-sample loss or a sample weighting."""

from superloss.bench.methods import bootstrap, ce, data_params, gce, sce, spl, superloss  # noqa: F401
from superloss.bench.methods.base import METHODS, Method, MethodContext, MethodOutput, build_method

__all__ = ["METHODS", "Method", "MethodContext", "MethodOutput", "build_method"]

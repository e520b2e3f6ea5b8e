"""edgeflow: compress a CNN for an edge device, export it, measure it there, and report.

The public API (defined in :mod:`edgeflow.api`, which the CLI calls and nothing else):

    >>> import edgeflow
    >>> report = edgeflow.optimize("mobilenetv3", device="cpu", recipe="demo")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeflow.errors import EdgeflowError

__version__ = "0.1.0"

_LAZY = {
    "optimize": "edgeflow.api",
    "export": "edgeflow.api",
    "profile": "edgeflow.api",
    "evaluate": "edgeflow.api",
    "quantize": "edgeflow.api",
    "search": "edgeflow.api",
    "run_nightly": "edgeflow.api",
    "create_model": "edgeflow.models",
    "list_models": "edgeflow.models",
    "load_device": "edgeflow.device",
    "load_recipe": "edgeflow.recipe",
    "load_data": "edgeflow.data",
}

if TYPE_CHECKING:
    from edgeflow.api import evaluate, export, optimize, profile, quantize, run_nightly, search
    from edgeflow.data import load_data
    from edgeflow.device import load_device
    from edgeflow.models import create_model, list_models
    from edgeflow.recipe import load_recipe


def __getattr__(name: str) -> Any:
    # Lazy so that `import edgeflow` stays fast and never imports a runtime it does not need.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeflow' has no attribute {name!r}")


__all__ = [
    "EdgeflowError",
    "__version__",
    "create_model",
    "evaluate",
    "export",
    "list_models",
    "load_data",
    "load_device",
    "load_recipe",
    "optimize",
    "profile",
    "quantize",
    "run_nightly",
    "search",
]

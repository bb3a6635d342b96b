"""mlhub: durable ML job queues, training, registry and serving on Ray.

The public Python API is small on purpose: ``mlhub.Hub`` (see :mod:`mlhub.client`) and ``mlhub.start_run``
(tracking from any script, see :mod:`mlhub.run_logging`). Both are imported lazily, so ``import mlhub`` and
``import mlhub.training.torch_step`` and friends stay light.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Hub", "__version__", "active_run", "start_run"]


def __getattr__(name: str) -> Any:
    if name == "Hub":
        from mlhub.client import Hub

        return Hub
    if name in ("start_run", "active_run"):
        from mlhub import run_logging

        return getattr(run_logging, name)
    raise AttributeError(f"module 'mlhub' has no attribute {name!r}")

"""mlhub: durable ML job queues, training, registry and serving on Ray.

The public Python API is small on purpose: ``mlhub.Hub`` (see :mod:`mlhub.client`). It is imported
lazily, so ``import mlhub.training.torch_step`` and friends stay light.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Hub", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Hub":
        from mlhub.client import Hub

        return Hub
    raise AttributeError(f"module 'mlhub' has no attribute {name!r}")

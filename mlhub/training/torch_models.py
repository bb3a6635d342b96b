"""mlhub's built-in PyTorch model family: ``mlp``, ``cnn`` (8x8 digits images) and ``tabular``.

Device-agnostic ``torch.nn.Module``s; the caller moves them (``model.to(device)``). This module imports only
``torch`` (no Ray, no store, no specs) so that ``benchmarks/gpu_step_bench.py`` can load it by file path on
a GPU machine that has PyTorch and nothing else. Bad names or params raise ``ValueError`` listing every
problem and the valid names/params; :func:`model_problems` returns the same problems as a list.

    model = build_model("mlp", in_features=64, out_features=10, hidden=[256, 256], dropout=0.1)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["MODELS", "MODEL_PARAMS", "MLP", "DigitsCNN", "TabularNet", "build_model", "model_problems"]


class MLP(nn.Module):
    """Fully connected layers with ReLU (and dropout when ``dropout > 0``) between them.

    Input ``(N, in_features)``, or any ``(N, ...)`` that flattens to it; output ``(N, out_features)``.
    """

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (128, 128),
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class DigitsCNN(nn.Module):
    """A small CNN for square one-channel images (scikit-learn's 8x8 ``digits`` by default).

    Two 3x3 convolutions (``channels``), a 2x2 max-pool, then a 64-unit hidden layer. Input ``(N, 1, S, S)``
    or flat ``(N, S*S)`` (reshaped here), with ``S = image_size``; output ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int = 10, image_size: int = 8, channels: Sequence[int] = (16, 32),
                 dropout: float = 0.0) -> None:
        super().__init__()
        c1, c2 = channels
        self.image_size = image_size
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = image_size // 2
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * side * side, 64), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(64, num_classes),
        )
        self.in_features = image_size * image_size
        self.out_features = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            x = x.reshape(x.shape[0], 1, self.image_size, self.image_size)
        return self.head(self.features(x))


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, width),
            nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TabularNet(nn.Module):
    """For tabular features: batch-normalised input, a linear stem, ``depth`` residual blocks
    (BatchNorm-ReLU-Linear twice, plus the skip), then BatchNorm-ReLU and a linear head.

    The input batchnorm standardises raw features, so unscaled columns train well. Train with batches of
    at least 2 rows (BatchNorm's rule); ``model.eval()`` predicts single rows.
    """

    def __init__(self, in_features: int, out_features: int, width: int = 128, depth: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.input_norm = nn.BatchNorm1d(in_features)
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.Sequential(*[_ResidualBlock(width, dropout) for _ in range(depth)])
        self.head = nn.Sequential(nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, out_features))
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(self.input_norm(x.flatten(1)))))


# --- registry ------------------------------------------------------------------------------------------

def _mlp(in_features: int, out_features: int, **p: Any) -> nn.Module:
    return MLP(in_features, out_features, **p)


def _cnn(in_features: int, out_features: int, **p: Any) -> nn.Module:
    return DigitsCNN(num_classes=out_features, image_size=math.isqrt(in_features), **p)


def _tabular(in_features: int, out_features: int, **p: Any) -> nn.Module:
    return TabularNet(in_features, out_features, **p)


MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": _mlp, "cnn": _cnn, "tabular": _tabular}
"""name -> ``factory(in_features, out_features, **params)``."""

MODEL_PARAMS: dict[str, dict[str, str]] = {
    "mlp": {"hidden": "list of layer widths, each an int >= 1 (default [128, 128])",
            "dropout": "float in [0, 1) (default 0.0)"},
    "cnn": {"channels": "two ints >= 1, the convolutions' channels (default [16, 32])",
            "dropout": "float in [0, 1) (default 0.0)"},
    "tabular": {"width": "int >= 1 (default 128)", "depth": "int >= 0 residual blocks (default 2)",
                "dropout": "float in [0, 1) (default 0.0)"},
}
"""name -> {param: what it takes}; the only params each model accepts."""

_MAX_WIDTH = 1 << 16


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_problem(name: str, v: Any, lo: int) -> str | None:
    if not _is_int(v) or not lo <= v <= _MAX_WIDTH:
        return f"{name} must be an int in [{lo}, {_MAX_WIDTH}] (got {v!r})"
    return None


def model_problems(name: str, in_features: Any, out_features: Any, params: dict[str, Any] | None = None,
                   *, framework: str = "torch") -> list[str]:
    """Every problem with building model ``name`` for these sizes and params; ``[]`` when it can be built.
    ``in_features``/``out_features`` may be ``None`` when not known yet (a CSV not read yet): the checks that
    need them are skipped. The TensorFlow family has the same names and params and shares this check."""
    params = dict(params or {})
    if name not in MODELS:
        return [f"unknown {framework} model {name!r}: use one of {', '.join(MODELS)}"]
    problems = [p for p in (None if in_features is None else _int_problem("in_features", in_features, 1),
                            None if out_features is None else _int_problem("out_features", out_features, 1))
                if p]
    valid = MODEL_PARAMS[name]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        problems.append(f"unknown params for {framework} model {name}: {', '.join(map(str, unknown))} "
                        f"(valid: {'; '.join(f'{k}: {v}' for k, v in valid.items())})")
    if "dropout" in params:
        d = params["dropout"]
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0 <= d < 1:
            problems.append(f"param 'dropout' must be a number in [0, 1) (got {d!r})")
    if name == "mlp" and "hidden" in params:
        h = params["hidden"]
        if (not isinstance(h, list | tuple) or len(h) > 64
                or any(_int_problem("", w, 1) for w in h)):
            problems.append(f"param 'hidden' must be a list of at most 64 ints in [1, {_MAX_WIDTH}] (got {h!r})")
    if name == "cnn":
        if "channels" in params:
            c = params["channels"]
            if not isinstance(c, list | tuple) or len(c) != 2 or any(_int_problem("", w, 1) for w in c):
                problems.append(f"param 'channels' must be two ints in [1, {_MAX_WIDTH}] (got {c!r})")
        if _is_int(in_features) and in_features >= 1:
            side = math.isqrt(in_features)
            if side * side != in_features or side < 2:
                problems.append(f"{framework} model cnn takes square one-channel images: in_features must be a "
                                f"square >= 4, e.g. 64 for 8x8 digits (got {in_features})")
    if name == "tabular":
        for key, lo in (("width", 1), ("depth", 0)):
            if key in params and (p := _int_problem(f"param {key!r}", params[key], lo)):
                problems.append(p)
    return problems


def build_model(name: str, in_features: int, out_features: int, **params: Any) -> nn.Module:
    """A fresh model ``name`` (a key of :data:`MODELS`) taking ``in_features`` inputs and giving
    ``out_features`` outputs (classes, or 1 for regression). ValueError lists every problem."""
    problems = model_problems(name, in_features, out_features, params)
    if problems:
        raise ValueError("invalid torch model: " + "; ".join(problems))
    return MODELS[name](in_features, out_features, **params)

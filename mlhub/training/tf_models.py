"""mlhub's built-in Keras model family, mirroring the torch one: ``mlp``, ``cnn`` (8x8 digits images) and
``tabular``.

Keras here is always ``tf-keras`` (Keras 2): Keras 3, which ``tensorflow`` 2.21 installs by default, fails under
``MultiWorkerMirroredStrategy`` (RAY_NOTES.md). Every import of TensorFlow goes through :func:`import_tf`, which
sets ``TF_USE_LEGACY_KERAS=1`` first, so no process of ours gets Keras 3 by accident. Nothing is imported at
module import time: importing mlhub never imports TensorFlow, an optional extra (``mlhub[tensorflow]``);
:func:`tensorflow_problems` says whether it is installed without importing it.

Each model takes raw features: a ``Normalization`` layer holding the training mean and variance comes first,
and a regression model ends with a ``Rescaling`` back to the target's units, so the saved ``.keras`` file is
the whole prediction function. Outputs are logits (classification) or values (regression, one column).

    model = build_model("mlp", 64, 10, hidden=[256, 256], dropout=0.1, feature_mean=m, feature_var=v)
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from typing import Any

__all__ = [
    "KERAS_LAYERS",
    "MODELS",
    "TF_EXTRA_HINT",
    "build_model",
    "effective_params",
    "import_keras",
    "import_tf",
    "model_problems",
    "tensorflow_problems",
]

TF_EXTRA_HINT = "framework tensorflow needs the tensorflow extra: pip install 'mlhub[tensorflow]'"

MODELS = ("mlp", "cnn", "tabular")


DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": [128, 128], "dropout": 0.0},
    "cnn": {"channels": [16, 32], "dropout": 0.0},
    "tabular": {"width": 128, "depth": 2, "dropout": 0.0},
}

KERAS_LAYERS = frozenset({
    "Functional", "Sequential", "InputLayer", "Normalization", "Dense", "Dropout", "Reshape", "Conv2D",
    "MaxPooling2D", "Flatten", "BatchNormalization", "Activation", "ReLU", "Add", "Rescaling",
})
"""The Keras classes these builders use: the only layer classes a stored model may name
(:mod:`mlhub.training.serialization` refuses any other)."""



def import_tf() -> Any:
    """``tensorflow``, imported with ``TF_USE_LEGACY_KERAS=1`` so that ``tf.keras`` is tf-keras (Keras 2).
    ImportError (naming the extra) when TensorFlow or tf-keras is not installed."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    problems = tensorflow_problems()
    if problems:
        raise ImportError(problems[0])
    import tensorflow as tf

    return tf


def import_keras() -> Any:
    """The ``tf_keras`` package (Keras 2), after :func:`import_tf`."""
    import_tf()
    import tf_keras

    return tf_keras


def tensorflow_problems() -> list[str]:
    """``[TF_EXTRA_HINT]`` when tensorflow or tf-keras is not installed, else ``[]``; imports neither."""
    for name in ("tensorflow", "tf_keras"):
        try:
            if importlib.util.find_spec(name) is None:
                return [TF_EXTRA_HINT]
        except (ImportError, ValueError):
            return [TF_EXTRA_HINT]
    return []


# --- validation ----------------------------------------------------------------------------------------


def model_problems(name: str, in_features: Any, out_features: Any, params: dict[str, Any] | None = None
                   ) -> list[str]:
    """Every problem with building model ``name`` for these sizes and params; ``[]`` when it can be built.
    ``in_features``/``out_features`` may be ``None`` when not known yet (a CSV not read yet). The Keras family
    mirrors the torch one (same names and params), so the torch family's check serves both."""
    from mlhub.training.torch_models import model_problems as family_problems

    return family_problems(name, in_features, out_features, params, framework="tensorflow")


def effective_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The model's params with defaults filled in (lists, never tuples: JSON-ready)."""
    out = {**DEFAULTS[name], **params}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


# --- builders ------------------------------------------------------------------------------------------


def _stats(values: Sequence[float] | None, n: int, fill: float) -> list[float]:
    if values is None:
        return [fill] * n
    out = [float(v) for v in values]
    if len(out) != n:
        raise ValueError(f"expected {n} statistics, got {len(out)}")
    return out


def build_model(name: str, in_features: int, out_features: int, *,
                feature_mean: Sequence[float] | None = None, feature_var: Sequence[float] | None = None,
                target_mean: float | None = None, target_std: float | None = None, **params: Any) -> Any:
    """A fresh, uncompiled Keras model ``name`` (one of :data:`MODELS`) taking ``in_features`` raw features and
    giving ``out_features`` logits (classes) or values (regression, 1).

    ``feature_mean``/``feature_var`` (per feature; default 0 and 1) standardise the input inside the model;
    ``target_mean``/``target_std`` (a regression target's, when given) rescale the output back to the
    target's units. ValueError lists every problem with the name, sizes or params."""
    problems = model_problems(name, in_features, out_features, params)
    if problems:
        raise ValueError("invalid tensorflow model: " + "; ".join(problems))
    keras = import_keras()
    layers = keras.layers
    p = effective_params(name, params)
    inputs = keras.Input(shape=(in_features,), name="features")
    x = layers.Normalization(mean=_stats(feature_mean, in_features, 0.0), variance=_stats(feature_var, in_features, 1.0),
                             name="standardize")(inputs)
    dropout = float(p["dropout"])
    if name == "mlp":
        for i, width in enumerate(p["hidden"]):
            x = layers.Dense(int(width), activation="relu", name=f"dense_{i}")(x)
            if dropout > 0:
                x = layers.Dropout(dropout, name=f"dropout_{i}")(x)
    elif name == "cnn":
        side = math.isqrt(in_features)
        c1, c2 = (int(c) for c in p["channels"])
        x = layers.Reshape((side, side, 1), name="image")(x)
        x = layers.Conv2D(c1, 3, padding="same", activation="relu", name="conv_0")(x)
        x = layers.Conv2D(c2, 3, padding="same", activation="relu", name="conv_1")(x)
        x = layers.MaxPooling2D(2, name="pool")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(64, activation="relu", name="hidden")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name="dropout")(x)
    else:  # tabular: a linear stem, residual blocks (BN-ReLU-Dense twice + skip), then BN-ReLU
        width = int(p["width"])
        x = layers.Dense(width, name="stem")(x)
        for i in range(int(p["depth"])):
            h = layers.BatchNormalization(name=f"block{i}_bn0")(x)
            h = layers.ReLU(name=f"block{i}_relu0")(h)
            h = layers.Dense(width, name=f"block{i}_dense0")(h)
            h = layers.BatchNormalization(name=f"block{i}_bn1")(h)
            h = layers.ReLU(name=f"block{i}_relu1")(h)
            if dropout > 0:
                h = layers.Dropout(dropout, name=f"block{i}_dropout")(h)
            h = layers.Dense(width, name=f"block{i}_dense1")(h)
            x = layers.Add(name=f"block{i}_add")([x, h])
        x = layers.BatchNormalization(name="head_bn")(x)
        x = layers.ReLU(name="head_relu")(x)
    out = layers.Dense(out_features, name="output")(x)
    if target_mean is not None or target_std is not None:
        out = layers.Rescaling(scale=float(target_std if target_std is not None else 1.0),
                               offset=float(target_mean or 0.0), name="target_scale")(out)
    return keras.Model(inputs, out, name=f"mlhub_{name}")

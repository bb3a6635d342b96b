"""Loading stored models safely: npz without pickle, skops with an explicit allow-list of types.

No pickle (plain, gzip'd, joblib) is ever loaded. A skops archive is read only when every type its
schema names is in :func:`allowed_skops_types` (mlhub's estimators, their internal helper types,
numpy arrays/scalars and plain builtins); those types are passed to ``skops.io.loads`` as an explicit
``trusted`` list, never ``trusted=True``. Anything else raises :class:`mlhub.errors.ModelLoadError`.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from mlhub.errors import ModelLoadError

__all__ = ["SUPPORTED_FORMATS", "LoadedModel", "allowed_skops_types", "load_model", "skops_type_names"]

SUPPORTED_FORMATS = {("baseline", "npz"), ("sklearn", "skops"), ("torch", "pt"), ("tensorflow", "keras")}
_REFUSED_FORMATS = {"pickle", "pkl", "joblib", "cloudpickle", "dill"}
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_SCHEMA_BYTES = 64 << 20


class LoadedModel:
    """A model ready to predict: ``predict(x)`` for a 2-D float array, and ``predict_proba(x)`` (columns
    in ``classes`` order) only when the model has one (``hasattr(model, "predict_proba")`` says)."""

    def __init__(self, *, framework: str, model_format: str, task: str, classes: list | None, n_features: int | None,
                 predict: Callable[[np.ndarray], np.ndarray],
                 predict_proba: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.framework = framework
        self.model_format = model_format
        self.task = task
        self.classes = classes
        self.n_features = n_features
        self._predict = predict
        self._proba = predict_proba

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels (classification) or values (regression), one per row."""
        return np.asarray(self._predict(np.asarray(x, dtype=np.float64)))

    @property
    def predict_proba(self) -> Callable[[np.ndarray], np.ndarray]:
        """Class probabilities; AttributeError when the model gives none (so ``hasattr`` works)."""
        if self._proba is None:
            raise AttributeError(f"this {self.framework} model has no predict_proba")
        proba = self._proba
        return lambda x: np.asarray(proba(np.asarray(x, dtype=np.float64)))

    def __repr__(self) -> str:
        return f"LoadedModel({self.framework}/{self.model_format}, task={self.task}, n_features={self.n_features})"


def load_model(framework: str, model_format: str, payload: bytes) -> LoadedModel:
    """Load a serialised model; ModelLoadError for refused formats, untrusted types or corrupt bytes."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ModelLoadError(f"a model payload must be bytes, got {type(payload).__name__}")
    payload = bytes(payload)
    fmt = (model_format or "").lower()
    if fmt in _REFUSED_FORMATS:
        raise ModelLoadError(f"model format {model_format!r} is refused: pickle-based formats are never loaded")
    if (framework, fmt) == ("torch", "pt"):
        from mlhub.training.torch_adapter import load_torch_model

        return load_torch_model(payload)
    if (framework, fmt) == ("tensorflow", "keras"):
        return _load_keras(payload)
    if (framework, fmt) not in SUPPORTED_FORMATS:
        raise ModelLoadError(f"unsupported model format {framework}/{model_format} (supported: "
                             f"{', '.join(f'{a}/{b}' for a, b in sorted(SUPPORTED_FORMATS))})")
    if fmt == "npz":
        return _load_npz(payload)
    return _load_skops(payload)


def _load_npz(payload: bytes) -> LoadedModel:
    from mlhub.training.baseline import load_npz, npz_predict, npz_predict_proba

    arrays = load_npz(payload)
    logistic = str(arrays["kind"]) == "logistic"
    return LoadedModel(framework="baseline", model_format="npz",
                       task="classification" if logistic else "regression",
                       classes=arrays["classes"].tolist() if logistic else None,
                       n_features=int(arrays["mean"].shape[0]),
                       predict=functools.partial(npz_predict, arrays),
                       predict_proba=functools.partial(npz_predict_proba, arrays) if logistic else None)


# --- skops ---------------------------------------------------------------------------------------------


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _classes_in(module_name: str, pred: Callable[[str, type], bool]) -> set[str]:
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError:  # pragma: no cover - a private sklearn module moved
        return set()
    return {f"{module_name}.{n}" for n, obj in vars(module).items()
            if inspect.isclass(obj) and pred(n, obj) and obj.__module__ == module_name}


@functools.cache
def allowed_skops_types() -> frozenset[str]:
    """Every type a skops model mlhub trains may contain, by full name: the estimators of
    :data:`mlhub.training.sklearn_models.ESTIMATORS`, ``Pipeline``/``StandardScaler``, the sklearn helper
    types those estimators hold (trees, neighbour trees, distance metrics, losses, links, dummy initial
    estimators, RidgeClassifier's label binarizer), numpy arrays, dtypes and scalars, ``RandomState``,
    and plain builtin containers."""
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import LabelBinarizer, StandardScaler
    from sklearn.tree import ExtraTreeClassifier, ExtraTreeRegressor

    from mlhub.training.sklearn_models import ESTIMATORS

    names = {_name(c) for pair in ESTIMATORS.values() for c in pair if c is not None}
    names |= {_name(c) for c in (Pipeline, StandardScaler, DummyClassifier, DummyRegressor, LabelBinarizer)}
    names |= {_name(c) for c in (ExtraTreeClassifier, ExtraTreeRegressor)}  # extra_trees' members
    names |= {"sklearn.tree._tree.Tree", "sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree"}
    names |= _classes_in("sklearn.metrics._dist_metrics", lambda n, c: n.endswith(("64", "32")))
    names |= _classes_in("sklearn._loss.loss", lambda n, c: not n.startswith("_"))
    names |= _classes_in("sklearn._loss.link", lambda n, c: not n.startswith("_"))
    names |= _classes_in("sklearn._loss._loss", lambda n, c: n.startswith("Cy"))
    names |= _classes_in("sklearn.linear_model._sgd_fast", lambda n, c: not n.startswith("_"))
    names |= {"numpy.ndarray", "numpy.dtype", "numpy.random.mtrand.RandomState"}
    names |= {f"numpy.{t.__name__}" for t in set(np.sctypeDict.values())}
    names |= {f"builtins.{t}" for t in ("str", "int", "float", "bool", "list", "tuple", "dict", "set",
                                        "frozenset", "NoneType", "slice")}
    return frozenset(names)


def _walk(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        if "__class__" in node or "__module__" in node:
            out.add(f"{node.get('__module__')}.{node.get('__class__')}")
        for v in node.values():
            _walk(v, out)
    elif isinstance(node, list):
        for v in node:
            _walk(v, out)


def skops_type_names(payload: bytes) -> set[str]:
    """Every type named anywhere in a skops archive's schema (read as JSON; nothing is constructed)."""
    if not payload.startswith(_ZIP_MAGIC):
        raise ModelLoadError("not a skops archive (expected a zip file)")
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as z:
            info = z.getinfo("schema.json")
            if info.file_size > _MAX_SCHEMA_BYTES:
                raise ModelLoadError("skops schema is too large")
            schema = json.loads(z.read(info))
    except ModelLoadError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ModelLoadError(f"corrupt skops archive: {type(exc).__name__}: {exc}") from None
    out: set[str] = set()
    _walk(schema, out)
    return out


def _load_skops(payload: bytes) -> LoadedModel:
    import skops.io as sio
    from sklearn.base import is_classifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from mlhub.training.sklearn_models import ESTIMATORS

    allowed = allowed_skops_types()
    outside = sorted(skops_type_names(payload) - allowed)
    try:
        untrusted = sio.get_untrusted_types(data=payload)
    except Exception as exc:  # noqa: BLE001 - skops raises many types on corrupt input
        raise ModelLoadError(f"corrupt skops archive: {type(exc).__name__}: {exc}") from None
    outside = sorted(set(outside) | (set(untrusted) - allowed))
    if outside:
        raise ModelLoadError(f"skops model contains types outside the allow-list: {', '.join(outside[:20])}",
                             details={"untrusted_types": outside})
    try:
        obj = sio.loads(payload, trusted=sorted(untrusted))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot load skops model: {type(exc).__name__}: {exc}") from None
    estimators = tuple(c for pair in ESTIMATORS.values() for c in pair if c is not None)
    final = obj.steps[-1][1] if isinstance(obj, Pipeline) and obj.steps else obj
    scalers_only = isinstance(obj, Pipeline) and all(isinstance(s, StandardScaler) for _, s in obj.steps[:-1])
    if not isinstance(final, estimators) or (isinstance(obj, Pipeline) and not scalers_only):
        raise ModelLoadError(f"skops model is a {type(obj).__name__}, not an mlhub sklearn estimator")
    classifier = is_classifier(final)
    classes = getattr(obj, "classes_", None)
    n_features = getattr(obj, "n_features_in_", None)
    return LoadedModel(framework="sklearn", model_format="skops",
                       task="classification" if classifier else "regression",
                       classes=None if classes is None else np.asarray(classes).tolist(),
                       n_features=None if n_features is None else int(n_features),
                       predict=obj.predict,
                       predict_proba=obj.predict_proba if hasattr(obj, "predict_proba") else None)


# --- keras ---------------------------------------------------------------------------------------------

_KERAS_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")
_KERAS_INITIALIZERS = frozenset({"GlorotUniform", "Zeros", "Ones"})
_KERAS_MODELS = {("tf_keras.src.engine.functional", "Functional")}


def keras_class_names(config: Any) -> set[tuple[str | None, str, str | None]]:
    """Every (module, class_name, registered_name) a Keras config names anywhere (read as JSON)."""
    out: set[tuple[str | None, str, str | None]] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "class_name" in node:
                out.add((node.get("module"), str(node["class_name"]), node.get("registered_name")))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config)
    return out


def _keras_allowed(module: str | None, cls: str, registered: str | None) -> bool:
    from mlhub.training.tf_models import KERAS_LAYERS

    if registered not in (None, cls):
        return False
    if module == "keras.layers":
        return cls in KERAS_LAYERS
    if module == "keras.initializers":
        return cls in _KERAS_INITIALIZERS
    return (module, cls) in _KERAS_MODELS


def _read_keras_archive(payload: bytes) -> tuple[dict[str, bytes], dict, dict]:
    """The three members of a ``.keras`` archive, its config and mlhub's metadata; ModelLoadError if bad."""
    if not payload.startswith(_ZIP_MAGIC):
        raise ModelLoadError("not a .keras archive (expected a zip file)")
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as z:
            names = set(z.namelist())
            missing = [m for m in _KERAS_MEMBERS if m not in names]
            if missing:
                raise ModelLoadError(f".keras archive lacks {', '.join(missing)}")
            for m in ("config.json", "metadata.json"):
                if z.getinfo(m).file_size > _MAX_SCHEMA_BYTES:
                    raise ModelLoadError(f".keras {m} is too large")
            members = {m: z.read(m) for m in _KERAS_MEMBERS}
        config = json.loads(members["config.json"])
        metadata = json.loads(members["metadata.json"])
    except ModelLoadError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as exc:
        raise ModelLoadError(f"corrupt .keras archive: {type(exc).__name__}: {exc}") from None
    meta = metadata.get("mlhub") if isinstance(metadata, dict) else None
    if not isinstance(meta, dict) or meta.get("task") not in ("classification", "regression"):
        raise ModelLoadError(".keras archive has no mlhub metadata (task, classes, n_features)")
    classes = meta.get("classes")
    n_features = meta.get("n_features")
    if meta["task"] == "classification" and (
            not isinstance(classes, list) or len(classes) < 2
            or not all(isinstance(c, str | int | float) and not isinstance(c, bool) for c in classes)):
        raise ModelLoadError("mlhub metadata: a classifier needs a list of at least 2 class labels")
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise ModelLoadError("mlhub metadata: n_features must be a positive int")
    if not isinstance(config, dict) or (config.get("module"), config.get("class_name")) not in _KERAS_MODELS:
        raise ModelLoadError("a .keras model must be a functional Keras model")
    outside = sorted(f"{m}.{c}" for m, c, r in keras_class_names(config) if not _keras_allowed(m, c, r))
    if outside:
        raise ModelLoadError(f".keras model names classes outside the allow-list: {', '.join(outside[:20])}",
                             details={"untrusted_types": outside})
    return members, config, meta


def _load_keras(payload: bytes) -> LoadedModel:
    """A tf-keras ``.keras`` archive: members and class names checked first (only the layers mlhub's builders
    use), then ``load_model(..., safe_mode=True, compile=False)`` on a copy holding just those members."""
    import os
    import tempfile

    members, _, meta = _read_keras_archive(payload)
    try:
        from mlhub.training.tf_models import import_keras

        keras = import_keras()
    except ImportError as exc:
        raise ModelLoadError(f"cannot load a tensorflow model here: {exc}") from None
    try:
        with tempfile.TemporaryDirectory(prefix="mlhub-keras-") as tmp:
            path = os.path.join(tmp, "model.keras")
            with zipfile.ZipFile(path, "w") as z:
                for name, body in members.items():
                    z.writestr(name, body)
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for bad archives
        raise ModelLoadError(f"cannot load .keras model: {type(exc).__name__}: {str(exc)[:400]}") from None
    task, classes, n_features = meta["task"], meta.get("classes"), int(meta["n_features"])
    out_units = len(classes) if task == "classification" else 1
    try:
        in_shape, out_shape = tuple(model.input_shape), tuple(model.output_shape)
    except (AttributeError, TypeError):
        raise ModelLoadError("the .keras model has no single input and output") from None
    if in_shape != (None, n_features) or out_shape != (None, out_units):
        raise ModelLoadError(f"the .keras model maps {in_shape} to {out_shape}, but its metadata says "
                             f"{n_features} features and {out_units} outputs")
    from mlhub.errors import ValidationError
    from mlhub.training.tf_adapter import keras_outputs, softmax

    labels = np.asarray(classes) if task == "classification" else None

    def outputs(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != n_features:
            raise ValidationError(f"expected rows of {n_features} features, got shape {x.shape}")
        return keras_outputs(model, x)

    def predict(x: np.ndarray) -> np.ndarray:
        out = outputs(x)
        return labels[out.argmax(axis=1)] if labels is not None else out[:, 0]

    return LoadedModel(framework="tensorflow", model_format="keras", task=task,
                       classes=list(classes) if labels is not None else None, n_features=n_features,
                       predict=predict,
                       predict_proba=(lambda x: softmax(outputs(x))) if labels is not None else None)

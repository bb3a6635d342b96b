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

SUPPORTED_FORMATS = {("baseline", "npz"), ("sklearn", "skops")}
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
    if framework in ("torch", "tensorflow"):
        raise ModelLoadError(f"loading {framework} models is not available yet")
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

"""The ``sklearn`` framework: estimators chosen by name from an explicit allow-list.

``spec.model`` names an entry of :data:`ESTIMATORS`; the classifier or regressor is picked by the task.
Hyperparameters are checked against the estimator's ``get_params()`` keys and scikit-learn's own
parameter constraints. ``n_jobs`` is 1 and ``random_state`` the dataset seed unless given. The reserved
param ``standardize`` (default true for the scale-sensitive estimators in :data:`SCALED`) wraps the
estimator in ``Pipeline([("scale", StandardScaler()), ("model", est)])``. Models are saved with skops.
``sgd`` with ``epochs > 1`` makes one ``partial_fit`` pass per epoch and reports after each; every other
estimator fits once (``epochs`` is ignored) and reports once, as epoch 0. Epoch reports carry the test
split's metrics prefixed ``val_``; :attr:`TrainedModel.metrics` carries them unprefixed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn import ensemble, linear_model, neighbors, svm, tree
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlhub.domain.specs import TrainingSpec
from mlhub.errors import ValidationError
from mlhub.training.adapters import EpochReport, TrainedModel, json_params, split_metrics, task_of
from mlhub.training.datasets import Dataset
from mlhub.training.schema import input_schema, reference_stats

__all__ = ["ESTIMATORS", "SCALED", "SklearnAdapter", "estimator_class"]

# name -> (classifier, regressor); None where the estimator has no such variant
ESTIMATORS: dict[str, tuple[type[BaseEstimator] | None, type[BaseEstimator] | None]] = {
    "logistic_regression": (linear_model.LogisticRegression, None),
    "linear_regression": (None, linear_model.LinearRegression),
    "ridge": (linear_model.RidgeClassifier, linear_model.Ridge),
    "sgd": (linear_model.SGDClassifier, linear_model.SGDRegressor),
    "random_forest": (ensemble.RandomForestClassifier, ensemble.RandomForestRegressor),
    "extra_trees": (ensemble.ExtraTreesClassifier, ensemble.ExtraTreesRegressor),
    "gradient_boosting": (ensemble.GradientBoostingClassifier, ensemble.GradientBoostingRegressor),
    "decision_tree": (tree.DecisionTreeClassifier, tree.DecisionTreeRegressor),
    "knn": (neighbors.KNeighborsClassifier, neighbors.KNeighborsRegressor),
    "svm": (svm.SVC, svm.SVR),
}
SCALED = frozenset({"logistic_regression", "ridge", "sgd", "knn", "svm"})
RESERVED = "standardize"
_N_JOBS_DEPRECATED = (linear_model.LogisticRegression,)  # n_jobs has no effect there since sklearn 1.8
_TASK_INDEX = {"classification": 0, "regression": 1}


def estimator_class(name: str, task: str) -> type[BaseEstimator]:
    """The estimator class for ``name`` and ``task``; ValidationError when there is none."""
    if name not in ESTIMATORS:
        raise ValidationError(f"unknown sklearn estimator {name!r}: use one of {', '.join(sorted(ESTIMATORS))}")
    cls = ESTIMATORS[name][_TASK_INDEX[task]]
    if cls is None:
        other = "regression" if task == "classification" else "classification"
        raise ValidationError(f"sklearn {name} is a {other} estimator but the dataset is a {task} task")
    return cls


def _value_problem(cls: type[BaseEstimator], key: str, value: Any, default: Any) -> str | None:
    """Why ``value`` is not acceptable for ``cls(key=...)``, or None."""
    if isinstance(default, bool) and not isinstance(value, bool):
        return f"param {key!r} of {cls.__name__} must be true or false (got {value!r})"
    if isinstance(value, bool) and isinstance(default, int | float) and not isinstance(default, bool):
        return f"param {key!r} of {cls.__name__} must be a number, not a boolean (got {value!r})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"param {key!r} must be finite"
    constraints = getattr(cls, "_parameter_constraints", None)
    if isinstance(constraints, dict) and key in constraints:
        try:
            from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints
        except ImportError:  # pragma: no cover - private API moved; fall back to the type check below
            pass
        else:
            try:
                validate_parameter_constraints({key: constraints[key]}, {key: value}, caller_name=cls.__name__)
            except InvalidParameterError as exc:
                return str(exc)
            return None
    if default is not None and not isinstance(value, type(default)) and not (
            isinstance(default, float) and isinstance(value, int)):
        return f"param {key!r} of {cls.__name__} must be {type(default).__name__} (got {value!r})"
    return None


def _param_problems(cls: type[BaseEstimator], params: dict[str, Any]) -> list[str]:
    valid = cls().get_params(deep=False)
    problems = []
    unknown = sorted(set(params) - set(valid) - {RESERVED})
    if unknown:
        problems.append(f"unknown params for {cls.__name__}: {', '.join(unknown)} "
                        f"(valid: {', '.join(sorted(valid))}, {RESERVED})")
    for key, value in params.items():
        if key in valid:
            problem = _value_problem(cls, key, value, valid[key])
            if problem:
                problems.append(problem)
    if RESERVED in params and not isinstance(params[RESERVED], bool):
        problems.append(f"param {RESERVED!r} must be true or false (got {params[RESERVED]!r})")
    return problems


def _jsonable(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    return v is None or isinstance(v, bool | int | str) or (
        isinstance(v, list | tuple) and all(_jsonable(x) for x in v))


class SklearnAdapter:
    """scikit-learn estimators from :data:`ESTIMATORS`; single worker, CPU."""

    framework = "sklearn"

    def validate(self, spec: TrainingSpec) -> list[str]:
        problems = json_params(spec.params)
        if spec.model not in ESTIMATORS:
            problems.insert(0, f"unknown sklearn estimator {spec.model!r}: use one of "
                               f"{', '.join(sorted(ESTIMATORS))}")
        else:
            task = task_of(spec)
            if task is not None:
                try:
                    problems += _param_problems(estimator_class(spec.model, task), spec.params)
                except ValidationError as exc:
                    problems.append(exc.message)
            else:  # task known only once the data is read: accept what either variant accepts
                variants = [_param_problems(c, spec.params) for c in ESTIMATORS[spec.model] if c is not None]
                problems += min(variants, key=len)
        if spec.num_workers != 1:
            problems.append("sklearn trains on a single worker: num_workers must be 1")
        if spec.use_gpu:
            problems.append("sklearn runs on CPU only: use_gpu must be false")
        return problems

    def reported_metrics(self, spec: TrainingSpec) -> set[str]:
        """``val_`` + the test-split metrics (classification: accuracy, f1_macro, and log_loss when the
        estimator has ``predict_proba`` with these params; regression: rmse, mae, r2); ``sgd`` with
        ``epochs > 1`` adds ``loss`` (regression, or classification with probabilities) and, for
        classification, ``train_accuracy``."""
        if spec.model not in ESTIMATORS:
            return set()
        task = task_of(spec)
        out: set[str] = set()
        for t in (task,) if task else ("classification", "regression"):
            cls = ESTIMATORS[spec.model][_TASK_INDEX[t]]
            if cls is None:
                continue
            proba = t == "classification" and self._has_proba(cls, spec.params)
            names = {"rmse", "mae", "r2"} if t == "regression" else {"accuracy", "f1_macro"} | (
                {"log_loss"} if proba else set())
            out |= {f"val_{n}" for n in names}
            if spec.model == "sgd" and spec.epochs > 1:
                out |= {"loss"} if t == "regression" or proba else set()
                out |= {"train_accuracy"} if t == "classification" else set()
        return out

    @staticmethod
    def _has_proba(cls: type[BaseEstimator], params: dict[str, Any]) -> bool:
        try:  # predict_proba can depend on params (SVC probability, SGD loss)
            return hasattr(cls(**{k: v for k, v in params.items() if k != RESERVED}), "predict_proba")
        except Exception:  # noqa: BLE001 - params validate() refuses: answer for the class
            return hasattr(cls, "predict_proba")

    def train(self, spec: TrainingSpec, data: Dataset, report: Callable[[EpochReport], None]) -> TrainedModel:
        problems = self.validate(spec)
        cls = None
        if spec.model in ESTIMATORS:
            try:
                cls = estimator_class(spec.model, data.task)
                problems += [p for p in _param_problems(cls, spec.params) if p not in problems]
            except ValidationError as exc:
                problems.append(exc.message)
        if problems or cls is None:
            raise ValidationError("invalid training spec: " + "; ".join(problems), details={"errors": problems})
        params = {k: v for k, v in spec.params.items() if k != RESERVED}
        defaults = cls().get_params(deep=False)
        if "n_jobs" in defaults and cls not in _N_JOBS_DEPRECATED:
            params.setdefault("n_jobs", 1)
        if "random_state" in defaults:
            params.setdefault("random_state", spec.dataset.seed)
        est = cls(**params)
        scale = spec.params.get(RESERVED, spec.model in SCALED)
        try:
            if spec.model == "sgd" and spec.epochs > 1:
                model = self._fit_epochs(est, scale, data, spec.epochs, report)
            else:
                model = Pipeline([("scale", StandardScaler()), ("model", est)]) if scale else est
                model.fit(data.x_train, data.y_train)
                first = self._val_metrics(model, data)
            metrics = split_metrics(data.task, data.y_test, model.predict(data.x_test),
                                    self._proba(model, data.x_test), self._classes(model))
        except ValueError as exc:  # deterministic: a param combination or data the estimator refuses
            raise ValidationError(f"{cls.__name__} cannot fit this data with these params: {exc}",
                                  details={"errors": [str(exc)]}) from None
        if not (spec.model == "sgd" and spec.epochs > 1):
            report(EpochReport(0, first))
        import skops.io as sio

        effective = {k: v for k, v in est.get_params(deep=False).items() if _jsonable(v)}
        effective[RESERVED] = bool(scale)
        return TrainedModel(framework=self.framework, model_format="skops", payload=sio.dumps(model),
                            metrics=metrics, params=effective,
                            input_schema=input_schema(data.feature_names, data.x_train),
                            reference_stats=reference_stats(data.feature_names, data.x_train),
                            task=data.task, classes=self._classes(model))

    @staticmethod
    def _classes(model: Any) -> list | None:
        classes = getattr(model, "classes_", None)
        return None if classes is None else np.asarray(classes).tolist()

    @staticmethod
    def _proba(model: Any, x: np.ndarray) -> np.ndarray | None:
        return model.predict_proba(x) if hasattr(model, "predict_proba") else None

    def _val_metrics(self, model: Any, data: Dataset) -> dict[str, float]:
        m = split_metrics(data.task, data.y_test, model.predict(data.x_test), self._proba(model, data.x_test),
                          self._classes(model))
        return {f"val_{k}": v for k, v in m.items()}

    def _fit_epochs(self, est: Any, scale: bool, data: Dataset, epochs: int, report) -> Any:
        """One ``partial_fit`` pass over the shuffled training data per epoch, reporting after each."""
        scaler = StandardScaler().fit(data.x_train) if scale else None
        x = scaler.transform(data.x_train) if scaler is not None else data.x_train
        model = Pipeline([("scale", scaler), ("model", est)]) if scaler is not None else est
        seed = est.get_params().get("random_state")
        rng = np.random.default_rng(seed if isinstance(seed, int) and seed >= 0 else 0)
        kwargs = {"classes": np.asarray(data.classes)} if data.task == "classification" else {}
        for epoch in range(epochs):
            order = rng.permutation(len(x))
            est.partial_fit(x[order], data.y_train[order], **kwargs)
            metrics = self._val_metrics(model, data)
            if data.task == "regression":
                metrics["loss"] = float(np.mean((model.predict(data.x_train) - data.y_train) ** 2))
            else:
                proba = self._proba(model, data.x_train)
                train = split_metrics(data.task, data.y_train, model.predict(data.x_train), proba,
                                      self._classes(model))
                metrics["train_accuracy"] = train["accuracy"]
                if "log_loss" in train:
                    metrics["loss"] = train["log_loss"]
            report(EpochReport(epoch, metrics))
        return model

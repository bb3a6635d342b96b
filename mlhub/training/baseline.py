"""The ``baseline`` framework: numpy linear and logistic (multinomial softmax) regression.

Features are standardised with the training mean/std. ``linear`` solves the ridge normal equations
(``solver: closed_form``, default) or runs gradient descent (``solver: gd``) for ``spec.epochs``;
``logistic`` runs full-batch gradient descent for ``spec.epochs``. Params: ``lr`` (0.1), ``l2`` (0.0).
Models are saved as ``.npz`` of plain arrays and loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from mlhub.domain.specs import TrainingSpec
from mlhub.errors import ModelLoadError, ValidationError
from mlhub.training.adapters import EpochReport, TrainedModel, json_params, split_metrics, task_of
from mlhub.training.datasets import Dataset
from mlhub.training.schema import input_schema, reference_stats

__all__ = ["MODELS", "BaselineAdapter", "load_npz", "npz_predict", "npz_predict_proba"]

MODELS = {"linear": "regression", "logistic": "classification"}
_PARAMS = {"linear": {"l2", "solver", "lr"}, "logistic": {"l2", "lr"}}
_NPZ_KEYS = {"kind", "weights", "bias", "mean", "std", "classes"}


def _number_problems(params: dict[str, Any]) -> list[str]:
    out = []
    for key, lo_ok in (("lr", False), ("l2", True)):
        if key not in params:
            continue
        v = params[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            out.append(f"param {key!r} must be a number (got {v!r})")
        elif v < 0 or (v == 0 and not lo_ok):
            out.append(f"param {key!r} must be {'>= 0' if lo_ok else '> 0'} (got {v!r})")
    if params.get("solver", "closed_form") not in ("closed_form", "gd"):
        out.append(f"param 'solver' must be 'closed_form' or 'gd' (got {params['solver']!r})")
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class BaselineAdapter:
    """numpy ``linear`` / ``logistic`` regression; single worker, CPU."""

    framework = "baseline"
    # a PBT exploit may change these and still continue from another trial's weights
    warm_start_params = frozenset({"lr", "l2"})

    def validate(self, spec: TrainingSpec) -> list[str]:
        problems: list[str] = []
        if spec.model not in MODELS:
            problems.append(f"unknown baseline model {spec.model!r}: use one of {', '.join(MODELS)}")
        else:
            task = task_of(spec)
            if task is not None and task != MODELS[spec.model]:
                problems.append(f"baseline {spec.model} is a {MODELS[spec.model]} model but the dataset is a "
                                f"{task} task")
            valid = _PARAMS[spec.model]
            unknown = sorted(set(spec.params) - valid)
            if unknown:
                problems.append(f"unknown params for baseline {spec.model}: {', '.join(unknown)} "
                                f"(valid: {', '.join(sorted(valid))})")
        problems += json_params(spec.params)
        problems += _number_problems(spec.params)
        if spec.num_workers != 1:
            problems.append("baseline trains on a single worker: num_workers must be 1")
        if spec.use_gpu:
            problems.append("baseline runs on CPU only: use_gpu must be false")
        return problems

    def reported_metrics(self, spec: TrainingSpec) -> set[str]:
        """logistic: loss, val_accuracy, val_loss; linear: loss, val_rmse (every epoch)."""
        if spec.model == "logistic":
            return {"loss", "val_accuracy", "val_loss"}
        if spec.model == "linear":
            return {"loss", "val_rmse"}
        return set()

    def train(self, spec: TrainingSpec, data: Dataset, report: Callable[[EpochReport], None], *,
              resume: dict[str, Any] | None = None, checkpoint_every: int | None = None) -> TrainedModel:
        """Train, reporting every epoch. ``resume`` (``{"epoch": n, "files": {"state.npz": ...}}``) continues
        gradient descent from saved weights at epoch ``n``; ``checkpoint_every=N`` puts the weights on every
        N-th epoch's report (the closed-form solver has no epochs to resume)."""
        problems = self.validate(spec)
        if spec.model in MODELS and data.task != MODELS[spec.model]:
            problems.append(f"baseline {spec.model} needs a {MODELS[spec.model]} dataset, got {data.task}")
        if problems:
            raise ValidationError("invalid training spec: " + "; ".join(problems), details={"errors": problems})
        lr = float(spec.params.get("lr", 0.1))
        l2 = float(spec.params.get("l2", 0.0))
        mean = data.x_train.mean(axis=0)
        std = data.x_train.std(axis=0)
        std[std == 0] = 1.0
        xs = (data.x_train - mean) / std
        xv = (data.x_test - mean) / std
        loop = _Loop(spec.epochs, report, resume, checkpoint_every)
        if spec.model == "logistic":
            w, b, classes = self._logistic(xs, data, xv, lr, l2, loop)
        else:
            w, b = self._linear(xs, data.y_train, xv, data.y_test, lr, l2, spec, loop)
            classes = np.zeros(0)
        arrays = {"kind": np.array(spec.model), "weights": w, "bias": b, "mean": mean, "std": std,
                  "classes": classes}
        pred = npz_predict(arrays, data.x_test)
        proba = npz_predict_proba(arrays, data.x_test) if spec.model == "logistic" else None
        metrics = split_metrics(data.task, data.y_test, pred, proba, data.classes)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        params = {"lr": lr, "l2": l2, "epochs": spec.epochs}
        if spec.model == "linear":
            params["solver"] = spec.params.get("solver", "closed_form")
        return TrainedModel(framework=self.framework, model_format="npz", payload=buf.getvalue(), metrics=metrics,
                            params=params, input_schema=input_schema(data.feature_names, data.x_train),
                            reference_stats=reference_stats(data.feature_names, data.x_train),
                            task=data.task, classes=data.classes)

    @staticmethod
    def _logistic(xs, data: Dataset, xv, lr, l2, loop: _Loop):
        classes = np.asarray(data.classes)
        idx = np.searchsorted(classes, data.y_train)
        n, d = xs.shape
        k = len(classes)
        y1 = np.zeros((n, k))
        y1[np.arange(n), idx] = 1.0
        w, b = loop.start(np.zeros((d, k)), np.zeros(k))
        known = np.isin(data.y_test, classes)
        vidx = np.searchsorted(classes, data.y_test[known])
        for epoch in loop.epochs():
            p = _softmax(xs @ w + b)
            loss = float(-np.mean(np.log(np.clip(p[np.arange(n), idx], 1e-15, None))) + 0.5 * l2 * np.sum(w * w))
            if not math.isfinite(loss):
                raise ValidationError(f"training diverged at epoch {epoch}: lower lr (now {lr})")
            g = p - y1
            w -= lr * (xs.T @ g / n + l2 * w)
            b -= lr * g.mean(axis=0)
            pv = _softmax(xv @ w + b)
            metrics = {"loss": loss, "val_accuracy": float(np.mean(classes[pv.argmax(axis=1)] == data.y_test))}
            if vidx.size:
                metrics["val_loss"] = float(-np.mean(np.log(np.clip(pv[known][np.arange(vidx.size), vidx],
                                                                    1e-15, None))))
            loop.report(epoch, metrics, w, b)
        return w, b, classes

    @staticmethod
    def _linear(xs, y, xv, yv, lr, l2, spec: TrainingSpec, loop: _Loop):
        n, d = xs.shape
        y_mean = float(y.mean())
        yc = y - y_mean

        def losses(w: np.ndarray, b: float) -> dict[str, float]:
            train = float(np.mean((xs @ w[:, 0] + b - y) ** 2))
            val = float(np.sqrt(np.mean((xv @ w[:, 0] + b - yv) ** 2)))
            if not math.isfinite(train):
                raise ValidationError(f"training diverged: lower lr (now {lr})")
            return {"loss": train, "val_rmse": val}

        if spec.params.get("solver", "closed_form") == "closed_form":
            if l2 > 0:
                w = np.linalg.solve(xs.T @ xs / n + l2 * np.eye(d), xs.T @ yc / n)
            else:
                w = np.linalg.lstsq(xs, yc, rcond=None)[0]
            w = w.reshape(d, 1)
            loop.report(0, losses(w, y_mean), w, np.array([y_mean]), force=True)
            return w, np.array([y_mean])
        w, bias = loop.start(np.zeros((d, 1)), np.array([y_mean]))
        b = float(bias[0])
        for epoch in loop.epochs():
            r = xs @ w[:, 0] + b - y
            w -= lr * ((xs.T @ r / n).reshape(d, 1) + l2 * w)
            b -= lr * float(r.mean())
            loop.report(epoch, losses(w, b), w, np.array([b]))
        return w, np.array([b])


class _Loop:
    """The epochs of a gradient-descent fit: where they start (``resume``) and which reports carry the
    weights (``checkpoint_every``)."""

    def __init__(self, epochs: int, report: Callable[[EpochReport], None], resume: dict[str, Any] | None,
                 checkpoint_every: int | None) -> None:
        self.n, self._report, self._resume, self._every = epochs, report, resume, checkpoint_every
        self.first = 0

    def start(self, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The initial weights: ``w`` and ``b``, or the resumed state's (same shapes, else ValidationError)."""
        if not self._resume:
            return w, b
        try:
            with np.load(io.BytesIO(self._resume["files"]["state.npz"]), allow_pickle=False) as z:
                rw, rb = z["w"].astype(np.float64), z["b"].astype(np.float64)
        except (KeyError, ValueError, OSError) as exc:
            raise ValidationError(f"cannot resume from the checkpoint: {exc}") from None
        if rw.shape != w.shape or rb.shape != b.shape:
            raise ValidationError(f"cannot resume: the checkpoint's weights are {rw.shape}, the model's {w.shape}")
        self.first = int(self._resume["epoch"])
        return rw, rb

    def epochs(self) -> range:
        return range(self.first, self.n)

    def report(self, epoch: int, metrics: dict[str, float], w: np.ndarray, b: np.ndarray, *,
               force: bool = False) -> None:
        state = None
        every = self._every
        if every is not None and (force or epoch == self.n - 1 or (every > 0 and (epoch + 1) % every == 0)):
            buf = io.BytesIO()
            np.savez(buf, w=w, b=b)
            state = {"state.npz": buf.getvalue()}
        self._report(EpochReport(epoch, metrics, state=state))


# --- loading and prediction (used by serialization.load_model) -----------------------------------------


def load_npz(payload: bytes) -> dict[str, np.ndarray]:
    """Read a baseline ``.npz`` with ``allow_pickle=False`` and check its arrays; ModelLoadError if bad."""
    if not payload.startswith(b"PK\x03\x04"):
        raise ModelLoadError("not an npz archive (a baseline model is a zip of .npy arrays)")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            if set(z.files) != _NPZ_KEYS:
                raise ModelLoadError(f"npz holds {sorted(z.files)}, expected {sorted(_NPZ_KEYS)}")
            arrays = {k: z[k] for k in _NPZ_KEYS}
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to parse means the artifact is unusable
        raise ModelLoadError(f"cannot read npz model: {type(exc).__name__}: {exc}") from None
    kind = str(arrays["kind"])
    w, b, mean, std = arrays["weights"], arrays["bias"], arrays["mean"], arrays["std"]
    if kind not in MODELS:
        raise ModelLoadError(f"unknown baseline model kind {kind!r}")
    if any(a.dtype.kind != "f" for a in (w, b, mean, std)) or arrays["classes"].dtype.kind == "O":
        raise ModelLoadError("baseline arrays must be plain float arrays")
    d = mean.shape[0] if mean.ndim == 1 else -1
    k = len(arrays["classes"]) if kind == "logistic" else 1
    if w.shape != (d, k) or b.shape != (k,) or std.shape != (d,) or (kind == "logistic" and k < 2):
        raise ModelLoadError("baseline arrays have inconsistent shapes")
    return arrays


def _standardized(arrays: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != arrays["mean"].shape[0]:
        raise ValidationError(f"expected rows of {arrays['mean'].shape[0]} features, got shape {x.shape}")
    return (x - arrays["mean"]) / arrays["std"]


def npz_predict(arrays: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Predictions of a baseline model: class labels (logistic) or values (linear)."""
    z = _standardized(arrays, x) @ arrays["weights"] + arrays["bias"]
    if str(arrays["kind"]) == "logistic":
        return arrays["classes"][z.argmax(axis=1)]
    return z[:, 0]


def npz_predict_proba(arrays: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Class probabilities of a baseline logistic model, columns in ``classes`` order."""
    return _softmax(_standardized(arrays, x) @ arrays["weights"] + arrays["bias"])

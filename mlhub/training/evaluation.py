"""Evaluating a loaded model on labelled data, and a confusion-matrix plot.

Classification metrics: ``accuracy``, ``precision|recall|f1_macro`` and ``_weighted``, ``roc_auc``
(binary, or one-vs-rest macro for multiclass; only with probabilities), ``log_loss`` (with
probabilities) and per class ``class.<label>.precision|recall|f1|support``. Regression: ``mae``,
``rmse``, ``r2``. ``n_samples`` always. Every value is a finite float; a metric that is undefined on the
given data (AUC with one class present, ...) is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlhub.errors import ValidationError

__all__ = ["EvaluationResult", "evaluate", "plot_confusion_matrix"]


@dataclass
class EvaluationResult:
    """Metrics, and for classification the confusion matrix (rows: true, columns: predicted) over ``labels``."""

    metrics: dict[str, float]
    confusion_matrix: list[list[int]] | None
    labels: list | None

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "confusion_matrix": self.confusion_matrix, "labels": self.labels}


def _xy(data: Any) -> tuple[np.ndarray, np.ndarray, str | None]:
    if hasattr(data, "x_test") and hasattr(data, "y_test"):
        return np.asarray(data.x_test, dtype=np.float64), np.asarray(data.y_test), getattr(data, "task", None)
    try:
        x, y = data
    except (TypeError, ValueError):
        raise ValidationError("evaluate() takes a Dataset or an (x, y) pair") from None
    return np.asarray(x, dtype=np.float64), np.asarray(y), None


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def _classification(model: Any, x: np.ndarray, y: np.ndarray) -> EvaluationResult:
    from sklearn import metrics as m

    pred = model.predict(x)
    declared = getattr(model, "classes", None)
    model_classes = [] if declared is None else np.asarray(declared).tolist()
    seen = np.unique(np.concatenate([np.asarray(y).ravel(), np.asarray(pred).ravel()])).tolist()
    labels = model_classes + sorted((c for c in seen if c not in model_classes), key=str)
    out: dict[str, float] = {"n_samples": float(len(y)), "accuracy": m.accuracy_score(y, pred)}
    for avg in ("macro", "weighted"):
        p, r, f, _ = m.precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        out.update({f"precision_{avg}": p, f"recall_{avg}": r, f"f1_{avg}": f})
    p, r, f, s = m.precision_recall_fscore_support(y, pred, labels=labels, average=None, zero_division=0)
    for i, label in enumerate(labels):
        out.update({f"class.{label}.precision": p[i], f"class.{label}.recall": r[i],
                    f"class.{label}.f1": f[i], f"class.{label}.support": s[i]})
    if hasattr(model, "predict_proba") and model_classes:
        proba = np.clip(model.predict_proba(x), 0.0, 1.0)
        present = np.unique(y).tolist()
        if set(present) <= set(model_classes):
            out["log_loss"] = m.log_loss(y, np.clip(proba, 1e-15, 1.0), labels=model_classes)
            out.update(_roc_auc(y, proba, model_classes, present))
    cm = m.confusion_matrix(y, pred, labels=labels)
    return EvaluationResult(_finite(out), [[int(v) for v in row] for row in cm], labels)


def _roc_auc(y: np.ndarray, proba: np.ndarray, classes: list, present: list) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    if len(present) < 2:
        return {}  # AUC is undefined with one class present
    try:
        if len(classes) == 2:
            return {"roc_auc": roc_auc_score(np.asarray(y) == classes[1], proba[:, 1])}
        if len(present) == len(classes):
            return {"roc_auc": roc_auc_score(y, proba, multi_class="ovr", labels=classes)}
        # some classes missing from y: average the one-vs-rest AUCs of the classes that are present
        aucs = [roc_auc_score(np.asarray(y) == c, proba[:, classes.index(c)]) for c in present]
        return {"roc_auc": float(np.mean(aucs))}
    except ValueError:
        return {}


def _regression(model: Any, x: np.ndarray, y: np.ndarray) -> EvaluationResult:
    from sklearn.metrics import r2_score

    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(model.predict(x), dtype=np.float64).ravel()
    err = y - pred
    out = {"n_samples": float(len(y)), "mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2)))}
    if len(y) > 1 and np.ptp(y) > 0:
        out["r2"] = r2_score(y, pred)
    return EvaluationResult(_finite(out), None, None)


def evaluate(model: Any, data: Any, task: str | None = None) -> EvaluationResult:
    """Evaluate ``model`` (a :class:`~mlhub.training.serialization.LoadedModel` or anything with
    ``predict``) on a Dataset's test split or on an ``(x, y)`` pair. ``task`` defaults to the dataset's,
    then the model's."""
    x, y, data_task = _xy(data)
    task = task or data_task or getattr(model, "task", None)
    if task not in ("classification", "regression"):
        raise ValidationError(f"unknown task {task!r}: classification or regression")
    if x.ndim != 2 or len(x) != len(y):
        raise ValidationError(f"x must be 2-D with one row per label (x {x.shape}, y {np.shape(y)})")
    if len(y) == 0:
        raise ValidationError("nothing to evaluate: no rows")
    n_features = getattr(model, "n_features", None)
    if n_features is not None and x.shape[1] != n_features:
        raise ValidationError(f"the model expects {n_features} features, the data has {x.shape[1]}")
    if getattr(model, "task", task) != task:
        raise ValidationError(f"a {model.task} model cannot be evaluated as {task}")
    return _classification(model, x, y) if task == "classification" else _regression(model, x, y)


def plot_confusion_matrix(result: EvaluationResult, path: str | Path, *, title: str = "Confusion matrix") -> Path:
    """Write the confusion matrix of ``result`` as a PNG (Agg canvas: no display, no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if result.confusion_matrix is None or result.labels is None:
        raise ValidationError("this evaluation has no confusion matrix (regression?)")
    cm = np.asarray(result.confusion_matrix)
    n = len(result.labels)
    size = min(2.0 + 0.5 * n, 20.0)
    fig = Figure(figsize=(size, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    names = [str(label) for label in result.labels]
    ax.set_xticks(range(n), names, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > threshold else "black")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png", dpi=100)
    return out

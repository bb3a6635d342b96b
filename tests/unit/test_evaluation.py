"""evaluate(): classification and regression metrics, edge cases, and the confusion-matrix PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlhub.domain.specs import DatasetSpec, TrainingSpec
from mlhub.errors import ValidationError
from mlhub.training.adapters import get_adapter
from mlhub.training.datasets import load_dataset
from mlhub.training.evaluation import EvaluationResult, evaluate, plot_confusion_matrix
from mlhub.training.serialization import load_model


class Fixed:
    """A model that answers with fixed arrays (and probabilities when given)."""

    def __init__(self, pred, proba=None, classes=None, task="classification"):
        self.pred, self.task, self.classes = np.asarray(pred), task, classes
        if proba is not None:
            self.predict_proba = lambda x: np.asarray(proba)

    def predict(self, x):
        return self.pred


def _trained(framework, model, dataset, **kw):
    spec = TrainingSpec(name="t", framework=framework, model=model, dataset=DatasetSpec(**dataset), **kw)
    data = load_dataset(spec.dataset, allowed_roots=[])
    trained = get_adapter(framework).train(spec, data, lambda r: None)
    return data, load_model(trained.framework, trained.model_format, trained.payload)


def test_multiclass_metrics_on_iris():
    data, model = _trained("baseline", "logistic", {"source": "sklearn", "name": "iris"}, epochs=100,
                           params={"lr": 0.5})
    res = evaluate(model, data)
    m = res.metrics
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                "recall_weighted", "f1_weighted", "roc_auc", "log_loss", "class.0.precision", "class.2.f1"):
        assert key in m, key
    assert m["accuracy"] > 0.8 and m["roc_auc"] > 0.9 and m["n_samples"] == 30
    assert res.labels == [0, 1, 2]
    assert np.array(res.confusion_matrix).sum() == 30 and np.trace(res.confusion_matrix) == round(m["accuracy"] * 30)
    assert [m[f"class.{c}.support"] for c in range(3)] == [10, 10, 10]
    json.dumps(res.to_dict(), allow_nan=False)


def test_binary_auc_and_no_proba_model():
    ds = {"source": "sklearn", "name": "breast_cancer"}
    data, model = _trained("sklearn", "logistic_regression", ds)
    m = evaluate(model, data).metrics
    assert m["roc_auc"] > 0.95 and m["accuracy"] > 0.9
    data, svm = _trained("sklearn", "svm", ds)
    m = evaluate(svm, (data.x_test, data.y_test), "classification").metrics
    assert "roc_auc" not in m and "log_loss" not in m and m["accuracy"] > 0.9


def test_regression_metrics():
    data, model = _trained("baseline", "linear", {"source": "sklearn", "name": "diabetes"})
    res = evaluate(model, data)
    assert set(res.metrics) == {"n_samples", "mae", "rmse", "r2"}
    assert res.metrics["r2"] > 0.3 and res.confusion_matrix is None and res.labels is None


def test_perfect_predictions_with_a_fixed_model():
    y = np.array(["a", "b", "b", "c"])
    proba = np.eye(3)[[0, 1, 1, 2]]
    res = evaluate(Fixed(y, proba, ["a", "b", "c"]), (np.zeros((4, 2)), y))
    assert res.metrics["accuracy"] == 1.0 and res.metrics["roc_auc"] == 1.0 and res.metrics["f1_macro"] == 1.0
    assert res.confusion_matrix == [[1, 0, 0], [0, 2, 0], [0, 0, 1]] and res.labels == ["a", "b", "c"]


def test_one_class_present_leaves_auc_out():
    y = np.array([1, 1, 1])
    res = evaluate(Fixed([1, 0, 1], np.array([[0.2, 0.8], [0.7, 0.3], [0.1, 0.9]]), [0, 1]), (np.zeros((3, 1)), y))
    assert "roc_auc" not in res.metrics and "log_loss" in res.metrics
    assert res.labels == [0, 1] and res.confusion_matrix == [[0, 0], [1, 2]]


def test_labels_the_model_never_saw_extend_the_matrix():
    y = np.array([0, 1, 2, 5])
    res = evaluate(Fixed([0, 1, 2, 2], np.full((4, 3), 1 / 3), [0, 1, 2]), (np.zeros((4, 1)), y))
    assert res.labels == [0, 1, 2, 5] and "log_loss" not in res.metrics
    assert res.metrics["class.5.recall"] == 0.0


def test_multiclass_auc_with_a_class_missing_from_y():
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    res = evaluate(Fixed([0, 1, 0, 1], proba, [0, 1, 2]), (np.zeros((4, 1)), np.array([0, 1, 0, 1])))
    assert res.metrics["roc_auc"] == 1.0


def test_bad_inputs_are_validation_errors():
    model = Fixed([1.0], task="regression")
    with pytest.raises(ValidationError, match="Dataset or an"):
        evaluate(model, 42)
    with pytest.raises(ValidationError, match="unknown task"):
        evaluate(Fixed([1.0], task=None), (np.zeros((1, 1)), np.zeros(1)))
    with pytest.raises(ValidationError, match="cannot be evaluated as classification"):
        evaluate(model, (np.zeros((1, 1)), np.zeros(1)), "classification")
    with pytest.raises(ValidationError, match="one row per label"):
        evaluate(model, (np.zeros((2, 1)), np.zeros(1)))
    model.n_features = 3
    with pytest.raises(ValidationError, match="expects 3 features"):
        evaluate(model, (np.zeros((1, 1)), np.zeros(1)))


def test_confusion_matrix_png(tmp_path):
    res = evaluate(Fixed([0, 1, 1], classes=[0, 1]), (np.zeros((3, 1)), np.array([0, 1, 0])))
    out = plot_confusion_matrix(res, tmp_path / "cm.png", title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000
    with pytest.raises(ValidationError, match="no confusion matrix"):
        plot_confusion_matrix(EvaluationResult({"mae": 1.0}, None, None), tmp_path / "r.png")

"""Training adapters: baseline and sklearn train, report, round-trip through load_model; bad specs fail whole."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import log_loss

from mlhub.domain.specs import DatasetSpec, TrainingSpec
from mlhub.errors import ValidationError
from mlhub.training.adapters import EpochReport, get_adapter, validate_training_spec
from mlhub.training.datasets import load_dataset
from mlhub.training.serialization import load_model
from mlhub.training.sklearn_models import ESTIMATORS


def _spec(framework: str, model: str, dataset: dict, **kw) -> TrainingSpec:
    return TrainingSpec(name="t", framework=framework, model=model, dataset=DatasetSpec(**dataset), **kw)


def _train(spec: TrainingSpec):
    validate_training_spec(spec)
    data = load_dataset(spec.dataset, allowed_roots=[])
    reports: list[EpochReport] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on tiny data are not what we test
        trained = get_adapter(spec.framework).train(spec, data, reports.append)
    return data, trained, reports


def _round_trip(data, trained):
    loaded = load_model(trained.framework, trained.model_format, trained.payload)
    assert loaded.task == trained.task and loaded.classes == trained.classes
    return loaded


IRIS = {"source": "sklearn", "name": "iris"}
DIABETES = {"source": "sklearn", "name": "diabetes"}


def test_baseline_logistic_on_iris():
    data, trained, reports = _train(_spec("baseline", "logistic", IRIS, epochs=150, params={"lr": 0.5}))
    assert trained.framework == "baseline" and trained.model_format == "npz"
    assert trained.metrics["accuracy"] > 0.8 and 0 < trained.metrics["log_loss"] < 1
    assert set(trained.metrics) == {"accuracy", "f1_macro", "log_loss"}
    assert [r.epoch for r in reports] == list(range(150))
    assert reports[-1].metrics["loss"] < reports[0].metrics["loss"]
    assert {"loss", "val_accuracy", "val_loss"} <= set(reports[-1].metrics)
    assert trained.classes == [0, 1, 2] and trained.task == "classification"
    loaded = _round_trip(data, trained)
    proba = loaded.predict_proba(data.x_test)
    assert proba.shape == (30, 3) and np.allclose(proba.sum(axis=1), 1)
    np.testing.assert_array_equal(loaded.predict(data.x_test), np.array([0, 1, 2])[proba.argmax(axis=1)])
    assert np.mean(loaded.predict(data.x_test) == data.y_test) == pytest.approx(trained.metrics["accuracy"])
    assert log_loss(data.y_test, proba, labels=[0, 1, 2]) == pytest.approx(trained.metrics["log_loss"])


def test_baseline_linear_on_diabetes_closed_form_and_gd():
    data, trained, reports = _train(_spec("baseline", "linear", DIABETES))
    assert trained.metrics["r2"] > 0.3 and set(trained.metrics) == {"rmse", "mae", "r2"}
    assert len(reports) == 1
    loaded = _round_trip(data, trained)
    assert not hasattr(loaded, "predict_proba")
    rmse = np.sqrt(np.mean((loaded.predict(data.x_test) - data.y_test) ** 2))
    assert rmse == pytest.approx(trained.metrics["rmse"])
    _, gd, gd_reports = _train(_spec("baseline", "linear", DIABETES, epochs=200, params={"solver": "gd", "l2": 0.01}))
    assert len(gd_reports) == 200 and gd_reports[-1].metrics["loss"] < gd_reports[0].metrics["loss"]
    assert gd.metrics["r2"] > 0.3 and gd.params["solver"] == "gd"


def test_sklearn_random_forest_on_wine_round_trips():
    spec = _spec("sklearn", "random_forest", {"source": "sklearn", "name": "wine", "seed": 1},
                 params={"n_estimators": 15, "max_depth": 5})
    data, trained, reports = _train(spec)
    assert trained.model_format == "skops" and trained.metrics["accuracy"] > 0.85
    assert len(reports) == 1 and reports[0].epoch == 0
    assert reports[0].metrics["val_accuracy"] == trained.metrics["accuracy"]
    assert trained.params["n_jobs"] == 1 and trained.params["random_state"] == 1 and trained.params["n_estimators"] == 15
    loaded = _round_trip(data, trained)
    assert loaded.n_features == 13 and loaded.classes == [0, 1, 2]
    same = RandomForestClassifier(n_estimators=15, max_depth=5, random_state=1, n_jobs=1).fit(data.x_train, data.y_train)
    np.testing.assert_array_equal(loaded.predict_proba(data.x_test), same.predict_proba(data.x_test))
    np.testing.assert_array_equal(loaded.predict(data.x_test), same.predict(data.x_test))
    again = _train(spec)[1]
    assert np.array_equal(loaded.predict(data.x_test),
                          load_model("sklearn", "skops", again.payload).predict(data.x_test))  # seeded: same model
    assert np.allclose(loaded.predict_proba(data.x_test).sum(axis=1), 1)


def test_sklearn_ridge_on_diabetes():
    data, trained, _ = _train(_spec("sklearn", "ridge", DIABETES, params={"alpha": 0.5}))
    assert trained.metrics["r2"] > 0.3 and trained.params["standardize"] is True
    json.dumps(trained.params, allow_nan=False)
    loaded = _round_trip(data, trained)
    rmse = np.sqrt(np.mean((loaded.predict(data.x_test) - data.y_test) ** 2))
    assert rmse == pytest.approx(trained.metrics["rmse"])


def test_sgd_reports_every_epoch_with_partial_fit():
    spec = _spec("sklearn", "sgd", {"source": "sklearn", "name": "breast_cancer"}, epochs=4,
                 params={"loss": "log_loss"})
    data, trained, reports = _train(spec)
    assert [r.epoch for r in reports] == [0, 1, 2, 3]
    assert {"val_accuracy", "train_accuracy", "loss"} <= set(reports[-1].metrics)
    assert trained.metrics["accuracy"] > 0.85
    _round_trip(data, trained)


@pytest.mark.parametrize(("framework", "model"), [("baseline", "logistic"), ("sklearn", "random_forest"),
                                                  ("sklearn", "ridge")])
def test_string_labels_from_csv_round_trip(tmp_path, framework, model):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 3))
    labels = np.array(["cat", "dog", "emu"])[np.argmax(x, axis=1)]
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "animal": labels}).to_csv(tmp_path / "z.csv", index=False)
    spec = _spec(framework, model, {"source": "csv", "path": "z.csv", "target": "animal"}, epochs=100,
                 params={"n_estimators": 10} if model == "random_forest" else {})
    data = load_dataset(spec.dataset, allowed_roots=[tmp_path])
    trained = get_adapter(framework).train(spec, data, lambda r: None)
    assert trained.classes == ["cat", "dog", "emu"] and trained.metrics["accuracy"] > 0.7
    loaded = load_model(trained.framework, trained.model_format, trained.payload)
    pred = loaded.predict(data.x_test)
    assert set(pred.tolist()) <= {"cat", "dog", "emu"}
    assert np.mean(pred == data.y_test) == pytest.approx(trained.metrics["accuracy"])


def test_trained_model_carries_schema_and_reference_stats():
    data, trained, _ = _train(_spec("baseline", "logistic", IRIS, epochs=5))
    assert trained.input_schema["n_features"] == 4
    assert [f["name"] for f in trained.input_schema["features"]] == data.feature_names
    assert set(trained.reference_stats["features"]) == set(data.feature_names)
    json.dumps({"m": trained.metrics, "p": trained.params, "s": trained.input_schema,
                "r": trained.reference_stats, "c": trained.classes}, allow_nan=False)


SMALL = {"n_samples": 120, "n_features": 5, "seed": 2}
CASES = [(name, task) for name, pair in sorted(ESTIMATORS.items())
         for task, cls in zip(("classification", "regression"), pair, strict=True) if cls is not None]


@pytest.mark.parametrize(("name", "task"), CASES)
def test_every_estimator_trains_and_loads_within_the_allow_list(name, task):
    params = {"n_estimators": 5} if name in ("random_forest", "extra_trees", "gradient_boosting") else {}
    spec = _spec("sklearn", name, {"source": "synthetic", "task": task, "n_classes": 3, **SMALL}, params=params)
    data, trained, _ = _train(spec)
    loaded = _round_trip(data, trained)
    pred = loaded.predict(data.x_test)
    assert pred.shape == (len(data.y_test),)
    key = "accuracy" if task == "classification" else "r2"
    assert np.isfinite(trained.metrics[key])


# --- validation ----------------------------------------------------------------------------------------


def test_unknown_estimator_and_params_are_all_listed():
    spec = _spec("sklearn", "random_forest", IRIS, num_workers=2,
                 params={"n_estimators": -1, "criterion": "bogus", "colour": "red", "bootstrap": "yes"})
    problems = get_adapter("sklearn").validate(spec)
    text = "; ".join(problems)
    assert "unknown params for RandomForestClassifier: colour (valid: " in text and "max_depth" in text
    assert "'n_estimators' parameter" in text and "'criterion' parameter" in text
    assert "'bootstrap'" in text and "num_workers must be 1" in text
    with pytest.raises(ValidationError) as e:
        validate_training_spec(spec)
    assert len(e.value.details["errors"]) == len(problems) >= 5


def test_unknown_estimator_and_wrong_task():
    problems = get_adapter("sklearn").validate(_spec("sklearn", "deep_forest", IRIS, params={"x": {"a": 1}}))
    assert problems[0].startswith("unknown sklearn estimator 'deep_forest': use one of ")
    assert any("values must be numbers" in p for p in problems)
    problems = get_adapter("sklearn").validate(_spec("sklearn", "linear_regression", IRIS))
    assert problems == ["sklearn linear_regression is a regression estimator but the dataset is a classification task"]
    assert get_adapter("sklearn").validate(_spec("sklearn", "svm", IRIS, params={"standardize": 1}))


def test_baseline_validation_lists_everything():
    spec = _spec("baseline", "logistic", DIABETES, use_gpu=True, params={"lr": -1, "momentum": 0.9})
    problems = get_adapter("baseline").validate(spec)
    text = "; ".join(problems)
    assert "regression task" in text and "momentum" in text and "'lr' must be > 0" in text and "use_gpu" in text
    assert get_adapter("baseline").validate(_spec("baseline", "tree", IRIS))[0].startswith("unknown baseline model")


def test_estimator_refusing_a_param_combination_is_a_validation_error():
    spec = _spec("sklearn", "knn", IRIS, params={"n_neighbors": 500})
    data = load_dataset(spec.dataset, allowed_roots=[])
    with pytest.raises(ValidationError, match="KNeighborsClassifier cannot fit"):
        get_adapter("sklearn").train(spec, data, lambda r: None)


def test_train_refuses_a_task_mismatch_found_only_in_the_data():
    spec = _spec("baseline", "logistic", IRIS)
    data = load_dataset(DatasetSpec(**DIABETES), allowed_roots=[])
    with pytest.raises(ValidationError, match="needs a classification dataset"):
        get_adapter("baseline").train(spec, data, lambda r: None)


def test_unknown_frameworks_are_refused():
    with pytest.raises(ValidationError, match="unknown framework"):
        get_adapter("jax")


def test_training_package_imports_no_ray_sqlalchemy_or_store():
    import subprocess
    import sys

    code = ("import sys, mlhub.training, mlhub.training.baseline, mlhub.training.sklearn_models; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'sqlalchemy', 'actors', 'serve_apps')"
            " or m.startswith(('mlhub.store', 'mlhub.artifacts', 'mlhub.cache'))); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"

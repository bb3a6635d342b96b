"""Distributed evaluation without Ray: shards, their combination, and that the sharded path gives the
single-process path's metrics and confusion matrix; the evaluation spec's num_workers and the resources its
job row asks for."""

from __future__ import annotations

import numpy as np
import pytest

from mlhub.domain.specs import job_demand, parse_spec
from mlhub.errors import ModelLoadError, ValidationError
from mlhub.training import distributed_eval as de
from mlhub.training.adapters import get_adapter
from mlhub.training.datasets import load_dataset
from mlhub.training.evaluation import evaluate
from mlhub.training.serialization import load_model


def _train(dataset: dict, **params):
    s = parse_spec({"kind": "training", "name": "t", "framework": "torch", "model": "mlp", "epochs": 2,
                    "dataset": dataset, "params": {"hidden": [32], "lr": 0.01, **params}})
    data = load_dataset(s.dataset, allowed_roots=[])
    return get_adapter("torch").train(s, data, lambda r: None).payload, data


@pytest.fixture(scope="module")
def digits_model():
    return _train({"source": "sklearn", "name": "digits"})


@pytest.fixture(scope="module")
def regression_model():
    return _train({"source": "synthetic", "task": "regression", "n_samples": 400, "n_features": 6})


def _metrics_match(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k


def test_shard_bounds_tile_the_rows_in_order_and_never_leave_a_shard_empty():
    assert de.shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert de.shard_bounds(2, 5) == [(0, 1), (1, 2)]
    assert de.shard_bounds(0, 4) == []
    for n, k in ((1, 1), (97, 8), (360, 2), (1000, 1024)):
        bounds = de.shard_bounds(n, k)
        assert bounds[0][0] == 0 and bounds[-1][1] == n and len(bounds) == min(n, k)
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
        sizes = [b - a for a, b in bounds]
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    with pytest.raises(ValidationError):
        de.shard_bounds(10, 0)


@pytest.mark.parametrize("workers", [1, 2, 3, 7])
def test_sharded_classification_gives_the_single_process_metrics_and_confusion_matrix(digits_model, workers):
    payload, data = digits_model
    single = evaluate(load_model("torch", "pt", payload), (data.x_test, data.y_test), "classification")
    sharded, shards = de.evaluate_sharded("torch", "pt", payload, data.x_test, data.y_test, "classification",
                                          workers)
    assert len(shards) == workers
    assert {"accuracy", "log_loss", "roc_auc", "f1_macro", "class.3.recall"} <= set(single.metrics)
    _metrics_match(sharded.metrics, single.metrics)
    assert sharded.confusion_matrix == single.confusion_matrix and sharded.labels == single.labels
    assert sum(map(sum, sharded.confusion_matrix)) == len(data.y_test)


def test_sharded_regression_gives_the_single_process_metrics(regression_model):
    payload, data = regression_model
    single = evaluate(load_model("torch", "pt", payload), (data.x_test, data.y_test), "regression")
    sharded, _ = de.evaluate_sharded("torch", "pt", payload, data.x_test, data.y_test, "regression", 3)
    assert {"mae", "rmse", "r2"} <= set(single.metrics) and sharded.confusion_matrix is None
    _metrics_match(sharded.metrics, single.metrics)


def test_shards_that_come_back_in_any_order_are_put_back_in_row_order(digits_model):
    payload, data = digits_model

    def reversed_map(fw, fmt, blob, shards):
        return list(reversed([de.predict_shard(fw, fmt, blob, x, start) for start, x in shards]))

    single = evaluate(load_model("torch", "pt", payload), (data.x_test, data.y_test), "classification")
    sharded, _ = de.evaluate_sharded("torch", "pt", payload, data.x_test, data.y_test, "classification", 4,
                                     reversed_map)
    assert sharded.confusion_matrix == single.confusion_matrix
    _metrics_match(sharded.metrics, single.metrics)


def test_combining_refuses_gaps_overlaps_and_different_models(digits_model):
    payload, data = digits_model
    x = np.asarray(data.x_test[:30], dtype=np.float64)
    a = de.predict_shard("torch", "pt", payload, x[:10], 0)
    b = de.predict_shard("torch", "pt", payload, x[10:30], 10)
    model = de.combine_shards([b, a], 30)
    assert np.array_equal(model.predict(x), load_model("torch", "pt", payload).predict(x))
    assert model.predict_proba(x).shape == (30, 10)
    with pytest.raises(ValueError, match="not 29"):
        model.predict(x[:29])  # answers only for the rows it was built for
    with pytest.raises(ValueError, match="tile"):
        de.combine_shards([b], 30)  # rows 0..10 missing
    with pytest.raises(ValueError, match="tile"):
        de.combine_shards([a, a, b], 30)  # rows 0..10 twice
    with pytest.raises(ValueError, match="expected 0..40"):
        de.combine_shards([a, b], 40)
    with pytest.raises(ValueError):
        de.combine_shards([], 0)
    other = de.ShardPrediction(10, 30, b.predictions, b.proba, "classification", [0, 1], b.n_features, "torch", "pt")
    with pytest.raises(ValueError, match="different model"):
        de.combine_shards([a, other], 30)


def test_bad_inputs_raise_typed_errors(digits_model):
    payload, data = digits_model
    with pytest.raises(ValidationError, match="runs torch models"):
        de.evaluate_sharded("sklearn", "skops", b"", data.x_test, data.y_test, "classification", 2)
    with pytest.raises(ValidationError, match="expects 64 features"):
        de.evaluate_sharded("torch", "pt", payload, data.x_test[:, :10], data.y_test, "classification", 2)
    with pytest.raises(ValidationError, match="no rows"):
        de.evaluate_sharded("torch", "pt", payload, data.x_test[:0], data.y_test[:0], "classification", 2)
    with pytest.raises(ValidationError, match="one row per label"):
        de.evaluate_sharded("torch", "pt", payload, data.x_test, data.y_test[:5], "classification", 2)
    with pytest.raises(ValidationError, match="cannot be evaluated as regression"):
        de.evaluate_sharded("torch", "pt", payload, data.x_test, data.y_test, "regression", 2)


def test_a_workers_own_error_comes_back_as_data_and_is_raised_typed_in_the_driver():
    out = de._remote_predict("torch", "pt", b"not a torch file", np.zeros((3, 4)), 0)
    assert isinstance(out, dict) and out["error"] == "ModelLoadError"
    with pytest.raises(ModelLoadError, match="refused torch state"):
        de._reraise(out)


def _eval_spec(**kw):
    return parse_spec({"kind": "evaluation", "name": "e", "model": "m/1",
                       "dataset": {"source": "sklearn", "name": "digits"}, **kw})


def test_a_distributed_evaluation_asks_for_all_its_workers_with_the_driver_at_zero():
    assert _eval_spec().num_workers == 1 and job_demand(_eval_spec()) is None
    assert job_demand(_eval_spec(num_workers=2)) == {"num_cpus": 2.0, "num_gpus": 0.0, "driver": True}
    assert job_demand(_eval_spec(num_workers=4, resources={"num_cpus": 0.5, "memory_mb": 100})) == {
        "num_cpus": 2.0, "num_gpus": 0.0, "memory_mb": 400, "driver": True}
    assert de.ray_task_options({"num_cpus": 0.5, "memory_mb": 100, "custom": {"x": 1}}) == {
        "num_cpus": 0.5, "num_gpus": 0.0, "max_retries": 1, "memory": 100 * 1024 * 1024, "resources": {"x": 1.0}}
    for bad in (0, 1025, "two"):
        with pytest.raises(ValidationError, match="num_workers"):
            _eval_spec(num_workers=bad)

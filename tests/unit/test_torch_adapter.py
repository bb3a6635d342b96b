"""The torch adapter without Ray: validation, the in-process loop (what HPO trials run), the stored model
format, and the resources a distributed job asks the orchestrator for."""

from __future__ import annotations

import numpy as np
import pytest

from mlhub.domain.specs import job_demand, parse_spec, worker_resources
from mlhub.errors import ModelLoadError, ValidationError
from mlhub.training.adapters import get_adapter, validate_training_spec
from mlhub.training.datasets import load_dataset
from mlhub.training.distributed import LocalSession, load_entrypoint
from mlhub.training.serialization import load_model
from mlhub.training.torch_step import dump_state


def spec(**kw):
    doc = {"kind": "training", "name": "t", "framework": "torch", "model": "mlp",
           "dataset": {"source": "sklearn", "name": "iris"}, "epochs": 3, **kw}
    return parse_spec(doc)


def test_validation_lists_every_problem_at_once():
    with pytest.raises(ValidationError) as err:
        validate_training_spec(spec(model="cnn", params={"lr": 0, "batch_size": 0, "optimizer": "rmsprop",
                                                         "hidden": [8]}, strategy="fsdp"))
    errors = err.value.details["errors"]
    assert any("'lr'" in e for e in errors) and any("'batch_size'" in e for e in errors)
    assert any("'optimizer'" in e for e in errors) and any("hidden" in e for e in errors)
    assert any("fsdp" in e for e in errors)
    with pytest.raises(ValidationError, match="unknown torch model"):
        validate_training_spec(spec(model="resnet"))


def test_in_process_training_reports_each_epoch_and_round_trips_through_the_store_format():
    s = spec(params={"hidden": [16], "lr": 0.05}, epochs=4)
    data = load_dataset(s.dataset, allowed_roots=[])
    reports = []
    trained = get_adapter("torch").train(s, data, reports.append)
    assert [r.epoch for r in reports] == [0, 1, 2, 3]
    assert {"loss", "val_loss", "val_accuracy"} <= set(reports[-1].metrics)
    assert reports[-1].metrics["loss"] < reports[0].metrics["loss"]
    assert trained.model_format == "pt" and trained.task == "classification" and trained.classes == [0, 1, 2]
    assert trained.input_schema["n_features"] == 4 and trained.metrics["accuracy"] > 0.6
    assert get_adapter("torch").reported_metrics(s) >= {"loss", "val_loss", "val_accuracy"}

    model = load_model("torch", "pt", trained.payload)
    pred = model.predict(data.x_test)
    assert set(pred.tolist()) <= {0, 1, 2} and np.mean(pred == data.y_test) == pytest.approx(
        trained.metrics["accuracy"])
    assert model.predict_proba(data.x_test[:3]).shape == (3, 3)


def test_regression_model_predicts_values():
    s = spec(dataset={"source": "synthetic", "task": "regression", "n_samples": 300, "n_features": 5},
             params={"hidden": [16], "lr": 0.01}, epochs=3)
    data = load_dataset(s.dataset, allowed_roots=[])
    trained = get_adapter("torch").train(s, data, lambda r: None)
    assert "val_rmse" in get_adapter("torch").reported_metrics(s) and "rmse" in trained.metrics
    model = load_model("torch", "pt", trained.payload)
    assert model.predict(data.x_test[:7]).shape == (7,) and not hasattr(model, "predict_proba")


def test_a_resumed_loop_starts_after_the_checkpointed_epoch():
    from mlhub.training.torch_adapter import torch_loop

    s = spec(params={"hidden": [8]}, epochs=5, checkpoint_every=2)
    data = load_dataset(s.dataset, allowed_roots=[])
    first = LocalSession(s, [], lambda r: None, data=data)
    torch_loop(first)
    assert first.state is not None  # the last checkpoint: after epoch 5 (the final one)
    seen = []
    second = LocalSession(s, [], seen.append, data=data)
    second.resume = {"epoch": 3, "files": first.state}
    torch_loop(second)
    assert [r.epoch for r in seen] == [3, 4]


def test_checkpoint_cadence():
    session = LocalSession(spec(epochs=5, checkpoint_every=2), [], lambda r: None)
    assert [session.should_checkpoint(e) for e in range(5)] == [False, True, False, True, True]
    session = LocalSession(spec(epochs=3, checkpoint_every=0), [], lambda r: None)
    assert [session.should_checkpoint(e) for e in range(3)] == [False, False, True]


def test_shards_are_disjoint_and_equal_sized():
    session = LocalSession(spec(), [], lambda r: None)
    session.world_size = 3
    x = np.arange(10)
    shards = []
    for rank in range(3):
        session.rank = rank
        shards.append(session.shard(x))
    assert [len(s) for s in shards] == [3, 3, 3] and len(set(np.concatenate(shards))) == 9


def test_stored_models_are_read_weights_only():
    with pytest.raises(ModelLoadError):
        load_model("torch", "pt", b"not a torch file")
    with pytest.raises(ModelLoadError, match="not an mlhub torch model"):
        load_model("torch", "pt", dump_state({"format": "something-else"}))


def test_distributed_jobs_ask_for_all_their_workers_and_a_free_driver():
    s = spec(num_workers=3, resources_per_worker={"num_cpus": 2, "num_gpus": 0.5})
    assert worker_resources(s) == {"num_cpus": 2.0, "num_gpus": 0.5, "custom": {}}
    assert job_demand(s) == {"num_cpus": 6.0, "num_gpus": 1.5, "driver": True}
    assert job_demand(spec(num_workers=2, use_gpu=True)) == {"num_cpus": 2.0, "num_gpus": 2.0, "driver": True}
    sk = parse_spec({"kind": "training", "name": "t", "framework": "sklearn", "model": "random_forest",
                     "dataset": {"source": "sklearn", "name": "iris"}})
    assert job_demand(sk) is None
    hpo = parse_spec({"kind": "hpo", "name": "h", "trainer": sk.model_dump(mode="json", exclude_none=True),
                      "search_space": {"max_depth": {"type": "randint", "low": 2, "high": 8}},
                      "metric": "val_accuracy", "max_concurrent_trials": 2})
    assert job_demand(hpo) == {"num_cpus": 2.0, "num_gpus": 0.0, "driver": True,  # elastic: one trial a unit
                               "unit": {"num_cpus": 1.0, "num_gpus": 0.0}, "scales": "max_concurrent_trials"}


def test_custom_code_entrypoints_are_checked(tmp_path):
    (tmp_path / "my_models_xyz.py").write_text("def factory(n_in, n_out):\n    return None\n")
    assert load_entrypoint("my_models_xyz:factory", tmp_path)(1, 2) is None
    with pytest.raises(ValidationError, match="cannot import"):
        load_entrypoint("no_such_module_xyz:f", tmp_path)
    with pytest.raises(ValidationError, match="has no function"):
        load_entrypoint("my_models_xyz:missing", tmp_path)
    with pytest.raises(ValidationError):
        parse_spec({"kind": "training", "name": "t", "framework": "torch", "model": "mlp",
                    "dataset": {"source": "sklearn", "name": "iris"}, "entrypoint": "not a path"})

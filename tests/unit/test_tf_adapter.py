"""The tensorflow adapter: validation lists every problem (and names the missing extra), each Keras builder trains
two epochs with a report per epoch, the .keras payload round-trips through load_model, and tampered or foreign
payloads are refused before Keras constructs anything from them.

Tests that train or load need TensorFlow and tf-keras (the ``tensorflow`` extra, which CI installs): they skip,
saying so, only where it is not importable. Validation tests run everywhere.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile

import numpy as np
import pytest

from mlhub.domain.specs import DatasetSpec, TrainingSpec
from mlhub.errors import ModelLoadError, ValidationError
from mlhub.training import tf_models
from mlhub.training.adapters import EpochReport, get_adapter, validate_training_spec
from mlhub.training.datasets import load_dataset
from mlhub.training.serialization import load_model
from mlhub.training.tf_adapter import TensorflowAdapter
from mlhub.training.tf_models import TF_EXTRA_HINT, tensorflow_problems

SKIP_REASON = "the tensorflow extra is not installed here (pip install 'mlhub[tensorflow]'); CI installs it"
IRIS = {"source": "sklearn", "name": "iris"}
DIGITS = {"source": "sklearn", "name": "digits"}
WINE = {"source": "sklearn", "name": "wine"}
DIABETES = {"source": "sklearn", "name": "diabetes"}


def _spec(model: str, dataset: dict, **kw) -> TrainingSpec:
    return TrainingSpec(name="t", framework="tensorflow", model=model, dataset=DatasetSpec(**dataset), **kw)


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    pytest.importorskip("tensorflow", reason=SKIP_REASON)
    return pytest.importorskip("tf_keras", reason=SKIP_REASON)


# --- validation (no TensorFlow needed) -----------------------------------------------------------------


def test_a_valid_spec_has_no_problems_beyond_a_missing_extra():
    spec = _spec("mlp", IRIS, params={"hidden": [8], "dropout": 0.1, "lr": 0.01, "batch_size": 16,
                                      "optimizer": "sgd", "momentum": 0.5, "weight_decay": 0.0, "seed": 3})
    assert TensorflowAdapter().validate(spec) == tensorflow_problems()


def test_validate_lists_every_problem_at_once():
    problems = TensorflowAdapter().validate(_spec("mlp", IRIS, params={
        "hidden": [0], "dropout": 1.5, "lr": -1, "batch_size": 0, "optimizer": "rmsprop", "momentum": 1.0,
        "channels": [4, 4], "seed": -1}))
    text = "\n".join(problems)
    for fragment in ("unknown params for tensorflow mlp: channels", "param 'hidden'", "param 'dropout'",
                     "param 'lr' must be > 0", "param 'batch_size'", "param 'optimizer' must be one of adam",
                     "param 'momentum' must be >= 0 and < 1", "param 'seed'"):
        assert fragment in text, fragment
    assert len(problems) >= 8


def test_validate_knows_the_dataset_shape_before_loading_it():
    adapter = TensorflowAdapter()
    assert any("unknown tensorflow model 'resnet'" in p for p in adapter.validate(_spec("resnet", IRIS)))
    wine = adapter.validate(_spec("cnn", WINE))
    assert any("square one-channel images" in p and "got 13" in p for p in wine)
    assert not any("square" in p for p in adapter.validate(_spec("cnn", DIGITS)))
    synthetic = adapter.validate(_spec("tabular", {"source": "synthetic", "task": "regression", "n_features": 5},
                                       params={"width": 0, "depth": -1}))
    assert any("param 'width'" in p for p in synthetic) and any("param 'depth'" in p for p in synthetic)


def test_validate_training_spec_raises_with_every_error():
    with pytest.raises(ValidationError) as err:
        validate_training_spec(_spec("mlp", IRIS, params={"lr": 0, "hidden": "wide"}))
    assert len(err.value.details["errors"]) >= 2


def test_a_missing_extra_is_named(monkeypatch):
    real = tf_models.importlib.util.find_spec
    monkeypatch.setattr(tf_models.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow" else real(name, *a))
    problems = get_adapter("tensorflow").validate(_spec("nope", IRIS))
    assert problems[0] == TF_EXTRA_HINT == ("framework tensorflow needs the tensorflow extra: "
                                            "pip install 'mlhub[tensorflow]'")
    assert any("unknown tensorflow model 'nope'" in p for p in problems)  # and the other problems too
    with pytest.raises(ImportError, match="mlhub\\[tensorflow\\]"):
        tf_models.import_tf()


def test_reported_metrics_follow_the_task():
    adapter = TensorflowAdapter()
    base = {"loss", "val_loss", "seconds", "samples_per_s"}
    assert adapter.reported_metrics(_spec("mlp", IRIS)) == base | {"accuracy", "val_accuracy"}
    assert adapter.reported_metrics(_spec("mlp", DIABETES)) == base | {"rmse", "val_rmse"}
    unknown = _spec("mlp", {"source": "csv", "path": "x.csv", "target": "y"})
    assert adapter.reported_metrics(unknown) == base | {"accuracy", "val_accuracy", "rmse", "val_rmse"}


def test_model_problems_and_build_model_refuse_bad_sizes():
    assert tf_models.model_problems("cnn", 10, 3) == [
        "tensorflow model cnn takes square one-channel images: in_features must be a square >= 4, e.g. 64 for "
        "8x8 digits (got 10)"]
    assert tf_models.model_problems("mlp", None, None, {"hidden": [4]}) == []
    with pytest.raises(ValueError, match="in_features.*out_features"):
        tf_models.build_model("mlp", 0, True)


def test_importing_the_adapter_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys, mlhub.training.adapters as a; a.get_adapter('tensorflow'); "
            "import mlhub.training.tf_adapter, mlhub.training.serialization; "
            "print('tensorflow' in sys.modules, 'tf_keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]


# --- training and round trips --------------------------------------------------------------------------

CASES = {"mlp": ("mlp", IRIS, {"hidden": [32], "lr": 0.03}),  # 0.01 learns iris in 2 epochs for some seeds only
         "cnn": ("cnn", DIGITS, {"channels": [8, 16], "dropout": 0.1, "lr": 0.01}),
         "tabular": ("tabular", DIABETES, {"width": 32, "depth": 1, "lr": 0.01, "optimizer": "adamw"})}


@pytest.fixture(scope="module")
def trained(keras):
    """Each builder trained for 2 epochs: name -> (spec, data, TrainedModel, reports)."""
    out = {}
    for name, (model, dataset, params) in CASES.items():
        spec = _spec(model, dataset, params=params, epochs=2)
        validate_training_spec(spec)
        data = load_dataset(spec.dataset, allowed_roots=[])
        reports: list[EpochReport] = []
        out[name] = (spec, data, get_adapter("tensorflow").train(spec, data, reports.append), reports)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_each_builder_trains_with_a_report_per_epoch(trained, name):
    spec, data, model, reports = trained[name]
    assert [r.epoch for r in reports] == [0, 1]
    for r in reports:
        assert set(r.metrics) == TensorflowAdapter().reported_metrics(spec)
        assert all(math.isfinite(v) for v in r.metrics.values())
    assert reports[1].metrics["loss"] < reports[0].metrics["loss"]
    assert (model.framework, model.model_format, model.task) == ("tensorflow", "keras", data.task)
    assert model.classes == data.classes
    assert model.input_schema["n_features"] == data.n_features
    assert set(model.reference_stats["features"]) == set(data.feature_names)
    assert model.params["epochs"] == 2 and model.params["lr"] == CASES[name][2]["lr"]
    assert json.loads(json.dumps(model.params)) == model.params
    with zipfile.ZipFile(io.BytesIO(model.payload)) as z:
        assert sorted(z.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
        assert "compile_config" not in json.loads(z.read("config.json"))


def test_training_learns(trained):
    assert trained["cnn"][2].metrics["accuracy"] > 0.8  # digits, 2 epochs
    assert trained["mlp"][3][-1].metrics["val_accuracy"] > 0.6  # iris


def test_the_same_seed_trains_the_same_model_again(trained):
    """A seed fixes the initial weights and the shuffling: a second run repeats the first exactly (Keras's
    unseeded initializers once drew from Python's random module, so two runs of one seed differed)."""
    spec, data, model, reports = trained["mlp"]
    again: list[EpochReport] = []
    repeat = get_adapter("tensorflow").train(spec, data, again.append)
    assert [r.metrics["loss"] for r in again] == [r.metrics["loss"] for r in reports]
    assert repeat.payload == model.payload or np.array_equal(
        load_model("tensorflow", "keras", repeat.payload).predict(data.x_test),
        load_model("tensorflow", "keras", model.payload).predict(data.x_test))


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_through_load_model(trained, name):
    _, data, model, reports = trained[name]
    loaded = load_model("tensorflow", "keras", model.payload)
    assert (loaded.task, loaded.classes, loaded.n_features) == (data.task, data.classes, data.n_features)
    pred = loaded.predict(data.x_test)
    assert pred.shape == (len(data.x_test),)
    if data.task == "classification":
        assert set(pred.tolist()) <= set(data.classes)
        assert np.mean(pred == data.y_test) == pytest.approx(model.metrics["accuracy"])
        assert model.metrics["accuracy"] == pytest.approx(reports[-1].metrics["val_accuracy"])
        proba = loaded.predict_proba(data.x_test[:7])
        assert proba.shape == (7, len(data.classes)) and np.allclose(proba.sum(axis=1), 1.0)
    else:
        assert not hasattr(loaded, "predict_proba")
        rmse = float(np.sqrt(np.mean((pred - data.y_test) ** 2)))
        assert rmse == pytest.approx(model.metrics["rmse"], rel=1e-4)
        assert rmse == pytest.approx(reports[-1].metrics["val_rmse"], rel=1e-3)
    with pytest.raises(ValidationError, match="expected rows of"):
        loaded.predict(np.zeros((2, data.n_features + 1)))


def test_train_refuses_a_model_that_does_not_fit_the_data(keras):
    spec = _spec("cnn", IRIS)  # iris has 4 features: a 2x2 image, fine; wine's 13 are not square
    data = load_dataset(DatasetSpec(**WINE), allowed_roots=[])
    with pytest.raises(ValidationError, match="square one-channel images") as err:
        get_adapter("tensorflow").train(spec, data, lambda r: None)
    assert err.value.details["errors"]


def test_divergence_is_a_validation_error(keras):
    spec = _spec("mlp", DIABETES, params={"lr": 1e30, "optimizer": "sgd", "hidden": [64, 64]}, epochs=3)
    data = load_dataset(spec.dataset, allowed_roots=[])
    with pytest.raises(ValidationError, match="diverged"):
        get_adapter("tensorflow").train(spec, data, lambda r: None)


# --- refusing tampered payloads ------------------------------------------------------------------------


def _members(payload: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(payload)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    return buf.getvalue()


def _with_config(payload: bytes, edit) -> bytes:
    members = _members(payload)
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    return _zip(members)


def test_non_keras_payloads_are_refused():
    for payload, match in ((b"not a zip at all", "not a .keras archive"),
                           (_zip({"config.json": b"{}"}), "lacks metadata.json, model.weights.h5"),
                           (b"PK\x03\x04garbage", "corrupt .keras archive")):
        with pytest.raises(ModelLoadError, match=match):
            load_model("tensorflow", "keras", payload)
    with pytest.raises(ModelLoadError, match="unsupported model format tensorflow/h5"):
        load_model("tensorflow", "h5", b"PK\x03\x04")


def test_a_config_naming_another_module_is_refused_before_keras_reads_it(trained):
    payload = trained["mlp"][2].payload

    def to_os(config):
        layer = next(lyr for lyr in config["config"]["layers"] if lyr["class_name"] == "Dense")
        layer["module"], layer["class_name"] = "os", "system"

    with pytest.raises(ModelLoadError, match="outside the allow-list: os.system") as err:
        load_model("tensorflow", "keras", _with_config(payload, to_os))
    assert err.value.details["untrusted_types"] == ["os.system"]

    def registered(config):
        config["config"]["layers"][-1]["registered_name"] = "Custom>Evil"

    with pytest.raises(ModelLoadError, match="allow-list"):
        load_model("tensorflow", "keras", _with_config(payload, registered))


def test_a_lambda_layer_is_refused_although_keras_would_run_it(keras, tmp_path):
    marker = tmp_path / "marker"
    inputs = keras.Input(shape=(4,))
    hostile = keras.layers.Lambda(lambda x, m=str(marker): (open(m, "w").write("pwned"), x)[1])(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hostile))
    marker.unlink()  # building the model above ran the function once
    path = tmp_path / "hostile.keras"
    model.save(path)
    keras.saving.load_model(path, safe_mode=False)  # the payload is live: unsafe loading runs its code
    assert marker.exists()
    marker.unlink()
    members = _members(path.read_bytes())
    meta = json.loads(members["metadata.json"])
    meta["mlhub"] = {"format": 1, "task": "classification", "classes": [0, 1, 2], "n_features": 4}
    members["metadata.json"] = json.dumps(meta).encode()
    with pytest.raises(ModelLoadError, match="allow-list: .*Lambda"):
        load_model("tensorflow", "keras", _zip(members))
    assert not marker.exists()


def test_tampered_metadata_or_weights_are_refused(trained):
    payload = trained["mlp"][2].payload
    members = _members(payload)
    meta = json.loads(members["metadata.json"])

    def with_meta(**changes):
        m = dict(members)
        m["metadata.json"] = json.dumps({**meta, "mlhub": {**meta["mlhub"], **changes}}).encode()
        return _zip(m)

    with pytest.raises(ModelLoadError, match="maps .* but its metadata says"):
        load_model("tensorflow", "keras", with_meta(classes=[0, 1, 2, 3]))
    with pytest.raises(ModelLoadError, match="n_features must be a positive int"):
        load_model("tensorflow", "keras", with_meta(n_features="4"))
    with pytest.raises(ModelLoadError, match="no mlhub metadata"):
        load_model("tensorflow", "keras", with_meta(task="clustering"))
    broken = dict(members)
    broken["model.weights.h5"] = members["model.weights.h5"][:200]
    with pytest.raises(ModelLoadError, match="cannot load .keras model"):
        load_model("tensorflow", "keras", _zip(broken))


def test_a_resumed_session_restores_weights_and_optimizer_and_continues(keras):
    from mlhub.training.distributed import LocalSession
    from mlhub.training.tf_adapter import tf_loop

    spec = _spec("mlp", IRIS, params={"hidden": [16], "lr": 0.01}, epochs=4, checkpoint_every=2)
    data = load_dataset(spec.dataset, allowed_roots=[])
    first: list[EpochReport] = []
    whole = LocalSession(spec, [], first.append, data=data)
    tf_loop(whole)
    assert [r.epoch for r in first] == [0, 1, 2, 3]

    interrupted = LocalSession(spec.model_copy(update={"epochs": 2}), [], lambda r: None, data=data)
    tf_loop(interrupted)  # a run that stopped after its checkpoint at epoch 2
    assert set(interrupted.state) == {"weights.npz", "optimizer.npz"}
    resumed_reports: list[EpochReport] = []
    resumed = LocalSession(spec, [], resumed_reports.append, data=data)
    resumed.resume = {"epoch": 2, "files": interrupted.state}
    tf_loop(resumed)
    assert [r.epoch for r in resumed_reports] == [2, 3]  # continues, not from scratch
    with np.load(io.BytesIO(resumed.state["optimizer.npz"])) as z:
        assert int(z["arr_0"]) == 4 * math.ceil(len(data.x_train) / 64)  # the step count carried over
    loaded = load_model("tensorflow", "keras", resumed.final.payload)
    assert loaded.predict(data.x_test).shape == (len(data.x_test),)
    with pytest.raises(ValidationError, match="cannot resume"):
        broken = LocalSession(spec, [], lambda r: None, data=data)
        broken.resume = {"epoch": 2, "files": {"weights.npz": interrupted.state["weights.npz"]}}
        tf_loop(broken)

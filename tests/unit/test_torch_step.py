"""The built-in torch models and the per-step training code (CPU only, no Ray)."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mlhub.training.torch_models import MODELS, DigitsCNN, TabularNet, build_model, model_problems
from mlhub.training.torch_step import (
    StateLoadError,
    StepRunner,
    dump_state,
    load_state,
    make_loss,
    make_optimizer,
    resolve_device,
)

ROOT = Path(__file__).resolve().parents[2]


def _blobs(n: int = 512, features: int = 8, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    return (centers[y] + rng.normal(size=(n, features))).astype(np.float32), y


def _runner(name: str = "mlp", features: int = 8, out: int = 3, seed: int = 0, **kw) -> StepRunner:
    torch.manual_seed(seed)
    return StepRunner(build_model(name, features, out, **kw.pop("params", {})), device="cpu", seed=seed, **kw)


# --- models --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "in_features", "out_features", "params", "shape"), [
    ("mlp", 20, 3, {}, (5, 20)),
    ("mlp", 20, 1, {"hidden": [16], "dropout": 0.2}, (5, 20)),
    ("mlp", 20, 4, {"hidden": []}, (5, 20)),
    ("cnn", 64, 10, {}, (5, 1, 8, 8)),
    ("cnn", 64, 10, {"channels": [4, 8]}, (5, 64)),
    ("tabular", 7, 2, {"width": 16, "depth": 3, "dropout": 0.1}, (5, 7)),
])
def test_models_build_and_forward(name, in_features, out_features, params, shape):
    torch.manual_seed(0)
    model = build_model(name, in_features, out_features, **params)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(*shape))
    assert out.shape == (5, out_features)
    assert torch.isfinite(out).all()


def test_registry_and_classes():
    assert set(MODELS) == {"mlp", "cnn", "tabular"}
    assert isinstance(build_model("cnn", 64, 10), DigitsCNN)
    assert isinstance(build_model("tabular", 4, 1), TabularNet)
    assert DigitsCNN()(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(("args", "params", "fragments"), [
    (("resnet", 4, 2), {}, ["unknown torch model 'resnet'", "mlp, cnn, tabular"]),
    (("mlp", 4, 2), {"layers": 3}, ["unknown params for torch model mlp: layers", "hidden", "dropout"]),
    (("mlp", 4, 2), {"hidden": [0, 8]}, ["'hidden'"]),
    (("mlp", 4, 2), {"hidden": "64"}, ["'hidden'"]),
    (("mlp", 4, 2), {"dropout": 1.0}, ["'dropout'", "[0, 1)"]),
    (("mlp", 0, 2), {}, ["in_features"]),
    (("mlp", 4, True), {}, ["out_features"]),
    (("cnn", 10, 2), {}, ["square"]),
    (("cnn", 64, 2), {"channels": [8]}, ["'channels'"]),
    (("tabular", 4, 2), {"depth": -1, "width": 2.5}, ["'depth'", "'width'"]),
])
def test_bad_models_raise_value_error(args, params, fragments):
    with pytest.raises(ValueError) as exc:
        build_model(*args, **params)
    for f in fragments:
        assert f in str(exc.value)
    assert model_problems(args[0], args[1], args[2], params)


def test_bad_loss_optimizer_device():
    with pytest.raises(ValueError, match="classification, regression"):
        make_loss("ranking")
    params = list(build_model("mlp", 2, 2).parameters())
    with pytest.raises(ValueError, match="adam, adamw, sgd"):
        make_optimizer("lbfgs", params)
    with pytest.raises(ValueError, match="lr"):
        make_optimizer("adam", params, lr=0)
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# --- training ------------------------------------------------------------------------------------------

def test_training_reduces_loss_classification():
    x, y = _blobs()
    runner = _runner(lr=1e-2)
    assert runner.amp == "off" and runner.scaler is None  # CPU: full precision
    before = runner.evaluate(x, y)
    data = runner.prepare(x, y)
    stats = [runner.train_epoch(data, batch_size=64) for _ in range(5)]
    after = runner.evaluate(x, y)
    assert set(stats[0]) == {"loss", "samples", "seconds", "samples_per_s"}
    assert stats[0]["samples"] == 512 and stats[0]["samples_per_s"] > 0
    assert stats[-1]["loss"] < stats[0]["loss"]
    assert after["loss"] < before["loss"] / 2
    assert after["accuracy"] > 0.9 and after["samples"] == 512
    assert runner.epochs_done == 5 and runner.steps_done == 5 * 8


def test_training_regression_and_batches_iterable():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 5)).astype(np.float32) * 10  # unscaled: the tabular input batchnorm copes
    y = x @ rng.normal(size=5) + 1.0
    runner = _runner("tabular", features=5, out=1, task="regression", lr=1e-2, params={"width": 32, "depth": 1})
    first = runner.train_epoch((x, y), batch_size=32)
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]  # any iterable of (x, y) works
    for _ in range(15):
        last = runner.train_epoch(batches)
    assert last["loss"] < first["loss"] / 2
    metrics = runner.evaluate(x, y)
    assert set(metrics) == {"loss", "rmse", "mae", "samples"}
    assert isinstance(runner.train_step(x[:16], y[:16]), float)


def test_bad_training_input():
    runner = _runner()
    x, y = _blobs(n=20)
    with pytest.raises(ValueError, match="batch_size"):
        runner.train_epoch((x, y), batch_size=0)
    with pytest.raises(ValueError, match="rows"):
        runner.prepare(x, y[:10])
    with pytest.raises(ValueError, match="integer class indices"):
        runner.prepare(x, y + 0.5)
    with pytest.raises(ValueError, match="no data"):
        runner.train_epoch([])


# --- state ---------------------------------------------------------------------------------------------

def test_state_round_trip_weights_only(monkeypatch):
    x, y = _blobs(n=128)
    runner = _runner(lr=1e-2)
    runner.train_epoch((x, y), batch_size=32)
    payload = runner.save()
    assert isinstance(payload, bytes)

    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    other = _runner(seed=123)  # different initial weights
    assert not np.array_equal(other.predict(x), runner.predict(x))
    other.load_state_dict(payload)
    assert seen == [True]
    np.testing.assert_array_equal(other.predict(x), runner.predict(x))
    assert other.epochs_done == 1 and other.steps_done == 4
    # the optimizer state came back too: one more identical step keeps them identical
    runner.train_step(x[:32], y[:32])
    other.train_step(x[:32], y[:32])
    np.testing.assert_array_equal(other.predict(x), runner.predict(x))

    weights = load_state(dump_state(runner.model.state_dict()))  # a bare model state dict
    fresh = _runner(seed=7)
    fresh.load_state_dict(weights)
    np.testing.assert_array_equal(fresh.predict(x), runner.predict(x))


class _Armed:
    """Unpickling this creates ``path``: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_tampered_payloads_are_refused(tmp_path):
    # the payload is real: an unrestricted unpickler would create the file
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Armed(probe)))
    assert probe.exists()

    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(2)}, "extra": _Armed(marker)}, buf)  # a torch zip with a __reduce__
    payloads = [buf.getvalue(), pickle.dumps({"model": _Armed(marker)}), pickle.dumps(_Armed(marker))]
    runner = _runner()
    for payload in payloads:
        with pytest.raises(StateLoadError, match="refused"):
            load_state(payload)
        with pytest.raises(StateLoadError):
            runner.load_state_dict(payload)
    assert not marker.exists()

    for junk in (b"", b"not a torch file", dump_state.__doc__.encode()):
        with pytest.raises(StateLoadError):
            load_state(junk)
    not_a_dict = io.BytesIO()
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(StateLoadError, match="must be a dict"):
        load_state(not_a_dict.getvalue())
    assert issubclass(StateLoadError, ValueError)


# --- imports -------------------------------------------------------------------------------------------

_HEAVY = ("mlhub", "ray", "pandas", "sklearn", "skops", "pydantic", "sqlalchemy", "pyarrow", "yaml")


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """One fresh interpreter (torch imported once) that (1) runs the GPU check's script with mlhub (the
    package), Ray, pandas, scikit-learn, pydantic... all unimportable, then (2) imports the two modules
    through the ``mlhub`` package as the Ray Train adapter will, and says whether ``ray`` got imported."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    code = f"""
        import importlib.util, json, sys
        for name in {_HEAVY!r}:
            sys.modules[name] = None  # import raises ImportError
        spec = importlib.util.spec_from_file_location("gpu_step_bench", "benchmarks/gpu_step_bench.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        rc = bench.main(["--device", "cpu", "--samples", "600", "--batch-size", "128", "--hidden", "16",
                         "--epochs", "1", "--repeats", "5", "--json", {str(out)!r}])
        assert rc == 0
        for name in {_HEAVY!r}:
            del sys.modules[name]
        assert "ray" not in sys.modules
        import mlhub.training.torch_models, mlhub.training.torch_step
        print("RAY_IMPORTED=" + json.dumps("ray" in sys.modules))
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())


def test_modules_import_without_ray(probe):
    stdout, _ = probe
    assert "RAY_IMPORTED=false" in stdout, "importing the torch step code pulled in ray"


def test_benchmark_runs_with_only_torch_and_numpy(probe):
    stdout, result = probe
    assert "mlhub StepRunner.train_epoch" in stdout and "rerun:" in stdout
    assert result["amp"] == "off" and result["repeats"] == 5
    assert all(len(v) == 5 for v in result["samples_per_s"].values())
    losses = list(result["last_epoch_loss"].values())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)  # same model, data, order, optimizer

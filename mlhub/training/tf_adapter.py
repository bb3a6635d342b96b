"""The ``tensorflow`` framework: the Keras models of :mod:`mlhub.training.tf_models` (tf-keras, never Keras 3).

:class:`TensorflowAdapter` validates a spec without importing TensorFlow (every problem at once, including a
missing ``tensorflow`` extra) and trains in-process on one worker, reporting after every epoch through a Keras
callback. The same compile/fit pieces run on each Ray Train worker under ``MultiWorkerMirroredStrategy``.

Spec params: the model's own (``hidden``/``channels``/``width``/``depth``/``dropout``, see
:data:`~mlhub.training.torch_models.MODEL_PARAMS`, shared by both families) and the training ones of :data:`TRAIN_PARAMS` (``lr`` 1e-3,
``batch_size`` 64, ``optimizer`` adam|adamw|sgd, ``weight_decay`` 0, ``momentum`` 0.9 for sgd).

Per-epoch reports (:meth:`TensorflowAdapter.reported_metrics`): ``loss``, ``val_loss``, ``seconds``,
``samples_per_s`` and ``accuracy``/``val_accuracy`` (classification) or ``rmse``/``val_rmse`` (regression);
``val_`` is the test split. The model is saved as a ``.keras`` archive (:func:`keras_payload`) whose
``metadata.json`` also holds mlhub's ``task``, ``classes`` and ``n_features``, and is loaded back by
:func:`mlhub.training.serialization.load_model` with an allow-list of layer classes and ``safe_mode``.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlhub.domain.specs import TrainingSpec
from mlhub.errors import ValidationError
from mlhub.training.adapters import EpochReport, TrainedModel, json_params, split_metrics, task_of
from mlhub.training.datasets import Dataset
from mlhub.training.schema import input_schema, reference_stats
from mlhub.training.tf_models import (
    DEFAULTS,
    MODELS,
    build_model,
    effective_params,
    import_keras,
    import_tf,
    model_problems,
    tensorflow_problems,
)

__all__ = [
    "KERAS_FORMAT",
    "OPTIMIZERS",
    "TRAIN_PARAMS",
    "Prepared",
    "TensorflowAdapter",
    "compile_model",
    "epoch_callback",
    "finish",
    "keras_outputs",
    "keras_payload",
    "prepare",
    "softmax",
    "tf_loop",
    "train_param_problems",
    "train_params",
]

KERAS_FORMAT = "keras"
OPTIMIZERS = ("adam", "adamw", "sgd")
TRAIN_PARAMS = {"lr": "float > 0 (default 0.001)", "batch_size": "int in [1, 1048576] (default 64)",
                "optimizer": f"one of {', '.join(OPTIMIZERS)} (default adam)",
                "weight_decay": "float >= 0 (default 0.0)", "momentum": "float in [0, 1) for sgd (default 0.9)",
                "seed": "int >= 0, weight initialisation and shuffling (default: the dataset's seed)"}
_TRAIN_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "batch_size": 64, "optimizer": "adam", "weight_decay": 0.0,
                                   "momentum": 0.9}

_SKLEARN_SHAPES = {"iris": (4, 3), "digits": (64, 10), "wine": (13, 3), "breast_cancer": (30, 2),
                   "diabetes": (10, 1)}
_COMMON_METRICS = frozenset({"loss", "val_loss", "seconds", "samples_per_s"})
_TASK_METRICS = {"classification": frozenset({"accuracy", "val_accuracy"}),
                 "regression": frozenset({"rmse", "val_rmse"})}
_MAX_BATCH = 1 << 20


# --- validation ----------------------------------------------------------------------------------------


def _number(params: dict[str, Any], key: str, lo: float, hi: float | None, lo_ok: bool) -> str | None:
    v = params[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return f"param {key!r} must be a number (got {v!r})"
    if v < lo or (v == lo and not lo_ok) or (hi is not None and v >= hi):
        return f"param {key!r} must be {'>=' if lo_ok else '>'} {lo:g}{f' and < {hi:g}' if hi else ''} (got {v!r})"
    return None


def train_param_problems(params: dict[str, Any]) -> list[str]:
    """Problems with the training params (:data:`TRAIN_PARAMS`) in ``params``; other keys are ignored."""
    out = []
    for key, lo, hi, lo_ok in (("lr", 0.0, None, False), ("weight_decay", 0.0, None, True),
                               ("momentum", 0.0, 1.0, True)):
        if key in params and (p := _number(params, key, lo, hi, lo_ok)):
            out.append(p)
    if "batch_size" in params:
        b = params["batch_size"]
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= _MAX_BATCH:
            out.append(f"param 'batch_size' must be an int in [1, {_MAX_BATCH}] (got {b!r})")
    if "seed" in params:
        v = params["seed"]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 2**31 - 1:
            out.append(f"param 'seed' must be an int in [0, {2**31 - 1}] (got {v!r})")
    if "optimizer" in params and params["optimizer"] not in OPTIMIZERS:
        out.append(f"param 'optimizer' must be one of {', '.join(OPTIMIZERS)} (got {params['optimizer']!r})")
    return out


def train_params(params: dict[str, Any]) -> dict[str, Any]:
    """The training params with defaults filled in."""
    return {k: params.get(k, d) for k, d in _TRAIN_DEFAULTS.items()}


def _model_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in TRAIN_PARAMS}


def _shape_of(spec: TrainingSpec) -> tuple[int | None, int | None]:
    """(in_features, out_features) when known before the data is read, else None for each unknown."""
    ds = spec.dataset
    if ds.source == "sklearn":
        return _SKLEARN_SHAPES.get(ds.name or "", (None, None))
    if ds.source == "synthetic":
        return ds.n_features, (ds.n_classes if task_of(spec) == "classification" else 1)
    return None, (1 if ds.task == "regression" else None)


# --- data ----------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """Arrays ready for Keras (float32 features; int32 class indices or float32 ``(N, 1)`` targets) and the
    statistics the model standardises with (from the training split)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    task: str
    classes: list | None
    feature_mean: list[float]
    feature_var: list[float]
    target_mean: float | None
    target_std: float | None

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "classification" and self.classes else 1

    def build(self, name: str, params: dict[str, Any]) -> Any:
        """The Keras model ``name`` for these arrays (uncompiled)."""
        return build_model(name, self.n_features, self.n_outputs, feature_mean=self.feature_mean,
                           feature_var=self.feature_var, target_mean=self.target_mean,
                           target_std=self.target_std, **_model_params(params))


def _targets(task: str, classes: list | None, y: np.ndarray) -> np.ndarray:
    if task == "classification":
        return np.searchsorted(np.asarray(classes), y).astype(np.int32)
    return np.asarray(y, dtype=np.float32).reshape(-1, 1)


def prepare(data: Dataset) -> Prepared:
    """Keras-ready arrays and standardisation statistics of a :class:`Dataset`."""
    x = np.asarray(data.x_train, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValidationError("tensorflow models need finite feature values (no NaN or infinity)")
    var = x.var(axis=0)
    var[var == 0] = 1.0  # a constant feature stays at 0 after centring
    t_mean = t_std = None
    if data.task == "regression":
        y = np.asarray(data.y_train, dtype=np.float64)
        t_mean, t_std = float(y.mean()), float(y.std()) or 1.0
    return Prepared(x_train=x.astype(np.float32), y_train=_targets(data.task, data.classes, data.y_train),
                    x_val=np.asarray(data.x_test, dtype=np.float32),
                    y_val=_targets(data.task, data.classes, data.y_test), task=data.task, classes=data.classes,
                    feature_mean=x.mean(axis=0).tolist(), feature_var=var.tolist(), target_mean=t_mean,
                    target_std=t_std)


# --- compile, fit, save --------------------------------------------------------------------------------


def _optimizer(keras: Any, p: dict[str, Any]) -> Any:
    lr, wd = float(p["lr"]), float(p["weight_decay"])
    if p["optimizer"] == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=wd)
    if p["optimizer"] == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=float(p["momentum"]), weight_decay=wd or None)
    return keras.optimizers.Adam(learning_rate=lr, weight_decay=wd or None)


def compile_model(model: Any, task: str, params: dict[str, Any]) -> Any:
    """Compile with the spec's optimizer, the task's loss (cross-entropy on logits, or MSE) and metric
    (``accuracy`` or ``rmse``); returns the model."""
    keras = import_keras()
    if task == "classification":
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    else:
        loss = keras.losses.MeanSquaredError()
        metrics = [keras.metrics.RootMeanSquaredError(name="rmse")]
    model.compile(optimizer=_optimizer(keras, train_params(params)), loss=loss, metrics=metrics)
    return model


def epoch_callback(on_epoch: Callable[[int, dict[str, float]], None], samples: int, first_epoch: int = 0) -> Any:
    """A Keras callback calling ``on_epoch(epoch, metrics)`` after each epoch, with Keras' logs as floats plus
    ``seconds`` and ``samples_per_s`` (``samples`` rows per epoch); a non-finite loss stops training with a
    ValidationError ("lower lr")."""
    keras = import_keras()

    class _EpochReporter(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seconds = time.perf_counter() - self._start
            metrics = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
            if not math.isfinite(metrics.get("loss", 0.0)):
                raise ValidationError(f"training diverged at epoch {epoch}: lower lr")
            metrics["seconds"] = seconds
            metrics["samples_per_s"] = samples / seconds if seconds > 0 else float("inf")
            on_epoch(epoch, metrics)

    return _EpochReporter()


def keras_outputs(model: Any, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Model outputs (logits or values) for ``x`` as float64, in chunks."""
    x = np.asarray(x, dtype=np.float32)
    outs = [np.asarray(model(x[i:i + batch_size], training=False), dtype=np.float64)  # eager: no retracing
            for i in range(0, x.shape[0], batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 1))


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def keras_payload(model: Any, meta: dict[str, Any]) -> bytes:
    """The bytes of a ``.keras`` archive of ``model`` without its compile config (optimizer, loss), with
    ``meta`` (task, classes, n_features) under ``"mlhub"`` in its ``metadata.json``."""
    with tempfile.TemporaryDirectory(prefix="mlhub-keras-") as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with zipfile.ZipFile(path) as z:
            members = {n: z.read(n) for n in z.namelist()}
    config = json.loads(members["config.json"])
    config.pop("compile_config", None)
    members["config.json"] = json.dumps(config).encode()
    metadata = json.loads(members["metadata.json"])
    metadata["mlhub"] = meta
    members["metadata.json"] = json.dumps(metadata).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, body in members.items():
            z.writestr(name, body)
    return buf.getvalue()


def finish(name: str, model: Any, data: Dataset, prepared: Prepared,
           trained_params: dict[str, Any]) -> TrainedModel:
    """Test-split metrics of a trained Keras model and its :class:`TrainedModel` (``.keras`` payload)."""
    out = keras_outputs(model, prepared.x_val)
    if data.task == "classification":
        proba = softmax(out)
        pred, classes = np.asarray(data.classes)[out.argmax(axis=1)], data.classes
    else:
        proba, pred, classes = None, out[:, 0], None
    metrics = split_metrics(data.task, data.y_test, pred, proba, classes)
    meta = {"format": 1, "model": name, "task": data.task, "classes": data.classes,
            "n_features": prepared.n_features}
    return TrainedModel(framework="tensorflow", model_format=KERAS_FORMAT, payload=keras_payload(model, meta),
                        metrics=metrics, params=trained_params,
                        input_schema=input_schema(data.feature_names, data.x_train),
                        reference_stats=reference_stats(data.feature_names, data.x_train),
                        task=data.task, classes=data.classes)


# --- the adapter ---------------------------------------------------------------------------------------


class TensorflowAdapter:
    """Keras ``mlp`` / ``cnn`` / ``tabular`` on tf-keras; in-process here, Ray Train workers for ``num_workers``."""

    framework = "tensorflow"
    # a PBT exploit may change these and still continue from another trial's weights and optimizer state
    # (momentum may not: SGD without it has no momentum slots to restore)
    warm_start_params = frozenset({"lr", "weight_decay", "batch_size", "seed"})

    def validate(self, spec: TrainingSpec) -> list[str]:
        problems = list(tensorflow_problems())
        problems += json_params(spec.params)
        if spec.model not in MODELS:
            problems.append(f"unknown tensorflow model {spec.model!r}: use one of {', '.join(MODELS)}")
        else:
            valid = set(DEFAULTS[spec.model]) | set(TRAIN_PARAMS)
            unknown = sorted(set(spec.params) - valid)
            if unknown:
                problems.append(f"unknown params for tensorflow {spec.model}: {', '.join(unknown)} "
                                f"(valid: {', '.join(sorted(valid))})")
            in_f, out_f = _shape_of(spec)
            known = {k: v for k, v in spec.params.items() if k in DEFAULTS[spec.model]}
            problems += model_problems(spec.model, in_f, out_f, known)
        problems += train_param_problems(spec.params)
        task = task_of(spec)
        if task is not None and task not in _TASK_METRICS:
            problems.append(f"tensorflow models train classification or regression tasks, not {task!r}")
        return problems

    def reported_metrics(self, spec: TrainingSpec) -> set[str]:
        """Names of the metrics every epoch report carries for ``spec``: ``loss``, ``val_loss``, ``seconds``,
        ``samples_per_s``, plus ``accuracy``/``val_accuracy`` (classification) or ``rmse``/``val_rmse``
        (regression). When the task is known only from the data (a CSV without ``task``), both task's names."""
        task = task_of(spec)
        if task in _TASK_METRICS:
            return set(_COMMON_METRICS | _TASK_METRICS[task])
        return set(_COMMON_METRICS.union(*_TASK_METRICS.values()))

    def _problems_with_data(self, spec: TrainingSpec, data: Dataset) -> list[str]:
        problems = self.validate(spec)
        if spec.model in MODELS:
            out_f = len(data.classes or []) if data.task == "classification" else 1
            known = {k: v for k, v in spec.params.items() if k in DEFAULTS[spec.model]}
            problems += [p for p in model_problems(spec.model, data.n_features, out_f, known) if p not in problems]
        return problems

    def train(self, spec: TrainingSpec, data: Dataset, report: Callable[[EpochReport], None], *,
              resume: dict[str, Any] | None = None, checkpoint_every: int | None = None) -> TrainedModel:
        """In one process (no Ray): :func:`tf_loop` with a local session, as on a Ray Train worker (``resume``
        and ``checkpoint_every``: see :class:`~mlhub.training.adapters.Adapter`)."""
        from mlhub.training.distributed import LocalSession

        session = LocalSession(spec, [], report, data=data, resume=resume, checkpoint_every=checkpoint_every)
        tf_loop(session)
        assert session.final is not None
        info = session.final.info
        return TrainedModel(framework=self.framework, model_format=session.final.model_format,
                            payload=session.final.payload, metrics=info["metrics"], params=info["params"],
                            input_schema=input_schema(data.feature_names, data.x_train),
                            reference_stats=reference_stats(data.feature_names, data.x_train),
                            task=data.task, classes=data.classes)


# --- the loop (one process, or every Ray Train worker under MultiWorkerMirroredStrategy) ---------------


def _val_metrics(model: Any, prepared: Prepared) -> dict[str, float]:
    """Loss and metric on the test split, computed here in numpy (the same on every worker, no collective)."""
    out = keras_outputs(model, prepared.x_val)
    if prepared.task == "classification":
        z = out - out.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        idx = prepared.y_val.astype(np.int64)
        return {"val_loss": float(-log_p[np.arange(len(idx)), idx].mean()),
                "val_accuracy": float(np.mean(out.argmax(axis=1) == idx))}
    mse = float(np.mean((out[:, 0] - prepared.y_val[:, 0].astype(np.float64)) ** 2))
    return {"val_loss": mse, "val_rmse": math.sqrt(mse)}


def _npz(arrays: list[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, *[np.asarray(a) for a in arrays])
    return buf.getvalue()


def _from_npz(payload: bytes) -> list[np.ndarray]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def _state(model: Any) -> dict[str, bytes]:
    """Checkpoint files: the model's weights and the optimizer's variables (step count, moments) as npz."""
    return {"weights.npz": _npz(model.get_weights()),
            "optimizer.npz": _npz([v.numpy() for v in model.optimizer.variables])}


def _restore(model: Any, files: dict[str, bytes], strategy: Any) -> None:
    try:
        weights = _from_npz(files["weights.npz"])
        opt_vars = _from_npz(files["optimizer.npz"])
        model.set_weights(weights)
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
        model.optimizer.set_weights(opt_vars)
    except (KeyError, ValueError, OSError) as exc:
        raise ValidationError(f"cannot resume from the checkpoint: {exc}") from None


def _strategy(tf: Any, world_size: int) -> Any:
    """MultiWorkerMirroredStrategy across Ray Train's workers (TF_CONFIG is Ray's), else the default one."""
    if world_size > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def tf_loop(session: Any) -> None:
    """mlhub's built-in TensorFlow training loop for any :class:`~mlhub.training.distributed.TrainSession`.

    Each worker trains on its shard (``session.shard``) with batches of ``batch_size`` rows; gradients are
    all-reduced by MultiWorkerMirroredStrategy when ``world_size > 1``. After every epoch it reports ``loss``
    (Keras', across workers), the test split's ``val_*`` metrics, ``seconds`` and ``samples_per_s``; rank 0
    passes the checkpoint state (weights and optimizer variables as npz) and, after the last epoch, the
    ``.keras`` model. A resumed session restores both and continues at the next epoch."""
    spec: TrainingSpec = session.spec
    adapter = TensorflowAdapter()
    data = session.dataset()
    problems = adapter._problems_with_data(spec, data)
    if problems:
        raise ValidationError("invalid training spec: " + "; ".join(problems), details={"errors": problems})
    tf = import_tf()
    strategy = _strategy(tf, session.world_size)  # before any other TensorFlow op (MWMS requires it)
    tp = train_params(spec.params)
    seed = int(spec.params.get("seed", spec.dataset.seed))
    # identical initial weights on every worker, and the same ones on every run: tf.random.set_seed alone
    # leaves Keras's unseeded initializers drawing from Python's random module (a val_accuracy of 0.57-0.83
    # on iris after 2 epochs from one seed); this seeds Python, NumPy, TensorFlow and Keras's own generator
    import_keras().utils.set_random_seed(seed)
    prepared = prepare(data)
    with strategy.scope():
        model = compile_model(prepared.build(spec.model, spec.params), data.task, spec.params)
    # the model saved at the end is a plain copy built here, outside the strategy's scope: fit() runs its
    # callbacks inside that scope, where creating variables on rank 0 alone would be a collective it waits on
    plain = prepared.build(spec.model, spec.params) if session.rank == 0 else None
    start = 0
    if session.resume:
        _restore(model, session.resume["files"], strategy)
        model.optimizer.learning_rate = float(tp["lr"])  # the state may come from a run with another one (PBT)
        start = int(session.resume["epoch"])
    if session.world_size > 1:
        session.log(f"MultiWorkerMirroredStrategy across {strategy.num_replicas_in_sync} replicas, "
                    f"tf-keras {import_keras().__version__}, from epoch {start}")
    x, y = session.shard(prepared.x_train, prepared.y_train)
    batch_size = int(tp["batch_size"])
    steps = max(1, math.ceil(len(x) / batch_size))

    def dataset_fn(_context: Any) -> Any:  # this worker's shard, batches of batch_size, reshuffled per epoch
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed + session.rank,
                                                                reshuffle_each_iteration=True)
        return ds.batch(batch_size).repeat()

    train_ds = strategy.distribute_datasets_from_function(dataset_fn)
    params = {**effective_params(spec.model, _model_params(spec.params)), **tp, "seed": seed,
              "epochs": spec.epochs, "num_workers": spec.num_workers}

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        metrics.update(_val_metrics(model, prepared))
        last = epoch == spec.epochs - 1
        chief = session.rank == 0
        state = _state(model) if chief and (last or session.should_checkpoint(epoch)) else None
        final = None
        if chief and last:
            plain.set_weights(model.get_weights())
            trained = finish(spec.model, plain, data, prepared, params)
            final = (trained.payload, trained.model_format, {"metrics": trained.metrics, "params": params})
        session.report(epoch, metrics, state=state, final_model=final, samples=len(x))

    if start >= spec.epochs:
        return
    model.fit(train_ds, epochs=spec.epochs, initial_epoch=start, steps_per_epoch=steps, verbose=0,
              callbacks=[epoch_callback(on_epoch, len(x))])


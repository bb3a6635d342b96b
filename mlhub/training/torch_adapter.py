"""The ``torch`` framework: built-in models (``mlp``, ``cnn``, ``tabular``) or a user factory, trained by
:func:`torch_loop` in one process (:meth:`TorchAdapter.train`, used by HPO trials) or on a Ray Train worker
group with DDP or FSDP (training jobs, through :mod:`mlhub.training.distributed`).

Params (``spec.params``): training ones (:data:`TRAIN_PARAMS`: ``lr``, ``batch_size``, ``optimizer``,
``weight_decay``, ``momentum``, ``seed``, ``mixed_precision``) and the model's own (``hidden``, ``dropout``,
...; see :data:`mlhub.training.torch_models.MODEL_PARAMS`). ``spec.model`` is a built-in name or
``module:factory`` (a user module in the job's working directory; ``factory(in_features, out_features,
**model_params)`` returns an ``nn.Module``).

Features are standardised with the training split's mean and standard deviation, which are saved with the
model. The stored model is one weights-only torch file (:func:`mlhub.training.torch_step.dump_state`):
architecture name and params, task, classes, the standardisation and the state dict; it loads with
``weights_only=True`` (:func:`load_torch_model`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from mlhub.domain.specs import ENTRYPOINT_RE, TrainingSpec
from mlhub.errors import ModelLoadError, ValidationError
from mlhub.training.adapters import EpochReport, TrainedModel, json_params, split_metrics, task_of
from mlhub.training.schema import input_schema, reference_stats

TRAIN_PARAMS = {
    "lr": "learning rate, a number > 0 (default 0.001)",
    "batch_size": "an int >= 1 (default 64)",
    "optimizer": "adam, adamw or sgd (default adam)",
    "weight_decay": "a number >= 0 (default 0)",
    "momentum": "sgd momentum, a number >= 0 (default 0.9)",
    "seed": "an int >= 0 (default: the dataset's seed)",
    "mixed_precision": "true/false: bf16/fp16 autocast on GPU (default true; always off on CPU)",
}
FORMAT = "mlhub-torch/1"
SKLEARN_SHAPES = {"iris": (4, 3), "digits": (64, 10), "wine": (13, 3), "breast_cancer": (30, 2), "diabetes": (10, 1)}


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training params, model params)."""
    return ({k: v for k, v in params.items() if k in TRAIN_PARAMS},
            {k: v for k, v in params.items() if k not in TRAIN_PARAMS})


def _train_param_problems(p: dict[str, Any]) -> list[str]:
    out = []

    def number(key: str, *, positive: bool) -> None:
        v = p.get(key)
        if v is None:
            return
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0 or (positive and v == 0):
            out.append(f"param {key!r} must be a number {'> 0' if positive else '>= 0'} (got {v!r})")

    number("lr", positive=True)
    number("weight_decay", positive=False)
    number("momentum", positive=False)
    for key, lo in (("batch_size", 1), ("seed", 0)):
        v = p.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= 2**31 - 1):
            out.append(f"param {key!r} must be an int >= {lo} (got {v!r})")
    if "optimizer" in p and p["optimizer"] not in ("adam", "adamw", "sgd"):
        out.append(f"param 'optimizer' must be adam, adamw or sgd (got {p['optimizer']!r})")
    if "mixed_precision" in p and not isinstance(p["mixed_precision"], bool):
        out.append(f"param 'mixed_precision' must be true or false (got {p['mixed_precision']!r})")
    return out


def _sizes_known(spec: TrainingSpec) -> tuple[int | None, int | None]:
    """(in_features, out_features) when they are known before loading the data."""
    ds = spec.dataset
    if ds.source == "sklearn":
        return SKLEARN_SHAPES.get(ds.name or "", (None, None))
    if ds.source == "synthetic":
        return ds.n_features, (ds.n_classes if ds.task == "classification" else 1)
    return None, None


class TorchAdapter:
    framework = "torch"
    # a PBT exploit may change these and still continue from another trial's weights and optimizer state
    warm_start_params = frozenset({"lr", "weight_decay", "momentum", "batch_size", "mixed_precision", "seed"})

    def validate(self, spec: TrainingSpec) -> list[str]:
        problems = json_params(spec.params)
        train_p, model_p = split_params(spec.params)
        problems += _train_param_problems(train_p)
        if ":" in spec.model:
            if not re.fullmatch(ENTRYPOINT_RE, spec.model):
                problems.append(f"model {spec.model!r}: a custom model is 'module:factory'")
        else:
            from mlhub.training.torch_models import MODELS, model_problems

            if spec.model not in MODELS:
                problems.append(f"unknown torch model {spec.model!r}: use one of {', '.join(MODELS)} "
                                "or 'module:factory'")
            else:
                n_in, n_out = _sizes_known(spec)
                problems += model_problems(spec.model, n_in, n_out, model_p)
        if spec.strategy == "fsdp" and spec.num_workers < 2:
            problems.append("strategy fsdp shards the model across workers: num_workers must be at least 2")
        return problems

    def reported_metrics(self, spec: TrainingSpec) -> set[str]:
        task = task_of(spec)
        val = {"val_accuracy"} if task == "classification" else {"val_rmse", "val_mae"}
        if task is None:
            val = {"val_accuracy", "val_rmse", "val_mae"}
        return {"loss", "val_loss", *val}

    def train(self, spec: TrainingSpec, data: Any, report: Callable[[EpochReport], None], *,
              resume: dict[str, Any] | None = None, checkpoint_every: int | None = None) -> TrainedModel:
        """In one process (no Ray): the same loop as a Ray Train worker, with a local session (``resume`` and
        ``checkpoint_every``: see :class:`~mlhub.training.adapters.Adapter`)."""
        from mlhub.training.distributed import LocalSession

        problems = self.validate(spec)
        if problems:
            raise ValidationError("invalid training spec: " + "; ".join(problems), details={"errors": problems})
        session = LocalSession(spec, [], report, data=data, resume=resume, checkpoint_every=checkpoint_every)
        torch_loop(session)
        assert session.final is not None
        return trained_model(session.final.payload, session.final.model_format, session.final.info, data)


def trained_model(payload: bytes, model_format: str, info: dict[str, Any], data: Any,
                  framework: str = "torch") -> TrainedModel:
    """The registry's view of a model a training loop produced (schema and reference stats from ``data``)."""
    return TrainedModel(framework=framework, model_format=model_format, payload=payload,
                        metrics=info.get("metrics", {}), params=info.get("params", {}),
                        input_schema=input_schema(data.feature_names, data.x_train),
                        reference_stats=reference_stats(data.feature_names, data.x_train),
                        task=data.task, classes=data.classes)


# --- the loop ------------------------------------------------------------------------------------------

def _build(spec: TrainingSpec, n_in: int, n_out: int, model_params: dict[str, Any], working_dir=None):
    if ":" in spec.model:
        from mlhub.training.distributed import load_entrypoint

        factory = load_entrypoint(spec.model, working_dir)
        return factory(n_in, n_out, **model_params)
    from mlhub.training.torch_models import build_model

    try:
        return build_model(spec.model, n_in, n_out, **model_params)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0).astype(np.float32)
    std = x.std(axis=0).astype(np.float32)
    std[std == 0] = 1.0
    return mean, std


def torch_loop(session) -> None:
    """mlhub's built-in PyTorch training loop (any :class:`~mlhub.training.distributed.TrainSession`)."""
    import torch

    from mlhub.training.torch_step import StepRunner

    spec: TrainingSpec = session.spec
    data = session.dataset()
    train_p, model_p = split_params(spec.params)
    classification = data.task == "classification"
    classes = list(data.classes or [])
    mean, std = standardizer(np.asarray(data.x_train, dtype=np.float32))
    x_train = (np.asarray(data.x_train, dtype=np.float32) - mean) / std
    x_test = (np.asarray(data.x_test, dtype=np.float32) - mean) / std
    if classification:
        y_train = np.searchsorted(classes, data.y_train)
        y_test = np.searchsorted(classes, data.y_test)
    else:
        y_train = np.asarray(data.y_train, dtype=np.float32)
        y_test = np.asarray(data.y_test, dtype=np.float32)
    n_out = len(classes) if classification else 1
    seed = int(train_p.get("seed", spec.dataset.seed))
    torch.manual_seed(seed)  # identical initial weights on every worker
    model = _build(spec, x_train.shape[1], n_out, model_p, getattr(session, "working_dir", None))
    model = session.prepare_model(model) if hasattr(session, "prepare_model") else model
    hyper = {"lr": float(train_p.get("lr", 1e-3)), "weight_decay": float(train_p.get("weight_decay", 0.0)),
             "momentum": float(train_p.get("momentum", 0.9))}
    runner = StepRunner(model, task=data.task, optimizer=train_p.get("optimizer", "adam"), **hyper,
                        device=session.device, mixed_precision=train_p.get("mixed_precision"),
                        seed=seed + session.rank)
    fsdp = spec.strategy == "fsdp" and session.world_size > 1
    start = 0
    if session.resume:
        _load_state(runner, session.resume["files"]["state.pt"], fsdp)
        runner.set_hyperparams(**hyper)  # the state may come from a run with other values (a PBT exploit)
        start = session.resume["epoch"]
    xs, ys = session.shard(x_train, y_train)
    shard = runner.prepare(xs, ys)
    test = runner.prepare(x_test, y_test)
    batch_size = int(train_p.get("batch_size", 64))
    for epoch in range(start, spec.epochs):
        stats = runner.train_epoch(shard, batch_size=batch_size)
        val = runner.evaluate(test)
        metrics = {"loss": _mean_across_workers(stats["loss"], session.world_size), "val_loss": val["loss"]}
        metrics.update({f"val_{k}": v for k, v in val.items() if k in ("accuracy", "rmse", "mae")})
        last = epoch == spec.epochs - 1
        state = None
        full = None
        if (session.should_checkpoint(epoch) or last) and (session.rank == 0 or fsdp):
            full = _full_state(runner, fsdp)  # FSDP gathers the shards: every rank takes part
            state = {"state.pt": _dump(full)}
        final = None
        if last:  # the final forward pass is collective under FSDP: every rank runs it
            final = _final(runner, spec, data, x_test, model_p, mean, std, classes, n_out, x_train.shape[1],
                           full["model"] if full else None)
        session.report(epoch, metrics, state=state if session.rank == 0 else None,
                       final_model=final if session.rank == 0 else None, samples=len(shard))


def _mean_across_workers(value: float, world_size: int) -> float:
    if world_size <= 1:
        return value
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world_size


def _full_state(runner, fsdp: bool) -> dict[str, Any]:
    """Model and optimizer state, whole: FSDP's shards gathered to rank 0 (other ranks get empty dicts)."""
    if not fsdp:
        return runner.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {"model": get_model_state_dict(runner.model, options=opts),
            "optimizer": get_optimizer_state_dict(runner.model, runner.optimizer, options=opts),
            "epochs_done": runner.epochs_done, "steps_done": runner.steps_done}


def _dump(state: dict[str, Any]) -> bytes:
    from mlhub.training.torch_step import dump_state

    return dump_state(state)


def _load_state(runner, payload: bytes, fsdp: bool) -> None:
    if not fsdp:
        runner.load_state_dict(payload)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    from mlhub.training.torch_step import load_state

    state = load_state(payload)
    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(runner.model, state["model"], options=opts)
    if state.get("optimizer"):
        set_optimizer_state_dict(runner.model, runner.optimizer, state["optimizer"], options=opts)
    runner.epochs_done, runner.steps_done = int(state["epochs_done"]), int(state["steps_done"])


def shard_model(model):
    """FSDP2 (``fully_shard``): every submodule that holds parameters, then the root. Works on CPU (gloo)
    as well as GPUs, unlike FSDP1, which needs an accelerator."""
    from torch.distributed.fsdp import fully_shard

    for module in list(model.modules())[1:]:
        if any(True for _ in module.parameters(recurse=False)):
            fully_shard(module)
    fully_shard(model)
    return model


def _final(runner, spec, data, x_test, model_p, mean, std, classes, n_out, n_in, state=None):
    import torch

    from mlhub.training.torch_step import dump_state

    out = runner.predict(x_test)
    if data.task == "classification":
        proba = torch.softmax(torch.as_tensor(out), dim=1).numpy()
        pred = np.asarray(classes)[out.argmax(axis=1)]
        metrics = split_metrics("classification", data.y_test, pred, proba, classes)
    else:
        metrics = split_metrics("regression", data.y_test, out[:, 0])
    if state is None:
        state = runner.state_dict()["model"]
    payload = dump_state({"format": FORMAT, "model": spec.model, "model_params": model_p, "in_features": n_in,
                          "out_features": n_out, "task": data.task,
                          "classes": [c.item() if hasattr(c, "item") else c for c in classes],
                          "x_mean": torch.as_tensor(mean), "x_std": torch.as_tensor(std), "state_dict": state})
    params = {**spec.params, "model": spec.model, "strategy": spec.strategy, "num_workers": spec.num_workers}
    return payload, "pt", {"metrics": metrics, "params": params}


# --- loading -------------------------------------------------------------------------------------------

def load_torch_model(payload: bytes):
    """A stored torch model as a :class:`~mlhub.training.serialization.LoadedModel`, read weights-only."""
    import torch

    from mlhub.training.serialization import LoadedModel
    from mlhub.training.torch_step import StateLoadError, load_state

    try:
        doc = load_state(payload)
    except StateLoadError as exc:
        raise ModelLoadError(str(exc)) from None
    if doc.get("format") != FORMAT:
        raise ModelLoadError(f"not an mlhub torch model (format {doc.get('format')!r}, expected {FORMAT})")
    name = str(doc["model"])
    if ":" in name:
        raise ModelLoadError(f"model {name!r} uses custom code, which is not imported when loading from the store")
    from mlhub.training.torch_models import build_model

    try:
        model = build_model(name, int(doc["in_features"]), int(doc["out_features"]), **doc["model_params"])
        model.load_state_dict(doc["state_dict"])
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"cannot rebuild torch model {name}: {exc}") from None
    model.eval()
    mean = doc["x_mean"].numpy()
    std = doc["x_std"].numpy()
    classes = list(doc.get("classes") or [])
    task = str(doc["task"])

    def outputs(x: np.ndarray) -> np.ndarray:
        xs = torch.as_tensor(((np.asarray(x, dtype=np.float32) - mean) / std).astype(np.float32))
        with torch.inference_mode():
            return model(xs).float().numpy()

    def predict(x: np.ndarray) -> np.ndarray:
        out = outputs(x)
        return np.asarray(classes)[out.argmax(axis=1)] if task == "classification" else out[:, 0]

    def proba(x: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.as_tensor(outputs(x)), dim=1).numpy()

    return LoadedModel(framework="torch", model_format="pt", task=task, classes=classes or None,
                       n_features=int(doc["in_features"]), predict=predict,
                       predict_proba=proba if task == "classification" else None)

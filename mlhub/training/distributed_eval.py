"""Distributed evaluation: a registered torch model evaluated over a dataset split across Ray workers.

An evaluation job with ``num_workers > 1`` runs here instead of in its own process. Its driver (the job's
attempt, a 0-CPU task: the job row holds all the workers' CPUs, see :func:`mlhub.domain.specs.job_demand`)
resolves the model version, reads the artifact's bytes (verified by sha256) and puts them in Ray's object
store once. The test split is cut into ``num_workers`` contiguous shards of nearly equal size, and one Ray
task per shard, with the spec's ``resources``, loads the model from those bytes through the same safe loader
as everything else (:func:`mlhub.training.serialization.load_model`: weights-only for torch; no pickle of a
model ever travels) and returns its shard's predictions: labels, and class probabilities for classifiers.

The driver puts the shards back in row order and hands them to exactly the code the single-process path
runs (:func:`mlhub.training.evaluation.evaluate`), through a stand-in model that answers with the gathered
predictions. Each row's prediction does not depend on which other rows share its batch, so the metrics and
the confusion matrix are those of single-process evaluation.

Everything but :func:`evaluate_on_ray` works without Ray: :func:`evaluate_sharded` takes the function that
maps shards to predictions, so tests run the whole path in one process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlhub import errors
from mlhub.errors import MlhubError, ValidationError
from mlhub.training.evaluation import EvaluationResult, evaluate
from mlhub.training.serialization import LoadedModel, load_model

__all__ = ["DISTRIBUTED_EVAL_FRAMEWORKS", "ShardPrediction", "combine_shards", "evaluate_job_on_ray",
           "evaluate_on_ray", "evaluate_sharded", "predict_shard", "shard_bounds"]

DISTRIBUTED_EVAL_FRAMEWORKS = ("torch",)


@dataclass
class ShardPrediction:
    """One shard's predictions, and what the worker's copy of the model said about itself."""

    start: int
    stop: int
    predictions: np.ndarray
    proba: np.ndarray | None
    task: str
    classes: list | None
    n_features: int | None
    framework: str
    model_format: str
    pid: int = 0
    seconds: float = 0.0


def shard_bounds(n_rows: int, n_shards: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of ``n_shards`` contiguous shards covering ``n_rows`` rows in order, sizes differing
    by at most one; never an empty shard (fewer shards when there are fewer rows)."""
    if n_shards < 1:
        raise ValidationError(f"num_workers must be at least 1 (got {n_shards})")
    k = min(n_shards, n_rows)
    if k == 0:
        return []
    base, extra = divmod(n_rows, k)
    out, start = [], 0
    for i in range(k):
        stop = start + base + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def predict_shard(framework: str, model_format: str, payload: bytes, x: np.ndarray, start: int = 0
                  ) -> ShardPrediction:
    """What each worker runs: load the model from its stored bytes, predict one shard of rows."""
    t0 = time.perf_counter()
    model = load_model(framework, model_format, payload)
    x = np.asarray(x, dtype=np.float64)
    if model.n_features is not None and x.ndim == 2 and x.shape[1] != model.n_features:
        raise ValidationError(f"the model expects {model.n_features} features, the data has {x.shape[1]}")
    pred = np.asarray(model.predict(x))
    proba = np.asarray(model.predict_proba(x)) if hasattr(model, "predict_proba") else None
    return ShardPrediction(start, start + len(x), pred, proba, model.task, model.classes, model.n_features,
                           model.framework, model.model_format, os.getpid(), time.perf_counter() - t0)


def combine_shards(shards: Sequence[ShardPrediction], n_rows: int) -> LoadedModel:
    """The shards' predictions in row order, as a model whose ``predict``/``predict_proba`` answer with them
    for the ``n_rows`` rows that were evaluated (for :func:`mlhub.training.evaluation.evaluate`).

    Raises :class:`ValueError` when the shards do not cover ``0..n_rows`` exactly once, or disagree about
    the model: a bug in the caller, not bad user input."""
    ordered = sorted(shards, key=lambda s: s.start)
    at = 0
    for s in ordered:
        if s.start != at or s.stop < s.start or len(s.predictions) != s.stop - s.start:
            raise ValueError(f"shards do not tile rows 0..{n_rows}: a shard covers {s.start}..{s.stop} "
                             f"({len(s.predictions)} predictions) where row {at} was next")
        if s.proba is not None and len(s.proba) != len(s.predictions):
            raise ValueError(f"shard {s.start}..{s.stop}: {len(s.proba)} probability rows")
        at = s.stop
    if at != n_rows or not ordered:
        raise ValueError(f"shards cover rows 0..{at}, expected 0..{n_rows}")
    first = ordered[0]
    meta = (first.task, first.classes, first.n_features, first.framework, first.model_format, first.proba is None)
    for s in ordered[1:]:
        if (s.task, s.classes, s.n_features, s.framework, s.model_format, s.proba is None) != meta:
            raise ValueError(f"shard {s.start}..{s.stop} loaded a different model than shard 0..{first.stop}")
    predictions = np.concatenate([s.predictions for s in ordered])
    proba = None if first.proba is None else np.concatenate([s.proba for s in ordered])  # type: ignore[misc]

    def _rows(x: np.ndarray) -> None:
        if len(x) != n_rows:
            raise ValueError(f"these predictions are for {n_rows} rows, not {len(x)}")

    def predict(x: np.ndarray) -> np.ndarray:
        _rows(x)
        return predictions

    def predict_proba(x: np.ndarray) -> np.ndarray:
        _rows(x)
        return proba  # type: ignore[return-value]

    return LoadedModel(framework=first.framework, model_format=first.model_format, task=first.task,
                       classes=first.classes, n_features=first.n_features, predict=predict,
                       predict_proba=predict_proba if proba is not None else None)


MapShards = Callable[[str, str, bytes, list[tuple[int, np.ndarray]]], list[ShardPrediction]]


def _local_map(framework: str, model_format: str, payload: bytes, shards: list[tuple[int, np.ndarray]]
               ) -> list[ShardPrediction]:
    return [predict_shard(framework, model_format, payload, x, start) for start, x in shards]


def evaluate_sharded(framework: str, model_format: str, payload: bytes, x: Any, y: Any, task: str,
                     num_workers: int, map_shards: MapShards = _local_map) -> tuple[EvaluationResult,
                                                                                    list[ShardPrediction]]:
    """Evaluate over ``num_workers`` shards of ``(x, y)``; ``map_shards`` predicts them (in this process by
    default, on Ray in :func:`evaluate_on_ray`). Returns the result and the shards' predictions."""
    if framework not in DISTRIBUTED_EVAL_FRAMEWORKS:
        raise ValidationError(f"distributed evaluation (num_workers {num_workers}) runs "
                              f"{', '.join(DISTRIBUTED_EVAL_FRAMEWORKS)} models; this one is {framework}: "
                              "evaluate it with num_workers 1")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or len(x) != len(y):
        raise ValidationError(f"x must be 2-D with one row per label (x {x.shape}, y {np.shape(y)})")
    if len(y) == 0:
        raise ValidationError("nothing to evaluate: no rows")
    bounds = shard_bounds(len(x), num_workers)
    shards = map_shards(framework, model_format, payload, [(a, x[a:b]) for a, b in bounds])
    return evaluate(combine_shards(shards, len(x)), (x, y), task), shards


# --- on Ray --------------------------------------------------------------------------------------------

def _remote_predict(framework: str, model_format: str, payload: bytes, x: np.ndarray, start: int
                    ) -> ShardPrediction | dict[str, Any]:
    """A Ray task's body: mlhub's own errors come back as data, so the driver re-raises them typed."""
    try:
        return predict_shard(framework, model_format, payload, x, start)
    except MlhubError as exc:
        return {"error": type(exc).__name__, "message": exc.message, "details": exc.details}


def _reraise(doc: dict[str, Any]) -> None:
    cls = getattr(errors, doc.get("error", ""), None) if doc.get("error") in errors.__all__ else None
    if not (isinstance(cls, type) and issubclass(cls, MlhubError)):
        cls = MlhubError
    raise cls(str(doc.get("message", "a worker failed")), details=doc.get("details") or None)


def ray_task_options(resources: dict[str, Any]) -> dict[str, Any]:
    """A shard task's Ray options from the spec's per-worker ``resources``."""
    options: dict[str, Any] = {"num_cpus": float(resources.get("num_cpus", 1.0)),
                               "num_gpus": float(resources.get("num_gpus", 0.0)), "max_retries": 1}
    if resources.get("memory_mb"):
        options["memory"] = int(resources["memory_mb"]) * 1024 * 1024
    if resources.get("custom"):
        options["resources"] = {k: float(v) for k, v in resources["custom"].items()}
    return options


def evaluate_on_ray(framework: str, model_format: str, payload: bytes, x: Any, y: Any, task: str,
                    num_workers: int, resources: dict[str, Any] | None = None,
                    progress: Callable[[dict[str, Any]], None] | None = None) -> EvaluationResult:
    """:func:`evaluate_sharded` with one Ray task per shard (``resources`` each: default 1 CPU); the model's
    bytes go to the object store once and every task loads the model from them."""
    import ray

    task_fn = ray.remote(_remote_predict).options(**ray_task_options(resources or {}))

    def on_ray(fw: str, fmt: str, data: bytes, shards: list[tuple[int, np.ndarray]]) -> list[ShardPrediction]:
        payload_ref = ray.put(data)
        pending = {task_fn.remote(fw, fmt, payload_ref, xs, start): (start, len(xs)) for start, xs in shards}
        done: list[ShardPrediction] = []
        rows = sum(len(xs) for _, xs in shards)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                start, n = pending.pop(ref)
                out = ray.get(ref)
                if isinstance(out, dict):
                    for other in pending:
                        ray.cancel(other)
                    _reraise(out)
                done.append(out)
                print(f"shard {len(done)}/{len(shards)}: rows {start}..{start + n} predicted by pid {out.pid} "
                      f"in {out.seconds:.2f} s (model load included)", flush=True)
                if progress is not None:
                    progress({"shards_done": len(done), "shards": len(shards),
                              "rows_done": sum(s.stop - s.start for s in done), "rows": rows})
        return done

    result, shards = evaluate_sharded(framework, model_format, payload, x, y, task, num_workers, on_ray)
    print(f"evaluated {len(x):,} rows in {len(shards)} shards on {len({s.pid for s in shards})} Ray worker "
          "process(es)", flush=True)
    return result


def evaluate_job_on_ray(ctx, spec) -> tuple[Any, Any, str, EvaluationResult]:
    """The distributed part of an evaluation job (``ctx``: the attempt's
    :class:`~mlhub.jobs.runner.AttemptContext`, ``spec``: its EvaluationSpec with ``num_workers > 1``).
    Returns ``(version, data, task, result)`` as the single-process path computes them."""
    from mlhub.errors import NotFoundError
    from mlhub.registry.service import RegistryService
    from mlhub.training.datasets import load_dataset

    version = RegistryService(ctx.backends.db).resolve(ctx.principal, spec.model)
    if version.framework not in DISTRIBUTED_EVAL_FRAMEWORKS:  # before reading any bytes
        raise ValidationError(f"distributed evaluation (num_workers {spec.num_workers}) runs "
                              f"{', '.join(DISTRIBUTED_EVAL_FRAMEWORKS)} models; {version.model}/{version.version} "
                              f"is {version.framework}: evaluate it with num_workers 1")
    if version.artifact_sha256 is None:
        raise NotFoundError(f"model {spec.model} has no artifact")
    payload = ctx.backends.artifacts.read_bytes(ctx.principal.tenant_id, version.artifact_sha256)
    data = load_dataset(spec.dataset, allowed_roots=ctx.settings.allowed_data_roots)
    task = (version.input_schema or {}).get("task") or data.task
    resources = spec.resources.model_dump(exclude_none=True)
    print(f"distributed evaluation of {version.model}/{version.version}: {len(data.x_test):,} rows over "
          f"{spec.num_workers} Ray workers of {resources.get('num_cpus', 1.0):g} CPU(s)", flush=True)
    result = evaluate_on_ray(version.framework, version.model_format, payload, data.x_test, data.y_test, task,
                             spec.num_workers, resources, progress=lambda p: ctx.progress(p, force=p["shards_done"] == p["shards"]))
    return version, data, task, result

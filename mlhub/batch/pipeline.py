"""Batch prediction of a whole table: in one process, or on Ray Data with an actor pool.

:func:`predict_table` is what a ``batch_prediction`` job runs after it has read its input:

1. The table is validated once, in the caller's process (:func:`mlhub.training.batch.validate_frame`:
   vectorised, about 0.1 s per million rows of 20 numeric features here), so every bad row is reported by
   its global row number (0-based across all the files of a folder, in name order), ``on_error="fail"``
   stops before any worker starts, and only valid rows, as float64, travel to the workers.
2. With a prediction cache that holds anything of this model version, every valid row is hashed and looked
   up here first (in chunks, ``MGET`` on Redis): rows this version already scored are served from the
   cache, and a rerun whose rows are all cached neither loads the model nor starts a worker.
3. The misses are scored by :class:`~mlhub.batch.scoring.BatchScorer` in batches of ``batch_size``, which
   writes each prediction to the cache: in this process when ``num_workers`` is 1 or there are fewer than
   ``ray_min_rows`` misses (an actor pool's start-up, several seconds here, costs more than it saves), else
   by ``map_batches`` on a fixed pool of ``num_workers`` Ray Data actors (``resources`` each), each loading
   the model once from the artifact's verified bytes (no pickled model travels) and opening its own
   connection to the cache. Each block carries its rows' positions, so predictions are put back in row
   order whatever order the blocks finish in.
4. ``progress`` is called as cached rows are found and batches complete (rows done, rows/s, cached rows,
   bad rows, workers).

Everything but :func:`_score_on_ray` runs without Ray.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlhub import errors
from mlhub.batch.cache import PredictionCache, PredictionCacheConfig
from mlhub.batch.scoring import BatchScorer, CachedRows, concat_predictions, look_up, merge_predictions
from mlhub.errors import MlhubError
from mlhub.training.batch import PREDICTION_COLUMN, validate_frame
from mlhub.training.schema import RowError
from mlhub.training.serialization import load_model

__all__ = ["DEFAULT_RAY_MIN_ROWS", "BatchOutcome", "ModelBytes", "predict_table"]

DEFAULT_RAY_MIN_ROWS = 50_000
_POS = "__pos__"
_ERROR_MARK = "<<mlhub-error>>"

Progress = Callable[[dict[str, Any], bool], None]


class ModelBytes:
    """A model version as its workers load it: the stored, verified bytes and how to read them
    (:func:`~mlhub.training.serialization.load_model`, the one safe loader). :meth:`load` loads once per
    process; what is pickled to a Ray actor is the bytes, never a loaded model."""

    def __init__(self, framework: str, model_format: str, payload: bytes) -> None:
        self.framework = framework
        self.model_format = model_format
        self.payload = payload
        self.sha256 = hashlib.sha256(payload).digest()  # salts this model's prediction cache keys
        self._model: Any = None

    def load(self):
        if self._model is None:
            self._model = load_model(self.framework, self.model_format, self.payload)
        return self._model

    def __getstate__(self) -> dict[str, Any]:
        return {"framework": self.framework, "model_format": self.model_format, "payload": self.payload}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)


@dataclass
class BatchOutcome:
    """``frame``: the id column and ``prediction`` for every valid row, in row order; ``errors``: the bad rows
    (capped); ``n_bad``: how many; ``cached_rows``: predictions served from the cache; ``workers``: 1 for
    the single-process path, else the actor pool's size; ``cache``: the cache's counters (summed over
    workers)."""

    frame: pd.DataFrame
    errors: list[RowError]
    n_rows: int
    n_bad: int
    cached_rows: int
    workers: int
    seconds: float
    cache: dict[str, int] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return "local" if self.workers == 1 else "ray"


class _Tracker:
    """Turns rows found in the cache and completed batches into progress documents."""

    def __init__(self, progress: Progress | None, total: int, n_bad: int) -> None:
        self.progress = progress
        self.total = total
        self.n_bad = n_bad
        self.workers = 1
        self.done = 0
        self.cached = 0
        self.started = time.perf_counter()

    def add(self, rows: int, cached: int, *, last: bool = False) -> None:
        self.done += rows
        self.cached += cached
        if self.progress is not None:
            elapsed = time.perf_counter() - self.started
            self.progress({"rows": self.total, "rows_done": self.done, "cached_rows": self.cached,
                           "bad_rows": self.n_bad, "workers": self.workers,
                           "rows_per_s": round(self.done / elapsed, 1) if elapsed > 0 else None},
                          last or self.done >= self.total)


def predict_table(frame: pd.DataFrame, schema: dict[str, Any], model: ModelBytes, *, tenant_id: str,
                  version_id: int, id_column: str | None = None, on_error: Literal["fail", "skip"] = "fail",
                  batch_size: int = 4096, num_workers: int = 1, resources: dict[str, Any] | None = None,
                  cache: PredictionCacheConfig | None = None, ray_min_rows: int = DEFAULT_RAY_MIN_ROWS,
                  progress: Progress | None = None) -> BatchOutcome:
    """Predict every valid row of ``frame`` with ``model`` (see the module docstring for the two paths).

    ``progress(doc, last)`` is called as rows are found in the cache and as batches complete (``last`` on
    the final call). Raises :class:`~mlhub.errors.ValidationError` for an input that does not fit the
    schema, or any bad row under ``on_error="fail"``.
    """
    started = time.perf_counter()
    v = validate_frame(schema, frame, id_column=id_column, on_error=on_error)
    pc = cache.open() if cache is not None else None
    try:
        tracker = _Tracker(progress, len(v.x), v.n_bad)
        if pc is not None and pc.holds_any(tenant_id, version_id):
            found = look_up(pc, tenant_id, version_id, v.x, salt=model.sha256,
                            on_chunk=lambda rows, hits: tracker.add(hits, hits))
        else:
            found = CachedRows(np.zeros(len(v.x), dtype=bool), np.empty(0, dtype=np.float64))
        misses = v.x[~found.hit] if found.count else v.x
        use_ray = num_workers > 1 and len(misses) >= max(ray_min_rows, 1)
        tracker.workers = num_workers if use_ray else 1
        if use_ray:
            fresh, stats = _score_on_ray(misses, model, tenant_id=tenant_id, version_id=version_id,
                                         batch_size=batch_size, num_workers=num_workers,
                                         resources=resources or {}, cache=cache, tracker=tracker)
        else:
            fresh, stats = _score_locally(misses, model, tenant_id=tenant_id, version_id=version_id,
                                          batch_size=batch_size, cache=pc, tracker=tracker)
        if tracker.done < tracker.total or tracker.total == 0:
            tracker.add(0, 0, last=True)
        if pc is not None:
            stats = {k: pc.stats.get(k, 0) + stats.get(k, 0) for k in pc.stats}
    finally:
        if pc is not None:
            pc.close()
    out = pd.DataFrame({v.id_name: v.ids, PREDICTION_COLUMN: merge_predictions(found.hit, found.predictions, fresh)})
    return BatchOutcome(frame=out, errors=v.errors, n_rows=v.n_rows, n_bad=v.n_bad, cached_rows=found.count,
                        workers=tracker.workers, seconds=time.perf_counter() - started, cache=stats)


def _score_locally(x: np.ndarray, model: ModelBytes, *, tenant_id: str, version_id: int, batch_size: int,
                   cache: PredictionCache | None, tracker: _Tracker) -> tuple[np.ndarray, dict[str, int]]:
    if len(x) == 0:
        return np.empty(0, dtype=np.float64), {}
    scorer = BatchScorer(model.load, tenant_id=tenant_id, version_id=version_id, cache=cache, salt=model.sha256)
    parts = []
    for start in range(0, len(x), batch_size):
        parts.append(scorer.score(x[start:start + batch_size]))
        tracker.add(len(parts[-1]), 0)
    return concat_predictions(parts), {}


# --- on Ray Data ---------------------------------------------------------------------------------------


class _Predictor:
    """A Ray Data actor: one scorer (the model loaded once, on the first batch) and its own connection to the
    prediction cache; ``__call__`` scores one batch and writes it to the cache."""

    def __init__(self, model: ModelBytes, tenant_id: str, version_id: int, cache: PredictionCacheConfig | None,
                 n_features: int) -> None:
        self.cache: PredictionCache | None = cache.open() if cache is not None else None
        self.scorer = BatchScorer(model.load, tenant_id=tenant_id, version_id=version_id, cache=self.cache,
                                  salt=model.sha256)
        self.n_features = n_features
        self.reported: dict[str, int] = {}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.column_stack([batch[f"x{j}"] for j in range(self.n_features)])
        try:
            predictions = self.scorer.score(x)
        except MlhubError as exc:  # Ray Data keeps only the text of a worker's error: put the type in it
            doc = {"error": type(exc).__name__, "message": exc.message}
            raise RuntimeError(f"{_ERROR_MARK}{json.dumps(doc)}{_ERROR_MARK}") from exc
        out = {_POS: batch[_POS], PREDICTION_COLUMN: predictions}
        # the cache's counters since the last batch, in the batch's first row, so the driver can sum them
        stats = dict(self.cache.stats) if self.cache is not None else {}
        for k, total in stats.items():
            out[f"cache_{k}"] = np.zeros(len(x), dtype=np.int64)
            if len(x):
                out[f"cache_{k}"][0] = total - self.reported.get(k, 0)
        self.reported = stats
        return out


def _worker_error(exc: BaseException) -> MlhubError | None:
    """The mlhub error a Ray Data actor raised (see :meth:`_Predictor.__call__`), rebuilt with its type."""
    m = re.search(re.escape(_ERROR_MARK) + "(.*?)" + re.escape(_ERROR_MARK), str(exc), re.S)
    if m is None:
        return None
    try:
        doc = json.loads(m.group(1))
    except ValueError:
        return None
    name = doc.get("error", "")
    cls = getattr(errors, name, None) if name in errors.__all__ else None
    if not (isinstance(cls, type) and issubclass(cls, MlhubError)):
        cls = MlhubError
    return cls(str(doc.get("message", "a Ray Data worker failed")))


def _score_on_ray(x: np.ndarray, model: ModelBytes, *, tenant_id: str, version_id: int, batch_size: int,
                  num_workers: int, resources: dict[str, Any], cache: PredictionCacheConfig | None,
                  tracker: _Tracker) -> tuple[np.ndarray, dict[str, int]]:
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False  # the job's progress events say it; bars would flood its log
    context.execution_options.preserve_order = False
    n, f = x.shape
    # blocks of whole batches, several per actor so that the pool stays busy and progress moves
    per_block = max(batch_size, math.ceil(n / (num_workers * 8) / batch_size) * batch_size)
    per_block = min(per_block, max(batch_size, 65_536))
    blocks = []
    for start in range(0, n, per_block):
        chunk = x[start:start + per_block]
        cols = {_POS: np.arange(start, start + len(chunk), dtype=np.int64)}
        cols.update({f"x{j}": chunk[:, j] for j in range(f)})
        blocks.append(pd.DataFrame(cols, copy=False))
    options: dict[str, Any] = {"num_cpus": float(resources.get("num_cpus", 1.0)),
                               "num_gpus": float(resources.get("num_gpus", 0.0))}
    if resources.get("memory_mb"):
        options["memory"] = int(resources["memory_mb"]) * 1024 * 1024
    if resources.get("custom"):
        options["resources"] = {k: float(val) for k, val in resources["custom"].items()}
    print(f"Ray Data: {n:,} rows in {len(blocks)} blocks, {num_workers} actors of "
          f"{options['num_cpus']:g} CPU(s), batches of {batch_size:,}", flush=True)
    ds = ray.data.from_pandas(blocks).map_batches(
        _Predictor, fn_constructor_args=(model, tenant_id, version_id, cache, f), batch_size=batch_size,
        batch_format="numpy", compute=ActorPoolStrategy(size=num_workers), **options)
    positions, predictions = [], []
    stats: dict[str, int] = {}
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            positions.append(np.asarray(batch[_POS]))
            predictions.append(np.asarray(batch[PREDICTION_COLUMN]))
            for key, col in batch.items():
                if key.startswith("cache_"):
                    stats[key[6:]] = stats.get(key[6:], 0) + int(np.asarray(col).sum())
            tracker.add(len(positions[-1]), 0)
    except Exception as exc:
        typed = _worker_error(exc)
        if typed is not None:  # the workers' own errors, re-raised typed (a bad input fails permanently)
            raise typed from None
        raise
    pos = np.concatenate(positions) if positions else np.empty(0, dtype=np.int64)
    preds = concat_predictions(predictions)
    if len(pos) != n or (n and not np.array_equal(np.sort(pos), np.arange(n))):
        raise RuntimeError(f"Ray Data returned {len(pos)} predictions for {n} rows")
    ordered = np.empty_like(preds)
    ordered[pos] = preds
    return ordered, stats

"""Scoring one batch of validated rows: cache look-up, prediction of the misses, cache write.

:class:`BatchScorer` is plain Python: the single-process path calls it batch after batch, and each Ray Data
actor of :mod:`mlhub.batch.pipeline` holds one (with the model it loaded once) and calls it per batch.
Rows arrive already validated (:func:`mlhub.training.batch.validate_frame`), as a float64 matrix in the
schema's feature order, so a row's hash is the same whichever path or batch scores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlhub.batch.cache import PredictionCache, decode_predictions, encode_predictions
from mlhub.errors import ValidationError
from mlhub.training.batch import row_digests

__all__ = ["BatchScorer", "ScoredBatch", "merge_predictions"]


@dataclass
class ScoredBatch:
    """``predictions`` in the batch's row order; ``cached``: which of them came from the cache."""

    predictions: np.ndarray
    cached: np.ndarray

    @property
    def cached_rows(self) -> int:
        return int(self.cached.sum())


def merge_predictions(hit: np.ndarray, cached: np.ndarray, fresh: np.ndarray) -> np.ndarray:
    """One array: ``cached`` where ``hit``, ``fresh`` elsewhere (in order), of a dtype that holds both."""
    if not hit.any():
        return fresh
    if hit.all():
        return cached
    if cached.dtype.kind in "biuf" and fresh.dtype.kind in "biuf" or cached.dtype.kind == fresh.dtype.kind == "U":
        dtype = np.result_type(cached.dtype, fresh.dtype)
    else:
        dtype = np.dtype(object)
    out = np.empty(len(hit), dtype=dtype)
    out[hit] = cached
    out[~hit] = fresh
    return out


class BatchScorer:
    """Scores batches with one loaded model (anything with ``predict(x)``) of ``version_id``.

    With a ``cache``, rows whose hash it holds for (``tenant_id``, ``version_id``) are not predicted, and
    new predictions are written back. A model that rejects its input (``ValueError``, e.g. NaN in a nullable
    feature the model cannot take) raises :class:`ValidationError`.
    """

    def __init__(self, model: Any, *, tenant_id: str, version_id: int, cache: PredictionCache | None = None) -> None:
        self.model = model
        self.tenant_id = tenant_id
        self.version_id = version_id
        self.cache = cache

    def _predict(self, x: np.ndarray) -> np.ndarray:
        try:
            p = np.asarray(self.model.predict(x))
        except ValueError as exc:
            raise ValidationError(f"the model rejected the input: {exc}") from None
        if p.ndim == 2 and p.shape[1] == 1:  # a (n, 1) column of predictions
            p = p.reshape(-1)
        if p.ndim != 1 or len(p) != len(x):
            raise ValidationError(f"the model returned predictions of shape {p.shape} for {len(x)} rows")
        if p.dtype.kind not in "biufU":  # e.g. object arrays of labels: stored and written as text
            p = p.astype(str)
        return p

    def score(self, x: np.ndarray) -> ScoredBatch:
        """Predictions for every row of ``x`` (2-D float64)."""
        x = np.asarray(x, dtype=np.float64)
        n = len(x)
        if n == 0:
            return ScoredBatch(np.empty(0, dtype=np.float64), np.zeros(0, dtype=bool))
        if self.cache is None:
            return ScoredBatch(self._predict(x), np.zeros(n, dtype=bool))
        digests = row_digests(x)
        found = self.cache.get_many(self.tenant_id, self.version_id, digests)
        hit = np.fromiter((v is not None for v in found), dtype=bool, count=n)
        cached = np.empty(0, dtype=np.float64)
        if hit.any():
            try:
                cached = decode_predictions([v for v in found if v is not None])
            except (ValueError, UnicodeDecodeError):  # a foreign or corrupt entry: predict those rows again
                self.cache.stats["errors"] += 1
                hit[:] = False
        miss = np.flatnonzero(~hit)
        fresh = self._predict(x[miss]) if len(miss) else np.empty(0, dtype=np.float64)
        if len(miss):
            self.cache.set_many(self.tenant_id, self.version_id,
                                list(zip([digests[i] for i in miss], encode_predictions(fresh), strict=True)))
        return ScoredBatch(merge_predictions(hit, cached, fresh), hit)

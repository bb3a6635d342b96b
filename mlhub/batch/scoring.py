"""The two halves of scoring validated rows: :func:`look_up` (what the prediction cache already holds) and
:class:`BatchScorer` (predict a batch, write its predictions to the cache).

Both are plain Python. The caller looks the whole table up first, so a rerun whose rows are all cached never
loads the model nor starts a worker; only the misses are scored, batch after batch in one process or by
the Ray Data actors of :mod:`mlhub.batch.pipeline`, each of which holds one scorer. Rows arrive validated
(:func:`mlhub.training.batch.validate_frame`), as a float64 matrix in the schema's feature order, so a
row's hash is the same whichever process or batch computes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlhub.batch.cache import PredictionCache, decode_predictions, encode_predictions
from mlhub.errors import ValidationError
from mlhub.training.batch import row_digests

__all__ = ["BatchScorer", "CachedRows", "concat_predictions", "look_up", "merge_predictions"]


@dataclass
class CachedRows:
    """What the cache held for a table's rows: ``hit`` (one flag per row) and ``predictions`` of the hit rows,
    in row order."""

    hit: np.ndarray
    predictions: np.ndarray

    @property
    def count(self) -> int:
        return int(self.hit.sum())


def look_up(cache: PredictionCache, tenant_id: str, version_id: int, x: np.ndarray, *, salt: bytes = b"",
            chunk: int = 65_536, on_chunk: Callable[[int, int], None] | None = None) -> CachedRows:
    """Look every row of ``x`` up in ``cache``, ``chunk`` rows per round (``on_chunk(rows, hits)`` after each);
    rows are keyed by :func:`~mlhub.training.batch.row_digests` with ``salt`` (the model's sha256).

    An entry that does not decode counts as an error of the cache and its rows as misses.
    """
    n = len(x)
    hit = np.zeros(n, dtype=bool)
    parts: list[np.ndarray] = []
    for start in range(0, n, chunk):
        found = cache.get_many(tenant_id, version_id, row_digests(x[start:start + chunk], salt))
        mask = np.fromiter((v is not None for v in found), dtype=bool, count=len(found))
        if mask.any():
            try:
                parts.append(decode_predictions([v for v in found if v is not None]))
            except (ValueError, UnicodeDecodeError):  # a foreign or corrupt entry: predict those rows again
                cache.stats["errors"] += 1
                mask[:] = False
        hit[start:start + len(found)] = mask
        if on_chunk is not None:
            on_chunk(len(found), int(mask.sum()))
    return CachedRows(hit, concat_predictions(parts))


def concat_predictions(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate prediction arrays; text and numbers mixed become an object array."""
    if not parts:
        return np.empty(0, dtype=np.float64)
    kinds = {p.dtype.kind for p in parts}
    if len(kinds) > 1 and not kinds <= set("biuf"):
        parts = [p.astype(object) for p in parts]
    return np.concatenate(parts)


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
    """Scores batches with the model ``load()`` returns (anything with ``predict(x)``) of ``version_id``,
    and writes each prediction to the ``cache`` (when given) under (``tenant_id``, ``version_id``, row hash
    salted with ``salt``).

    ``load`` is called once, on the first batch. A model that rejects its input (``ValueError``, e.g. NaN
    in a nullable feature the model cannot take) raises :class:`ValidationError`.
    """

    def __init__(self, load: Callable[[], Any], *, tenant_id: str, version_id: int,
                 cache: PredictionCache | None = None, salt: bytes = b"") -> None:
        self._load = load
        self.salt = salt
        self._model: Any = None
        self.tenant_id = tenant_id
        self.version_id = version_id
        self.cache = cache

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = self._load()
        return self._model

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

    def score(self, x: np.ndarray) -> np.ndarray:
        """Predictions for every row of ``x`` (2-D float64), written to the cache when there is one."""
        x = np.asarray(x, dtype=np.float64)
        if len(x) == 0:
            return np.empty(0, dtype=np.float64)
        predictions = self._predict(x)
        if self.cache is not None:
            self.cache.set_many(self.tenant_id, self.version_id,
                                list(zip(row_digests(x, self.salt), encode_predictions(predictions), strict=True)))
        return predictions

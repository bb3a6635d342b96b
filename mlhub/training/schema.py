"""A model's input contract: the feature schema, reference statistics for drift, row validation.

Everything returned here is JSON-serialisable (plain ints/floats/strings; ``None`` instead of NaN).
Row numbers in :class:`RowError` are 0-based positions (not DataFrame index labels); ``row == -1``
(:data:`WHOLE_INPUT`) marks a problem with the whole input, such as a missing column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "QUANTILES",
    "WHOLE_INPUT",
    "RowError",
    "check_rows",
    "input_schema",
    "reference_stats",
    "validate_rows",
]

WHOLE_INPUT = -1
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
MAX_CATEGORIES = 20


@dataclass
class RowError:
    """One problem in the input: the row (0-based, or -1 for the whole input), the column, what is wrong."""

    row: int
    column: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = "input" if self.row == WHOLE_INPUT else f"row {self.row}"
        return f"{where}{f', column {self.column!r}' if self.column else ''}: {self.message}"


def _num(v: float | np.floating) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _as_2d(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a.reshape(-1, 1) if a.ndim == 1 else a


def _integral(col: np.ndarray) -> bool:
    finite = col[np.isfinite(col)]
    return finite.size > 0 and bool(np.all(finite == np.round(finite)))


def input_schema(feature_names: Sequence[str], x: Any) -> dict[str, Any]:
    """The schema of a model's input: one entry per feature with ``dtype`` ("int" when every training
    value is integral, else "float") and ``nullable`` (whether the training data had NaNs)."""
    a = _as_2d(x)
    if a.shape[1] != len(feature_names):
        raise ValueError(f"{len(feature_names)} feature names for {a.shape[1]} columns")
    feats = [{"name": str(n), "dtype": "int" if _integral(a[:, i]) else "float",
              "nullable": bool(np.isnan(a[:, i]).any())} for i, n in enumerate(feature_names)]
    return {"features": feats, "n_features": len(feats)}


def _feature_stats(col: np.ndarray, bins: int) -> dict[str, Any]:
    finite = col[np.isfinite(col)]
    out: dict[str, Any] = {"count": int(finite.size), "missing": int(np.isnan(col).sum()),
                           "infinite": int(np.isinf(col).sum())}
    if finite.size == 0:
        out.update(mean=None, std=None, min=None, max=None, quantiles=None, histogram=None)
        return out
    qs = np.quantile(finite, QUANTILES)
    counts, edges = np.histogram(finite, bins=bins)
    out.update(mean=_num(finite.mean()), std=_num(finite.std()), min=_num(finite.min()),
               max=_num(finite.max()), quantiles={str(q): _num(v) for q, v in zip(QUANTILES, qs, strict=True)},
               histogram={"edges": [_num(e) for e in edges], "counts": [int(c) for c in counts]})
    if _integral(finite):
        values, vcounts = np.unique(finite, return_counts=True)
        if len(values) <= MAX_CATEGORIES:
            out["categories"] = {"values": [int(v) for v in values], "counts": [int(c) for c in vcounts],
                                 "frequencies": [float(c) / finite.size for c in vcounts]}
    return out


def reference_stats(feature_names: Sequence[str], x: Any, *, bins: int = 10) -> dict[str, Any]:
    """Per-feature statistics of the training data, the reference for drift detection (PSI/KS/chi2).

    ``{"n_rows", "bins", "features": {name: {count, missing, infinite, mean, std (population), min, max,
    quantiles {"0.01": ...}, histogram {edges, counts}, categories {values, counts, frequencies}}}}``;
    ``categories`` only for integral features with at most 20 distinct values. Statistics cover finite
    values only.
    """
    if bins < 1:
        raise ValueError("bins must be at least 1")
    a = _as_2d(x)
    if a.shape[1] != len(feature_names):
        raise ValueError(f"{len(feature_names)} feature names for {a.shape[1]} columns")
    return {"n_rows": int(a.shape[0]), "bins": bins,
            "features": {str(n): _feature_stats(a[:, i], bins) for i, n in enumerate(feature_names)}}


# --- row validation ------------------------------------------------------------------------------------


def _numeric_column(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, mask of cells that are not numbers) for one column of any dtype."""
    if values.dtype.kind in "biuf":
        return values.astype(np.float64), np.zeros(len(values), dtype=bool)
    out = np.full(len(values), np.nan)
    bad = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT:
            continue  # a missing value: judged by `nullable`
        if isinstance(v, bool | int | float | np.number | np.bool_) and not isinstance(v, np.complexfloating):
            try:
                out[i] = float(v)
            except OverflowError:  # an integer past float64's range: reported as an infinity
                out[i] = math.inf if v > 0 else -math.inf
        else:
            bad[i] = True
    return out, bad


def check_rows(schema: dict[str, Any], rows: Any, *, max_errors: int = 1000
               ) -> tuple[list[RowError], np.ndarray, np.ndarray | None]:
    """Validate ``rows`` against ``schema``; return (errors, bad-row mask, float64 matrix).

    The matrix (rows x schema features, in schema order) is ``None`` when the whole input is unusable
    (missing columns, wrong width): then ``errors`` holds row -1 entries. ``errors`` is capped at
    ``max_errors`` but the mask is complete.
    """
    feats = schema["features"]
    names = [f["name"] for f in feats]
    errors: list[RowError] = []
    if isinstance(rows, pd.DataFrame):
        missing = [n for n in names if n not in rows.columns]
        if missing:
            return ([RowError(WHOLE_INPUT, n, "missing column") for n in missing],
                    np.ones(len(rows), dtype=bool), None)
        columns = [rows[n].to_numpy() for n in names]
        n_rows = len(rows)
    else:
        if isinstance(rows, np.ndarray) and rows.ndim == 2:
            matrix = rows
        else:
            seq = list(rows) if not isinstance(rows, np.ndarray) else list(rows.reshape(1, -1))
            if seq and not isinstance(seq[0], list | tuple | np.ndarray):
                seq = [seq]  # one flat row
            widths = [len(r) if isinstance(r, list | tuple | np.ndarray) else -1 for r in seq]
            bad_width = np.array([w != len(names) for w in widths], dtype=bool)
            if bad_width.any():
                errs = [RowError(i, None, f"expected {len(names)} values, got {max(w, 0)}")
                        for i, w in enumerate(widths) if w != len(names)][:max_errors]
                return errs, bad_width, None
            matrix = np.empty((len(seq), len(names)), dtype=object)
            for i, r in enumerate(seq):
                matrix[i, :] = list(r)
        if matrix.shape[1] != len(names):
            return ([RowError(WHOLE_INPUT, None, f"expected {len(names)} columns, got {matrix.shape[1]}")],
                    np.ones(matrix.shape[0], dtype=bool), None)
        columns = [matrix[:, i] for i in range(matrix.shape[1])]
        n_rows = matrix.shape[0]
    bad = np.zeros(n_rows, dtype=bool)
    out = np.empty((n_rows, len(names)), dtype=np.float64)
    for j, (feat, col) in enumerate(zip(feats, columns, strict=True)):
        values, non_numeric = _numeric_column(np.asarray(col))
        out[:, j] = values
        problems = [(non_numeric, None)]
        problems.append((np.isinf(values), "infinite value"))
        if not feat.get("nullable", False):
            problems.append((np.isnan(values) & ~non_numeric, "missing value in a non-nullable feature"))
        for mask, msg in problems:
            if not mask.any():
                continue
            bad |= mask
            for i in np.flatnonzero(mask)[: max(0, max_errors - len(errors))]:
                text = msg or f"non-numeric value {col[i]!r}"[:200]
                errors.append(RowError(int(i), feat["name"], text))
    errors.sort(key=lambda e: (e.row, names.index(e.column) if e.column in names else -1))
    return errors, bad, out


def validate_rows(schema: dict[str, Any], rows: Any, *, max_errors: int = 1000) -> list[RowError]:
    """Every problem in ``rows`` (a 2-D array, a list of rows, or a DataFrame matched by column name;
    extra DataFrame columns are ignored): wrong width, missing columns, non-numeric values, NaN where
    the feature is not nullable, infinities. Empty when all rows are valid. At most ``max_errors``."""
    return check_rows(schema, rows, max_errors=max_errors)[0]

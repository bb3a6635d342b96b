"""Batch prediction over a DataFrame, with row validation, and stable per-row hashes for a cache.

:func:`validate_frame` is the one place an input table is checked against a model's input schema: text
that parses as a number is taken as that number (a CSV column with one bad cell is read as text, and its
other rows must not all be reported bad), feature columns are matched by name, and every bad row is
found by its 0-based position plus ``first_row``. :func:`predict_frame` (one process) and the batch
pipeline of :mod:`mlhub.batch` both start from it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlhub.errors import ValidationError
from mlhub.training.schema import RowError, check_rows

__all__ = ["DEFAULT_ID_COLUMN", "PREDICTION_COLUMN", "ValidatedFrame", "predict_frame", "row_digests",
           "row_hashes", "validate_frame"]

DEFAULT_ID_COLUMN = "row"
PREDICTION_COLUMN = "prediction"
_LISTED = 10


def _describe(errors: list[RowError], n_bad: int, n_rows: int) -> str:
    shown = "; ".join(str(e) for e in errors[:_LISTED])
    more = f"; ... ({len(errors) - _LISTED} more problems)" if len(errors) > _LISTED else ""
    return f"{n_bad} of {n_rows} rows are invalid: {shown}{more}"


@dataclass
class ValidatedFrame:
    """An input table checked against a model's schema.

    ``x``: float64 matrix of the valid rows (schema feature order); ``rows``: their row numbers (int64,
    ascending, ``first_row``-based); ``ids``: their id values (the id column's, else ``rows``);
    ``errors``: the problems found (capped at ``max_errors``, row numbers ``first_row``-based); ``n_bad``:
    how many rows are invalid (never capped); ``n_rows``: rows in the input.
    """

    x: np.ndarray
    rows: np.ndarray
    ids: np.ndarray
    errors: list[RowError]
    n_bad: int
    n_rows: int
    id_name: str


def _numbers_from_text(df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Feature columns that are not numeric (e.g. a CSV column read as text because one cell is ``oops``)
    get every cell that parses as a number converted to it; the cells that do not parse stay as they are,
    so :func:`check_rows` reports exactly those rows as non-numeric."""
    out = None
    for name in names:
        col = df[name]
        if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            continue
        parsed = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        unparsed = np.isnan(parsed) & ~col.isna().to_numpy()
        values = parsed.astype(object)
        values[unparsed] = col.to_numpy(dtype=object)[unparsed]
        if out is None:
            out = df.copy(deep=False)
        out[name] = pd.Series(values if unparsed.any() else parsed, index=df.index)
    return df if out is None else out


def validate_frame(schema: dict[str, Any], df: pd.DataFrame, *, id_column: str | None = None,
                   on_error: Literal["fail", "skip"] = "fail", max_errors: int = 10_000, first_row: int = 0
                   ) -> ValidatedFrame:
    """Check ``df`` against ``schema`` (feature columns by name; extra columns ignored).

    Raises :class:`ValidationError` for a missing feature or id column, and, with ``on_error="fail"``, when
    any row is invalid (naming the first bad rows; ``details["errors"]`` lists up to 100). With
    ``on_error="skip"`` the bad rows are left out of the result and listed in ``errors``.
    """
    if on_error not in ("fail", "skip"):
        raise ValidationError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    if not isinstance(df, pd.DataFrame):
        raise ValidationError(f"a batch prediction input must be a DataFrame, got {type(df).__name__}")
    if id_column is not None:
        if id_column not in df.columns:
            raise ValidationError(f"id column {id_column!r} not found; columns are: {', '.join(map(str, df.columns))}")
        if id_column == PREDICTION_COLUMN:
            raise ValidationError(f"the id column cannot be called {PREDICTION_COLUMN!r}")
    names = [f["name"] for f in schema["features"]]
    present = [n for n in names if n in df.columns]
    errors, bad, x = check_rows(schema, _numbers_from_text(df, present), max_errors=max_errors)
    for e in errors:
        if e.row >= 0:
            e.row += first_row
    details = {"errors": [e.to_dict() for e in errors[:100]]}
    if x is None:
        raise ValidationError("the input does not match the model's schema: " +
                              "; ".join(str(e) for e in errors[:_LISTED]), details=details)
    n_bad = int(bad.sum())
    if n_bad and on_error == "fail":
        raise ValidationError(_describe(errors, n_bad, len(df)), details={**details, "invalid_rows": n_bad})
    keep = ~bad
    rows = np.flatnonzero(keep).astype(np.int64) + first_row
    ids = df[id_column].to_numpy()[keep] if id_column is not None else rows
    return ValidatedFrame(x=x[keep] if n_bad else x, rows=rows, ids=ids, errors=errors, n_bad=n_bad,
                          n_rows=len(df), id_name=id_column or DEFAULT_ID_COLUMN)


def predict_frame(model: Any, schema: dict[str, Any], df: pd.DataFrame, *, id_column: str | None = None,
                  on_error: Literal["fail", "skip"] = "fail", max_errors: int = 10_000
                  ) -> tuple[pd.DataFrame, list[RowError]]:
    """Predict every row of ``df`` (feature columns matched by name, extra columns ignored).

    Returns ``(out, errors)``: ``out`` has the id column (``id_column``'s values, else ``"row"``: the
    0-based position in ``df``) and ``"prediction"``. Invalid rows (non-numeric, NaN in a non-nullable
    feature, infinite) make ``on_error="fail"`` raise :class:`ValidationError` naming the first bad rows,
    and ``on_error="skip"`` drop them and return them in ``errors`` (at most ``max_errors``). A missing
    feature column always raises.
    """
    v = validate_frame(schema, df, id_column=id_column, on_error=on_error, max_errors=max_errors)
    if len(v.x):
        try:
            predictions = np.asarray(model.predict(v.x))
        except ValueError as exc:  # e.g. a model that cannot take NaN in a nullable feature
            raise ValidationError(f"the model rejected the input: {exc}") from None
    else:
        predictions = np.empty(0, dtype=np.float64)
    out = pd.DataFrame({v.id_name: v.ids, PREDICTION_COLUMN: predictions})
    return out, v.errors


def _canonical(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise ValidationError(f"row hashes take a 2-D array, got {a.ndim}-D")
    a = np.where(np.isnan(a), np.nan, a + 0.0)  # -0.0 + 0.0 == +0.0; one canonical NaN
    return np.ascontiguousarray(a.astype("<f8", copy=False))


def row_digests(x: np.ndarray, salt: bytes = b"") -> list[bytes]:
    """The 32-byte sha256 of ``salt`` followed by each row's float64 bytes (see :func:`row_hashes`); what
    prediction cache keys are made of, salted with the model's own sha256 so that two models never share
    an entry, even under a reused version id."""
    rows = _canonical(x)
    if not salt:
        sha = hashlib.sha256
        return [sha(row).digest() for row in rows]
    base = hashlib.sha256(salt)
    out = []
    for row in rows:
        h = base.copy()
        h.update(row)
        out.append(h.digest())
    return out


def row_hashes(x: np.ndarray) -> list[str]:
    """sha256 hex of each row's float64 bytes: equal rows hash equal across runs and machines.

    Values are normalised first: ``-0.0`` becomes ``0.0`` and every NaN the same NaN. The row width is
    part of the bytes, so rows of different widths never collide.
    """
    return [d.hex() for d in row_digests(x)]

"""Batch prediction over a DataFrame, with row validation, and stable per-row hashes for a cache."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlhub.errors import ValidationError
from mlhub.training.schema import RowError, check_rows

__all__ = ["DEFAULT_ID_COLUMN", "PREDICTION_COLUMN", "predict_frame", "row_hashes"]

DEFAULT_ID_COLUMN = "row"
PREDICTION_COLUMN = "prediction"
_LISTED = 10


def _describe(errors: list[RowError], n_bad: int, n_rows: int) -> str:
    shown = "; ".join(str(e) for e in errors[:_LISTED])
    more = f"; ... ({len(errors) - _LISTED} more problems)" if len(errors) > _LISTED else ""
    return f"{n_bad} of {n_rows} rows are invalid: {shown}{more}"


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
    if on_error not in ("fail", "skip"):
        raise ValidationError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    if not isinstance(df, pd.DataFrame):
        raise ValidationError(f"predict_frame takes a DataFrame, got {type(df).__name__}")
    if id_column is not None:
        if id_column not in df.columns:
            raise ValidationError(f"id column {id_column!r} not found; columns are: {', '.join(map(str, df.columns))}")
        if id_column == PREDICTION_COLUMN:
            raise ValidationError(f"the id column cannot be called {PREDICTION_COLUMN!r}")
    errors, bad, x = check_rows(schema, df, max_errors=max_errors)
    details = {"errors": [e.to_dict() for e in errors[:100]]}
    if x is None:
        raise ValidationError("the input does not match the model's schema: " +
                              "; ".join(str(e) for e in errors[:_LISTED]), details=details)
    n_bad = int(bad.sum())
    if n_bad and on_error == "fail":
        raise ValidationError(_describe(errors, n_bad, len(df)), details={**details, "invalid_rows": n_bad})
    keep = ~bad
    ids = df[id_column].to_numpy()[keep] if id_column is not None else np.flatnonzero(keep)
    if keep.any():
        try:
            predictions = np.asarray(model.predict(x[keep]))
        except ValueError as exc:  # e.g. a model that cannot take NaN in a nullable feature
            raise ValidationError(f"the model rejected the input: {exc}") from None
    else:
        predictions = np.empty(0, dtype=np.float64)
    out = pd.DataFrame({id_column or DEFAULT_ID_COLUMN: ids, PREDICTION_COLUMN: predictions})
    return out, errors


def row_hashes(x: np.ndarray) -> list[str]:
    """sha256 hex of each row's float64 bytes: equal rows hash equal across runs and machines.

    Values are normalised first: ``-0.0`` becomes ``0.0`` and every NaN the same NaN. The row width is
    part of the bytes, so rows of different widths never collide.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise ValidationError(f"row_hashes takes a 2-D array, got {a.ndim}-D")
    a = np.where(np.isnan(a), np.nan, a + 0.0)  # -0.0 + 0.0 == +0.0; one canonical NaN
    a = np.ascontiguousarray(a.astype("<f8", copy=False))
    return [hashlib.sha256(row.tobytes()).hexdigest() for row in a]

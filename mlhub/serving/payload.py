"""Predict request bodies: parsed and shape-checked before any model sees them.

A body is ``{"inputs": ROWS_OR_COLUMNS, "key": "...", "proba": false}``:

- rows: ``[[5.1, 3.5, 1.4, 0.2], ...]`` or ``[{"sepal_length": 5.1, ...}, ...]``; one row alone may be sent
  as ``[5.1, 3.5, 1.4, 0.2]`` or ``{"sepal_length": 5.1, ...}`` (a dict of scalars);
- columns: ``{"sepal_length": [5.1, 4.9], "sepal_width": [3.5, 3.0], ...}``.

Cells are numbers, ``null`` (missing) or strings (refused later by the schema unless it allows them). Anything
deeper (a list inside a cell, an object inside a row) is a :class:`PayloadError` with status 422; bodies that
are not JSON, or nest deeper than the decoder allows, are 400; bodies or row counts over the configured limits
are 413. The model's schema check (``ReadyModel.validate``) then names bad rows (NaN where not nullable,
infinities, wrong width or columns). Pure Python: no Ray, no database.

This is the serving hot path: a body is decoded by orjson (several times faster than the standard decoder on
rows of numbers), and only a body orjson refuses (``NaN``/``Infinity``, a byte-order mark, UTF-16, lone
surrogates, nesting past its limit, plain bad JSON) is decoded again by the standard decoder, which accepts or
refuses it exactly as before and words the error. Answers are encoded by :func:`dumps_json` the same way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import orjson

from mlhub.errors import MlhubError

__all__ = ["PayloadError", "PredictRequest", "dumps_json", "parse_predict_body", "parse_predict_doc", "json_safe"]

_SCALARS = (int, float, str, type(None))
#: the exact types a JSON decoder gives scalars (bool included: it is an int): a set test over ``map(type, ...)``
#: runs in C, several times faster than ``isinstance`` per cell; anything else falls back to ``isinstance``
_SCALAR_TYPES = frozenset({int, float, str, type(None), bool})
_KEY_MAX = 128


class PayloadError(MlhubError):
    """A predict request the server refuses before scoring (bad JSON 400, wrong shape 422, too large 413)."""

    code = "bad_payload"
    http_status = 400
    exit_code = 2

    def __init__(self, message: str, *, status: int = 400, details: dict | None = None) -> None:
        super().__init__(message, details=details)
        self.http_status = status


@dataclass(frozen=True)
class PredictRequest:
    inputs: list[list[Any]] | list[dict[str, Any]] | dict[str, list[Any]]
    n_rows: int
    key: str | None = None
    proba: bool = False


def _reject_constant(name: str) -> float:
    # JSON has no NaN/Infinity; Python's decoder accepts them. NaN reads as a missing value (the schema
    # decides if the feature may be missing); an infinity is never a valid feature value.
    if name == "NaN":
        return math.nan
    raise PayloadError(f"{name} is not a number a model can take", status=422)


def parse_predict_body(raw: bytes, *, max_bytes: int, max_rows: int) -> PredictRequest:
    """Decode and shape-check a predict body."""
    if len(raw) > max_bytes:
        raise PayloadError(f"request body of {len(raw):,} bytes is over the limit of {max_bytes:,}", status=413)
    if not raw.strip():
        raise PayloadError('empty body: send {"inputs": [[...], ...]}')
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:  # NaN, a BOM, UTF-16, deep nesting, bad JSON: the standard decoder decides
        doc = _decode_slowly(raw)
    return parse_predict_doc(doc, max_rows=max_rows)


def _decode_slowly(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise PayloadError("the JSON body nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"the body is not valid JSON: {exc}") from None


def parse_predict_doc(doc: Any, *, max_rows: int) -> PredictRequest:
    """Shape-check an already decoded predict document (also used for WebSocket messages)."""
    if not isinstance(doc, dict):
        raise PayloadError('the body must be a JSON object: {"inputs": ...}', status=422)
    unknown = set(doc) - {"inputs", "key", "proba"}
    if unknown:
        raise PayloadError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}: expected inputs, key, proba",
                           status=422)
    if "inputs" not in doc:
        raise PayloadError('missing "inputs": rows ([[...], ...] or [{...}, ...]) or columns ({"name": [...]})',
                           status=422)
    key = doc.get("key")
    if key is not None and (not isinstance(key, str | int) or isinstance(key, bool) or len(str(key)) > _KEY_MAX):
        raise PayloadError(f'"key" must be a string of at most {_KEY_MAX} characters', status=422)
    proba = doc.get("proba", False)
    if not isinstance(proba, bool):
        raise PayloadError('"proba" must be true or false', status=422)
    inputs, n = _shape(doc["inputs"], max_rows)
    return PredictRequest(inputs, n, None if key is None else str(key), proba)


def _scalars(values: Any) -> bool:
    """Whether every value is a number, a string or null."""
    return _SCALAR_TYPES.issuperset(map(type, values)) or all(isinstance(v, _SCALARS) for v in values)


def _shape(inputs: Any, max_rows: int) -> tuple[Any, int]:
    if isinstance(inputs, dict):
        if not inputs:
            raise PayloadError("inputs is an empty object", status=422)
        if _scalars(inputs.values()):  # one row as an object
            _check_names(inputs)
            return [inputs], 1
        lengths = set()
        for name, col in inputs.items():
            if not isinstance(col, list) or not _scalars(col):
                raise PayloadError(f"column {str(name)[:64]!r} must be a list of numbers", status=422)
            lengths.add(len(col))
        _check_names(inputs)
        if len(lengths) != 1:
            raise PayloadError(f"columns of different lengths: {sorted(lengths)}", status=422)
        n = lengths.pop()
        _check_count(n, max_rows)
        return inputs, n
    if not isinstance(inputs, list):
        raise PayloadError("inputs must be a list of rows or an object of columns", status=422)
    if not inputs:
        raise PayloadError("inputs holds no rows", status=422)
    if _scalars(inputs):  # one row as a list
        return [inputs], 1
    _check_count(len(inputs), max_rows)
    first = type(inputs[0])
    if first not in (list, dict) or any(type(r) is not first for r in inputs):
        raise PayloadError("rows must all be lists of numbers, or all objects of feature -> number", status=422)
    for i, row in enumerate(inputs):
        if not _scalars(row.values() if first is dict else row):
            raise PayloadError(f"row {i} holds a nested value: each cell must be a number or null", status=422)
        if first is dict:
            _check_names(row)
    return inputs, len(inputs)


def _check_names(obj: dict) -> None:
    for name in obj:
        if len(name) > 256:
            raise PayloadError("a feature name is over 256 characters", status=422)


def _check_count(n: int, max_rows: int) -> None:
    if n > max_rows:
        raise PayloadError(f"{n:,} rows is over the limit of {max_rows:,} per request: split it, or use "
                           "`mlhub predict` for batch scoring", status=413)
    if n == 0:
        raise PayloadError("inputs holds no rows", status=422)


def dumps_json(doc: Any) -> bytes:
    """A JSON document as UTF-8 bytes, compact (orjson; the standard encoder for what orjson cannot encode, such as
    integers past 64 bits). Non-finite floats must be cleaned first (:func:`json_safe`): orjson writes them as null,
    the fallback refuses them."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        return json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def json_safe(values: Any) -> Any:
    """Predictions as JSON values (numpy scalars and arrays to Python; non-finite floats to null)."""
    if hasattr(values, "tolist"):
        values = values.tolist()
    if isinstance(values, float):
        return values if math.isfinite(values) else None
    if isinstance(values, list):
        return [json_safe(v) for v in values]
    return values

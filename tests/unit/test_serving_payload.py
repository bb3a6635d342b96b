"""Predict bodies are parsed and shape-checked before a model sees them: each bad body gets its status."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mlhub.registry.api import _clean_rows
from mlhub.serving.payload import PayloadError, dumps_json, json_safe, parse_predict_body

LIMITS = {"max_bytes": 10_000, "max_rows": 5}


def parse(body):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_predict_body(raw, **LIMITS)


@pytest.mark.parametrize("body, rows, n", [
    ({"inputs": [[1, 2], [3, 4]]}, [[1, 2], [3, 4]], 2),
    ({"inputs": [1, 2.5, None]}, [[1, 2.5, None]], 1),
    ({"inputs": {"a": 1, "b": 2}}, [{"a": 1, "b": 2}], 1),
    ({"inputs": [{"a": 1}, {"a": 2}]}, [{"a": 1}, {"a": 2}], 2),
    ({"inputs": {"a": [1, 2, 3], "b": [4, 5, 6]}}, {"a": [1, 2, 3], "b": [4, 5, 6]}, 3),
])
def test_rows_columns_and_single_rows_are_accepted(body, rows, n):
    req = parse(body)
    assert req.inputs == rows and req.n_rows == n and req.key is None and req.proba is False


def test_key_and_proba_are_read():
    req = parse({"inputs": [[1]], "key": 42, "proba": True})
    assert req.key == "42" and req.proba is True


@pytest.mark.parametrize("raw, status, text", [
    (b"{", 400, "not valid JSON"),
    (b"", 400, "empty body"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b"[" * 50_000 + b"]" * 50_000, 413, "over the limit"),
    (b"[" * 5_000, 400, "nests too deeply"),
    (b'{"inputs": [[Infinity, 1]]}', 422, "Infinity"),
    (b'{"inputs": [[-Infinity, 1]]}', 422, "Infinity"),
    (b"[1, 2]", 422, "JSON object"),
    (b'{"rows": [[1]]}', 422, "unknown field"),
    (b'{"key": "a"}', 422, 'missing "inputs"'),
    (b'{"inputs": []}', 422, "no rows"),
    (b'{"inputs": {}}', 422, "empty object"),
    (b'{"inputs": "abc"}', 422, "list of rows"),
    (b'{"inputs": [[[1]]]}', 422, "nested value"),
    (b'{"inputs": [[1], {"a": 1}]}', 422, "all be lists"),
    (b'{"inputs": [{"a": [1]}]}', 422, "nested value"),
    (b'{"inputs": {"a": [1, 2], "b": [1]}}', 422, "different lengths"),
    (b'{"inputs": {"a": [[1]]}}', 422, "list of numbers"),
    (b'{"inputs": [[1]], "proba": "yes"}', 422, "proba"),
    (b'{"inputs": [[1]], "key": {"k": 1}}', 422, "key"),
    (b'{"inputs": [[1], [1], [1], [1], [1], [1]]}', 413, "6 rows"),
    (b'{"inputs": {"a": [1, 1, 1, 1, 1, 1]}}', 413, "6 rows"),
])
def test_bad_bodies_get_a_typed_error_with_their_status(raw, status, text):
    with pytest.raises(PayloadError, match=text) as info:
        parse(raw)
    assert info.value.http_status == status and info.value.code == "bad_payload"


def test_nan_reads_as_a_missing_value_for_the_schema_to_judge():
    req = parse(b'{"inputs": [[NaN, 1]]}')
    assert math.isnan(req.inputs[0][0])


def test_predictions_become_json_values():
    assert json_safe(np.array([1, 2])) == [1, 2]
    assert json_safe(np.array([[0.5, np.nan], [np.inf, 1.0]])) == [[0.5, None], [None, 1.0]]
    assert json.dumps(json_safe(np.array(["a", "b"]))) == '["a", "b"]'


@pytest.mark.parametrize("raw", [
    b'{"inputs": [[NaN, 1]], "key": "k"}',                          # orjson refuses NaN: the standard decoder reads it
    b'\xef\xbb\xbf{"inputs": [[1, 2]]}',                              # a byte-order mark
    '{"inputs": [[1, 2.5]], "proba": true}'.encode("utf-16"),        # UTF-16
    b'{"inputs": [["\\ud800", 1]]}',                                  # a lone surrogate
    b'{"inputs": [[1, 2]]}',
    b'{"inputs": {"a": [1, null], "b": [true, "x"]}}',
])
def test_the_fast_decoder_and_the_standard_one_read_the_same_bodies_alike(raw):
    req = parse(raw)
    doc = json.loads(raw)
    assert repr(req.inputs) == repr(doc["inputs"]) and req.proba is doc.get("proba", False)


def test_answers_are_compact_json_and_integers_past_64_bits_still_encode():
    assert dumps_json({"predictions": [1, 2.5, None, "a"], "model": "m"}) == \
        b'{"predictions":[1,2.5,null,"a"],"model":"m"}'
    assert json.loads(dumps_json({"big": 2**70})) == {"big": 2**70}


@pytest.mark.parametrize("rows, clean", [
    ([[1, 2.5]], True),
    ([[1.0, 2.0], [3, 4]], True),
    ([[1e308, 1e308]], False),           # finite cells whose sum overflows: the full check accepts them
    ([[True, 1.0]], False),              # a bool is not a number here
    ([[None, 1.0]], False),
    ([["1", 1.0]], False),
    ([[float("nan"), 1.0]], False),
    ([[float("inf"), 1.0]], False),
    ([[10**400, 1.0]], False),           # past float64
    ([[1.0]], False),                    # wrong width
    ([(1.0, 2.0)], False),
    ([[np.float64(1.0), 2.0]], False),
    ({"a": [1.0], "b": [2.0]}, False),
])
def test_the_fast_row_check_takes_only_plain_finite_rows_of_the_right_width(rows, clean):
    x = _clean_rows(rows, 2)
    assert (x is not None) is clean
    if clean:
        assert x.dtype == np.float64 and x.tolist() == [[float(v) for v in r] for r in rows]

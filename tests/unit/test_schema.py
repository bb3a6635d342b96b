"""Input schema, reference statistics (JSON-safe) and row validation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlhub.training.schema import (
    QUANTILES,
    WHOLE_INPUT,
    RowError,
    input_schema,
    reference_stats,
    validate_rows,
)

NAMES = ["f", "i", "n"]


@pytest.fixture
def x():
    rng = np.random.default_rng(0)
    a = np.column_stack([rng.normal(size=200), rng.integers(0, 4, size=200).astype(float), rng.normal(size=200)])
    a[5, 2] = np.nan
    return a


@pytest.fixture
def schema(x):
    return input_schema(NAMES, x)


def test_input_schema_dtypes_and_nullability(schema):
    assert schema["n_features"] == 3
    assert schema["features"] == [{"name": "f", "dtype": "float", "nullable": False},
                                  {"name": "i", "dtype": "int", "nullable": False},
                                  {"name": "n", "dtype": "float", "nullable": True}]


def test_input_schema_checks_names_against_columns(x):
    with pytest.raises(ValueError, match="3 columns"):
        input_schema(["a"], x)


def test_reference_stats_are_complete_and_json_safe(x):
    stats = reference_stats(NAMES, x, bins=8)
    json.dumps(stats, allow_nan=False)  # no NaN/inf anywhere
    assert stats["n_rows"] == 200 and stats["bins"] == 8
    f = stats["features"]["f"]
    assert f["count"] == 200 and f["missing"] == 0
    assert list(f["quantiles"]) == [str(q) for q in QUANTILES]
    qs = list(f["quantiles"].values())
    assert qs == sorted(qs) and f["min"] <= qs[0] and qs[-1] <= f["max"]
    assert len(f["histogram"]["edges"]) == 9 and sum(f["histogram"]["counts"]) == 200
    assert f["mean"] == pytest.approx(float(x[:, 0].mean()))
    assert "categories" not in f
    assert stats["features"]["n"]["missing"] == 1 and stats["features"]["n"]["count"] == 199


def test_low_cardinality_integer_features_get_frequencies(x):
    cats = reference_stats(NAMES, x)["features"]["i"]["categories"]
    assert cats["values"] == [0, 1, 2, 3]
    assert sum(cats["counts"]) == 200 and sum(cats["frequencies"]) == pytest.approx(1.0)
    many = np.arange(100.0).reshape(-1, 1)
    assert "categories" not in reference_stats(["m"], many)["features"]["m"]


def test_reference_stats_of_empty_and_constant_columns():
    a = np.array([[np.nan, 2.0], [np.nan, 2.0], [np.inf, 2.0]])
    stats = reference_stats(["empty", "const"], a)
    json.dumps(stats, allow_nan=False)
    assert stats["features"]["empty"]["mean"] is None and stats["features"]["empty"]["infinite"] == 1
    const = stats["features"]["const"]
    assert const["std"] == 0.0 and const["categories"]["values"] == [2]


def test_valid_rows_have_no_errors(schema, x):
    assert validate_rows(schema, x) == []
    assert validate_rows(schema, x[:3].tolist()) == []
    assert validate_rows(schema, pd.DataFrame(x, columns=NAMES)) == []


def test_wrong_width_array_is_a_whole_input_error(schema):
    errors = validate_rows(schema, np.zeros((4, 2)))
    assert errors == [RowError(WHOLE_INPUT, None, "expected 3 columns, got 2")]


def test_ragged_rows_are_reported_by_number(schema):
    errors = validate_rows(schema, [[1, 2, 3], [1, 2], [1, 2, 3, 4], [0, 0, 0]])
    assert [e.row for e in errors] == [1, 2]
    assert "expected 3 values, got 2" in errors[0].message


def test_dataframe_columns_are_matched_by_name(schema, x):
    df = pd.DataFrame(x, columns=NAMES)[["n", "i", "f"]].assign(extra="ignored")
    assert validate_rows(schema, df) == []
    errors = validate_rows(schema, df.drop(columns=["i"]))
    assert errors == [RowError(WHOLE_INPUT, "i", "missing column")]


def test_non_numeric_nan_and_inf_are_reported_with_rows(schema):
    df = pd.DataFrame({"f": [1.0, "abc", 3.0, 4.0, np.inf], "i": [1, 2, 3, None, 5], "n": [1.0, None, 2.0, 3.0, 4.0]})
    errors = validate_rows(schema, df)
    by_row = {(e.row, e.column): e.message for e in errors}
    assert by_row[(1, "f")].startswith("non-numeric value 'abc'")
    assert "missing value" in by_row[(3, "i")]
    assert by_row[(4, "f")] == "infinite value"
    assert (1, "n") not in by_row  # "n" is nullable
    assert [e.row for e in errors] == sorted(e.row for e in errors)


def test_string_numbers_in_json_rows_are_not_numbers(schema):
    errors = validate_rows(schema, [[1.0, "2", 3.0], [True, 1, 0.5]])
    assert [(e.row, e.column) for e in errors] == [(0, "i")]


def test_an_integer_past_float64_is_reported_as_infinite_not_a_crash(schema):
    errors = validate_rows(schema, [[10**400, 1, 0.5], [1.0, -(10**400), 0.5]])
    assert [(e.row, e.column, e.message) for e in errors] == [(0, "f", "infinite value"), (1, "i", "infinite value")]


def test_error_list_is_capped(schema):
    bad = np.full((50, 3), np.inf)
    assert len(validate_rows(schema, bad, max_errors=7)) == 7
    assert str(RowError(3, "f", "infinite value")) == "row 3, column 'f': infinite value"

"""predict_frame (fail/skip on bad rows, id columns) and stable row hashes."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from mlhub.domain.specs import DatasetSpec, TrainingSpec
from mlhub.errors import ValidationError
from mlhub.training.adapters import get_adapter
from mlhub.training.batch import predict_frame, row_hashes
from mlhub.training.datasets import load_dataset
from mlhub.training.serialization import load_model


@pytest.fixture(scope="module")
def iris():
    spec = TrainingSpec(name="t", framework="baseline", model="logistic", epochs=50, params={"lr": 0.5},
                        dataset=DatasetSpec(source="sklearn", name="iris"))
    data = load_dataset(spec.dataset, allowed_roots=[])
    trained = get_adapter("baseline").train(spec, data, lambda r: None)
    model = load_model("baseline", "npz", trained.payload)
    df = pd.DataFrame(data.x_test[:8], columns=data.feature_names)
    return model, trained.input_schema, df


def test_predicts_every_row_with_positions_as_ids(iris):
    model, schema, df = iris
    out, errors = predict_frame(model, schema, df)
    assert errors == [] and list(out.columns) == ["row", "prediction"]
    assert out["row"].tolist() == list(range(8))
    np.testing.assert_array_equal(out["prediction"], model.predict(df.to_numpy()))


def test_id_column_extra_columns_and_column_order(iris):
    model, schema, df = iris
    shuffled = df[df.columns[::-1]].assign(key=[f"k{i}" for i in range(8)], note="x")
    out, _ = predict_frame(model, schema, shuffled, id_column="key")
    assert list(out.columns) == ["key", "prediction"] and out["key"].tolist()[:2] == ["k0", "k1"]
    np.testing.assert_array_equal(out["prediction"], model.predict(df.to_numpy()))


def _with_bad_rows(df):
    bad = df.astype(object)
    bad.iloc[2, 0] = "oops"
    bad.iloc[5, 1] = np.nan
    bad.iloc[6, 3] = np.inf
    return bad


def test_fail_names_the_first_bad_rows(iris):
    model, schema, df = iris
    with pytest.raises(ValidationError, match=r"3 of 8 rows are invalid: row 2, column 'sepal length \(cm\)': "
                                              r"non-numeric value 'oops'; row 5.*; row 6") as e:
        predict_frame(model, schema, _with_bad_rows(df))
    assert [err["row"] for err in e.value.details["errors"]] == [2, 5, 6]


def test_skip_drops_and_reports_bad_rows(iris):
    model, schema, df = iris
    out, errors = predict_frame(model, schema, _with_bad_rows(df), on_error="skip")
    assert out["row"].tolist() == [0, 1, 3, 4, 7]
    assert [(e.row, e.message.split(" ")[0]) for e in errors] == [(2, "non-numeric"), (5, "missing"),
                                                                  (6, "infinite")]
    np.testing.assert_array_equal(out["prediction"], model.predict(df.to_numpy()[[0, 1, 3, 4, 7]]))


def test_all_rows_bad_under_skip_gives_an_empty_frame(iris):
    model, schema, df = iris
    out, errors = predict_frame(model, schema, df.assign(**{df.columns[0]: np.nan}), on_error="skip")
    assert out.empty and list(out.columns) == ["row", "prediction"] and len(errors) == 8


def test_structural_problems_always_raise(iris):
    model, schema, df = iris
    with pytest.raises(ValidationError, match="missing column"):
        predict_frame(model, schema, df.drop(columns=[df.columns[1]]), on_error="skip")
    with pytest.raises(ValidationError, match="id column 'nope' not found"):
        predict_frame(model, schema, df, id_column="nope")
    with pytest.raises(ValidationError, match="on_error"):
        predict_frame(model, schema, df, on_error="ignore")  # type: ignore[arg-type]


def test_row_hashes_are_stable_and_normalised():
    x = np.array([[1.0, 2.0], [1.0, 2.0], [-0.0, np.nan], [0.0, float("nan")], [2.0, 1.0]])
    h = row_hashes(x)
    assert h[0] == hashlib.sha256(np.array([1.0, 2.0], dtype="<f8").tobytes()).hexdigest()
    assert h[0] == h[1] and h[2] == h[3] and len(set(h)) == 3
    assert row_hashes(np.array([[1, 2]])) == h[:1]  # ints hash as their float64 values
    assert row_hashes(np.array([1.0, 2.0])) == h[:1]  # a 1-D array is one row
    assert row_hashes(np.array([[1.0, 2.0, 0.0]]))[0] != h[0]
    assert row_hashes(np.zeros((0, 3))) == []


def test_row_digests_salted_by_the_model_differ_per_salt_and_are_stable():
    from mlhub.training.batch import row_digests

    x = np.array([[1.0, 2.0], [3.0, -0.0]])
    plain, a, b = row_digests(x), row_digests(x, b"model-a"), row_digests(x, b"model-b")
    assert [d.hex() for d in plain] == row_hashes(x)
    assert a == [hashlib.sha256(b"model-a" + r.astype("<f8").tobytes()).digest() for r in x + 0.0]
    assert len({*plain, *a, *b}) == 6

"""Dataset loading: bundled and generated data, CSV/Parquet, splits, fingerprints, the path allow-list."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from mlhub.domain.specs import DatasetSpec
from mlhub.errors import ValidationError
from mlhub.training.datasets import load_dataset, load_table, resolve_data_path


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "data"
    r.mkdir()
    return r


def _frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 5, size=n),
                         "label": np.arange(n) % 2, "value": rng.normal(size=n) * 10})


def _csv(path, target="label", **kw) -> DatasetSpec:
    return DatasetSpec(source="csv", path=str(path), target=target, **kw)


# --- bundled and generated -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "task"), [("iris", "classification"), ("wine", "classification"),
                                            ("breast_cancer", "classification"), ("digits", "classification"),
                                            ("diabetes", "regression")])
def test_sklearn_datasets_have_the_right_task(name, task):
    ds = load_dataset(DatasetSpec(source="sklearn", name=name), allowed_roots=[])
    assert ds.task == task
    assert ds.x_train.dtype == np.float64 and ds.x_train.shape[1] == len(ds.feature_names)
    assert (ds.classes is None) == (task == "regression")


def test_iris_split_is_stratified_and_sized():
    ds = load_dataset(DatasetSpec(source="sklearn", name="iris", test_size=0.2), allowed_roots=[])
    assert ds.x_train.shape == (120, 4) and ds.x_test.shape == (30, 4)
    assert ds.classes == [0, 1, 2]
    assert np.bincount(ds.y_test).tolist() == [10, 10, 10]
    assert ds.feature_names[0] == "sepal length (cm)"


def test_fingerprint_is_stable_and_depends_on_seed_and_data():
    spec = DatasetSpec(source="sklearn", name="wine", seed=3)
    a = load_dataset(spec, allowed_roots=[])
    b = load_dataset(spec, allowed_roots=[])
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    assert load_dataset(DatasetSpec(source="sklearn", name="wine", seed=4), allowed_roots=[]).fingerprint != a.fingerprint
    np.testing.assert_array_equal(a.x_train, b.x_train)


def test_synthetic_classification_follows_the_spec():
    spec = DatasetSpec(source="synthetic", task="classification", n_samples=200, n_features=6, n_classes=4,
                       seed=1, test_size=0.25)
    ds = load_dataset(spec, allowed_roots=[])
    assert ds.x_train.shape == (150, 6) and ds.x_test.shape == (50, 6)
    assert ds.classes == [0, 1, 2, 3]
    assert ds.fingerprint == load_dataset(spec, allowed_roots=[]).fingerprint


def test_synthetic_regression_and_single_feature():
    ds = load_dataset(DatasetSpec(source="synthetic", task="regression", n_samples=50, n_features=1),
                      allowed_roots=[])
    assert ds.task == "regression" and ds.classes is None and ds.x_train.shape == (40, 1)


def test_synthetic_rejects_impossible_shapes():
    with pytest.raises(ValidationError, match="at least 3 features"):
        load_dataset(DatasetSpec(source="synthetic", task="classification", n_features=2, n_classes=8),
                     allowed_roots=[])
    with pytest.raises(ValidationError, match="too large"):
        load_dataset(DatasetSpec(source="synthetic", task="regression", n_samples=10_000_000, n_features=10_000),
                     allowed_roots=[])


# --- CSV and Parquet -----------------------------------------------------------------------------------


def test_csv_integer_target_is_classification(root):
    _frame().to_csv(root / "t.csv", index=False)
    ds = load_dataset(_csv("t.csv"), allowed_roots=[root])
    assert ds.task == "classification" and ds.classes == [0, 1]
    assert ds.feature_names == ["a", "b", "value"]


def test_csv_float_target_is_regression(root):
    _frame().to_csv(root / "t.csv", index=False)
    ds = load_dataset(_csv(root / "t.csv", target="value"), allowed_roots=[root])
    assert ds.task == "regression" and ds.classes is None and ds.y_train.dtype == np.float64


def test_many_distinct_integers_are_regression_unless_the_spec_says(root):
    df = pd.DataFrame({"x": np.arange(120.0), "y": np.arange(120)})
    df.to_csv(root / "t.csv", index=False)
    assert load_dataset(_csv("t.csv", target="y"), allowed_roots=[root]).task == "regression"
    df["y"] = np.arange(120) % 3
    df.to_csv(root / "t.csv", index=False)
    ds = load_dataset(_csv("t.csv", target="y", task="regression"), allowed_roots=[root])
    assert ds.task == "regression"


def test_string_target_keeps_labels_as_plain_unicode(root):
    df = _frame()
    df["label"] = np.where(df["label"] == 1, "yes", "no")
    df.to_csv(root / "t.csv", index=False)
    ds = load_dataset(_csv("t.csv"), allowed_roots=[root])
    assert ds.classes == ["no", "yes"] and ds.y_train.dtype.kind == "U"


def test_non_numeric_features_are_named(root):
    df = _frame()
    df["city"] = "Paris"
    df["when"] = pd.Timestamp("2024-01-01")
    df.to_csv(root / "t.csv", index=False)
    with pytest.raises(ValidationError, match="non-numeric feature columns: city, when") as e:
        load_dataset(_csv("t.csv"), allowed_roots=[root])
    assert e.value.details["columns"] == ["city", "when"]


def test_missing_feature_values_and_targets_are_refused(root):
    df = _frame()
    df.loc[3, "a"] = np.nan
    df.to_csv(root / "t.csv", index=False)
    with pytest.raises(ValidationError, match=r"a \(1 rows\)"):
        load_dataset(_csv("t.csv"), allowed_roots=[root])
    df = _frame()
    df["label"] = df["label"].astype(float)
    df.loc[0, "label"] = np.nan
    df.to_csv(root / "t.csv", index=False)
    with pytest.raises(ValidationError, match="missing values"):
        load_dataset(_csv("t.csv"), allowed_roots=[root])


def test_unknown_target_column_lists_columns(root):
    _frame().to_csv(root / "t.csv", index=False)
    with pytest.raises(ValidationError, match="target column 'nope' not found; columns are: a, b, label, value"):
        load_dataset(_csv("t.csv", target="nope"), allowed_roots=[root])


def test_parquet_file_and_folder_of_parts(root):
    df = _frame(60)
    df.to_parquet(root / "one.parquet")
    parts = root / "parts"
    parts.mkdir()
    df.iloc[:30].to_parquet(parts / "part-0.parquet")
    df.iloc[30:].to_parquet(parts / "part-1.parquet")
    (parts / "_SUCCESS").write_text("")
    one = load_dataset(DatasetSpec(source="parquet", path="one.parquet", target="label"), allowed_roots=[root])
    folder = load_dataset(DatasetSpec(source="parquet", path="parts", target="label"), allowed_roots=[root])
    np.testing.assert_array_equal(one.x_train, folder.x_train)
    assert one.task == "classification"


def test_folder_parts_must_share_columns(root):
    parts = root / "parts"
    parts.mkdir()
    _frame().to_csv(parts / "a.csv", index=False)
    _frame().drop(columns=["b"]).to_csv(parts / "b.csv", index=False)
    with pytest.raises(ValidationError, match="b.csv has columns"):
        load_dataset(_csv("parts"), allowed_roots=[root])


def test_empty_folder_is_refused(root):
    (root / "empty").mkdir()
    with pytest.raises(ValidationError, match="holds no"):
        load_dataset(_csv("empty"), allowed_roots=[root])


# --- the path allow-list -------------------------------------------------------------------------------


def test_missing_file_is_a_validation_error(root):
    with pytest.raises(ValidationError, match="does not exist"):
        load_dataset(_csv("nope.csv"), allowed_roots=[root])


def test_dotdot_traversal_is_refused(root):
    _frame().to_csv(root.parent / "secret.csv", index=False)
    with pytest.raises(ValidationError, match="outside the allowed data roots"):
        load_dataset(_csv("../secret.csv"), allowed_roots=[root])
    with pytest.raises(ValidationError, match="outside the allowed data roots"):
        load_dataset(_csv(root / "sub" / ".." / ".." / "secret.csv"), allowed_roots=[root])


def test_absolute_path_elsewhere_is_refused(root, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere") / "t.csv"
    _frame().to_csv(other, index=False)
    with pytest.raises(ValidationError, match="outside the allowed data roots"):
        load_dataset(_csv(other), allowed_roots=[root])
    with pytest.raises(ValidationError, match="outside the allowed data roots"):
        load_table("/etc/passwd", allowed_roots=[root])


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlink_escaping_the_root_is_refused(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    _frame().to_csv(outside / "t.csv", index=False)
    (root / "link.csv").symlink_to(outside / "t.csv")
    (root / "linkdir").symlink_to(outside)
    with pytest.raises(ValidationError, match="outside the allowed data roots"):
        load_dataset(_csv("link.csv"), allowed_roots=[root])
    with pytest.raises(ValidationError, match="outside the allowed data roots"):
        load_dataset(_csv("linkdir"), allowed_roots=[root])
    folder = root / "folder"
    folder.mkdir()
    _frame().to_csv(folder / "ok.csv", index=False)
    (folder / "evil.csv").symlink_to(outside / "t.csv")
    with pytest.raises(ValidationError, match="links outside the allowed data roots"):
        load_dataset(_csv("folder"), allowed_roots=[root])


def test_symlink_inside_the_root_is_fine(root):
    _frame().to_csv(root / "real.csv", index=False)
    (root / "alias.csv").symlink_to(root / "real.csv")
    assert load_dataset(_csv("alias.csv"), allowed_roots=[root]).task == "classification"


def test_relative_paths_try_each_root(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    _frame().to_csv(b / "t.csv", index=False)
    assert resolve_data_path("t.csv", [a, b]) == (b / "t.csv").resolve()


def test_no_roots_means_no_files(root):
    _frame().to_csv(root / "t.csv", index=False)
    with pytest.raises(ValidationError, match="no data roots"):
        load_dataset(_csv(root / "t.csv"), allowed_roots=[])


# --- load_table ----------------------------------------------------------------------------------------


def test_load_table_reads_csv_parquet_and_folders(root):
    df = _frame(10)
    df.to_csv(root / "x.csv", index=False)
    df.to_parquet(root / "x.parquet")
    sub = root / "sub"
    sub.mkdir()
    df.to_csv(sub / "1.csv", index=False)
    df.to_csv(sub / "2.csv", index=False)
    assert load_table("x.csv", [root]).shape == (10, 4)
    pd.testing.assert_frame_equal(load_table(root / "x.parquet", [root]), df)
    assert len(load_table("sub", [root])) == 20


def test_load_table_refuses_mixed_folders_and_unknown_suffixes(root):
    sub = root / "mixed"
    sub.mkdir()
    _frame().to_csv(sub / "1.csv", index=False)
    _frame().to_parquet(sub / "2.parquet")
    with pytest.raises(ValidationError, match="mixes CSV and Parquet"):
        load_table("mixed", [root])
    (root / "notes.txt").write_text("x")
    with pytest.raises(ValidationError, match="expected a CSV"):
        load_table("notes.txt", [root])

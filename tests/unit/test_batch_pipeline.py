"""Batch prediction without Ray: a table (a folder of CSV files) validated with global row numbers, scored in
batches through the prediction cache, the Ray Data actor's per-batch function called directly, and the
spec's resource demand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlhub.batch import ModelBytes, PredictionCacheConfig, predict_table
from mlhub.batch.pipeline import _Predictor, _worker_error
from mlhub.domain.specs import DatasetSpec, TrainingSpec, job_demand, parse_spec
from mlhub.errors import MlhubError, ModelLoadError, ValidationError
from mlhub.training.adapters import get_adapter
from mlhub.training.datasets import load_dataset, load_table


@pytest.fixture(scope="module")
def trained():
    spec = TrainingSpec(name="t", framework="baseline", model="logistic", epochs=30, params={"lr": 0.5},
                        dataset=DatasetSpec(source="sklearn", name="iris"))
    data = load_dataset(spec.dataset, allowed_roots=[])
    t = get_adapter("baseline").train(spec, data, lambda r: None)
    return ModelBytes("baseline", "npz", t.payload), t.input_schema, data.feature_names


def _rows(names, n, seed):
    x = np.random.default_rng(seed).normal(loc=3.0, size=(n, len(names)))
    return pd.DataFrame(x, columns=names)


def _folder(tmp_path, names):
    """Two CSV files of 30 and 25 rows; row 7 of the second has text where a number belongs."""
    folder = tmp_path / "in"
    folder.mkdir()
    first, second = _rows(names, 30, 1), _rows(names, 25, 2)
    first.assign(key=[f"a{i}" for i in range(30)]).to_csv(folder / "part-0.csv", index=False)
    bad = second.astype({names[2]: object})
    bad.iloc[7, 2] = "oops"
    bad.assign(key=[f"b{i}" for i in range(25)]).to_csv(folder / "part-1.csv", index=False)
    return folder, pd.concat([first, second], ignore_index=True)


def _table(tmp_path, trained):
    model, schema, names = trained
    folder, clean = _folder(tmp_path, names)
    return model, schema, names, load_table(folder, allowed_roots=[tmp_path]), clean


def test_a_folder_is_scored_with_global_row_numbers_and_the_bad_row_reported(tmp_path, trained):
    model, schema, names, frame, clean = _table(tmp_path, trained)
    progress = []
    out = predict_table(frame, schema, model, tenant_id="t", version_id=1, id_column="key", on_error="skip",
                        batch_size=8, progress=lambda doc, last: progress.append((doc, last)))
    assert [(e.row, e.column, e.message) for e in out.errors] == [(37, names[2], "non-numeric value 'oops'")]
    assert out.n_rows == 55 and out.n_bad == 1 and out.workers == 1 and out.cached_rows == 0
    keep = [i for i in range(55) if i != 37]
    assert out.frame["key"].tolist() == [f"a{i}" for i in range(30)] + [f"b{i}" for i in range(25) if i != 7]
    np.testing.assert_array_equal(out.frame["prediction"], model.load().predict(clean.to_numpy()[keep]))
    assert [d["rows_done"] for d, _ in progress] == list(range(8, 54, 8)) + [54]
    assert progress[-1] == ({"rows": 54, "rows_done": 54, "cached_rows": 0, "bad_rows": 1, "workers": 1,
                             "rows_per_s": progress[-1][0]["rows_per_s"]}, True)


def test_on_error_fail_names_the_global_row(tmp_path, trained):
    model, schema, names, frame, _ = _table(tmp_path, trained)
    with pytest.raises(ValidationError, match=r"1 of 55 rows are invalid: row 37, column .*'oops'") as e:
        predict_table(frame, schema, model, tenant_id="t", version_id=1)
    assert [err["row"] for err in e.value.details["errors"]] == [37]


def test_wrong_columns_and_nan_where_the_schema_forbids_it(tmp_path, trained):
    model, schema, names, _, clean = _table(tmp_path, trained)
    with pytest.raises(ValidationError, match="missing column"):
        predict_table(clean.drop(columns=[names[0]]), schema, model, tenant_id="t", version_id=1, on_error="skip")
    holes = clean.copy()
    holes.iloc[[3, 40], 1] = np.nan
    out = predict_table(holes, schema, model, tenant_id="t", version_id=1, on_error="skip")
    assert [(e.row, e.message) for e in out.errors] == [(3, "missing value in a non-nullable feature"),
                                                        (40, "missing value in a non-nullable feature")]
    assert out.frame["row"].tolist() == [i for i in range(55) if i not in (3, 40)]


def test_a_rerun_is_served_from_the_cache_and_a_partly_cached_input_mixes_both(tmp_path, trained):
    model, schema, names, _, clean = _table(tmp_path, trained)
    cache = PredictionCacheConfig(sqlite_path=tmp_path / "home" / "cache" / "predictions.sqlite")
    first = predict_table(clean, schema, model, tenant_id="t", version_id=4, batch_size=16, cache=cache)
    again = predict_table(clean, schema, model, tenant_id="t", version_id=4, batch_size=16, cache=cache)
    assert first.cached_rows == 0 and first.cache["writes"] == 55
    assert again.cached_rows == 55 and again.cache == {"hits": 55, "misses": 0, "writes": 0, "errors": 0,
                                                       "skipped": 0}
    pd.testing.assert_frame_equal(again.frame, first.frame)

    more = pd.concat([clean.iloc[:20], _rows(names, 10, 9)], ignore_index=True)
    mixed = predict_table(more, schema, model, tenant_id="t", version_id=4, batch_size=7, cache=cache)
    assert mixed.cached_rows == 20 and mixed.cache["writes"] == 10
    np.testing.assert_array_equal(mixed.frame["prediction"], model.load().predict(more.to_numpy()))
    other = predict_table(clean, schema, model, tenant_id="t", version_id=5, cache=cache)  # another version
    assert other.cached_rows == 0


def test_a_broken_cache_never_fails_the_job(tmp_path, trained):
    model, schema, _, _, clean = _table(tmp_path, trained)
    broken = tmp_path / "predictions.sqlite"
    broken.write_bytes(b"\x00corrupt" * 4096)
    out = predict_table(clean, schema, model, tenant_id="t", version_id=1, batch_size=10,
                        cache=PredictionCacheConfig(sqlite_path=broken))
    assert out.cached_rows == 0 and out.cache["errors"] == 1 and out.cache["writes"] == 0
    np.testing.assert_array_equal(out.frame["prediction"], model.load().predict(clean.to_numpy()))


def test_a_small_input_stays_in_process_even_with_workers(tmp_path, trained):
    model, schema, _, _, clean = _table(tmp_path, trained)  # no Ray here: the Ray path would fail to start
    out = predict_table(clean, schema, model, tenant_id="t", version_id=1, num_workers=4, ray_min_rows=56)
    assert out.workers == 1 and out.path == "local" and len(out.frame) == 55


def test_the_ray_data_actor_scores_a_batch_writes_the_cache_and_reports_each_write_once(tmp_path, trained):
    model, schema, names, _, clean = _table(tmp_path, trained)
    cache = PredictionCacheConfig(sqlite_path=tmp_path / "p.sqlite")
    actor = _Predictor(ModelBytes(model.framework, model.model_format, model.payload), "t", 2, cache, len(names))
    x = clean.to_numpy()
    first = actor({"__pos__": np.arange(100, 110), **{f"x{j}": x[:10, j] for j in range(len(names))}})
    second = actor({"__pos__": np.arange(110, 115), **{f"x{j}": x[10:15, j] for j in range(len(names))}})
    np.testing.assert_array_equal(first["__pos__"], np.arange(100, 110))
    np.testing.assert_array_equal(np.concatenate([first["prediction"], second["prediction"]]),
                                  model.load().predict(x[:15]))
    assert first["cache_writes"].tolist() == [10] + [0] * 9 and second["cache_writes"].tolist() == [5, 0, 0, 0, 0]
    later = predict_table(clean, schema, model, tenant_id="t", version_id=2, cache=cache)
    assert later.cached_rows == 15 and later.cache["writes"] == 40


def test_a_rerun_served_wholly_from_the_cache_never_loads_the_model_nor_starts_workers(tmp_path, trained):
    model, schema, _, _, clean = _table(tmp_path, trained)
    cache = PredictionCacheConfig(sqlite_path=tmp_path / "p.sqlite")
    first = predict_table(clean, schema, model, tenant_id="t", version_id=3, cache=cache)
    fresh = ModelBytes(model.framework, model.model_format, model.payload)  # as the next job gets it
    progress = []
    # Ray is off limits in unit tests (it raises): the actor pool is never started
    again = predict_table(clean, schema, fresh, tenant_id="t", version_id=3, cache=cache, num_workers=2,
                          ray_min_rows=1, progress=lambda doc, last: progress.append((doc["rows_done"], last)))
    assert again.cached_rows == 55 and again.workers == 1 and progress == [(55, True)]
    assert fresh._model is None  # never loaded
    pd.testing.assert_frame_equal(again.frame, first.frame)


def test_a_pickled_model_is_its_bytes_never_the_loaded_model(trained):
    import pickle

    model = trained[0]
    model.load()
    copy = pickle.loads(pickle.dumps(model))
    assert copy.payload == model.payload and copy._model is None


def test_workers_reserve_their_resources_and_the_driver_none():
    doc = {"kind": "batch_prediction", "name": "s", "model": "m", "input": "in.csv"}
    assert job_demand(parse_spec(doc)) is None
    assert job_demand(parse_spec({**doc, "num_workers": 2})) == {"num_cpus": 2.0, "num_gpus": 0.0, "driver": True}
    spec = parse_spec({**doc, "num_workers": 3, "resources": {"num_cpus": 0.5}, "use_cache": False})
    assert job_demand(spec) == {"num_cpus": 1.5, "num_gpus": 0.0, "driver": True} and spec.use_cache is False


def test_an_actor_s_own_error_reaches_the_driver_with_its_type(tmp_path, trained):
    _, schema, names, _, clean = _table(tmp_path, trained)
    actor = _Predictor(ModelBytes("sklearn", "skops", b"not a model"), "t", 1, None, len(names))
    with pytest.raises(RuntimeError) as raised:
        actor({"__pos__": np.arange(3), **{f"x{j}": clean.to_numpy()[:3, j] for j in range(len(names))}})
    # Ray Data hands the driver only the text of a worker's error, wrapped in its own
    wrapped = Exception(f"ray::MapWorker(...) failed\nTraceback ...\n{raised.value}\n\nUDF failed to process a data block.")
    rebuilt = _worker_error(wrapped)
    assert type(rebuilt) is ModelLoadError and rebuilt.message == "not a skops archive (expected a zip file)"
    assert _worker_error(Exception("a worker died")) is None
    assert type(_worker_error(Exception('<<mlhub-error>>{"error": "os", "message": "m"}<<mlhub-error>>'))) is MlhubError


def test_a_reused_version_id_with_another_model_is_never_served_its_predecessor_s_predictions(tmp_path, trained):
    model, schema, names, _, clean = _table(tmp_path, trained)
    cache = PredictionCacheConfig(sqlite_path=tmp_path / "p.sqlite")
    predict_table(clean, schema, model, tenant_id="t", version_id=6, cache=cache)
    spec = TrainingSpec(name="t", framework="baseline", model="logistic", epochs=3, params={"lr": 0.01},
                        dataset=DatasetSpec(source="sklearn", name="iris"))
    other = ModelBytes("baseline", "npz", get_adapter("baseline").train(
        spec, load_dataset(spec.dataset, allowed_roots=[]), lambda r: None).payload)
    assert other.sha256 != model.sha256
    out = predict_table(clean, schema, other, tenant_id="t", version_id=6, cache=cache)  # same id, new bytes
    assert out.cached_rows == 0
    np.testing.assert_array_equal(out.frame["prediction"], other.load().predict(clean.to_numpy()))

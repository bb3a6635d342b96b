"""Batch prediction through the orchestrator on the shared 2-CPU Ray cluster: a job with num_workers=2 scores a
folder of two CSV files on a Ray Data actor pool, skips the bad row and names it by its row number across
both files, writes Parquet whose ids and predictions match the model's own; the same job run again is
served wholly from the prediction cache (SQLite under MLHUB_HOME)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from mlhub.artifact_records import ArtifactService
from mlhub.domain.specs import parse_spec
from mlhub.registry.service import register_version
from mlhub.store.models import BatchPrediction, JobEvent
from mlhub.training.adapters import get_adapter
from mlhub.training.datasets import load_dataset
from mlhub.training.serialization import load_model

pytestmark = [pytest.mark.ray, pytest.mark.postgres]


def _register(hub):
    spec = parse_spec({"kind": "training", "name": "scorer", "framework": "baseline", "model": "logistic",
                       "epochs": 20, "dataset": {"source": "synthetic", "task": "classification", "n_samples": 600,
                                                 "n_features": 6, "seed": 2}})
    data = load_dataset(spec.dataset, allowed_roots=[])
    trained = get_adapter("baseline").train(spec, data, lambda r: None)
    art = ArtifactService(hub.backends.db, hub.backends.artifacts).upload(hub.principal, trained.payload,
                                                                         name="scorer.npz")
    with hub.backends.db.tenant_scope(hub.principal.tenant_id) as s:
        version = register_version(s, hub.principal.tenant_id, model_name="scorer", framework="baseline",
                                   model_format="npz", artifact_id=art.id, artifact_sha256=art.sha256,
                                   created_by="test", metrics=trained.metrics, input_schema=trained.input_schema,
                                   task=trained.task)
        version_id = version.id
    return load_model("baseline", "npz", trained.payload), data.feature_names, version_id


def _recorded(hub, job_id: int):
    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        row = s.scalar(select(BatchPrediction).where(BatchPrediction.job_id == job_id))
        progress = s.scalars(select(JobEvent.data).where(JobEvent.job_id == job_id,
                                                         JobEvent.type == "progress")).all()
        return (row.version_id, row.row_count, row.cached_rows, row.error_rows, row.errors, row.output_uri), progress


def test_a_folder_scored_on_a_ray_data_actor_pool_then_rerun_from_the_cache(hub, data_dir):
    model, names, version_id = _register(hub)
    rng = np.random.default_rng(5)
    first, second = (pd.DataFrame(rng.normal(size=(n, len(names))), columns=names) for n in (700, 500))
    folder = data_dir / "rows"
    folder.mkdir()
    first.assign(key=[f"a{i}" for i in range(700)]).to_csv(folder / "part-0.csv", index=False)
    bad = second.astype({names[3]: object})
    bad.iloc[123, 3] = "n/a?"
    bad.assign(key=[f"b{i}" for i in range(500)]).to_csv(folder / "part-1.csv", index=False)
    out = data_dir / "scores.parquet"
    doc = {"model": "scorer/1", "input": str(folder), "output": str(out), "id_column": "key", "on_error": "skip",
           "num_workers": 2, "ray_min_rows": 0, "batch_size": 256}

    job = hub.predict({"name": "score-1", **doc})
    assert job.status().resources == {"num_cpus": 2.0, "num_gpus": 0.0, "driver": True}
    result = job.wait(timeout=240).result
    assert (result["rows"], result["input_rows"], result["bad_rows"], result["cached_rows"], result["workers"]) == (
        1199, 1200, 1, 0, 2)
    assert result["errors"] == [{"row": 823, "column": names[3], "message": "non-numeric value 'n/a?'"}]
    written = pd.read_parquet(out)
    keep = [i for i in range(500) if i != 123]
    assert written["key"].tolist() == [f"a{i}" for i in range(700)] + [f"b{i}" for i in keep]
    expected = model.predict(np.vstack([first.to_numpy(), second.to_numpy()[keep]]))
    np.testing.assert_array_equal(written["prediction"].to_numpy(), expected)
    recorded, progress = _recorded(hub, job.id)
    assert recorded == (version_id, 1199, 0, 1, result["errors"], str(out))
    assert progress[-1]["rows_done"] == 1199 and progress[-1]["bad_rows"] == 1 and progress[-1]["workers"] == 2
    assert "Ray Data: 1,199 rows" in job.logs()

    again = hub.predict({"name": "score-2", **doc}).wait(timeout=120)
    assert (again.result["cached_rows"], again.result["rows"], again.result["workers"]) == (1199, 1199, 1)
    pd.testing.assert_frame_equal(pd.read_parquet(out), written)
    recorded, progress = _recorded(hub, again.id)
    assert recorded[:4] == (version_id, 1199, 1199, 1) and progress[-1]["cached_rows"] == 1199

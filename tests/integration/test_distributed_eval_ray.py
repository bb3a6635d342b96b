"""Distributed evaluation on the shared 2-CPU Ray cluster: a torch model (trained in this process and
registered directly, which saves a Ray Train run) evaluated by a job with num_workers=2 gives the same metrics
and confusion matrix as the same job with num_workers=1; its job row holds both CPUs with the driver at 0."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mlhub.artifact_records import ArtifactService
from mlhub.domain.specs import parse_spec
from mlhub.registry.service import register_version
from mlhub.store.models import Evaluation, JobEvent
from mlhub.training.adapters import get_adapter
from mlhub.training.datasets import load_dataset

pytestmark = [pytest.mark.ray, pytest.mark.postgres]

DATASET = {"source": "synthetic", "task": "classification", "n_samples": 3000, "n_features": 12, "n_classes": 4,
           "seed": 3}


def _register(hub, name: str, framework: str, model: str, params: dict) -> None:
    spec = parse_spec({"kind": "training", "name": name, "framework": framework, "model": model, "epochs": 2,
                       "params": params, "dataset": DATASET})
    data = load_dataset(spec.dataset, allowed_roots=[])
    trained = get_adapter(framework).train(spec, data, lambda r: None)
    art = ArtifactService(hub.backends.db, hub.backends.artifacts).upload(
        hub.principal, trained.payload, name=f"{name}.{trained.model_format}")
    with hub.backends.db.tenant_scope(hub.principal.tenant_id) as s:
        register_version(s, hub.principal.tenant_id, model_name=name, framework=framework,
                         model_format=trained.model_format, artifact_id=art.id, artifact_sha256=art.sha256,
                         created_by="test", metrics=trained.metrics,
                         input_schema=dict(trained.input_schema, task=trained.task, classes=trained.classes),
                         task=trained.task)


def _stored(hub, job_id: int):
    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        row = s.scalar(select(Evaluation).where(Evaluation.job_id == job_id))
        progress = s.scalars(select(JobEvent.data).where(JobEvent.job_id == job_id,
                                                         JobEvent.type == "progress")).all()
        return row.metrics, row.confusion_matrix, row.labels, progress


def test_a_torch_model_evaluated_on_two_workers_matches_single_process_evaluation(hub):
    _register(hub, "mlp-eval", "torch", "mlp", {"hidden": [32], "lr": 0.01})
    doc = {"model": "mlp-eval/1", "dataset": DATASET}
    two = hub.evaluate({"name": "eval-2", "num_workers": 2, **doc})
    one = hub.evaluate({"name": "eval-1", **doc})
    assert two.status().resources == {"num_cpus": 2.0, "num_gpus": 0.0, "driver": True}
    assert one.status().resources.get("driver") is None

    r2, r1 = two.wait(timeout=120).result, one.wait(timeout=120).result
    assert r2.keys() == r1.keys() and r2["version"] == r1["version"] == 1
    assert r2["metrics"]["n_samples"] == 600 and {"accuracy", "log_loss", "roc_auc"} <= set(r2["metrics"])
    assert r2["metrics"] == pytest.approx(r1["metrics"], rel=1e-9, abs=1e-12)
    assert r2["confusion_matrix_artifact_id"] is not None
    m2, cm2, labels2, progress = _stored(hub, two.id)
    m1, cm1, labels1, _ = _stored(hub, one.id)
    assert cm2 == cm1 and labels2 == labels1 == [0, 1, 2, 3] and sum(map(sum, cm2)) == 600
    assert m2 == pytest.approx(m1, rel=1e-9, abs=1e-12)
    logs = two.logs()
    assert "over 2 Ray workers" in logs and "evaluated 600 rows in 2 shards" in logs
    assert "rows 0..300" in logs and "rows 300..600" in logs
    assert any(p.get("shards_done") == 2 and p.get("rows_done") == 600 for p in progress)


def test_distributed_evaluation_of_a_model_that_is_not_torch_fails_permanently(hub):
    _register(hub, "forest", "sklearn", "random_forest", {"n_estimators": 5})
    job = hub.evaluate({"name": "eval-forest", "model": "forest", "num_workers": 2, "dataset": DATASET})
    info = job.wait(timeout=120, raise_on_failure=False)
    assert info.state == "failed" and info.attempt == 1  # permanent: not retried
    assert "runs torch models" in info.error and "num_workers 1" in info.error

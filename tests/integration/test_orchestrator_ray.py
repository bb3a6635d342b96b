"""The orchestrator on a real local Ray cluster and PostgreSQL: jobs as a user submits them."""

from __future__ import annotations

import os
import signal
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
import ray
from sqlalchemy import func, select, text

from actors import orchestrator as orch
from mlhub.errors import JobFailed
from mlhub.store.models import JobEvent, ModelVersion, RegisteredModel
from tests.integration.conftest import ORCHESTRATOR, pid_of, wait_until_gone

pytestmark = [pytest.mark.ray, pytest.mark.postgres]


def diag(name, **kw):
    return {"kind": "diagnostic", "name": name, **kw}


def versions_of(hub, model: str) -> list[tuple[int, int]]:
    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        rows = s.execute(select(ModelVersion.version, ModelVersion.job_id)
                         .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
                         .where(ModelVersion.tenant_id == hub.principal.tenant_id, RegisteredModel.name == model)
                         .order_by(ModelVersion.version)).all()
    return [tuple(r) for r in rows]


def test_train_evaluate_and_predict_end_to_end(hub, data_dir):
    job = hub.train({"name": "iris-rf", "framework": "sklearn", "model": "random_forest", "version_label": "1.0.0",
                     "params": {"n_estimators": 20}, "dataset": {"source": "sklearn", "name": "iris"}})
    info = job.wait(timeout=180)
    assert info.result["model_version"] == 1 and info.result["metrics"]["accuracy"] > 0.8
    [model] = hub.list_models()
    assert (model.name, model.latest_version, model.framework) == ("iris-rf", 1, "sklearn")
    version, loaded = hub.load_model("iris-rf")
    assert version.input_schema["n_features"] == 4 and version.reference_stats
    assert len(loaded.predict(np.zeros((3, 4)))) == 3

    ev = hub.evaluate({"name": "eval-iris", "model": "iris-rf/1", "dataset": {"source": "sklearn", "name": "iris"}})
    metrics = ev.wait(timeout=120).result["metrics"]
    assert metrics["accuracy"] > 0.8 and "f1_macro" in metrics
    # the evaluation job's record is what a gate reads; the version carries its lineage and label
    hub.models.set_gates("iris-rf", ["evaluated on iris", "accuracy >= 0.8 on iris"])
    promoted = hub.models.promote("iris-rf", 1, to="champion")
    assert [g.passed for g in promoted.gates] == [True, True] and f"{metrics['accuracy']:.6g}" in promoted.gates[1].detail
    champion = hub.models.get("iris-rf@champion")
    assert (champion.label, champion.job_id, champion.aliases) == ("1.0.0", job.id, ("champion",))
    assert champion.run_id == info.result["run_id"] and champion.output_schema["prediction"] == "label"

    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 4)),
                         columns=version.input_schema and [f["name"] for f in version.input_schema["features"]])
    frame.to_csv(data_dir / "rows.csv", index=False)
    out = data_dir / "predictions.parquet"
    pj = hub.predict({"name": "score", "model": "iris-rf", "input": str(data_dir / "rows.csv"), "output": str(out)})
    result = pj.wait(timeout=120).result
    assert result["rows"] == 50 and len(pd.read_parquet(out)) == 50


def test_baseline_training_streams_epochs_to_the_job(hub):
    job = hub.train({"name": "logit", "framework": "baseline", "model": "logistic", "epochs": 30,
                     "dataset": {"source": "synthetic", "task": "classification", "n_samples": 500}})
    info = job.wait(timeout=120)
    assert info.progress["epoch"] == 30 and "val_loss" in info.progress["metrics"]
    logs = job.logs()
    assert "epoch 30/30" in logs and "model stored: artifact" in logs


def test_logs_of_every_attempt_are_stored(hub):
    job = hub.submit(diag("talky", print_lines=5, fail_attempts=1,
                          retry={"max_attempts": 2, "backoff_s": 0}))
    job.wait(timeout=60)
    assert job.logs(attempt=1).count("diagnostic line") == 5 and "fails attempt 1" in job.logs(attempt=1)
    assert "attempt 2 succeeded" in job.logs(attempt=2)


def test_a_job_that_always_fails_ends_dead_with_its_error(hub):
    job = hub.submit(diag("doomed", fail_attempts=10, retry={"max_attempts": 3, "backoff_s": 0.2, "jitter": 0}))
    with pytest.raises(JobFailed, match="dead"):
        job.wait(timeout=60)
    info = job.status()
    assert info.attempt == 3 and "fails attempt 3" in info.error


def test_cancelling_a_running_job_really_stops_it(hub):
    job = hub.submit(diag("sleeper", sleep_s=600))
    pid = pid_of(hub, job.id)
    job.cancel()
    with pytest.raises(JobFailed, match="cancelled"):
        job.wait(timeout=30)
    wait_until_gone(pid, "worker")


def test_a_killed_worker_is_retried_and_registers_its_model_once(hub):
    job = hub.train({"name": "slow-logit", "framework": "baseline", "model": "logistic", "epochs": 400,
                     "retry": {"max_attempts": 3, "backoff_s": 0},
                     "dataset": {"source": "synthetic", "task": "classification", "n_samples": 20000,
                                 "n_features": 40}})
    os.kill(pid_of(hub, job.id), signal.SIGKILL)
    info = job.wait(timeout=240)
    assert info.attempt == 2 and info.state == "succeeded"
    assert versions_of(hub, "slow-logit") == [(1, job.id)]


def test_killing_the_orchestrator_loses_and_duplicates_nothing(hub):
    jobs = [hub.train({"name": f"m{i}", "framework": "sklearn", "model": "logistic_regression",
                       "dataset": {"source": "sklearn", "name": "iris"}}) for i in range(3)]
    jobs += [hub.submit(diag(f"nap{i}", sleep_s=1.5)) for i in range(3)]
    time.sleep(1.0)  # some running, some queued
    ray.kill(orch.get(ORCHESTRATOR), no_restart=False)  # Ray restarts it (max_restarts=-1)
    finished = [j.wait(timeout=240) for j in jobs]
    assert all(f.state == "succeeded" for f in finished)
    assert sorted(v for v, _ in versions_of(hub, "m0")) == [1]
    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        per_model = s.execute(select(ModelVersion.job_id, func.count()).where(
            ModelVersion.tenant_id == hub.principal.tenant_id).group_by(ModelVersion.job_id)).all()
    assert sorted(n for _, n in per_model) == [1, 1, 1]
    assert ray.get(orch.get(ORCHESTRATOR).ping.remote(), timeout=60)["ok"]


def test_the_orchestrator_survives_terminated_database_connections(hub, hub_settings):
    jobs = [hub.submit(diag(f"pg{i}", sleep_s=0.5)) for i in range(4)]
    time.sleep(0.3)
    with hub.backends.db.engine.connect() as conn:
        killed = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
    assert killed >= 1
    more = [hub.submit(diag(f"after{i}")) for i in range(2)]
    assert all(j.wait(timeout=120).state == "succeeded" for j in jobs + more)


def test_queue_metrics_reach_the_node_metrics_endpoint(hub, ray_cluster):
    hub.submit(diag("metered")).wait(timeout=60)
    names = ("ray_mlhub_queue_depth", "ray_mlhub_jobs_running", "ray_mlhub_job_wait_seconds",
             "ray_mlhub_job_duration_seconds")
    deadline = time.monotonic() + 60
    body = ""
    while time.monotonic() < deadline:
        body = urllib.request.urlopen(f"http://127.0.0.1:{ray_cluster['metrics_port']}/metrics", timeout=10).read().decode()
        if all(n in body for n in names):
            break
        time.sleep(2)
    assert [n for n in names if n not in body] == []


def test_a_recurring_job_runs_each_occurrence_once_across_restarts(hub):
    sched = hub.submit(diag("heartbeat", schedule={"interval_s": 1}))
    time.sleep(3.5)
    ray.kill(orch.get(ORCHESTRATOR), no_restart=False)
    time.sleep(4)
    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        from mlhub.store.models import Job

        rows = s.execute(select(Job.scheduled_for, func.count()).where(Job.schedule_id == sched.id)
                         .group_by(Job.scheduled_for)).all()
    assert len(rows) >= 3 and all(n == 1 for _, n in rows)
    with hub.backends.db.tenant_scope(hub.principal.tenant_id) as s:
        from mlhub.store.models import Schedule

        s.get(Schedule, sched.id).enabled = False


def test_events_tell_the_story_of_a_job(hub):
    job = hub.submit(diag("storied"))
    job.wait(timeout=60)
    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        moves = s.execute(select(JobEvent.from_state, JobEvent.to_state).where(
            JobEvent.job_id == job.id, JobEvent.type == "state").order_by(JobEvent.id)).all()
    assert [tuple(m) for m in moves] == [("queued", "running"), ("running", "succeeded")]


def test_logs_follow_streams_until_the_job_ends(hub, hub_settings, monkeypatch, capsys):
    from mlhub.cli.main import main

    job = hub.submit(diag("chatty", print_lines=3, sleep_s=2))
    monkeypatch.setenv("MLHUB_DATABASE_URL", hub_settings.effective_database_url)
    monkeypatch.setenv("MLHUB_HOME", str(hub_settings.home))
    assert main(["--api-key", hub.api_key, "logs", str(job.id), "--follow"]) == 0
    out = capsys.readouterr().out
    assert job.status().state == "succeeded"  # --follow returned only once the job had ended
    assert "diagnostic line 3 of 3" in out and "attempt 1 succeeded" in out

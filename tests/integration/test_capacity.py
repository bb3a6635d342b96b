"""Submit refuses a job bigger than the whole cluster, as the orchestrator last recorded it (no Ray here)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from mlhub.domain.queueing import Demand
from mlhub.domain.specs import parse_spec
from mlhub.errors import ValidationError
from mlhub.jobs import capacity
from mlhub.jobs.service import JobService
from mlhub.store.models import ClusterCapacity
from mlhub.store.types import utcnow
from mlhub.tenancy import TenantService


def torch_job(name: str, workers: int, **kw):
    return parse_spec({"kind": "training", "name": name, "framework": "torch", "model": "mlp",
                       "dataset": {"source": "sklearn", "name": "iris"}, "num_workers": workers, **kw})


def test_a_job_bigger_than_the_recorded_cluster_is_refused_at_submit(db):
    svc = TenantService(db)
    principal = svc.authenticate(svc.create_tenant(f"t-{uuid.uuid4().hex[:8]}")[1])
    jobs = JobService(db)
    jobs.submit(principal, torch_job("before", 8))  # nothing recorded yet: accepted, the orchestrator decides
    with db.scheduler_scope() as s:  # as the orchestrator does (the scheduler role may write it)
        capacity.record(s, Demand(cpus=4, gpus=0))
    with db.scheduler_scope() as s:
        capacity.record(s, Demand(cpus=2, gpus=0))  # an upsert: still one row
    assert jobs.submit(principal, torch_job("fits", 2)).state == "queued"
    with pytest.raises(ValidationError) as err:
        jobs.submit(principal, torch_job("too-wide", 3))
    assert "need 3 CPUs" in err.value.message and "cluster has 2 CPUs" in err.value.message
    with pytest.raises(ValidationError, match="0 GPUs in all"):
        jobs.submit(principal, torch_job("gpus", 1, use_gpu=True))
    with pytest.raises(ValidationError) as err:  # a batch is refused whole, every bad job named
        jobs.submit_many(principal, [torch_job("ok", 1), torch_job("wide-a", 4), torch_job("wide-b", 5)])
    assert len(err.value.details["errors"]) == 2
    names = {j.name for j in jobs.list(principal)}
    assert names == {"before", "fits"}  # nothing of the refused submissions was kept

    with db.scheduler_scope() as s:  # a record from long ago says nothing about today's cluster
        s.execute(update(ClusterCapacity).values(updated_at=utcnow() - capacity.FRESH_FOR - timedelta(minutes=1)))
    assert jobs.submit(principal, torch_job("stale-ok", 3)).state == "queued"


def search(name: str, trials: int, trial_cpus: float) -> object:
    return parse_spec({"kind": "hpo", "name": name, "metric": "val_loss", "mode": "min",
                       "max_concurrent_trials": trials,
                       "trainer": {"name": f"{name}-m", "framework": "baseline", "model": "logistic",
                                   "resources": {"num_cpus": trial_cpus},
                                   "dataset": {"source": "sklearn", "name": "iris"}},
                       "search_space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1.0}}})


def test_a_search_is_judged_by_one_trial_since_it_may_run_fewer_at_a_time(db):
    svc = TenantService(db)
    principal = svc.authenticate(svc.create_tenant(f"t-{uuid.uuid4().hex[:8]}")[1])
    with db.scheduler_scope() as s:
        capacity.record(s, Demand(cpus=2, gpus=0))
    jobs = JobService(db)
    job = jobs.submit(principal, search("eight-at-once", 8, 1))  # 8 CPUs in all: it starts with 2 trials
    assert job.state == "queued" and job.resources["unit"] == {"num_cpus": 1.0, "num_gpus": 0.0}
    with pytest.raises(ValidationError) as err:
        jobs.submit(principal, search("fat-trials", 2, 3))
    assert "each of its trials needs 3 CPUs" in err.value.message and "cluster has 2 CPUs" in err.value.message


def test_the_orchestrator_records_the_cluster_size_that_submit_judges_by(db):
    from mlhub.domain.queueing import DispatchPolicy, QueuePolicy
    from mlhub.jobs.dispatcher import Dispatcher
    from tests.support.fake_launcher import FakeLauncher

    svc = TenantService(db)
    principal = svc.authenticate(svc.create_tenant(f"t-{uuid.uuid4().hex[:8]}")[1])
    pol = DispatchPolicy(global_cap=2, queues={q: QueuePolicy(concurrency=2)
                                               for q in ("training", "evaluation", "batch_prediction", "hpo")})
    Dispatcher(db, FakeLauncher(cpus=2), pol, owner="test", idle_poll_s=0).tick()
    with db.tenant_scope(principal.tenant_id, readonly=True) as s:  # every tenant may read it
        row = capacity.known(s)
        assert row is not None and (row.cpus, row.gpus) == (2.0, 0.0)
    with pytest.raises(ValidationError, match="cluster has 2 CPUs"):
        JobService(db).submit(principal, torch_job("wide", 3))

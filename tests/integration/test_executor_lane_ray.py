"""The executor lane on a real Ray cluster and PostgreSQL: short jobs run in batches, one process each, and
still behave like jobs (own logs per attempt, cancellation stops the work, a killed process is retried)."""

from __future__ import annotations

import os
import re
import signal

import pytest
import ray
from sqlalchemy import func, select

from actors import orchestrator as orch
from mlhub.errors import JobFailed
from mlhub.store.models import JobEvent
from tests.integration.conftest import ORCHESTRATOR, pid_of, wait_until_gone

pytestmark = [pytest.mark.ray, pytest.mark.postgres]


def diag(name, **kw):
    return {"kind": "diagnostic", "name": name, **kw}


def lane_batches() -> int:
    return ray.get(orch.get(ORCHESTRATOR).status.remote(), timeout=30)["stats"].get("lane_batches", 0)


def warm_up(hub) -> None:
    """Short diagnostics, so the orchestrator knows the kind is short and sends the next ones to the lane."""
    for j in hub.submit_many([diag(f"warm{i}") for i in range(20)]):
        j.wait(timeout=120)


def succeeded_events(hub, job_id: int) -> int:
    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        return s.scalar(select(func.count()).select_from(JobEvent).where(
            JobEvent.job_id == job_id, JobEvent.type == "state", JobEvent.to_state == "succeeded"))


def test_short_jobs_run_in_batches_and_keep_their_own_logs(hub):
    warm_up(hub)
    before = lane_batches()
    jobs = hub.submit_many([diag(f"lane{i}", print_lines=2) for i in range(30)])
    assert all(j.wait(timeout=120).state == "succeeded" for j in jobs)
    assert lane_batches() > before
    ids = {j.id for j in jobs}
    pids = set()
    for j in jobs:
        logs = j.logs(attempt=1)
        assert f"job {j.id} attempt 1: diagnostic 'lane" in logs and f"job {j.id} attempt 1 succeeded" in logs
        assert logs.count("diagnostic line") == 2
        assert set(int(x) for x in re.findall(r"\[mlhub\] job (\d+) ", logs)) == {j.id}  # nobody else's lines
        pids.add(int(re.search(r"started \(pid (\d+)\)", logs).group(1)))
    assert ids and len(pids) < len(jobs)  # processes ran many jobs each


def test_cancelling_a_job_of_a_batch_stops_it_and_the_others_succeed_once(hub):
    warm_up(hub)
    jobs = hub.submit_many([diag(f"q{i}") for i in range(3)] + [diag("sleeper", sleep_s=600)]
                           + [diag(f"r{i}") for i in range(3)])
    sleeper = jobs[3]
    pid = pid_of(hub, sleeper.id)
    sleeper.cancel()
    with pytest.raises(JobFailed, match="cancelled"):
        sleeper.wait(timeout=60)
    others = [j for j in jobs if j is not sleeper]
    assert all(j.wait(timeout=120).state == "succeeded" for j in others)
    assert [succeeded_events(hub, j.id) for j in others] == [1] * len(others)
    wait_until_gone(pid, "process")


def test_a_killed_batch_process_is_retried_and_each_job_succeeds_once(hub):
    warm_up(hub)
    jobs = hub.submit_many([diag(f"a{i}", retry={"max_attempts": 2, "backoff_s": 0}) for i in range(3)]
                           + [diag("napper", sleep_s=3, retry={"max_attempts": 2, "backoff_s": 0})]
                           + [diag(f"b{i}", retry={"max_attempts": 2, "backoff_s": 0}) for i in range(3)])
    napper = jobs[3]
    os.kill(pid_of(hub, napper.id), signal.SIGKILL)
    finished = [j.wait(timeout=180) for j in jobs]
    assert all(f.state == "succeeded" for f in finished)
    assert napper.status().attempt == 2
    assert [succeeded_events(hub, j.id) for j in jobs] == [1] * len(jobs)
    assert "napper" in napper.logs(attempt=2) and "started (pid" in napper.logs(attempt=1)

"""Recording attempt outcomes: fenced state transitions, retries with backoff, model registration.

Called by the dispatcher with a batch of finished attempts; each tenant's outcomes are written in one
transaction of that tenant's scope (row-level security applies), so the orchestrator never needs more
than the job tables across tenants.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select, tuple_, update

from mlhub.audit import AuditLog, Principal
from mlhub.domain.enums import AuditOutcome, JobState
from mlhub.domain.lifecycle import FailureDecision, backoff_delay, decide_on_failure
from mlhub.domain.specs import RetryPolicy
from mlhub.errors import redact
from mlhub.jobs import store
from mlhub.jobs.store import ClaimedJob
from mlhub.registry.service import register_version
from mlhub.store.database import Database
from mlhub.store.models import AuditEvent, Job, JobEvent, JobLog
from mlhub.store.types import utcnow

log = logging.getLogger("mlhub.jobs")


@dataclass(frozen=True)
class Recorded:
    job_id: int
    attempt: int
    state: JobState | None  # None: the attempt was stale and its outcome rejected
    retry_in_s: float | None = None


def _policy(job: ClaimedJob) -> RetryPolicy:
    return RetryPolicy(**job.spec.get("retry", {}))


def record_outcomes(db: Database, outcomes: list[tuple[ClaimedJob, dict[str, Any]]], *,
                    rand: Callable[[], float] = random.random) -> list[Recorded]:
    by_tenant: dict[str, list[tuple[ClaimedJob, dict[str, Any]]]] = defaultdict(list)
    for job, outcome in outcomes:
        by_tenant[job.tenant_id].append((job, outcome))
    recorded: list[Recorded] = []
    for tenant_id, items in by_tenant.items():
        with db.tenant_scope(tenant_id) as s:
            _store_final_logs(s, tenant_id, items)
            successes = [(j, o) for j, o in items if o.get("status") == "succeeded"]
            recorded += _record_successes(s, tenant_id, successes)
            for job, outcome in items:
                if outcome.get("status") != "succeeded":
                    recorded.append(_record_one(s, job, outcome, rand))
    _alert_on_failures(db, outcomes, recorded)
    return recorded


def _alert_on_failures(db: Database, outcomes, recorded: list[Recorded]) -> None:
    """Evaluate job-failure alert rules of tenants whose jobs just failed; never breaks completion."""
    failed = {r.job_id for r in recorded if r.state in (JobState.FAILED, JobState.DEAD)}
    if not failed:
        return
    try:
        from mlhub.monitoring.alerts import job_failures_hook

        job_failures_hook(db, [job.tenant_id for job, _ in outcomes if job.id in failed])
    except Exception as exc:  # noqa: BLE001 - alerting is best effort; the outcomes are already recorded
        log.warning("job-failure alerts not evaluated: %s", exc)


def _store_final_logs(s, tenant_id: str, items: list[tuple[ClaimedJob, dict[str, Any]]]) -> None:
    rows = [{"tenant_id": tenant_id, "job_id": job.id, "attempt": job.attempt, "worker": "driver", "stream": stream,
             "seq": seq, "text": text_} for job, outcome in items for stream, seq, text_ in outcome.get("logs") or ()]
    if rows:
        s.execute(insert(JobLog), rows)


def _record_successes(s, tenant_id: str, items: list[tuple[ClaimedJob, dict[str, Any]]]) -> list[Recorded]:
    """All of a tenant's successful attempts in a few set-based statements (the hot path of the queue)."""
    if not items:
        return []
    now = utcnow()
    fenced = set(s.scalars(
        update(Job).where(tuple_(Job.id, Job.attempt).in_([(j.id, j.attempt) for j, _ in items]),
                          Job.state == JobState.RUNNING.value)
        .values(state=JobState.SUCCEEDED.value, finished_at=now, updated_at=now, error=None, lease_owner=None)
        .returning(Job.id)))
    fresh = [(j, o) for j, o in items if j.id in fenced]
    for job, _ in items:
        if job.id not in fenced:
            store.reject_stale(s, job.id, job.attempt, "completion")
    principal = Principal(tenant_id=tenant_id, actor="system:orchestrator", source="orchestrator")
    results = []
    for job, outcome in fresh:
        result = outcome.get("result") or {}
        summary = _summary(result)
        if result.get("kind") in ("training", "hpo"):  # an HPO job registers its best trial's model
            version = _register(s, job, result)
            summary.update(model_version=version.version, model_version_id=version.id)
        results.append({"b_id": job.id, "b_result": summary})
    if results:
        jobs = Job.__table__  # Core executemany: one pipelined statement per row, no ORM bookkeeping
        s.connection().execute(update(jobs).where(jobs.c.id == bindparam("b_id"))
                               .values(result=bindparam("b_result")), results)
        s.execute(insert(JobEvent), [
            {"tenant_id": tenant_id, "job_id": j.id, "attempt": j.attempt, "type": "state", "from_state": "running",
             "to_state": "succeeded", "data": {}, "created_at": now} for j, _ in fresh])
        s.execute(insert(AuditEvent), [
            {"tenant_id": tenant_id, "actor": principal.actor, "source": principal.source, "action": "job.succeeded",
             "target_type": "job", "target_id": str(j.id), "outcome": "success", "details": {"attempt": j.attempt},
             "created_at": now} for j, _ in fresh])
    return [Recorded(j.id, j.attempt, JobState.SUCCEEDED if j.id in fenced else None) for j, _ in items]


def _register(s, job: ClaimedJob, result: dict[str, Any]):
    return register_version(
        s, job.tenant_id, model_name=result["model_name"], framework=result["framework"],
        model_format=result["model_format"], artifact_id=result["artifact_id"],
        artifact_sha256=result["artifact_sha256"], created_by=f"job:{job.id}", job_id=job.id,
        job_attempt=job.attempt, run_id=result.get("run_id"), metrics=result.get("metrics"),
        input_schema=dict(result.get("input_schema") or {}, task=result.get("task"), classes=result.get("classes")),
        output_schema=_output_schema(result), reference_stats=result.get("reference_stats"),
        dataset_fingerprint=result.get("dataset_fingerprint"), code_version=result.get("code_version"),
        label=result.get("label"), task=result.get("task"))


def _output_schema(result: dict[str, Any]) -> dict[str, Any]:
    """What the model's predict returns: a class label out of ``classes``, or a number."""
    if result.get("task") == "classification":
        return {"prediction": "label", "classes": result.get("classes")}
    return {"prediction": "number"}


def _record_one(s, job: ClaimedJob, outcome: dict[str, Any], rand: Callable[[], float]) -> Recorded:
    status = outcome.get("status")
    principal = Principal(tenant_id=job.tenant_id, actor="system:orchestrator", source="orchestrator")
    if status == "cancelled":
        row = store.finish(s, job.id, job.attempt, JobState.CANCELLED, error=outcome.get("error"))
        if row is None:
            store.reject_stale(s, job.id, job.attempt, "cancellation")
            return Recorded(job.id, job.attempt, None)
        AuditLog.add(s, principal, "job.cancelled", "job", str(job.id), details={"attempt": job.attempt})
        return Recorded(job.id, job.attempt, JobState.CANCELLED)
    if status in ("interrupted", "preempted"):  # back in line, no attempt charged (restart, preemption)
        delay = float(outcome.get("retry_in_s") or 0.0)
        row = store.finish(s, job.id, job.attempt, JobState.QUEUED, error=outcome.get("error"),
                           not_before=store.retry_after(delay) if delay else None)
        if row is None:
            return Recorded(job.id, job.attempt, None)
        # the next claim takes a new attempt number (fencing); give the retry budget that attempt back
        s.execute(update(Job).where(Job.id == job.id).values(max_attempts=Job.max_attempts + 1))
        if status == "preempted":
            AuditLog.add(s, principal, "job.preempted", "job", str(job.id),
                         details={"attempt": job.attempt, "preempted_by": outcome.get("preempted_by")})
        return Recorded(job.id, job.attempt, JobState.QUEUED, delay or None)
    error = redact(str(outcome.get("error") or "unknown error"))
    policy = _policy(job)
    charged = s.scalar(select(Job.max_attempts).where(Job.id == job.id))
    if charged is not None:  # raised by interruptions and preemptions, which are not the job's fault
        policy = policy.model_copy(update={"max_attempts": int(charged)})
    decision = decide_on_failure(job.attempt, policy, permanent=bool(outcome.get("permanent")))
    if decision is FailureDecision.RETRY:
        delay = backoff_delay(job.attempt, policy, rand())
        row = store.finish(s, job.id, job.attempt, JobState.RETRYING, error=error,
                           not_before=store.retry_after(delay))
        state, retry_in = JobState.RETRYING, delay
    else:
        state = JobState.FAILED if decision is FailureDecision.FAIL else JobState.DEAD
        row = store.finish(s, job.id, job.attempt, state, error=error)
        retry_in = None
    if row is None:
        store.reject_stale(s, job.id, job.attempt, "failure report")
        return Recorded(job.id, job.attempt, None)
    if state is not JobState.RETRYING:
        AuditLog.add(s, principal, f"job.{state.value}", "job", str(job.id), outcome=AuditOutcome.FAILURE,
                     message=error, details={"attempt": job.attempt})
    return Recorded(job.id, job.attempt, state, retry_in)


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the jobs table keeps of a result: no bulky reference statistics (they live on the version)."""
    return {k: v for k, v in result.items() if k not in ("reference_stats", "input_schema")}

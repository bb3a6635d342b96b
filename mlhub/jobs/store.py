"""Job persistence: the database is the source of truth for every job.

Two sides:
- tenant side (:class:`~mlhub.store.database.Database.tenant_scope`): submit, read, cancel, logs;
- scheduler side (``scheduler_scope``, the orchestrator's cross-tenant role): pending work, claims with
  attempt fencing, completions, retries, schedules.

Fencing: a claim increments ``attempt`` and moves the job to ``running``; every later write for that
attempt says ``WHERE id = :id AND attempt = :attempt AND state = 'running'``. A completion from a stale
attempt therefore changes nothing and is reported back as rejected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.orm import Session

from mlhub.domain.enums import JobState
from mlhub.domain.queueing import Candidate, Demand
from mlhub.store.models import Job, JobEvent, JobLog, Schedule
from mlhub.store.types import utcnow

log = logging.getLogger("mlhub.jobs")

PENDING = (JobState.QUEUED.value, JobState.RETRYING.value)
NOTIFY_CHANNEL = "mlhub_jobs"


@dataclass(frozen=True)
class JobInfo:
    id: int
    tenant_id: str
    queue: str
    kind: str
    name: str
    priority: int
    state: str
    attempt: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    not_before: datetime | None
    error: str | None
    result: dict[str, Any] | None
    progress: dict[str, Any] | None
    submitted_by: str
    cancel_requested: bool
    resources: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, r: Job) -> JobInfo:
        return cls(r.id, r.tenant_id, r.queue, r.kind, r.name, r.priority, r.state, r.attempt, r.max_attempts,
                   r.created_at, r.started_at, r.finished_at, r.not_before, r.error, r.result, r.progress,
                   r.submitted_by, r.cancel_requested, r.resources)


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    tenant_id: str
    queue: str
    kind: str
    name: str
    attempt: int
    spec: dict[str, Any]
    resources: dict[str, Any]
    created_at: datetime


def demand_of(resources: dict[str, Any]) -> Demand:
    return Demand(cpus=float(resources.get("num_cpus", 1.0)), gpus=float(resources.get("num_gpus", 0.0)))


def unit_of(resources: dict[str, Any]) -> Demand | None:
    """An elastic job's step (one HPO trial: :func:`mlhub.domain.specs.job_demand`), else None."""
    unit = resources.get("unit") if resources.get("scales") else None
    return None if not isinstance(unit, dict) else demand_of({"num_cpus": 0.0, **unit})


def notify(session: Session) -> None:
    """Wake the orchestrator (PostgreSQL LISTEN/NOTIFY; delivered at commit). SQLite relies on polling."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:c, '')"), {"c": NOTIFY_CHANNEL})


# --- tenant side -----------------------------------------------------------------------------------------


def insert_jobs(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert many jobs; ids come back in input order (so FIFO follows submission order).

    PostgreSQL: the ids are drawn from the sequence in one query, then the rows go through the driver's
    pipelined ``executemany`` (far cheaper than a multi-row INSERT ... RETURNING with thousands of
    parameters). SQLite: one multi-row INSERT ... RETURNING.
    """
    if not rows:
        return []
    table = Job.__table__
    if session.get_bind().dialect.name == "postgresql":
        ids = list(session.execute(text("SELECT nextval(pg_get_serial_sequence('jobs', 'id')) "
                                        "FROM generate_series(1, :n)"), {"n": len(rows)}).scalars())
        session.execute(insert(table), [dict(r, id=i) for r, i in zip(rows, ids, strict=True)])
        return ids
    result = session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
    return [r[0] for r in result]


def add_event(session: Session, tenant_id: str, job_id: int, attempt: int, type_: str, *,
              from_state: str | None = None, to_state: str | None = None, message: str | None = None,
              data: dict[str, Any] | None = None) -> None:
    session.add(JobEvent(tenant_id=tenant_id, job_id=job_id, attempt=attempt, type=type_, from_state=from_state,
                         to_state=to_state, message=message, data=data or {}))


def append_logs(session: Session, tenant_id: str, job_id: int, attempt: int, worker: str,
                chunks: list[tuple[str, int, str]]) -> None:
    """Store ``(stream, seq, text)`` chunks of an attempt's output."""
    if chunks:
        session.execute(insert(JobLog), [
            {"tenant_id": tenant_id, "job_id": job_id, "attempt": attempt, "worker": worker, "stream": s,
             "seq": seq, "text": t} for s, seq, t in chunks])


def read_logs(session: Session, tenant_id: str, job_id: int, attempt: int | None, after_id: int = 0
              ) -> list[JobLog]:
    q = select(JobLog).where(JobLog.tenant_id == tenant_id, JobLog.job_id == job_id, JobLog.id > after_id)
    if attempt is not None:
        q = q.where(JobLog.attempt == attempt)
    return list(session.scalars(q.order_by(JobLog.id)))


# --- scheduler side ------------------------------------------------------------------------------------


def pending_candidates(session: Session, *, after_id: int = 0, now: datetime | None = None,
                       limit: int = 50_000) -> list[tuple[Candidate, datetime | None]]:
    """Queued or retrying jobs (with their not-before), newest-first never: ordered by id."""
    q = (select(Job.id, Job.tenant_id, Job.queue, Job.priority, Job.resources, Job.not_before)
         .where(Job.state.in_(PENDING), Job.id > after_id, Job.cancel_requested.is_(False))
         .order_by(Job.id).limit(limit))
    return [(Candidate(id=r.id, tenant_id=r.tenant_id, queue=r.queue, priority=r.priority,
                       demand=demand_of(r.resources), unit=unit_of(r.resources)), r.not_before)
            for r in session.execute(q)]


def running_jobs(session: Session) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.state == JobState.RUNNING.value)))


def claim(session: Session, job_ids: list[int], owner: str) -> list[ClaimedJob]:
    """Move pending jobs to running with a new attempt number; jobs no longer pending are skipped."""
    if not job_ids:
        return []
    now = utcnow()
    rows = session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.state.in_(PENDING), Job.cancel_requested.is_(False))
        .values(state=JobState.RUNNING.value, attempt=Job.attempt + 1, lease_owner=owner, started_at=now,
                not_before=None, updated_at=now, progress=None)
        .returning(Job.id, Job.tenant_id, Job.queue, Job.kind, Job.name, Job.attempt, Job.spec, Job.resources,
                   Job.created_at)
    ).all()
    claimed = [ClaimedJob(r.id, r.tenant_id, r.queue, r.kind, r.name, r.attempt, r.spec, r.resources,
                          r.created_at) for r in rows]
    if claimed:
        session.execute(insert(JobEvent), [
            {"tenant_id": c.tenant_id, "job_id": c.id, "attempt": c.attempt, "type": "state",
             "from_state": "queued", "to_state": "running", "data": {}, "created_at": now} for c in claimed])
    rank = {job_id: i for i, job_id in enumerate(job_ids)}
    claimed.sort(key=lambda c: rank[c.id])  # launch in the order the policy chose
    return claimed


def finish(session: Session, job_id: int, attempt: int, state: JobState, *, result: dict | None = None,
           error: str | None = None, not_before: datetime | None = None) -> Job | None:
    """Fenced transition out of ``running``. Returns the job, or None if this attempt is stale."""
    now = utcnow()
    values: dict[str, Any] = {"state": state.value, "updated_at": now, "lease_owner": None}
    if state.is_terminal:
        values["finished_at"] = now
    if result is not None:
        values["result"] = result
    if state is JobState.SUCCEEDED:
        values["error"] = None  # earlier attempts' errors stay in the job's events
    if error is not None:
        values["error"] = error[:20_000]
    if state in (JobState.RETRYING, JobState.QUEUED):
        values["not_before"] = not_before
    row = session.execute(
        update(Job).where(Job.id == job_id, Job.attempt == attempt, Job.state == JobState.RUNNING.value)
        .values(**values).returning(Job.tenant_id)
    ).first()
    if row is None:
        return None
    add_event(session, row.tenant_id, job_id, attempt, "state", from_state="running", to_state=state.value,
              message=error[:2000] if error else None)
    return session.get(Job, job_id)


def reject_stale(session: Session, job_id: int, attempt: int, what: str) -> None:
    job = session.get(Job, job_id)
    log.warning("rejected %s of job %s attempt %s: the lease moved on (now attempt %s, %s)", what, job_id,
                attempt, job.attempt if job else "?", job.state if job else "gone")
    if job is not None:
        add_event(session, job.tenant_id, job_id, attempt, "warning",
                  message=f"stale {what} rejected: job is at attempt {job.attempt} ({job.state})")


def set_waiting(session: Session, notes: dict[int, str]) -> None:
    """Why each of these queued jobs waits (:mod:`mlhub.jobs.waiting`), as ``progress = {"waiting": note}``;
    a job that has meanwhile left the queue is left alone."""
    for job_id, note in notes.items():
        session.execute(update(Job).where(Job.id == job_id, Job.state.in_(PENDING))
                        .values(progress={"waiting": note}))


def cancel_requested_running(session: Session) -> list[tuple[int, int]]:
    q = select(Job.id, Job.attempt).where(Job.state == JobState.RUNNING.value, Job.cancel_requested.is_(True))
    return [(r.id, r.attempt) for r in session.execute(q)]


def queue_depths(session: Session) -> dict[tuple[str, str], int]:
    q = select(Job.queue, Job.state, func.count()).where(
        Job.state.in_((*PENDING, JobState.RUNNING.value))).group_by(Job.queue, Job.state)
    return {(qn, st): n for qn, st, n in session.execute(q)}


def due_schedules(session: Session, now: datetime) -> list[Schedule]:
    return list(session.scalars(select(Schedule).where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
                                .with_for_update(skip_locked=True)))


def enqueue_occurrence(session: Session, sched: Schedule, occurrence: datetime, next_run_at: datetime,
                       row: dict[str, Any]) -> int | None:
    """Insert the job of one schedule occurrence exactly once (unique on schedule and occurrence)."""
    exists = session.scalar(select(Job.id).where(Job.schedule_id == sched.id, Job.scheduled_for == occurrence))
    job_id = None
    if exists is None:
        job_id = insert_jobs(session, [dict(row, schedule_id=sched.id, scheduled_for=occurrence)])[0]
    sched.next_run_at = next_run_at
    sched.last_enqueued_at = utcnow()
    return job_id


def retry_after(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)

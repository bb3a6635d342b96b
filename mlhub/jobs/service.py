"""What a tenant does with jobs: submit (one or many), read, cancel, logs, clean.

Everything here talks to the database only, so it works (and answers fast) while Ray is down; the
orchestrator picks new jobs up through LISTEN/NOTIFY on PostgreSQL or by polling on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, select, update

from mlhub.audit import AuditLog, Principal
from mlhub.domain.enums import JobState
from mlhub.domain.schedule import next_occurrence
from mlhub.domain.specs import HpoSpec, TrainingSpec, job_demand, spec_to_document
from mlhub.errors import ConflictError, NotFoundError, QuotaExceeded, ValidationError
from mlhub.jobs import capacity, store
from mlhub.jobs.store import JobInfo
from mlhub.store.database import Database
from mlhub.store.models import Job, JobEvent, ModelVersion, Schedule, Tenant
from mlhub.store.types import utcnow

MAX_BATCH = 50_000


@dataclass(frozen=True)
class ScheduleInfo:
    id: int
    name: str
    queue: str
    cron: str | None
    interval_s: int | None
    next_run_at: datetime


def job_row(principal: Principal, spec: Any, queue_resources: dict[str, dict[str, float]] | None = None
            ) -> dict[str, Any]:
    """The jobs-table row of a validated spec; a spec that sets no resources gets its queue's shape."""
    doc = spec_to_document(spec)
    shape = (queue_resources or {}).get(spec.queue.value)
    if shape and "resources" not in spec.model_fields_set:
        doc["resources"] = {**doc.get("resources", {}), **shape}
    resources = job_demand(spec) or doc.get("resources", {})
    return {
        "tenant_id": principal.tenant_id, "queue": spec.queue.value, "kind": spec.kind, "name": spec.name,
        "priority": spec.priority_value, "state": JobState.QUEUED.value, "attempt": 0,
        "max_attempts": spec.retry.max_attempts, "spec": doc, "resources": resources,
        "submitted_by": principal.actor, "cancel_requested": False,
        "created_at": utcnow(), "updated_at": utcnow(),
    }


def validate_for_submit(spec: Any) -> None:
    """Checks beyond the spec's own shape that need library knowledge (estimators, hyperparameters)."""
    if isinstance(spec, HpoSpec):  # its trainer too, with the search space merged in: every problem at once
        from mlhub.hpo.validation import validate_hpo_spec

        return validate_hpo_spec(spec)
    trainer = spec
    if isinstance(trainer, TrainingSpec):
        from mlhub.training.adapters import validate_training_spec

        validate_training_spec(trainer)


class JobService:
    def __init__(self, db: Database, audit: AuditLog | None = None, *,
                 queue_resources: dict[str, dict[str, float]] | None = None) -> None:
        self.db = db
        self.audit = audit or AuditLog(db)
        self.queue_resources = queue_resources or {}

    # --- submit -------------------------------------------------------------------------------------

    def submit(self, principal: Principal, spec: Any, *, idempotency_key: str | None = None
               ) -> JobInfo | ScheduleInfo:
        """Queue one job (or, for a spec with a schedule, create the recurring schedule)."""
        validate_for_submit(spec)
        if spec.schedule is not None:
            return self._create_schedule(principal, spec)
        row = job_row(principal, spec, self.queue_resources)
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 128:
                raise ValidationError("idempotency key must be 1-128 characters")
            row["idempotency_key"] = idempotency_key
        with self.audit.operation(principal, "job.submit", "job", details={"queue": row["queue"]}) as op:
            if idempotency_key is not None:
                prior = op.session.scalar(select(Job).where(
                    Job.tenant_id == principal.tenant_id, Job.idempotency_key == idempotency_key))
                if prior is not None:
                    op.target_id = str(prior.id)
                    op.details["deduplicated"] = True
                    return JobInfo.from_row(prior)
            self._check_quota(op.session, principal, 1)
            capacity.check(op.session, [row])
            row["created_at"] = row["updated_at"] = utcnow()  # queued from now: the checks above came first
            job_id = store.insert_jobs(op.session, [row])[0]
            store.notify(op.session)
            op.target_id = str(job_id)
            job = op.session.get(Job, job_id)
        return JobInfo.from_row(job)

    def submit_many(self, principal: Principal, specs: Sequence[Any]) -> list[int]:
        """Queue many jobs in one transaction (one audit event for the batch). All or nothing."""
        if not 1 <= len(specs) <= MAX_BATCH:
            raise ValidationError(f"a batch holds 1 to {MAX_BATCH} jobs, got {len(specs)}")
        rows = []
        for spec in specs:
            if spec.schedule is not None:
                raise ValidationError("scheduled specs are submitted one at a time")
            validate_for_submit(spec)
            rows.append(job_row(principal, spec, self.queue_resources))
        with self.audit.operation(principal, "job.submit_batch", "job", details={"count": len(rows)}) as op:
            self._check_quota(op.session, principal, len(rows))
            capacity.check(op.session, rows)
            now = utcnow()
            for row in rows:
                row["created_at"] = row["updated_at"] = now
            ids = store.insert_jobs(op.session, rows)
            store.notify(op.session)
            op.details.update(first_id=ids[0], last_id=ids[-1])
        return ids

    def _check_quota(self, session, principal: Principal, adding: int) -> None:
        cap = session.scalar(select(Tenant.max_queued_jobs).where(Tenant.id == principal.tenant_id))
        if cap is None:
            return
        queued = session.scalar(select(func.count()).select_from(Job).where(
            Job.tenant_id == principal.tenant_id, Job.state.in_(store.PENDING)))
        if queued + adding > cap:
            raise QuotaExceeded(f"tenant queue quota: {queued} queued + {adding} new > {cap} allowed",
                                details={"queued": queued, "limit": cap})

    def _create_schedule(self, principal: Principal, spec: Any) -> ScheduleInfo:
        doc = spec_to_document(spec)
        doc.pop("schedule")
        first = next_occurrence(spec.schedule, utcnow())
        with self.audit.operation(principal, "schedule.create", "schedule") as op:
            sched = Schedule(tenant_id=principal.tenant_id, name=spec.name, queue=spec.queue.value, spec=doc,
                             cron=spec.schedule.cron, interval_s=spec.schedule.interval_s, enabled=True,
                             next_run_at=first)
            op.session.add(sched)
            op.session.flush()
            op.target_id = str(sched.id)
        return ScheduleInfo(sched.id, sched.name, sched.queue, sched.cron, sched.interval_s, sched.next_run_at)

    # --- read ---------------------------------------------------------------------------------------

    def get(self, principal: Principal, job_id: int) -> JobInfo:
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            return JobInfo.from_row(self._job(s, principal, job_id))

    def list(self, principal: Principal, *, state: str | None = None, queue: str | None = None,
             name: str | None = None, limit: int = 50, before_id: int | None = None,
             offset: int = 0) -> list[JobInfo]:
        """This tenant's jobs, newest first: a page of ``limit`` after skipping ``offset`` (the console's
        numbered pages) or, cheaper for deep paging, those older than ``before_id``."""
        if not 1 <= limit <= 1000:
            raise ValidationError("limit must be between 1 and 1000")
        if offset < 0:
            raise ValidationError("offset must not be negative")
        q = select(Job).where(Job.tenant_id == principal.tenant_id)
        if state:
            if state not in {s.value for s in JobState}:
                raise ValidationError(f"unknown state {state!r}: one of {', '.join(s.value for s in JobState)}")
            q = q.where(Job.state == state)
        if queue:
            q = q.where(Job.queue == queue)
        if name:
            q = q.where(Job.name == name)
        if before_id:
            q = q.where(Job.id < before_id)
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            return [JobInfo.from_row(r) for r in s.scalars(q.order_by(Job.id.desc()).limit(limit).offset(offset))]

    def events(self, principal: Principal, job_id: int, *, after_id: int = 0) -> list[JobEvent]:
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            self._job(s, principal, job_id)
            return list(s.scalars(select(JobEvent).where(
                JobEvent.tenant_id == principal.tenant_id, JobEvent.job_id == job_id, JobEvent.id > after_id)
                .order_by(JobEvent.id)))

    def logs(self, principal: Principal, job_id: int, *, attempt: int | None = None, after_id: int = 0):
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            job = self._job(s, principal, job_id)
            if attempt is not None and not 1 <= attempt <= max(job.attempt, 1):
                raise ValidationError(f"job {job_id} has attempts 1..{job.attempt}")
            return store.read_logs(s, principal.tenant_id, job_id, attempt, after_id)

    def queue_stats(self, principal: Principal) -> dict[str, dict[str, int]]:
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            rows = s.execute(select(Job.queue, Job.state, func.count()).where(
                Job.tenant_id == principal.tenant_id).group_by(Job.queue, Job.state)).all()
        out: dict[str, dict[str, int]] = {}
        for queue, state, n in rows:
            out.setdefault(queue, {})[state] = n
        return out

    # --- change -------------------------------------------------------------------------------------

    def cancel(self, principal: Principal, job_id: int) -> JobInfo:
        """Cancel a queued job at once; ask the orchestrator to stop a running one."""
        with self.audit.operation(principal, "job.cancel", "job", str(job_id)) as op:
            job = self._job(op.session, principal, job_id)
            if JobState(job.state).is_terminal:
                raise ConflictError(f"job {job_id} is already {job.state}")
            if job.state in store.PENDING:
                op.session.execute(update(Job).where(Job.id == job.id).values(
                    state=JobState.CANCELLED.value, cancel_requested=True, finished_at=utcnow()))
                store.add_event(op.session, principal.tenant_id, job.id, job.attempt, "state",
                                from_state=job.state, to_state="cancelled", message=f"cancelled by {principal.actor}")
            else:
                op.session.execute(update(Job).where(Job.id == job.id).values(cancel_requested=True))
                store.add_event(op.session, principal.tenant_id, job.id, job.attempt, "warning",
                                message=f"cancel requested by {principal.actor}")
            store.notify(op.session)
            op.session.refresh(job)
        return JobInfo.from_row(job)

    def clean(self, principal: Principal, *, older_than: datetime, dry_run: bool = False) -> list[int]:
        """Delete this tenant's finished jobs older than ``older_than``, except those a model version's
        lineage points to. Returns the ids (that would be) deleted."""
        terminal = [s.value for s in JobState if s.is_terminal]
        q = select(Job.id).where(
            Job.tenant_id == principal.tenant_id, Job.state.in_(terminal), Job.finished_at < older_than,
            ~exists().where(ModelVersion.job_id == Job.id))
        if dry_run:
            with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
                return list(s.scalars(q))
        with self.audit.operation(principal, "job.clean", "job", details={"older_than": older_than.isoformat()}) as op:
            ids = list(op.session.scalars(q))
            if ids:
                op.session.execute(delete(Job).where(Job.tenant_id == principal.tenant_id, Job.id.in_(ids)))
            op.details["deleted"] = len(ids)
        return ids

    @staticmethod
    def _job(session, principal: Principal, job_id: int) -> Job:
        job = session.scalar(select(Job).where(Job.tenant_id == principal.tenant_id, Job.id == job_id))
        if job is None:
            raise NotFoundError(f"job {job_id} not found")
        return job

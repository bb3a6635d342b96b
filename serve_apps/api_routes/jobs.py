"""Jobs: submit, list, show, cancel, retry, logs, and an HPO job's trials."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query
from sqlalchemy import select

from mlhub.audit import Principal
from mlhub.domain.enums import JobState, QueueName
from mlhub.domain.specs import parse_spec
from mlhub.errors import ConflictError, ValidationError
from mlhub.jobs import capacity, store
from mlhub.jobs.service import JobService, ScheduleInfo, job_row, validate_for_submit
from mlhub.jobs.store import JobInfo
from mlhub.store.models import Job
from mlhub.store.types import utcnow
from serve_apps.api_routes.common import MAX_ID, Caller, Ctx, Limit, Text, check_document, plain

router = APIRouter(tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="A job id.")]
IdempotencyKey = Annotated[Text | None, Header(alias="Idempotency-Key", min_length=1, max_length=128,
                                                description="Repeat a submit safely: the same key returns the "
                                                            "job it created the first time.")]
#: states a retry starts again from: the job ended without succeeding
RETRYABLE = frozenset({JobState.FAILED.value, JobState.DEAD.value, JobState.CANCELLED.value})


def _parse(doc: dict[str, Any]):
    """A submitted spec document -> a validated spec. Custom code cannot travel over this route: it is packed
    from a working directory by the CLI or the Python API (`mlhub train --working-dir`)."""
    from mlhub.jobs.code import modules_needed

    check_document(doc, "spec")
    spec = parse_spec(doc)
    trainer = getattr(spec, "trainer", None) or spec
    if modules_needed(spec) and getattr(trainer, "code", None) is None:
        raise ValidationError("this spec imports your own code, which the REST API cannot pack: submit it with "
                              "`mlhub train --working-dir DIR` (or hub.submit(..., working_dir=...))")
    return spec


def retry_job(jobs: JobService, principal: Principal, job_id: int, *, idempotency_key: str | None = None
              ) -> JobInfo:
    """Queue a fresh job with the spec of a job that ended failed, dead or cancelled (a new id, attempts from 1).
    The old job stays as it was; the new one's audit event says which job it retries."""
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 128:
        raise ValidationError("idempotency key must be 1-128 characters")
    with jobs.audit.operation(principal, "job.retry", "job", details={"retry_of": job_id}) as op:
        s = op.session
        old = jobs._job(s, principal, job_id)
        if idempotency_key is not None:
            prior = s.scalar(select(Job).where(Job.tenant_id == principal.tenant_id,
                                               Job.idempotency_key == idempotency_key))
            if prior is not None:
                op.target_id = str(prior.id)
                op.details["deduplicated"] = True
                return JobInfo.from_row(prior)
        if old.state not in RETRYABLE:
            raise ConflictError(f"job {job_id} is {old.state}: only failed, dead or cancelled jobs are retried",
                                details={"state": old.state})
        spec = parse_spec(dict(old.spec))
        validate_for_submit(spec)
        row = job_row(principal, spec, jobs.queue_resources)
        row["parent_job_id"] = old.id
        if idempotency_key is not None:
            row["idempotency_key"] = idempotency_key
        jobs._check_quota(s, principal, 1)
        capacity.check(s, [row])
        row["created_at"] = row["updated_at"] = utcnow()
        new_id = store.insert_jobs(s, [row])[0]
        store.notify(s)
        op.target_id = str(new_id)
        job = s.get(Job, new_id)
        info = JobInfo.from_row(job)
    return info


@router.post("/jobs", status_code=201, summary="Submit a job spec (training, evaluation, batch_prediction, hpo)")
def submit(ctx: Ctx, caller: Caller, spec: Annotated[dict[str, Any], Body(description="A job spec, as in "
                                                                                    "`mlhub train -f spec.yaml`.")],
           idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    out = ctx.jobs.submit(caller, _parse(spec), idempotency_key=idempotency_key)
    if isinstance(out, ScheduleInfo):
        return {"schedule": plain(out)}
    return plain(out)


@router.get("/jobs", summary="Your jobs, newest first")
def list_jobs(ctx: Ctx, caller: Caller,
              state: Annotated[JobState | None, Query()] = None,
              queue: Annotated[QueueName | None, Query()] = None,
              name: Annotated[Text | None, Query(max_length=256)] = None,
              before_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Page: jobs older than this id.")]
              = None,
              limit: int = Limit()) -> dict[str, Any]:
    jobs = ctx.jobs.list(caller, state=state.value if state else None, queue=queue.value if queue else None,
                         name=name, limit=limit, before_id=before_id)
    return {"jobs": plain(jobs), "next_before_id": jobs[-1].id if len(jobs) == limit else None}


@router.get("/jobs/{job_id}", summary="One job")
def get_job(ctx: Ctx, caller: Caller, job_id: JobId) -> dict[str, Any]:
    return plain(ctx.jobs.get(caller, job_id))


@router.post("/jobs/{job_id}/cancel", summary="Cancel a queued job, or ask a running one to stop")
def cancel_job(ctx: Ctx, caller: Caller, job_id: JobId) -> dict[str, Any]:
    return plain(ctx.jobs.cancel(caller, job_id))


@router.post("/jobs/{job_id}/retry", status_code=201,
             summary="Queue a new job with the spec of a failed, dead or cancelled one")
def retry(ctx: Ctx, caller: Caller, job_id: JobId, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    return {**plain(retry_job(ctx.jobs, caller, job_id, idempotency_key=idempotency_key)), "retry_of": job_id}


@router.get("/jobs/{job_id}/logs", summary="Captured output of a job (all attempts, or one)")
def job_logs(ctx: Ctx, caller: Caller, job_id: JobId,
             attempt: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
             after_id: Annotated[int, Query(ge=0, le=MAX_ID, description="Only chunks after this one (follow).")]
             = 0) -> dict[str, Any]:
    chunks = ctx.jobs.logs(caller, job_id, attempt=attempt, after_id=after_id)
    return {"job_id": job_id, "text": "".join(c.text for c in chunks),
            "chunks": [{"id": c.id, "attempt": c.attempt, "worker": c.worker, "stream": c.stream, "seq": c.seq,
                        "text": c.text} for c in chunks],
            "next_after_id": chunks[-1].id if chunks else after_id}


@router.get("/jobs/{job_id}/trials", tags=["hpo"], summary="The trials of an HPO job (params, metrics, status)")
def trials(ctx: Ctx, caller: Caller, job_id: JobId) -> dict[str, Any]:
    from mlhub.hpo.trials import list_trials

    return {"job_id": job_id, "trials": plain(list_trials(ctx.backends.db, caller.tenant_id, job_id))}

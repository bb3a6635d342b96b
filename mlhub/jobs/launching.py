"""What the dispatcher drives and keeps: the launcher and metrics it talks to (Ray behind them in production,
fakes in tests), and its record of each running attempt and batch."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from mlhub.domain.queueing import Candidate, Demand, units_in
from mlhub.jobs import store
from mlhub.jobs.store import ClaimedJob
from mlhub.store.models import Job


class Launcher(Protocol):
    def launch(self, job: ClaimedJob) -> Any: ...
    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, Any]]: ...
    def cancel(self, handle: Any) -> None: ...
    def free_resources(self) -> Demand | None: ...
    def total_resources(self) -> Demand | None: ...


class LaneLauncher(Launcher, Protocol):
    """A launcher with the executor lane (``supports_lane = True``): ``run_batch`` starts one process for
    ``jobs`` (all of ``jobs[0]``'s resource shape); ``wait`` answers its handle with the list of their
    outcomes, or with one failure document when the process died; ``cancel`` kills it."""

    supports_lane: bool

    def run_batch(self, jobs: list[ClaimedJob]) -> Any: ...


class Metrics(Protocol):
    def queue_depth(self, queue: str, n: int) -> None: ...
    def running(self, queue: str, n: int) -> None: ...
    def wait_time(self, queue: str, seconds: float) -> None: ...
    def duration(self, queue: str, state: str, seconds: float) -> None: ...


class NullMetrics:
    def queue_depth(self, queue: str, n: int) -> None: ...
    def running(self, queue: str, n: int) -> None: ...
    def wait_time(self, queue: str, seconds: float) -> None: ...
    def duration(self, queue: str, state: str, seconds: float) -> None: ...


@dataclass
class Batch:
    jobs: list[ClaimedJob]
    handle: Any  # the launcher's
    started: float
    demand: Demand  # the shape it holds while it runs
    doomed: bool = False  # its process is being killed (a job of the batch is stopped)


@dataclass
class Attempt:
    job: ClaimedJob
    handle: Any  # the launcher's handle, or the Batch the job is part of
    started: float
    deadline: float | None
    stopping: str | None = None  # "cancelled" | "timed out" | "preempted"
    preempted_by: int | None = None


def claimed_from_row(row: Job) -> ClaimedJob:
    return ClaimedJob(row.id, row.tenant_id, row.queue, row.kind, row.name, row.attempt, row.spec, row.resources,
                      row.created_at)


def candidate_of(job: ClaimedJob) -> Candidate:
    """The job as the policy sees it; an attempt started smaller (:func:`scaled_down`) asks for all it
    asked for again."""
    unit, asked = store.unit_of(job.resources), job.resources.get("asked")
    demand = unit.times(asked) if unit is not None and isinstance(asked, int) else store.demand_of(job.resources)
    return Candidate(id=job.id, tenant_id=job.tenant_id, queue=job.queue, priority=priority_of(job),
                     demand=demand, unit=unit)


def scaled_down(job: ClaimedJob, granted: Demand) -> ClaimedJob:
    """The attempt of an elastic job started with ``granted`` (whole units, less than its demand): the spec
    field its demand scales by (``max_concurrent_trials``) set to the number of units, its resources to match.
    The job's row keeps what was asked for; ``asked`` and ``granted`` in the attempt's resources say both."""
    unit, field_name = store.unit_of(job.resources), job.resources.get("scales")
    if unit is None or not isinstance(field_name, str):
        return job
    n, asked = max(1, units_in(unit, granted)), job.spec.get(field_name)
    res = {**job.resources, "num_cpus": unit.cpus * n, "num_gpus": unit.gpus * n, "asked": asked, "granted": n}
    if isinstance(asked, int) and asked > 0:  # per-unit amounts scale the same way
        if res.get("memory_mb"):
            res["memory_mb"] = int(res["memory_mb"]) * n // asked
        if res.get("custom"):
            res["custom"] = {k: float(v) * n / asked for k, v in res["custom"].items()}
    return replace(job, spec={**job.spec, field_name: n}, resources=res)


def priority_of(job: ClaimedJob) -> int:
    from mlhub.domain.specs import PRIORITY_LEVELS

    p = job.spec.get("priority", 0)
    return PRIORITY_LEVELS.get(p, 0) if isinstance(p, str) else int(p)


__all__ = ["Attempt", "Batch", "LaneLauncher", "Launcher", "Metrics", "NullMetrics", "candidate_of", "claimed_from_row",
           "priority_of", "scaled_down"]

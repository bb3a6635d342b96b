"""Launching job attempts as Ray tasks, and exporting the orchestrator's metrics through Ray.

Each attempt is one Ray task with the job's resources, or, for short single-process jobs, one of a batch
that one task runs (:func:`run_jobs`, the executor lane). Ray's own task retries are off (``max_retries=0``): mlhub's
attempts, with their fencing and backoff, are the only retry policy. Cancellation force-kills the worker
process (the attempt's, or the batch's), so the work really stops.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

import ray
from ray.exceptions import RayError, TaskCancelledError, WorkerCrashedError

from mlhub.domain.queueing import Demand
from mlhub.jobs.store import ClaimedJob

log = logging.getLogger("mlhub.orchestrator")


@ray.remote(max_retries=0)
def run_attempt(settings_doc: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    from mlhub.jobs.runner import execute

    return execute(settings_doc, job)


@ray.remote(max_retries=0)
def run_jobs(settings_doc: dict[str, Any], jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The executor lane (:mod:`mlhub.jobs.executor`): a batch of short jobs, one after another, in one worker
    process that holds the jobs' resource shape once. Ray reuses its worker processes, so the per-process
    output capture is set up once per worker, not per job."""
    from mlhub.jobs.executor import run_batch

    return run_batch(settings_doc, jobs)


def _options(res: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {"num_cpus": float(res.get("num_cpus", 1.0)), "num_gpus": float(res.get("num_gpus", 0.0))}
    if res.get("memory_mb"):
        options["memory"] = int(res["memory_mb"]) * 1024 * 1024
    if res.get("custom"):
        options["resources"] = dict(res["custom"])
    return options


def _doc(job: ClaimedJob) -> dict[str, Any]:
    # shallow: dataclasses.asdict deep-copies every spec, a measurable cost at a thousand jobs a second
    doc = {f.name: getattr(job, f.name) for f in fields(job)}
    doc["created_at"] = job.created_at.isoformat()
    return doc


class RayLauncher:
    supports_lane = True  # short jobs may run in batches, one task per batch (see mlhub.jobs.dispatcher)

    def __init__(self, settings_doc: dict[str, Any]) -> None:
        from mlhub.config import Settings

        self.settings_doc = settings_doc
        self._storage = Settings(**settings_doc).ray_storage_path
        self._settings_ref = ray.put(settings_doc)

    def launch(self, job: ClaimedJob) -> ray.ObjectRef:
        res = job.resources or {}
        options: dict[str, Any] = {"name": f"mlhub-job-{job.id}-attempt-{job.attempt}"}
        if res.get("driver"):
            # the job's Train workers or Tune trials claim its resources; the driver task itself takes none
            options.update(num_cpus=0, num_gpus=0)
        else:
            options.update(_options(res))
        return run_attempt.options(**options).remote(self._settings_ref, _doc(job))

    # --- the executor lane: short single-process jobs in batches (see mlhub.jobs.executor) ---------------

    def run_batch(self, jobs: list[ClaimedJob]) -> ray.ObjectRef:
        """One task for ``jobs`` (all of ``jobs[0]``'s shape). Through :meth:`wait` its result is the list of
        their outcomes, or one failure document if its process died; :meth:`cancel` kills it."""
        options = _options(jobs[0].resources or {})
        options["name"] = f"mlhub-batch-{jobs[0].id}-{len(jobs)}"
        return run_jobs.options(**options).remote(self._settings_ref, [_doc(j) for j in jobs])

    def wait(self, handles: list[ray.ObjectRef], timeout: float) -> list[tuple[ray.ObjectRef, dict[str, Any]]]:
        if not handles:
            return []
        # return as soon as one attempt is done, then take whatever else is already done
        ready, rest = ray.wait(handles, num_returns=1, timeout=timeout, fetch_local=True)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0, fetch_local=True)
            ready += more
        out = []
        for ref in ready:
            try:
                out.append((ref, ray.get(ref)))
            except TaskCancelledError:
                out.append((ref, {"status": "failed", "permanent": False, "error": "task cancelled"}))
            except WorkerCrashedError as exc:
                out.append((ref, {"status": "failed", "permanent": False,
                                  "error": f"the worker process died: {type(exc).__name__}"}))
            except RayError as exc:
                out.append((ref, {"status": "failed", "permanent": False, "error": f"{type(exc).__name__}: {exc}"}))
        return out

    def cancel(self, handle: ray.ObjectRef) -> None:
        try:
            ray.cancel(handle, force=True)
        except (RayError, ValueError, TypeError) as exc:
            log.warning("could not cancel %s: %s", handle, exc)

    def release(self, job: ClaimedJob) -> None:
        """After an attempt of a job that fans out (Train workers, Tune trials) ended, however it ended:
        remove the placement groups it left reserved (see :mod:`mlhub.jobs.placement`)."""
        if not (job.resources or {}).get("driver"):
            return
        from mlhub.jobs.placement import release_placement_groups

        storage = self._storage
        try:
            freed = release_placement_groups(storage, job.tenant_id, job.id)  # Train workers' and Tune trials'
        except Exception as exc:  # noqa: BLE001 - never let cleanup stop the dispatch loop
            log.warning("releasing the placement groups of job %s failed: %s", job.id, exc)
            return
        if freed:
            log.info("released %d placement group(s) left by job %s attempt %s", freed, job.id, job.attempt)

    def free_resources(self) -> Demand | None:
        avail = ray.available_resources()
        return Demand(cpus=float(avail.get("CPU", 0.0)), gpus=float(avail.get("GPU", 0.0)))

    def total_resources(self) -> Demand | None:
        total = ray.cluster_resources()
        return Demand(cpus=float(total.get("CPU", 0.0)), gpus=float(total.get("GPU", 0.0)))


class RayMetrics:
    """Queue depth, running jobs, wait time and job duration, on the Ray dashboard and its Prometheus export."""

    def __init__(self) -> None:
        from ray.util import metrics

        self._depth = metrics.Gauge("mlhub_queue_depth", "Jobs waiting per queue", tag_keys=("queue",))
        self._running = metrics.Gauge("mlhub_jobs_running", "Jobs running per queue", tag_keys=("queue",))
        self._wait = metrics.Histogram("mlhub_job_wait_seconds", "Time from submit to start",
                                       boundaries=[0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600, 3600],
                                       tag_keys=("queue",))
        self._duration = metrics.Histogram("mlhub_job_duration_seconds", "Attempt duration by final state",
                                           boundaries=[0.1, 1, 10, 60, 300, 1800, 3600, 14400],
                                           tag_keys=("queue", "state"))

    def queue_depth(self, queue: str, n: int) -> None:
        self._depth.set(n, tags={"queue": queue})

    def running(self, queue: str, n: int) -> None:
        self._running.set(n, tags={"queue": queue})

    def wait_time(self, queue: str, seconds: float) -> None:
        self._wait.observe(seconds, tags={"queue": queue})

    def duration(self, queue: str, state: str, seconds: float) -> None:
        self._duration.observe(seconds, tags={"queue": queue, "state": state})

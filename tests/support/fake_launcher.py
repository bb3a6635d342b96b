"""A launcher that runs nothing, for testing the dispatcher's logic without Ray.

Each launched attempt finishes when the test says so (``finish``) or at once with ``auto`` outcomes;
cancellation is recorded and the attempt then reports as cancelled, like a force-killed Ray task.

With ``lane=True`` it also has the executor lane: a batch finishes once every job in it has an outcome
(``auto`` or ``finish``); cancelling it (or ``crash_batch``) fails it the way a killed worker process does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlhub.domain.queueing import Demand
from mlhub.jobs.store import ClaimedJob


class BatchHandle:
    def __init__(self, jobs: list[ClaimedJob]) -> None:
        self.jobs = jobs
        self.outcomes: dict[int, dict[str, Any]] = {}


class FakeLauncher:
    def __init__(self, *, cpus: float = 2.0, auto: Callable[[ClaimedJob], dict[str, Any] | None] | None = None,
                 lane: bool = False, others: float = 0.0):
        self.cpus = cpus
        self.others = others  # CPUs that Ray work other than the jobs holds (Serve replicas, say)
        self.auto = auto
        self.supports_lane = lane
        self.launched: list[ClaimedJob] = []
        self.cancelled: list[int] = []
        self.batches: list[list[ClaimedJob]] = []
        self.stopped_batches: list[BatchHandle] = []
        self._done: dict[Any, Any] = {}
        self._live: dict[int, ClaimedJob] = {}
        self._open: dict[int, BatchHandle] = {}  # job id -> its batch, while the batch runs

    def launch(self, job: ClaimedJob) -> int:
        self.launched.append(job)
        self._live[job.id] = job
        if self.auto is not None:
            outcome = self.auto(job)
            if outcome is not None:
                self._done[job.id] = outcome
        return job.id

    def finish(self, job_id: int, outcome: dict[str, Any] | None = None) -> None:
        outcome = outcome or {"status": "succeeded", "result": {"kind": "diagnostic"}}
        batch = self._open.get(job_id)
        if batch is None:
            self._done[job_id] = outcome
            return
        batch.outcomes[job_id] = outcome
        self._maybe_done(batch)

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, Any]]:
        ready = [(h, self._done.pop(h)) for h in handles if h in self._done]
        for h, _ in ready:
            if isinstance(h, BatchHandle):
                self._live.pop(id(h), None)
        for h, _ in ready:
            if isinstance(h, BatchHandle):
                for j in h.jobs:
                    self._open.pop(j.id, None)
            else:
                self._live.pop(h, None)
        return ready

    def cancel(self, handle: Any) -> None:
        if isinstance(handle, BatchHandle):  # the batch's process is killed
            self.stopped_batches.append(handle)
        else:
            self.cancelled.append(handle)
        self._done[handle] = {"status": "failed", "permanent": False, "error": "task cancelled"}

    # --- the executor lane ----------------------------------------------------------------------------

    def run_batch(self, jobs: list[ClaimedJob]) -> BatchHandle:
        batch = BatchHandle(list(jobs))
        self.batches.append(list(jobs))
        self.launched.extend(jobs)
        self._live[id(batch)] = jobs[0]  # the batch holds one job's shape while it runs
        for j in jobs:
            self._open[j.id] = batch
            if self.auto is not None and (outcome := self.auto(j)) is not None:
                batch.outcomes[j.id] = outcome
        self._maybe_done(batch)
        return batch

    def crash_batch(self, job_id: int) -> None:
        """The process running ``job_id``'s batch dies (SIGKILL, out of memory): the batch fails."""
        batch = self._open[job_id]
        if batch not in self._done:
            self._done[batch] = {"status": "failed", "permanent": False,
                                 "error": "the worker process died: WorkerCrashedError"}

    def _maybe_done(self, batch: BatchHandle) -> None:
        if batch not in self._done and len(batch.outcomes) == len(batch.jobs):
            self._done[batch] = [batch.outcomes[j.id] for j in batch.jobs]

    def free_resources(self) -> Demand:
        used = sum(float(j.resources.get("num_cpus", 1.0)) for j in self._live.values())  # tasks and batches
        return Demand(cpus=self.cpus - self.others - used, gpus=0.0)

    def total_resources(self) -> Demand:
        return Demand(cpus=self.cpus, gpus=0.0)

"""A launcher that runs nothing, for testing the dispatcher's logic without Ray.

Each launched attempt finishes when the test says so (``finish``) or at once with ``auto`` outcomes;
cancellation is recorded and the attempt then reports as cancelled, like a force-killed Ray task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlhub.domain.queueing import Demand
from mlhub.jobs.store import ClaimedJob


class FakeLauncher:
    def __init__(self, *, cpus: float = 2.0, auto: Callable[[ClaimedJob], dict[str, Any] | None] | None = None):
        self.cpus = cpus
        self.auto = auto
        self.launched: list[ClaimedJob] = []
        self.cancelled: list[int] = []
        self._done: dict[int, dict[str, Any]] = {}
        self._live: dict[int, ClaimedJob] = {}

    def launch(self, job: ClaimedJob) -> int:
        self.launched.append(job)
        self._live[job.id] = job
        if self.auto is not None:
            outcome = self.auto(job)
            if outcome is not None:
                self._done[job.id] = outcome
        return job.id

    def finish(self, job_id: int, outcome: dict[str, Any] | None = None) -> None:
        self._done[job_id] = outcome or {"status": "succeeded", "result": {"kind": "diagnostic"}}

    def wait(self, handles: list[int], timeout: float) -> list[tuple[int, dict[str, Any]]]:
        ready = [(h, self._done.pop(h)) for h in handles if h in self._done]
        for h, _ in ready:
            self._live.pop(h, None)
        return ready

    def cancel(self, handle: int) -> None:
        self.cancelled.append(handle)
        self._done[handle] = {"status": "failed", "permanent": False, "error": "task cancelled"}

    def free_resources(self) -> Demand:
        used = sum(float(j.resources.get("num_cpus", 1.0)) for j in self._live.values())
        return Demand(cpus=self.cpus - used, gpus=0.0)

    def total_resources(self) -> Demand:
        return Demand(cpus=self.cpus, gpus=0.0)

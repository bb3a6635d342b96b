"""The executor lane of the dispatcher: short single-process jobs run in batches, one process per batch.

A batch of claimed jobs of one queue, tenant and resource shape goes to one process in one launch (a Ray task
holding the shape once, see :mod:`mlhub.jobs.executor`), which runs them one after another and replies with all
their outcomes, spreading the cost of a Ray submit and wait over many jobs. Which jobs are short is learnt per
queue and kind from the attempts' own durations (``Dispatcher._learn``). :class:`ExecutorLane` is mixed into
:class:`~mlhub.jobs.dispatcher.Dispatcher`, whose state (``ready``, ``running``, ``batches``, ``_kind_s``,
``_solo``) it works on.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from mlhub.jobs import store
from mlhub.jobs.launching import Attempt, Batch
from mlhub.jobs.store import ClaimedJob
from mlhub.store.types import utcnow

log = logging.getLogger("mlhub.orchestrator")

LANE_MAX_S = 0.1  # jobs of a queue and kind whose attempts recently took less than this run in executors
LANE_BATCH_TARGET_S = 0.05  # a batch holds about this much work (so a waiting job is never long behind one)
LANE_BATCH_MAX = 64
LANE_WINDOW = 256  # jobs claimed ahead while the lane is busy
LANE_STUCK_S = 2.0  # a batch running this long says its kinds are not short after all


class ExecutorLane:
    """Lane methods of the dispatcher (see the module docstring)."""

    def _lane_ok(self, job: ClaimedJob) -> bool:
        if not self._lane or (job.resources or {}).get("driver"):
            return False
        recent = self._kind_s.get((job.queue, job.kind))
        return recent is not None and recent < LANE_MAX_S

    def _launch_batch(self, first: ClaimedJob, taken: set[int], heads: set[int]) -> int:
        """Launch ``first`` with the claimed jobs that can share its process (same queue, tenant and shape, in
        claim order; not another batch's head: ``heads`` start this round and share the waiting jobs)."""
        jobs = [first]
        if not self._alone(first):
            shape = _shape(first.resources)
            group = [j for j in self.ready if j.id not in taken and j.id not in heads and j.queue == first.queue
                     and j.tenant_id == first.tenant_id and self._lane_ok(j) and not self._alone(j)
                     and _shape(j.resources) == shape]
            recent = max(self._kind_s[(first.queue, first.kind)], 1e-4)
            share = -(-(len(group) + len(heads)) // len(heads))
            size = min(LANE_BATCH_MAX, max(1, int(LANE_BATCH_TARGET_S / recent)), share)
            jobs += group[:size - 1]
        for j in jobs:
            taken.add(j.id)
        try:
            handle = self.launcher.run_batch(jobs)
        except Exception as exc:
            log.exception("could not launch a batch of %d job(s)", len(jobs))
            self._record([(j, {"status": "failed", "permanent": False, "error": f"launch failed: {exc}"})
                          for j in jobs])
            return 0
        now = time.monotonic()
        batch = Batch(jobs, handle, now, store.demand_of(first.resources))
        self.batches.append(batch)
        for j in jobs:
            timeout = j.spec.get("timeout_s")  # such a job runs alone: the batch's start is its start
            self.running[j.id] = Attempt(j, batch, now, now + timeout if timeout else None)
            self.metrics.wait_time(j.queue, max((utcnow() - j.created_at).total_seconds(), 0.0))
        self.stats["launched"] += len(jobs)
        self.stats["lane_batches"] += 1
        self._changes += 1
        return len(jobs)

    def _alone(self, job: ClaimedJob) -> bool:
        return job.id in self._solo or bool(job.spec.get("timeout_s"))

    def _check_batches(self) -> None:
        """A batch this slow says its kinds are not short after all: their next jobs take tasks until
        measured short again (the jobs behind the slow one in its batch wait for it, a bounded cost)."""
        now = time.monotonic()
        for b in self.batches:
            if now - b.started > LANE_STUCK_S:
                for j in b.jobs:
                    key = (j.queue, j.kind)
                    self._kind_s[key] = max(self._kind_s.get(key, 0.0), now - b.started)

    def _batch_outcomes(self, batch: Batch, value: Any, now: float) -> list[tuple[ClaimedJob, dict[str, Any]]]:
        self.batches.remove(batch)
        ran = isinstance(value, list) and len(value) == len(batch.jobs)
        out = []
        for i, job in enumerate(batch.jobs):
            attempt = self.running[job.id]
            self._solo.discard(job.id)
            outcome = self._stopped_outcome(attempt)
            if outcome is None and ran:
                outcome = value[i]
                self._learn(job, outcome, now - attempt.started)
            elif outcome is None and len(batch.jobs) == 1:
                outcome = value  # the process died under this job alone: an attempt like any other
            elif outcome is None:
                # killed to stop another job of the batch, or died under one of them: back in line, uncharged;
                # after an unexplained death each runs alone, so a job that kills its process is charged
                if not batch.doomed:
                    self._solo.add(job.id)
                outcome = {"status": "interrupted", "error": "its batch's process stopped before the job ended"}
            out.append((job, outcome))
        return out


def _shape(resources: dict[str, Any] | None) -> tuple:
    """A job's resource shape: only jobs of the same shape share a batch."""
    res = resources or {}
    return (float(res.get("num_cpus", 1.0)), float(res.get("num_gpus", 0.0)), res.get("memory_mb") or 0,
            tuple(sorted((res.get("custom") or {}).items())))

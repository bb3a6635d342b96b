"""Preemption, opt-in per queue: a waiting job of higher priority that lacks resources stops the fewest
lower-priority jobs of preemptible queues that make room (:func:`mlhub.domain.queueing.choose_victims`). They go
back in line without an attempt charged and resume from their last checkpoint when they run again.
:class:`Preemption` is mixed into :class:`~mlhub.jobs.dispatcher.Dispatcher`."""

from __future__ import annotations

import logging
import time

from mlhub.domain.queueing import RunningJob, choose_victims, select_for_dispatch
from mlhub.jobs import store
from mlhub.jobs.launching import Batch, candidate_of, priority_of
from mlhub.store.types import utcnow

log = logging.getLogger("mlhub.orchestrator")

PREEMPT_CHECK_S = 1.0
PREEMPTED_BACKOFF_S = 5.0  # a preempted job waits this long, so the job it made room for starts first


class Preemption:
    """The dispatcher's preemption step (see the module docstring)."""

    def _maybe_preempt(self) -> None:
        if self.policy.preemptible and time.monotonic() - self._last_preempt_check > PREEMPT_CHECK_S:
            self._last_preempt_check = time.monotonic()
            self._preempt_for_waiting()

    def _preempt_for_waiting(self) -> list[int]:
        """If the next job the policy would start cannot get the resources it needs, and lower-priority jobs
        of preemptible queues hold them, stop those jobs: they go back on their queues (no attempt charged)
        and resume from their last checkpoint when they run again."""
        now_utc = utcnow()
        eligible = [c for c, nb in self.pending.values() if nb is None or nb <= now_utc]
        eligible = self._capped(eligible + [candidate_of(j) for j in self.ready])
        if not eligible:
            return []
        free = self._free_resources()
        if free is None:
            return []
        state = self._counts([j for j in self._slots() if self.running[j.id].stopping is None] + self.ready)
        # state.free stays None: the jobs the caps allow, in the order the policy would start them
        chosen = select_for_dispatch(eligible, state, self.policy)
        for c in chosen:
            if c.demand.fits_in(free):
                free = free.minus(c.demand)
                continue
            now = time.monotonic()
            running = [RunningJob(a.job.id, a.job.queue, priority_of(a.job), store.demand_of(a.job.resources),
                                  now - a.started) for a in self.running.values() if a.stopping is None
                       and (not isinstance(a.handle, Batch) or a.handle.jobs[0] is a.job)]  # a batch frees one shape
            victims = choose_victims(c, free, running, self.policy.preemptible, min_running_s=self.preempt_after_s)
            for job_id in victims:
                attempt = self.running[job_id]
                log.info("preempting job %s (priority %s) for job %s (priority %s)", job_id,
                         priority_of(attempt.job), c.id, c.priority)
                attempt.stopping = "preempted"
                attempt.preempted_by = c.id
                self._stop(attempt)
                self.stats["preempted"] += 1
            return victims  # one waiting job at a time: the picture changes once the victims are gone
        return []

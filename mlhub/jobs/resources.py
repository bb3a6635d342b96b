"""The dispatcher's picture of the cluster's resources: what is free for mlhub's jobs now, and the room they
can ever have beside other Ray work (Serve replicas, other drivers). :class:`ResourceView` is mixed into
:class:`~mlhub.jobs.dispatcher.Dispatcher`.

What is free is the total, less what other Ray work holds (from Ray's availability report, which lags), less
mlhub's own in-flight attempts (tracked exactly). The *room* is the total less the least the other work held
throughout the last ``steady_s`` seconds, watched without gaps: an HPO search whose trials could never all fit
in it is cut to those that can (:meth:`~mlhub.domain.queueing.Candidate.capped`); work about to end, a report
that lags, or what mlhub's own jobs hold never cuts one.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque

from mlhub.domain.queueing import Candidate, Demand
from mlhub.jobs import capacity

log = logging.getLogger("mlhub.orchestrator")

RESOURCE_REFRESH_S = 0.5
STEADY_S = 10.0  # other Ray work held this long counts as there to stay (see ResourceView._room) ...
STEADY_GAP_S = 3.0  # ... when watched without a longer gap between two looks


class ResourceView:
    """The dispatcher's resource picture (see the module docstring)."""

    def _init_resources(self, steady_s: float) -> None:
        self.steady_s = steady_s
        self._others: Demand | None = None
        #: (when, what other Ray work held) at each refresh of the last steady_s, and one from before it
        self._other_history: deque[tuple[float, Demand]] = deque()
        self._free_at = 0.0
        self._total: Demand | None = None
        self._recorded_total: Demand | None = None
        self._recorded_at = -math.inf

    def _free_resources(self) -> Demand | None:
        """Room for our next job: the cluster's total, minus what others use, minus our in-flight jobs.

        Our own usage is tracked exactly (launch takes, finish gives back). What others use (Serve
        replicas, other drivers) comes from Ray's availability report, which lags a finished task by up to
        a heartbeat: taking the smaller of the last two samples keeps a stale report from blocking the
        queue until the next refresh. A sample from before an idle spell is not used: Serve replicas deployed
        meanwhile would go unseen until the next refresh.
        """
        self._refresh_resources()
        if self._others is None or self._total is None:
            return None
        ours = self._in_flight()
        return Demand(cpus=self._total.cpus - self._others.cpus - ours.cpus,
                      gpus=self._total.gpus - self._others.gpus - ours.gpus)

    def _refresh_resources(self) -> None:
        """Ask Ray for the cluster's total and what is available, at most every ``RESOURCE_REFRESH_S``; keep
        what other work holds (``_others``, and its history for :meth:`_room`) and record the total."""
        now = time.monotonic()
        if now - self._free_at <= RESOURCE_REFRESH_S:
            return
        self._free_at = now
        total, available = self.launcher.total_resources(), self.launcher.free_resources()
        if total is None or available is None:
            self._others = None
            return
        ours = self._in_flight()
        sample = Demand(cpus=max(0.0, total.cpus - available.cpus - ours.cpus),
                        gpus=max(0.0, total.gpus - available.gpus - ours.gpus))
        history = self._other_history
        recent = bool(history) and now - history[-1][0] < 3 * RESOURCE_REFRESH_S
        last = history[-1][1] if recent else sample
        history.append((now, sample))
        while len(history) > 1 and now - history[1][0] >= self.steady_s:
            history.popleft()  # keep the last sample from before the window: it shows how far back we see
        self._others = Demand(cpus=min(last.cpus, sample.cpus), gpus=min(last.gpus, sample.gpus))
        self._total = total
        self._record_capacity(total)

    def _room(self) -> Demand | None:
        """The most mlhub's jobs can hold together: the cluster's total less what other Ray work (Serve
        replicas, say) has held throughout the last ``steady_s`` (the least of those samples, so that work about
        to end, or a report that lags, does not count); None when unknown."""
        history = self._other_history
        if self._total is None or not history or time.monotonic() - history[0][0] < self.steady_s:
            return None  # not watched long enough (just started, or back from an idle spell): cut nothing yet
        if any(b[0] - a[0] > STEADY_GAP_S for a, b in itertools.pairwise(history)):
            return None  # a gap in the watch (an idle spell inside the window): wait for a continuous one
        cpus = min(d.cpus for _, d in history)
        gpus = min(d.gpus for _, d in history)
        return Demand(cpus=self._total.cpus - cpus, gpus=self._total.gpus - gpus)

    def _capped(self, candidates: list[Candidate]) -> list[Candidate]:
        """HPO searches whose trials could never all run beside the other Ray work, cut to the trials that can
        (:meth:`Candidate.capped`); they then wait, like any job, until that much is free."""
        if not any(c.unit is not None for c in candidates):
            return candidates
        room = self._room()
        return [c.capped(room) if c.unit is not None else c for c in candidates]

    def _record_capacity(self, total: Demand) -> None:
        """Keep the cluster's size in the store (when it changes, and every few minutes) for submit's check."""
        now = time.monotonic()
        if total == self._recorded_total and now - self._recorded_at < capacity.REFRESH_EVERY.total_seconds():
            return
        try:
            with self.db.scheduler_scope() as s:
                capacity.record(s, total)
        except Exception as exc:  # noqa: BLE001 - a lost write only delays submit's check; dispatch goes on
            log.warning("could not record the cluster's capacity: %s", exc)
            return
        self._recorded_total, self._recorded_at = total, now

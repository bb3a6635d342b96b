"""The orchestrator's brain: which job runs next, launching it, watching it, recording how it ended.

It holds an in-memory picture of pending and running jobs, which is only a cache of the database: it is
rebuilt by :meth:`Dispatcher.recover` on every (re)start, when jobs that were running under the previous
incarnation are put back on their queue (their Ray work died with it). Each :meth:`tick` is idempotent
and does, in order: pick up new jobs, enqueue due schedule occurrences, stop cancelled and timed-out
attempts, dispatch what the policy and the cluster allow, and record finished attempts.

Short single-process jobs take the *executor lane* (:mod:`mlhub.jobs.lane`): batches of them run one process
each. Lower-priority jobs of preemptible queues make room for waiting ones (:mod:`mlhub.jobs.preemption`).
The job next in line that cannot start is told why (:mod:`mlhub.jobs.waiting`). An HPO search whose trials could
never all run beside the other Ray work (Serve replicas) runs with as many as can (``Candidate.unit``,
:mod:`mlhub.jobs.resources`, :func:`mlhub.jobs.launching.scaled_down`).

The Ray specifics live behind :class:`Launcher`, so this logic is tested without Ray.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from mlhub.audit import Principal
from mlhub.domain.enums import JobState
from mlhub.domain.queueing import Candidate, ClusterState, Demand, DispatchPolicy, select_for_dispatch
from mlhub.domain.schedule import due_occurrence
from mlhub.domain.specs import parse_spec
from mlhub.jobs import capacity, store
from mlhub.jobs.completion import Recorded, record_outcomes
from mlhub.jobs.lane import LANE_MAX_S, LANE_WINDOW, ExecutorLane
from mlhub.jobs.launching import (
    Attempt,
    Batch,
    LaneLauncher,
    Launcher,
    Metrics,
    NullMetrics,
    candidate_of,
    claimed_from_row,
    scaled_down,
)
from mlhub.jobs.preemption import PREEMPTED_BACKOFF_S, Preemption
from mlhub.jobs.resources import RESOURCE_REFRESH_S, STEADY_S, ResourceView
from mlhub.jobs.service import job_row
from mlhub.jobs.store import ClaimedJob
from mlhub.jobs.waiting import Waiting
from mlhub.store.database import Database
from mlhub.store.types import utcnow

log = logging.getLogger("mlhub.orchestrator")

FULL_SYNC_S = 5.0
SYNC_S = 0.1  # without a notification (SQLite, or a lost LISTEN connection): poll this often
SCHEDULE_CHECK_S = 0.5
CANCEL_CHECK_S = 0.25
BUSY_POLL_S = 0.02
SHORT_JOB_S = 1.0
METRICS_EXPORT_S = 0.5



class Dispatcher(ExecutorLane, Preemption, Waiting, ResourceView):
    def __init__(self, db: Database, launcher: Launcher, policy: DispatchPolicy, *, owner: str,
                 metrics: Metrics | None = None, rand: Callable[[], float] = random.random,
                 wake: threading.Event | None = None, idle_poll_s: float = 0.1,
                 background_writes: bool = False, prefetch: int = 0, preempt_after_s: float = 10.0,
                 lane: bool | None = None, steady_s: float = STEADY_S) -> None:
        self.db = db
        self.launcher = launcher
        self.policy = policy
        self.owner = owner
        self.metrics = metrics or NullMetrics()
        self.rand = rand
        self.wake = wake or threading.Event()
        self.idle_poll_s = idle_poll_s
        self.pending: dict[int, tuple[Candidate, datetime | None]] = {}
        self.running: dict[int, Attempt] = {}
        #: claimed jobs waiting in memory for a slot (the prefetch window; see _claim_more)
        self.ready: list[ClaimedJob] = []
        self.prefetch = prefetch
        self.preempt_after_s = preempt_after_s
        self._last_preempt_check = 0.0
        self._notes: dict[int, str] = {}  # the waiting notes written (mlhub.jobs.waiting)
        self._last_notes_at = 0.0
        self._recent_duration_s = SHORT_JOB_S  # until measured: an exponentially weighted mean
        self._last_metrics = 0.0
        self._changes = 0  # bumped whenever an attempt starts or ends, or jobs are claimed
        self._ready_blocked_at: int | None = None  # _changes when claimed jobs last could not start
        self._reserve_policy = _widened(policy, prefetch)
        self._lane = bool(getattr(launcher, "supports_lane", False)) if lane is None else lane
        self._lane_policy = _widened(policy, LANE_WINDOW)
        self.batches: list[Batch] = []
        self._kind_s: dict[tuple[str, str], float] = {}  # per (queue, kind): recent attempt duration (EWMA)
        self._solo: set[int] = set()  # jobs whose batch's process died under them: they run in a batch of their own
        self._last_id = 0
        self._last_full = 0.0
        self._last_cancel_check = 0.0
        self._init_resources(steady_s)
        self.stats = Counter()
        self._last_schedules = 0.0
        self._last_sync = 0.0
        #: set when jobs were submitted or cancelled (PostgreSQL NOTIFY); otherwise the loop polls
        self.new_work = threading.Event()
        # Background writes take recording finished attempts off the dispatch path: a freed slot is
        # refilled at once while the outcome is written (in batches) by a writer thread. A crash in
        # between loses nothing: the job is still `running` in the database and is requeued on restart.
        self._outbox: queue.Queue[list[tuple[ClaimedJob, dict[str, Any]]]] = queue.Queue()
        self._inbox: queue.Queue[tuple[list[tuple[ClaimedJob, dict[str, Any]]], list[Recorded]]] = queue.Queue()
        self._recording: dict[int, Attempt] = {}
        self._writer: threading.Thread | None = None
        if background_writes:
            self._writer = threading.Thread(target=self._write_loop, daemon=True, name="mlhub-outcomes")
            self._writer.start()

    # --- lifecycle ----------------------------------------------------------------------------------

    def recover(self) -> int:
        """Put jobs left running by a previous incarnation back on their queues; rebuild the pending cache."""
        with self.db.scheduler_scope() as s:
            orphans = [claimed_from_row(r) for r in store.running_jobs(s)]
        if orphans:
            log.warning("requeueing %d job(s) interrupted by an orchestrator restart", len(orphans))
            record_outcomes(self.db, [(j, {"status": "interrupted", "error": "orchestrator restarted"})
                                      for j in orphans], rand=self.rand)
        self.sync(full=True)
        return len(orphans)

    def sync(self, *, full: bool = False) -> None:
        with self.db.scheduler_scope(readonly=True) as s:
            rows = store.pending_candidates(s, after_id=0 if full else self._last_id)
        if full:
            self.pending = {c.id: (c, nb) for c, nb in rows if c.id not in self.running}
            self._last_full = time.monotonic()
        else:
            for c, nb in rows:
                if c.id not in self.running:
                    self.pending[c.id] = (c, nb)
        if rows:
            self._last_id = max(self._last_id, rows[-1][0].id)

    def tick(self) -> int:
        """One round; returns how many attempts were launched or finished."""
        self._apply_recorded()
        now = time.monotonic()
        woken = self.new_work.is_set()
        self.new_work.clear()
        if woken or now - self._last_sync > SYNC_S:
            self._last_sync = now
            self.sync(full=now - self._last_full > FULL_SYNC_S)
        if time.monotonic() - self._last_schedules > SCHEDULE_CHECK_S:
            self._last_schedules = time.monotonic()
            self.run_schedules()
        self._stop_cancelled_and_timed_out(woken)
        if self.batches:
            self._check_batches()
        launched = self._dispatch()
        if not launched:
            self._maybe_preempt()
            self._note_waiting()
        finished = self._collect(BUSY_POLL_S if self.running else 0.0)
        if not launched and not finished and not self.running and not self._recording:
            self.wake.wait(self.idle_poll_s)
            self.wake.clear()
        if self.running or self.pending or time.monotonic() - self._recorded_at > capacity.REFRESH_EVERY.total_seconds():
            # while work runs or waits, the picture is kept fresh (every RESOURCE_REFRESH_S): _room needs it
            # unbroken; an idle cluster's size is recorded too, for submit's check
            self._refresh_resources()
        if time.monotonic() - self._last_metrics > METRICS_EXPORT_S:
            self._last_metrics = time.monotonic()
            self._export_metrics()
        return launched + finished

    # --- schedules ----------------------------------------------------------------------------------

    def run_schedules(self) -> int:
        now = utcnow()
        enqueued = 0
        with self.db.scheduler_scope() as s:
            for sched in store.due_schedules(s, now):
                occurrence, next_at = due_occurrence(_schedule_spec(sched), sched.next_run_at, now)
                if occurrence is None:
                    continue
                owner = Principal(tenant_id=sched.tenant_id, actor=f"schedule:{sched.id}", source="orchestrator")
                row = job_row(owner, parse_spec(sched.spec))
                if store.enqueue_occurrence(s, sched, occurrence, next_at, row) is not None:
                    enqueued += 1
        return enqueued

    # --- cancellation and timeouts ------------------------------------------------------------------

    def _stop_cancelled_and_timed_out(self, woken: bool = False) -> None:
        if not self.running and not self.ready:
            return
        now = time.monotonic()
        for attempt in self.running.values():
            if attempt.stopping is None and attempt.deadline is not None and now > attempt.deadline:
                attempt.stopping = "timed out"
                self._stop(attempt)
        if now - self._last_cancel_check < CANCEL_CHECK_S and not woken:
            return
        self._last_cancel_check = now
        with self.db.scheduler_scope(readonly=True) as s:
            wanted = store.cancel_requested_running(s)
        ready = {j.id: j for j in self.ready}
        for job_id, attempt_no in wanted:
            if job_id in ready:  # claimed but not started: nothing to stop
                self.ready.remove(ready[job_id])
                self._changes += 1
                self._record([(ready[job_id], {"status": "cancelled", "error": "cancelled by request"})])
                continue
            attempt = self.running.get(job_id)
            if attempt is not None and attempt.job.attempt == attempt_no and attempt.stopping is None:
                log.info("cancelling job %s attempt %s", job_id, attempt_no)
                attempt.stopping = "cancelled"
                self._stop(attempt)

    # --- dispatch -----------------------------------------------------------------------------------

    def _in_flight(self) -> Demand:
        """What our attempts hold: each task's demand, and each batch's shape."""
        cpus = gpus = 0.0
        for a in self.running.values():
            if isinstance(a.handle, Batch):
                continue
            d = store.demand_of(a.job.resources)
            cpus, gpus = cpus + d.cpus, gpus + d.gpus
        for b in self.batches:
            cpus, gpus = cpus + b.demand.cpus, gpus + b.demand.gpus
        return Demand(cpus=cpus, gpus=gpus)

    def _slots(self) -> list[ClaimedJob]:
        """What counts against the caps: each task attempt, and each batch once (its process runs one job at
        a time; the rest of the batch waits in it like claimed jobs wait in ``ready``)."""
        return [a.job for a in self.running.values()
                if not isinstance(a.handle, Batch) or a.handle.jobs[0] is a.job]

    def _dispatch(self) -> int:
        """Launch claimed jobs that fit now, claim more (up to the prefetch window), launch again."""
        launched = self._launch_ready()
        if self._claim_more():
            launched += self._launch_ready()
        return launched

    def _window(self) -> int:
        """The prefetch window, open only while recent attempts are short: for long jobs a claim's few
        milliseconds do not matter, and a job claimed ahead would make a later, more urgent one wait. While
        the executor lane runs very short jobs, it is wide enough to fill its batches."""
        if self._recent_duration_s >= SHORT_JOB_S:
            return 0
        if self._lane and self._recent_duration_s < LANE_MAX_S:
            return max(self.prefetch, LANE_WINDOW)
        return self.prefetch

    def _counts(self, attempts) -> ClusterState:
        by_queue: Counter[str] = Counter()
        by_tenant: Counter[str] = Counter()
        by_queue_tenant: Counter[tuple[str, str]] = Counter()
        for job in attempts:
            by_queue[job.queue] += 1
            by_tenant[job.tenant_id] += 1
            by_queue_tenant[(job.queue, job.tenant_id)] += 1
        return ClusterState(running_by_queue=dict(by_queue), running_by_tenant=dict(by_tenant),
                            running_by_queue_tenant=dict(by_queue_tenant))

    def _launch_ready(self) -> int:
        """Start claimed jobs while the caps and the cluster's free resources allow, in policy order."""
        if not self.ready:
            return 0
        if self._ready_blocked_at == self._changes and time.monotonic() - self._free_at < RESOURCE_REFRESH_S:
            return 0  # nothing finished or arrived since the last try: the answer would be the same
        state = self._counts(self._slots())
        state.free = self._free_resources()
        by_id = {j.id: j for j in self.ready}
        chosen = select_for_dispatch(self._capped([candidate_of(j) for j in self.ready]), state, self.policy)
        self._ready_blocked_at = None if chosen else self._changes
        launched = 0
        taken: set[int] = set()
        heads = {c.id for c in chosen if self._lane_ok(by_id[c.id])}  # each chosen lane job heads a batch
        for c in chosen:
            job = by_id[c.id]
            if c.id in heads:
                launched += self._launch_batch(job, taken, heads)
                continue
            self.ready.remove(job)
            taken.add(job.id)
            if c.unit is not None and c.demand != store.demand_of(job.resources):
                job = scaled_down(job, c.demand)
                log.info("job %s starts with %s of its %s %s: that is what fits beside the other Ray work",
                         job.id, job.resources["granted"], job.resources["asked"], job.resources["scales"])
            if self._launch(job):
                launched += 1
        if taken:
            self.ready = [j for j in self.ready if j.id not in taken]
        return launched

    def _claim_more(self) -> bool:
        """Claim the next jobs from the pending cache: those that fit now, plus up to ``prefetch`` more that
        wait in memory, already claimed, so a slot that frees is refilled without a database round trip."""
        if not self.pending:
            return False
        window = self._window()
        if window and self.running and len(self.ready) > window // 2:
            return False  # refill in batches, not one claim per finished job
        now = utcnow()
        eligible = [c for c, nb in self.pending.values() if nb is None or nb <= now]
        too_big = self._too_big(eligible)
        eligible = self._capped([c for c in eligible if c.id not in too_big])
        if not eligible:
            return False
        state = self._counts(self._slots() + self.ready)
        if window:
            # caps raised by the window bound running + claimed-waiting; resources are checked at launch
            chosen = select_for_dispatch(eligible, state,
                                         self._lane_policy if window > self.prefetch else self._reserve_policy)
        else:
            state.free = self._free_resources()
            chosen = select_for_dispatch(eligible, state, self.policy)
        if not chosen:
            return False
        with self.db.scheduler_scope() as s:
            claimed = store.claim(s, [c.id for c in chosen], self.owner)
        for c in chosen:
            self.pending.pop(c.id, None)
        self.ready.extend(claimed)
        self._changes += 1
        return bool(claimed)

    def _too_big(self, eligible: list[Candidate]) -> set[int]:
        """Jobs that the whole cluster could never hold fail at once instead of waiting forever."""
        self._refresh_resources()  # self._total, with the rest of the cluster picture
        total = self._total
        if total is None:
            return set()
        big = [c for c in eligible if not c.start_demand.fits_in(total)]
        if not big:
            return set()
        with self.db.scheduler_scope() as s:
            claimed = store.claim(s, [c.id for c in big], self.owner)
        record_outcomes(self.db, [(j, {"status": "failed", "permanent": True,
                                       "error": f"needs {_fmt(j.resources)} but the cluster has "
                                                f"{total.cpus:g} CPUs and {total.gpus:g} GPUs in all"})
                                  for j in claimed], rand=self.rand)
        for c in big:
            self.pending.pop(c.id, None)
        return {c.id for c in big}

    def _launch(self, job: ClaimedJob) -> bool:
        try:
            handle = self.launcher.launch(job)
        except Exception as exc:
            log.exception("could not launch job %s", job.id)
            self._record([(job, {"status": "failed", "permanent": False, "error": f"launch failed: {exc}"})])
            return False
        timeout = job.spec.get("timeout_s")
        now = time.monotonic()
        self.running[job.id] = Attempt(job, handle, now, now + timeout if timeout else None)
        self.metrics.wait_time(job.queue, max((utcnow() - job.created_at).total_seconds(), 0.0))
        self.stats["launched"] += 1
        self._changes += 1
        return True

    # --- stopping and learning -----------------------------------------------------------------------

    def _stop(self, attempt: Attempt) -> None:
        handle = attempt.handle
        if isinstance(handle, Batch):
            if not handle.doomed:
                handle.doomed = True
                log.info("stopping the process of job %s (a batch of %d)", attempt.job.id, len(handle.jobs))
                self.launcher.cancel(handle.handle)
        else:
            self.launcher.cancel(handle)

    def _learn(self, job: ClaimedJob, outcome: dict[str, Any], wall: float) -> None:
        took = outcome.get("duration_s")
        took = wall if not isinstance(took, int | float) else float(took)
        key = (job.queue, job.kind)
        before = self._kind_s.get(key)
        self._kind_s[key] = took if before is None else 0.7 * before + 0.3 * took
        self._recent_duration_s = 0.8 * self._recent_duration_s + 0.2 * took

    def _stopped_outcome(self, attempt: Attempt) -> dict[str, Any] | None:
        if attempt.stopping == "cancelled":
            return {"status": "cancelled", "error": "cancelled by request"}
        if attempt.stopping == "preempted":
            return {"status": "preempted", "preempted_by": attempt.preempted_by,
                    "error": f"preempted by job {attempt.preempted_by} of higher priority",
                    "retry_in_s": PREEMPTED_BACKOFF_S}
        if attempt.stopping == "timed out":
            limit = attempt.job.spec.get("timeout_s")
            return {"status": "failed", "permanent": False, "error": f"timed out after {limit} s"}
        return None

    # --- completion ---------------------------------------------------------------------------------

    def _collect(self, timeout: float) -> int:
        if not self.running:
            return 0
        by_handle: dict[int, tuple[Any, Attempt | Batch]] = {}
        for a in self.running.values():
            if isinstance(a.handle, Batch):
                by_handle[id(a.handle.handle)] = (a.handle.handle, a.handle)
            else:
                by_handle[id(a.handle)] = (a.handle, a)
        done = self.launcher.wait([h for h, _ in by_handle.values()], timeout)
        outcomes = []
        now = time.monotonic()
        self._changes += len(done)
        for handle, outcome in done:
            owner = by_handle[id(handle)][1]
            if isinstance(owner, Batch):
                outcomes += self._batch_outcomes(owner, outcome, now)
                continue
            attempt = owner
            release = getattr(self.launcher, "release", None)
            if release is not None:
                release(attempt.job)
            stopped = self._stopped_outcome(attempt)
            if stopped is None:
                self._learn(attempt.job, outcome, now - attempt.started)
            else:
                self._recent_duration_s = 0.8 * self._recent_duration_s + 0.2 * (now - attempt.started)
                outcome = stopped
            outcomes.append((attempt.job, outcome))
        if self._writer is None:
            self._record(outcomes)
        elif outcomes:
            for job, _ in outcomes:
                attempt = self.running.pop(job.id)
                self._recording[job.id] = attempt
            self._outbox.put(outcomes)
        return len(outcomes)

    def _write_loop(self) -> None:
        while True:
            batch = self._outbox.get()
            while True:  # take whatever else is waiting: one transaction per tenant for all of it
                try:
                    batch = batch + self._outbox.get_nowait()
                except queue.Empty:
                    break
            for attempt_no in range(1, 1_000_000):
                try:
                    self._inbox.put((batch, record_outcomes(self.db, batch, rand=self.rand)))
                    break
                except Exception:  # noqa: BLE001 - the database may be away for a while: keep the outcomes
                    log.exception("recording %d outcome(s) failed (try %d); retrying", len(batch), attempt_no)
                    time.sleep(min(5.0, 0.2 * attempt_no))
            self.wake.set()

    def _apply_recorded(self) -> None:
        while True:
            try:
                outcomes, recorded = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._apply(outcomes, recorded)

    def _record(self, outcomes: list[tuple[ClaimedJob, dict[str, Any]]]) -> list[Recorded]:
        if not outcomes:
            return []
        recorded = record_outcomes(self.db, outcomes, rand=self.rand)
        for job, _ in outcomes:
            if job.id in self.running:
                self._recording[job.id] = self.running.pop(job.id)
        self._apply(outcomes, recorded)
        return recorded

    def _apply(self, outcomes: list[tuple[ClaimedJob, dict[str, Any]]], recorded: list[Recorded]) -> None:
        jobs = {j.id: j for j, _ in outcomes}
        for rec in recorded:
            attempt = self._recording.pop(rec.job_id, None)
            job = jobs[rec.job_id]
            if attempt is not None and rec.state is not None:
                self.metrics.duration(job.queue, rec.state.value, time.monotonic() - attempt.started)
            if rec.state in (JobState.RETRYING, JobState.QUEUED):
                cand = candidate_of(job)
                self.pending[job.id] = (cand, store.retry_after(rec.retry_in_s or 0.0))
            self.stats[rec.state.value if rec.state else "stale"] += 1

    def _export_metrics(self) -> None:
        depth = Counter(c.queue for c, _ in self.pending.values())
        running = Counter(a.job.queue for a in self.running.values())
        for q in self.policy.queues:
            self.metrics.queue_depth(q, depth.get(q, 0))
            self.metrics.running(q, running.get(q, 0))

    def snapshot(self) -> dict[str, Any]:
        return {
            "pending": dict(Counter(c.queue for c, _ in self.pending.values())),
            "running": dict(Counter(a.job.queue for a in self.running.values())),
            "running_jobs": sorted(self.running),
            "claimed_waiting": len(self.ready),
            "batches": len(self.batches),
            "stats": dict(self.stats),
        }

    def stop_all(self) -> None:
        """Cancel every running attempt (orchestrator shutdown); they are requeued on the next start."""
        for attempt in self.running.values():
            self._stop(attempt)


def _widened(policy: DispatchPolicy, extra: int) -> DispatchPolicy:
    """The policy with every cap raised by ``extra`` (paused queues stay paused): what may be claimed ahead."""
    from mlhub.domain.queueing import QueuePolicy

    return DispatchPolicy(
        global_cap=policy.global_cap + extra,
        queues={q: QueuePolicy(concurrency=p.concurrency + extra if p.concurrency else 0)
                for q, p in policy.queues.items()},
        tenant_cap=None if policy.tenant_cap is None else policy.tenant_cap + extra,
        tenant_caps={t: c + extra for t, c in policy.tenant_caps.items()},
    )


def _schedule_spec(sched):
    from mlhub.domain.specs import ScheduleSpec

    return ScheduleSpec(cron=sched.cron, interval_s=sched.interval_s)


def _fmt(resources: dict[str, Any]) -> str:
    unit = store.unit_of(resources)
    if unit is not None:
        return f"{unit.cpus:g} CPUs and {unit.gpus:g} GPUs for each of its {resources.get('scales')}"
    return f"{resources.get('num_cpus', 1)} CPUs and {resources.get('num_gpus', 0)} GPUs"


__all__ = ["Attempt", "Batch", "Dispatcher", "LaneLauncher", "Launcher", "Metrics", "NullMetrics",
           "claimed_from_row"]

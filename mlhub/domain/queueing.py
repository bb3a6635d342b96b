"""Which queued jobs to dispatch next: priority within a tenant, fair share across tenants and queues.

:func:`select_for_dispatch` is pure: it gets the queued jobs (:class:`Candidate`), what is running
(:class:`ClusterState`) and the limits (:class:`DispatchPolicy`), and returns the jobs to start now, in the
order to start them. The orchestrator calls it on every tick; it holds no state between calls.

Rules, in the order they apply:

1. **Limits are never exceeded.** A job is selected only while the total running (all queues, plus the
   jobs selected in this call) is below ``global_cap``, its queue's running count is below the queue's
   ``concurrency``, and its tenant's running count (across queues) is below the tenant's cap
   (``tenant_caps[tenant]``, else ``tenant_cap``; ``None`` = no cap). A tenant at its cap is skipped.
   Jobs whose queue is not in ``policy.queues`` are never selected. If ``state.free`` is known, the
   selected jobs' demands together fit in it.
2. **Within one tenant and one queue, strict priority:** jobs go in ``(priority desc, id asc)`` order, i.e.
   higher priority first, then FIFO (ids are monotonic). A tenant's job is never started while a job of
   the same tenant and queue that ranks above it waits.
3. **Across tenants within a queue, fair share:** the next slot goes to the tenant with the fewest running
   jobs in that queue (counting the jobs selected in this call); ties go to the tenant whose next job is
   the oldest (lowest id). Priorities are not compared across tenants: a tenant chooses its own
   priorities, so ``critical`` on every job must not buy it more than its share, and comparing them at
   ties would let a stream of one tenant's high-priority jobs starve another tenant whenever only one
   slot is free at a time (a queue of concurrency 1, a global cap of 1, or a 2-core machine that holds
   one job at a time). With the oldest-first tie, a tenant's next job is passed over only by tenants
   that run fewer jobs in the queue, or as many with an older next job: never for ever by a stream of
   newer jobs, whatever their priority.
4. **Across queues, round-robin by fill:** each slot goes to the queue with the lowest
   ``running / concurrency`` (counting this call's selections); ties go to the queue whose next job is
   the oldest, then to the queue name. So one queue cannot take the whole global cap while another waits.
5. **Resources:** if a tenant's next job in a queue does not fit the free resources, that tenant is
   skipped in that queue for this call (its smaller, lower-ranked jobs do not jump the line: rule 2);
   other tenants and queues still go. Big jobs therefore wait for room: no resources are reserved for
   them, so a steady stream of small jobs from other tenants can keep them waiting.

The result is deterministic: equal inputs give the same list, whatever the order of ``candidates``
(given unique ids). Cost is O(n + k log n) for n candidates and k selected jobs: candidates are grouped
into one heap per (queue, tenant), tenants into one heap per queue, queues into one heap.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

__all__ = ["Candidate", "ClusterState", "Demand", "DispatchPolicy", "QueuePolicy", "select_for_dispatch", "units_in"]

# Resources are floats (fractional CPUs): allow rounding error when adding demands up.
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Demand:
    """Resources one job needs (or, in :class:`ClusterState`, that are free)."""

    cpus: float = 1.0
    gpus: float = 0.0

    def fits_in(self, free: Demand | None) -> bool:
        """Whether this demand fits ``free``; ``None`` means unknown, and everything fits."""
        return free is None or (self.cpus <= free.cpus + _EPS and self.gpus <= free.gpus + _EPS)

    def times(self, n: int) -> Demand:
        return Demand(cpus=self.cpus * n, gpus=self.gpus * n)

    def minus(self, other: Demand) -> Demand:
        return Demand(cpus=self.cpus - other.cpus, gpus=self.gpus - other.gpus)


def units_in(unit: Demand, room: Demand) -> int:
    """How many whole ``unit`` fit in ``room`` (a unit of no resources: as many as you like)."""
    counts = [math.floor((have + _EPS) / need) for need, have in ((unit.cpus, room.cpus), (unit.gpus, room.gpus))
              if need > _EPS]
    return max(0, min(counts)) if counts else 1 << 30


@dataclass(frozen=True, slots=True)
class Candidate:
    """A queued job as the dispatcher sees it. ``id`` is monotonic, so a lower id was queued earlier.

    ``unit``: for an elastic job, the step its demand scales by (one HPO trial: ``demand`` is
    ``max_concurrent_trials`` units); it can run with any whole number of units from one up to ``demand``
    (:meth:`capped`)."""

    id: int
    tenant_id: str
    queue: str
    priority: int
    demand: Demand = field(default_factory=Demand)
    unit: Demand | None = None

    @property
    def start_demand(self) -> Demand:
        """The least it can start with: one unit of an elastic job, else its whole demand."""
        return self.demand if self.unit is None else self.unit

    def capped(self, room: Demand | None) -> Candidate:
        """An elastic job asking for more units than ``room`` could ever hold, cut to the units that fit (at
        least one); any other job, or one that fits, as it is. ``room`` is what the jobs can have at most, not
        what is free now: a job cut to what is free would run smaller for good because of a job about to end."""
        if self.unit is None or room is None or self.demand.fits_in(room):
            return self
        n = max(1, min(units_in(self.unit, room), units_in(self.unit, self.demand)))
        return replace(self, demand=self.unit.times(n))


@dataclass(frozen=True)
class QueuePolicy:
    concurrency: int  # most running jobs in this queue


@dataclass(frozen=True)
class DispatchPolicy:
    global_cap: int  # MLHUB_MAX_CONCURRENT_JOBS: most running jobs in all queues together
    queues: dict[str, QueuePolicy]  # the four queues
    tenant_cap: int | None = None  # default cap on one tenant's running jobs (across queues)
    tenant_caps: dict[str, int] = field(default_factory=dict)  # per-tenant overrides of tenant_cap
    preemptible: frozenset[str] = frozenset()  # queues whose running jobs may be preempted (opt-in)

    def cap_for(self, tenant_id: str) -> int | None:
        """The running-jobs cap of ``tenant_id`` across queues; ``None`` means no cap."""
        return self.tenant_caps.get(tenant_id, self.tenant_cap)


@dataclass
class ClusterState:
    """What is running now. Missing keys count as 0."""

    running_by_queue: dict[str, int] = field(default_factory=dict)
    running_by_tenant: dict[str, int] = field(default_factory=dict)
    running_by_queue_tenant: dict[tuple[str, str], int] = field(default_factory=dict)
    free: Demand | None = None  # free cluster resources; None = unknown (not checked)


# (-priority, id, position in the input, candidate): heap order is the within-tenant order of rule 2;
# the position only keeps tuples comparable should two candidates share an id.
_Entry = tuple[int, int, int, Candidate]
# (running in this queue, id of the tenant's next job, tenant): rule 3.
_TenantKey = tuple[int, int, str]
# (running / concurrency, id of the queue's next job, queue): rule 4.
_QueueKey = tuple[float, int, str]


def select_for_dispatch(
    candidates: Iterable[Candidate], state: ClusterState, policy: DispatchPolicy
) -> list[Candidate]:
    """The queued jobs to start now, in the order to start them (see the module docstring for the rules).

    ``candidates`` are the queued jobs (any order); ``state`` what runs now; ``policy`` the limits.
    """
    budget = policy.global_cap - sum(state.running_by_queue.values())
    if budget <= 0:
        return []
    q_running = {q: state.running_by_queue.get(q, 0) for q in policy.queues}
    open_queues = {q for q, qp in policy.queues.items() if q_running[q] < qp.concurrency}
    if not open_queues:
        return []
    t_running = dict(state.running_by_tenant)

    def at_cap(tenant: str) -> bool:
        cap = policy.cap_for(tenant)
        return cap is not None and t_running.get(tenant, 0) >= cap

    # One list per (queue, tenant), later heapified: O(n) instead of sorting everything.
    jobs: dict[tuple[str, str], list[_Entry]] = {}
    for pos, c in enumerate(candidates):
        if c.queue in open_queues:
            jobs.setdefault((c.queue, c.tenant_id), []).append((-c.priority, c.id, pos, c))

    tenants: dict[str, list[_TenantKey]] = {}
    for (q, t), entries in jobs.items():
        if at_cap(t):
            continue
        heapq.heapify(entries)
        tenants.setdefault(q, []).append((state.running_by_queue_tenant.get((q, t), 0), entries[0][1], t))
    queues: list[_QueueKey] = []
    for q, theap in tenants.items():
        heapq.heapify(theap)
        queues.append((q_running[q] / policy.queues[q].concurrency, theap[0][1], q))
    heapq.heapify(queues)

    free = state.free
    selected: list[Candidate] = []
    while budget > 0 and queues:
        fill, head_id, q = heapq.heappop(queues)
        theap = tenants[q]
        # Drop tenants that can take nothing more in this call: at their cap (counts only grow within a
        # call), or whose next job does not fit (free resources only shrink within a call).
        while theap and (at_cap(theap[0][2]) or not jobs[(q, theap[0][2])][0][3].demand.fits_in(free)):
            heapq.heappop(theap)
        if not theap:
            continue  # nothing left to start in this queue
        if theap[0][1] != head_id:
            # Its next job changed because tenants were dropped: re-rank the queue before serving it.
            heapq.heappush(queues, (fill, theap[0][1], q))
            continue

        in_queue, _, t = heapq.heappop(theap)
        entries = jobs[(q, t)]
        job = heapq.heappop(entries)[3]
        selected.append(job)
        budget -= 1
        q_running[q] += 1
        t_running[t] = t_running.get(t, 0) + 1
        if free is not None:
            free = free.minus(job.demand)

        if entries:
            heapq.heappush(theap, (in_queue + 1, entries[0][1], t))
        concurrency = policy.queues[q].concurrency
        if theap and q_running[q] < concurrency:
            heapq.heappush(queues, (q_running[q] / concurrency, theap[0][1], q))
    return selected


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A running attempt as preemption sees it."""

    id: int
    queue: str
    priority: int
    demand: Demand
    running_s: float  # how long it has run


def choose_victims(waiting: Candidate, free: Demand, running: Iterable[RunningJob], preemptible: frozenset[str],
                   *, min_running_s: float = 0.0) -> list[int]:
    """The running jobs to preempt so that ``waiting`` fits, or ``[]`` when it fits already or cannot be made
    to fit by preempting only lower-priority jobs of preemptible queues.

    Victims are taken lowest priority first, then the most recently started (least work lost), and only as
    many as needed. A job that has run less than ``min_running_s`` is spared, so a queue does not thrash.
    """
    if waiting.demand.fits_in(free):
        return []
    pool = sorted((r for r in running if r.queue in preemptible and r.priority < waiting.priority
                   and r.running_s >= min_running_s), key=lambda r: (r.priority, r.running_s))
    cpus, gpus = free.cpus, free.gpus
    victims: list[int] = []
    for r in pool:
        if waiting.demand.fits_in(Demand(cpus, gpus)):
            break
        if r.demand.cpus <= _EPS and r.demand.gpus <= _EPS:
            continue  # frees nothing
        victims.append(r.id)
        cpus, gpus = cpus + r.demand.cpus, gpus + r.demand.gpus
    return victims if waiting.demand.fits_in(Demand(cpus, gpus)) else []

"""Which queued jobs start next: caps, per-tenant priority, fair share, round-robin queues, resources."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from mlhub.domain.enums import QueueName
from mlhub.domain.queueing import (
    Candidate,
    ClusterState,
    Demand,
    DispatchPolicy,
    QueuePolicy,
    select_for_dispatch,
)

QUEUES = [q.value for q in QueueName]


# --- factories ----------------------------------------------------------------------------------------


def job(id: int, tenant: str = "a", queue: str = "training", priority: int = 0, cpus: float = 1.0,
        gpus: float = 0.0) -> Candidate:
    return Candidate(id=id, tenant_id=tenant, queue=queue, priority=priority, demand=Demand(cpus, gpus))


def policy(global_cap: int = 100, concurrency: int | dict[str, int] = 10, **overrides) -> DispatchPolicy:
    per_queue = concurrency if isinstance(concurrency, dict) else dict.fromkeys(QUEUES, concurrency)
    return DispatchPolicy(
        global_cap=global_cap, queues={q: QueuePolicy(c) for q, c in per_queue.items()}, **overrides
    )


def running(jobs: Iterable[Candidate], free: Demand | None = None) -> ClusterState:
    """The ClusterState of these jobs running."""
    state = ClusterState(running_by_queue={}, running_by_tenant={}, running_by_queue_tenant={}, free=free)
    for j in jobs:
        state.running_by_queue[j.queue] = state.running_by_queue.get(j.queue, 0) + 1
        state.running_by_tenant[j.tenant_id] = state.running_by_tenant.get(j.tenant_id, 0) + 1
        key = (j.queue, j.tenant_id)
        state.running_by_queue_tenant[key] = state.running_by_queue_tenant.get(key, 0) + 1
    return state


def ids(selected: list[Candidate]) -> list[int]:
    return [c.id for c in selected]


def rank(c: Candidate) -> tuple[int, int]:
    """The within-tenant order: priority desc, then id asc."""
    return (-c.priority, c.id)


# --- examples -----------------------------------------------------------------------------------------


def test_nothing_queued_nothing_started():
    assert select_for_dispatch([], running([]), policy()) == []


def test_one_tenant_goes_by_priority_then_fifo():
    queued = [job(1, priority=0), job(2, priority=50), job(3, priority=0), job(4, priority=50)]
    assert ids(select_for_dispatch(queued, running([]), policy())) == [2, 4, 1, 3]


def test_the_queue_concurrency_limits_what_starts():
    queued = [job(i, priority=i) for i in range(1, 6)]
    already = [job(100)]
    assert ids(select_for_dispatch(queued, running(already), policy(concurrency=3))) == [5, 4]


def test_the_global_cap_limits_all_queues_together():
    queued = [job(i, queue=q) for i, q in enumerate(QUEUES * 3, start=1)]
    selected = select_for_dispatch(queued, running([job(100, queue="hpo")]), policy(global_cap=4))
    assert len(selected) == 3


def test_already_over_a_cap_starts_nothing_there():
    state = running([job(100 + i) for i in range(5)])
    assert select_for_dispatch([job(1)], state, policy(global_cap=3)) == []
    assert select_for_dispatch([job(1)], state, policy(concurrency=2)) == []


def test_fair_share_alternates_tenants_whatever_their_priorities():
    queued = [job(i, "a", priority=100) for i in range(1, 5)]
    queued += [job(i, "b", priority=-50) for i in range(5, 9)]
    selected = select_for_dispatch(queued, running([]), policy(concurrency=4))
    assert Counter(c.tenant_id for c in selected) == {"a": 2, "b": 2}


def test_the_next_slot_goes_to_the_tenant_with_fewest_running_in_that_queue():
    state = running([job(100, "a"), job(101, "a"), job(102, "b")])
    queued = [job(1, "a"), job(2, "b"), job(3, "c")]
    # c has none running, then b has 1 against a's 2
    assert ids(select_for_dispatch(queued, state, policy(concurrency=5))) == [3, 2]


def test_running_jobs_in_other_queues_do_not_count_for_the_share_in_this_one():
    state = running([job(100, "a", queue="hpo"), job(101, "a", queue="hpo")])
    queued = [job(1, "a"), job(2, "b")]
    assert ids(select_for_dispatch(queued, state, policy(concurrency={"training": 1, "hpo": 5}))) == [1]


def test_ties_between_tenants_go_to_the_oldest_next_job_not_the_highest_priority():
    queued = [job(5, "a", priority=1000), job(3, "b", priority=-1000)]
    assert ids(select_for_dispatch(queued, running([]), policy(concurrency=1))) == [3]


def test_ties_later_in_the_same_call_also_go_to_the_oldest_next_job():
    queued = [job(10, "a", priority=1000), job(11, "a", priority=1000), job(1, "b", priority=-1000),
              job(2, "b", priority=-1000)]
    assert ids(select_for_dispatch(queued, running([]), policy(concurrency=3))) == [1, 10, 2]


def test_a_tenant_at_its_cap_is_skipped_and_overrides_apply():
    state = running([job(100, "a", queue="hpo")])
    queued = [job(1, "a"), job(2, "a"), job(3, "b"), job(4, "b"), job(5, "c"), job(6, "c")]
    selected = select_for_dispatch(queued, state, policy(tenant_cap=2, tenant_caps={"c": 0, "b": 5}))
    assert Counter(c.tenant_id for c in selected) == {"a": 1, "b": 2}


def test_queues_share_the_global_cap_by_fill_not_by_arrival():
    queued = [job(i, queue="training") for i in range(1, 20)] + [job(100 + i, queue="hpo") for i in range(5)]
    even = select_for_dispatch(queued, running([]), policy(global_cap=6, concurrency=10))
    assert Counter(c.queue for c in even) == {"training": 3, "hpo": 3}
    # by fill (running / concurrency): hpo at 1/2 waits while training climbs from 1/10 to 5/10
    pol = policy(global_cap=6, concurrency={"training": 10, "hpo": 2})
    uneven = select_for_dispatch(queued, running([]), pol)
    assert [c.queue for c in uneven] == ["training", "hpo", "training", "training", "training", "training"]


def test_the_emptier_queue_goes_first_even_when_the_fuller_one_has_older_jobs():
    state = running([job(100 + i, queue="training") for i in range(5)])
    queued = [job(1, queue="training"), job(50, queue="hpo")]
    assert ids(select_for_dispatch(queued, state, policy(global_cap=6, concurrency=10))) == [50]


def test_with_equal_fill_the_queue_with_the_older_job_goes_first():
    queued = [job(7, queue="training"), job(8, queue="training"), job(3, queue="hpo"), job(9, queue="hpo")]
    assert ids(select_for_dispatch(queued, running([]), policy(global_cap=2))) == [3, 7]


def test_a_job_that_does_not_fit_waits_and_its_tenant_does_not_skip_ahead_in_that_queue():
    queued = [job(1, "a", priority=10, cpus=4), job(2, "a", cpus=1), job(3, "b", cpus=1),
              job(4, "a", queue="hpo")]
    selected = select_for_dispatch(queued, running([], free=Demand(cpus=2)), policy())
    assert ids(selected) == [3, 4]  # a's big job blocks a in training only


def test_gpus_are_checked_too_and_demands_add_up():
    queued = [job(1, "a", gpus=1), job(2, "b", gpus=1), job(3, "c", gpus=1, cpus=0.5)]
    selected = select_for_dispatch(queued, running([], free=Demand(cpus=8, gpus=2)), policy())
    assert ids(selected) == [1, 2]


def test_fractional_demands_that_add_up_exactly_fit():
    queued = [job(i, str(i), cpus=0.1) for i in range(1, 11)]
    assert len(select_for_dispatch(queued, running([], free=Demand(cpus=1.0)), policy())) == 10


def test_unknown_resources_are_not_checked():
    queued = [job(1, cpus=512, gpus=8)]
    assert ids(select_for_dispatch(queued, running([], free=None), policy())) == [1]


def test_jobs_of_a_queue_missing_from_the_policy_never_start():
    queued = [job(1, queue="nightly"), job(2, queue="training")]
    assert ids(select_for_dispatch(queued, running([]), policy(concurrency={"training": 5}))) == [2]


def test_queue_names_may_be_the_enum():
    queued = [job(1, queue=QueueName.TRAINING)]
    assert ids(select_for_dispatch(queued, running([]), policy(concurrency={"training": 1}))) == [1]


def test_a_queue_with_zero_concurrency_is_paused():
    queued = [job(1, queue="hpo"), job(2, queue="training")]
    assert ids(select_for_dispatch(queued, running([]), policy(concurrency={"training": 1, "hpo": 0}))) == [2]


def test_candidates_may_be_a_generator():
    assert ids(select_for_dispatch((job(i) for i in (2, 1)), running([]), policy())) == [1, 2]


# --- properties ---------------------------------------------------------------------------------------

TENANTS = ["a", "b", "c", "d"]


_job_fields = st.tuples(
    st.sampled_from(TENANTS),
    st.sampled_from([*QUEUES, "unknown"]),
    st.integers(-3, 3),
    st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    st.sampled_from([0.0, 0.0, 1.0]),
)


@st.composite
def scenarios(draw):
    """Random queued jobs (unique ids, any order), running jobs, limits and free resources."""
    fields = draw(st.lists(_job_fields, max_size=40))
    order = draw(st.permutations(range(len(fields))))
    queued = [job(i, *fields[i]) for i in order]
    running_fields = draw(st.lists(st.tuples(st.sampled_from(TENANTS), st.sampled_from(QUEUES)), max_size=12))
    already = [job(1000 + i, t, q) for i, (t, q) in enumerate(running_fields)]
    free = draw(st.none() | st.builds(Demand, st.sampled_from([0.0, 1.0, 2.5, 6.0]),
                                      st.sampled_from([0.0, 1.0, 2.0])))
    pol = policy(
        global_cap=draw(st.integers(0, 20)),
        concurrency=dict(zip(QUEUES, draw(st.tuples(*[st.integers(0, 8)] * len(QUEUES))), strict=True)),
        tenant_cap=draw(st.none() | st.integers(0, 6)),
        tenant_caps=draw(st.dictionaries(st.sampled_from(TENANTS), st.integers(0, 6), max_size=2)),
    )
    return queued, running(already, free), pol


def _after(selected: list[Candidate], state: ClusterState):
    by_queue = Counter(state.running_by_queue) + Counter(c.queue for c in selected)
    by_tenant = Counter(state.running_by_tenant) + Counter(c.tenant_id for c in selected)
    by_queue_tenant = Counter(state.running_by_queue_tenant)
    by_queue_tenant += Counter((c.queue, c.tenant_id) for c in selected)
    return by_queue, by_tenant, by_queue_tenant


def _free_after(selected: list[Candidate], free: Demand | None) -> Demand | None:
    if free is None:
        return None
    return Demand(free.cpus - sum(c.demand.cpus for c in selected),
                  free.gpus - sum(c.demand.gpus for c in selected))


@settings(max_examples=200)
@given(scenarios())
def test_property_no_cap_is_ever_exceeded(scenario):
    queued, state, pol = scenario
    selected = select_for_dispatch(queued, state, pol)
    assert len(set(ids(selected))) == len(selected) and set(selected) <= set(queued)
    by_queue, by_tenant, _ = _after(selected, state)
    if selected:
        assert sum(by_queue.values()) <= pol.global_cap
    for q in {c.queue for c in selected}:
        assert q in pol.queues and by_queue[q] <= pol.queues[q].concurrency
    for t in {c.tenant_id for c in selected}:
        cap = pol.tenant_caps.get(t, pol.tenant_cap)
        assert cap is None or by_tenant[t] <= cap
    left = _free_after(selected, state.free)
    assert left is None or (left.cpus >= -1e-9 and left.gpus >= -1e-9)


@settings(max_examples=200)
@given(scenarios())
def test_property_priority_is_never_inverted_within_a_tenant_and_queue(scenario):
    queued, state, pol = scenario
    chosen = set(select_for_dispatch(queued, state, pol))
    for x in chosen:
        ahead = [y for y in queued if (y.tenant_id, y.queue) == (x.tenant_id, x.queue) and rank(y) < rank(x)]
        assert all(y in chosen for y in ahead), (x, ahead)


@settings(max_examples=200)
@given(scenarios())
def test_property_work_conserving_every_job_left_waiting_is_blocked_by_a_rule(scenario):
    queued, state, pol = scenario
    selected = select_for_dispatch(queued, state, pol)
    chosen = set(selected)
    by_queue, by_tenant, _ = _after(selected, state)
    left = _free_after(selected, state.free)
    for y in queued:
        if y in chosen:
            continue
        cap = pol.tenant_caps.get(y.tenant_id, pol.tenant_cap)
        blocked = (
            sum(by_queue.values()) >= pol.global_cap
            or y.queue not in pol.queues
            or by_queue[y.queue] >= pol.queues[y.queue].concurrency
            or (cap is not None and by_tenant[y.tenant_id] >= cap)
            or not y.demand.fits_in(left)
            or any(z not in chosen and (z.tenant_id, z.queue) == (y.tenant_id, y.queue) and rank(z) < rank(y)
                   for z in queued)
        )
        assert blocked, y


@settings(max_examples=200)
@given(scenarios())
def test_property_fair_share_within_a_queue_and_fill_across_queues(scenario):
    """A tenant (queue) that could still take a job was never behind one that got a job in this call."""
    queued, state, pol = scenario
    selected = select_for_dispatch(queued, state, pol)
    chosen = set(selected)
    by_queue, by_tenant, by_queue_tenant = _after(selected, state)
    left = _free_after(selected, state.free)
    last = {(c.queue, c.tenant_id): c for c in selected}  # each tenant's last selection in each queue

    def head(q: str, t: str) -> Candidate | None:
        waiting = [c for c in queued if (c.queue, c.tenant_id) == (q, t) and c not in chosen]
        return min(waiting, key=rank, default=None)

    def tenant_could_take(q: str, t: str) -> bool:
        """Not at its cap, and its next job in q fits: then it was a contender all through the call."""
        cap = pol.tenant_caps.get(t, pol.tenant_cap)
        h = head(q, t)
        return h is not None and h.demand.fits_in(left) and (cap is None or by_tenant[t] < cap)

    # Neither the global cap nor a full queue matters here: the comparisons are with the moments at which
    # the other tenants (queues) were served, and a full queue still ranks its tenants.
    for q, t in {(c.queue, c.tenant_id) for c in queued if c.queue in pol.queues}:
        if not tenant_could_take(q, t):
            continue
        for u in {c.tenant_id for c in selected if c.queue == q}:
            assert by_queue_tenant[(q, u)] - 1 <= by_queue_tenant[(q, t)], (q, t, u)
            if by_queue_tenant[(q, u)] - 1 == by_queue_tenant[(q, t)]:  # a tie: the older job won it
                assert last[(q, u)].id < head(q, t).id, (q, t, u)
        if by_queue[q] >= pol.queues[q].concurrency:
            continue
        for p in {c.queue for c in selected}:
            # (running_p - 1) / concurrency_p <= running_q / concurrency_q, without floats
            assert (by_queue[p] - 1) * pol.queues[q].concurrency <= by_queue[q] * pol.queues[p].concurrency


@settings(max_examples=200)
@given(scenarios(), st.randoms(use_true_random=False))
def test_property_deterministic_whatever_the_input_order(scenario, rnd):
    queued, state, pol = scenario
    shuffled = list(queued)
    rnd.shuffle(shuffled)
    assert select_for_dispatch(shuffled, state, pol) == select_for_dispatch(queued, state, pol)


# --- simulations --------------------------------------------------------------------------------------


class Cluster:
    """Jobs start when selected and finish a given number of rounds later."""

    def __init__(self, pol: DispatchPolicy, total: Demand | None = None) -> None:
        self.policy = pol
        self.total = total
        self.waiting: dict[int, Candidate] = {}
        self.running: dict[int, tuple[Candidate, int]] = {}  # id -> (job, round it finishes)
        self.started: list[tuple[int, Candidate]] = []  # (round, job) in dispatch order

    def submit(self, *jobs: Candidate) -> None:
        self.waiting.update((j.id, j) for j in jobs)

    def free(self) -> Demand | None:
        if self.total is None:
            return None
        used = [j.demand for j, _ in self.running.values()]
        return Demand(self.total.cpus - sum(d.cpus for d in used),
                      self.total.gpus - sum(d.gpus for d in used))

    def tick(self, now: int, duration) -> list[Candidate]:
        for jid in [jid for jid, (_, end) in self.running.items() if end <= now]:
            del self.running[jid]
        state = running([j for j, _ in self.running.values()], self.free())
        selected = select_for_dispatch(list(self.waiting.values()), state, self.policy)
        for j in selected:
            del self.waiting[j.id]
            self.running[j.id] = (j, now + duration(j))
            self.started.append((now, j))
        return selected

    def running_by_tenant(self, queue: str) -> Counter[str]:
        return Counter(j.tenant_id for j, _ in self.running.values() if j.queue == queue)


@settings(max_examples=200, deadline=None)
@given(
    concurrency=st.integers(1, 4),
    global_cap=st.integers(1, 6),
    cpus=st.none() | st.integers(1, 4),
    k=st.integers(1, 4),
    n_old=st.integers(0, 6),
    old_priority=st.sampled_from([0, 100]),
    per_round=st.integers(1, 3),
)
def test_property_no_starvation_a_low_priority_job_waits_only_for_older_jobs(
    concurrency, global_cap, cpus, k, n_old, old_priority, per_round
):
    """Tenant A floods the queue with high-priority jobs; tenant B has one low-priority job.

    Bound: B's job waits at most for A's jobs queued before it. With one job taking k rounds and one slot
    (concurrency, global cap or CPUs of 1) it starts by round ``n_old * k``; with two or more slots it
    starts in round 0.
    """
    cluster = Cluster(policy(global_cap=global_cap, concurrency=concurrency),
                      None if cpus is None else Demand(cpus=cpus))
    next_id = iter(range(1, 1_000_000))
    cluster.submit(*(job(next(next_id), "a", priority=old_priority) for _ in range(n_old)))
    b_job = job(next(next_id), "b", priority=-50)
    cluster.submit(b_job)
    slots = min(concurrency, global_cap, cpus or concurrency)
    bound = 0 if slots >= 2 else n_old * k

    for now in range(bound + 1):
        cluster.submit(*(job(next(next_id), "a", priority=100) for _ in range(per_round)))
        if b_job in cluster.tick(now, duration=lambda _: k):
            return
    raise AssertionError(f"B's job did not start by round {bound}")


def test_scenario_ten_thousand_jobs_three_tenants_dispatched_fairly_and_in_priority_order():
    rnd = random.Random(20240601)
    priorities = {"a": [0, 50], "b": [-50, 0, 100], "c": list(range(-3, 4))}
    shares = ["a"] * 5 + ["b"] * 3 + ["c"] * 2  # 5000 / 3000 / 2000 jobs, interleaved
    queued = [job(i, t, priority=rnd.choice(priorities[t]))
              for i, t in enumerate((rnd.choice(shares) for _ in range(10_000)), start=1)]
    cluster = Cluster(policy(global_cap=150, concurrency=150))
    cluster.submit(*queued)
    durations = {j.id: rnd.randint(1, 4) for j in queued}

    now = 0
    while cluster.waiting or cluster.running:
        cluster.tick(now, duration=lambda j: durations[j.id])
        waiting_tenants = {j.tenant_id for j in cluster.waiting.values()}
        if waiting_tenants == {"a", "b", "c"}:
            counts = cluster.running_by_tenant("training")
            assert max(counts.values()) - min(counts["a"], counts["b"], counts["c"]) <= 1, (now, counts)
            assert sum(counts.values()) == 150  # and the queue is full
        now += 1

    started = [j for _, j in cluster.started]
    assert sorted(ids(started)) == list(range(1, 10_001))  # each job exactly once
    order: dict[str, list[Candidate]] = defaultdict(list)
    for j in started:
        order[j.tenant_id].append(j)
    for tenant, jobs in order.items():
        assert jobs == sorted(jobs, key=rank), tenant


def test_choose_victims_takes_the_fewest_lowest_priority_jobs_that_make_room():
    from mlhub.domain.queueing import Candidate, Demand, RunningJob, choose_victims

    waiting = Candidate(id=9, tenant_id="t", queue="evaluation", priority=50, demand=Demand(2, 0))
    running = [RunningJob(1, "training", -50, Demand(1, 0), running_s=100),
               RunningJob(2, "training", 0, Demand(1, 0), running_s=100),
               RunningJob(3, "training", -50, Demand(1, 0), running_s=5),
               RunningJob(4, "evaluation", -100, Demand(4, 0), running_s=100),  # not preemptible
               RunningJob(5, "training", 50, Demand(4, 0), running_s=100)]  # same priority: spared
    pre = frozenset({"training"})
    # lowest priority first, most recently started first among equals
    assert choose_victims(waiting, Demand(0, 0), running, pre) == [3, 1]
    assert choose_victims(waiting, Demand(1, 0), running, pre) == [3]
    # too young to preempt: the next candidates are taken instead
    assert choose_victims(waiting, Demand(0, 0), running, pre, min_running_s=10) == [1, 2]
    assert choose_victims(waiting, Demand(2, 0), running, pre) == []  # it fits already
    # cannot be made to fit: nothing is preempted in vain
    big = Candidate(id=10, tenant_id="t", queue="evaluation", priority=50, demand=Demand(8, 0))
    assert choose_victims(big, Demand(0, 0), running, pre) == []
    gpu = Candidate(id=11, tenant_id="t", queue="training", priority=100, demand=Demand(0, 1))
    assert choose_victims(gpu, Demand(2, 0), running, pre) == []


# --- elastic jobs (an HPO search: max_concurrent_trials x one trial) ------------------------------------


def search_job(id: int, trials: int, per_trial: Demand, tenant: str = "a", priority: int = 0) -> Candidate:
    return Candidate(id=id, tenant_id=tenant, queue="hpo", priority=priority, demand=per_trial.times(trials),
                     unit=per_trial)


def test_an_elastic_job_is_cut_to_the_trials_that_fit_in_the_room_the_jobs_have():
    # 2 CPUs, of which Serve replicas hold 0.6: the jobs have room for 1.4, so 2 one-CPU trials are cut to one
    cut = search_job(1, 2, Demand(1)).capped(Demand(1.4))
    assert (cut.demand, cut.unit, cut.start_demand) == (Demand(1), Demand(1), Demand(1))
    assert search_job(1, 2, Demand(1)).capped(Demand(8)).demand == Demand(2)  # never more than asked for
    assert search_job(1, 5, Demand(0.5)).capped(Demand(1.6)).demand == Demand(1.5)  # 0.5-CPU trials: three
    assert search_job(1, 3, Demand(1, 1)).capped(Demand(8, 2)).demand == Demand(2, 2)  # GPUs bound it too
    assert search_job(1, 2, Demand(1)).capped(Demand(0.5)).demand == Demand(1)  # at least one: it then waits
    assert search_job(1, 2, Demand(1)).capped(None).demand == Demand(2)  # room unknown: as asked
    plain = job(2, cpus=2)
    assert plain.capped(Demand(1)) is plain  # only elastic jobs are cut


def test_a_cut_search_waits_like_any_job_for_what_it_now_asks():
    # the room is what the jobs may ever have; what is free now may be less (a job about to end): it waits
    queued = [search_job(1, 2, Demand(1)).capped(Demand(1.4)), job(2, "b", queue="training", cpus=1)]
    assert select_for_dispatch(queued, running([], free=Demand(0.9)), policy()) == []
    assert [(c.id, c.demand) for c in select_for_dispatch(queued, running([], free=Demand(1.4)), policy())] == \
        [(1, Demand(1))]


def test_units_in_counts_whole_units_with_rounding_slack():
    from mlhub.domain.queueing import units_in

    assert units_in(Demand(0.1), Demand(0.3)) == 3  # 0.3 / 0.1 is 2.9999999999999996 in floats
    assert units_in(Demand(1, 1), Demand(4, 1)) == 1
    assert units_in(Demand(1), Demand(-0.5)) == 0
    assert units_in(Demand(0, 0), Demand(1)) > 1000  # needs nothing: no bound


def test_choose_victims_makes_room_for_what_a_cut_search_asks():
    from mlhub.domain.queueing import RunningJob, choose_victims

    waiting = search_job(9, 4, Demand(1), priority=50).capped(Demand(1.4))  # cut to one trial
    low = [RunningJob(1, "training", -50, Demand(1), running_s=100), RunningJob(2, "training", -50, Demand(1),
                                                                                   running_s=90)]
    assert choose_victims(waiting, Demand(0.4), low, frozenset({"training"})) == [2]  # one trial's room, not four
    assert choose_victims(waiting, Demand(1), low, frozenset({"training"})) == []  # it fits already

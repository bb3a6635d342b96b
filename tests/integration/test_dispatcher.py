"""The dispatcher's logic against a real database, with a launcher that runs nothing (no Ray here)."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import select

from mlhub.domain.queueing import DispatchPolicy, QueuePolicy
from mlhub.domain.specs import parse_spec
from mlhub.jobs import store
from mlhub.jobs.completion import record_outcomes
from mlhub.jobs.dispatcher import Dispatcher
from mlhub.jobs.service import JobService
from mlhub.store.database import Database
from mlhub.store.models import Job, JobEvent
from mlhub.tenancy import TenantService
from tests.support.fake_launcher import FakeLauncher

QUEUES = ("training", "evaluation", "batch_prediction", "hpo")


def policy(cap: int = 2, tenant_cap: int | None = None) -> DispatchPolicy:
    return DispatchPolicy(global_cap=cap, queues={q: QueuePolicy(concurrency=cap) for q in QUEUES},
                          tenant_cap=tenant_cap)


def diag(name: str = "d", **kw) -> object:
    doc = {"kind": "diagnostic", "name": name, "retry": {"max_attempts": 3, "backoff_s": 0, "jitter": 0}}
    doc.update(kw)
    return parse_spec(doc)


def tenant(db):
    svc = TenantService(db)
    return svc.authenticate(svc.create_tenant(f"t-{uuid.uuid4().hex[:8]}")[1])


def state_of(db, p, job_id):
    return JobService(db).get(p, job_id)


def drain(d: Dispatcher, rounds: int = 10) -> None:
    for _ in range(rounds):
        d.tick()


def test_jobs_run_to_success_within_the_cap(db):
    p = tenant(db)
    ids = JobService(db).submit_many(p, [diag(f"j{i}") for i in range(5)])
    launcher = FakeLauncher(cpus=8)
    d = Dispatcher(db, launcher, policy(cap=2), owner="test", idle_poll_s=0)
    d.tick()
    assert [j.id for j in launcher.launched] == ids[:2]
    assert state_of(db, p, ids[0]).state == "running" and state_of(db, p, ids[2]).state == "queued"
    for j in list(launcher.launched):
        launcher.finish(j.id)
    drain(d, 6)
    for j in launcher.launched[2:]:
        launcher.finish(j.id)
    drain(d, 6)
    for j in launcher.launched[4:]:
        launcher.finish(j.id)
    drain(d, 3)
    assert [state_of(db, p, i).state for i in ids] == ["succeeded"] * 5
    assert all(state_of(db, p, i).attempt == 1 for i in ids)


def test_a_failing_job_retries_then_ends_dead_keeping_its_error(db):
    p = tenant(db)
    job = JobService(db).submit(p, diag("flaky"))
    launcher = FakeLauncher(auto=lambda j: {"status": "failed", "permanent": False,
                                            "error": f"boom on attempt {j.attempt}"})
    d = Dispatcher(db, launcher, policy(), owner="test", idle_poll_s=0)
    drain(d, 12)
    info = state_of(db, p, job.id)
    assert info.state == "dead" and info.attempt == 3 and info.error == "boom on attempt 3"
    assert [j.attempt for j in launcher.launched] == [1, 2, 3]
    with db.tenant_scope(p.tenant_id) as s:
        moves = [(e.from_state, e.to_state) for e in s.scalars(
            select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.type == "state").order_by(JobEvent.id))]
    assert moves == [("queued", "running"), ("running", "retrying"), ("queued", "running"),
                     ("running", "retrying"), ("queued", "running"), ("running", "dead")]


def test_backoff_delays_the_next_attempt(db):
    p = tenant(db)
    spec = diag("slow-retry", retry={"max_attempts": 2, "backoff_s": 3600, "max_backoff_s": 7200, "jitter": 0})
    job = JobService(db).submit(p, spec)
    launcher = FakeLauncher(auto=lambda j: {"status": "failed", "permanent": False, "error": "x"})
    d = Dispatcher(db, launcher, policy(), owner="test", idle_poll_s=0)
    drain(d, 5)
    info = state_of(db, p, job.id)
    assert info.state == "retrying" and len(launcher.launched) == 1
    assert 3500 < (info.not_before - info.finished_at if info.finished_at else info.not_before - info.started_at
                   ).total_seconds() < 3700


def test_a_permanent_failure_is_not_retried(db):
    p = tenant(db)
    job = JobService(db).submit(p, diag("bad-input"))
    launcher = FakeLauncher(auto=lambda j: {"status": "failed", "permanent": True, "error": "bad column"})
    drain(Dispatcher(db, launcher, policy(), owner="test", idle_poll_s=0), 5)
    info = state_of(db, p, job.id)
    assert info.state == "failed" and info.attempt == 1 and len(launcher.launched) == 1


def test_cancelling_a_running_job_stops_its_work(db):
    p = tenant(db)
    job = JobService(db).submit(p, diag("long", sleep_s=3600))
    launcher = FakeLauncher()
    d = Dispatcher(db, launcher, policy(), owner="test", idle_poll_s=0)
    d.tick()
    assert state_of(db, p, job.id).state == "running"
    JobService(db).cancel(p, job.id)
    drain(d, 3)
    assert launcher.cancelled == [job.id]
    assert state_of(db, p, job.id).state == "cancelled"


def test_a_cancelled_queued_job_never_starts(db):
    p = tenant(db)
    svc = JobService(db)
    job = svc.submit(p, diag("never"))
    svc.cancel(p, job.id)
    launcher = FakeLauncher()
    drain(Dispatcher(db, launcher, policy(), owner="test", idle_poll_s=0), 3)
    assert launcher.launched == [] and state_of(db, p, job.id).state == "cancelled"


def test_a_restart_requeues_jobs_left_running_and_runs_them_again(db):
    p = tenant(db)
    job = JobService(db).submit(p, diag("survivor"))
    first = Dispatcher(db, FakeLauncher(), policy(), owner="first", idle_poll_s=0)
    first.tick()
    assert state_of(db, p, job.id).state == "running"
    # the first incarnation dies; a new one starts
    launcher = FakeLauncher(auto=lambda j: {"status": "succeeded", "result": {"kind": "diagnostic"}})
    second = Dispatcher(db, launcher, policy(), owner="second", idle_poll_s=0)
    assert second.recover() == 1
    drain(second, 3)
    info = state_of(db, p, job.id)
    assert info.state == "succeeded" and info.attempt == 2 and [j.id for j in launcher.launched] == [job.id]


def test_a_stale_attempt_completing_late_is_rejected(db):
    p = tenant(db)
    job = JobService(db).submit(p, diag("fenced"))
    with db.scheduler_scope() as s:
        old = store.claim(s, [job.id], "a")[0]
    record_outcomes(db, [(old, {"status": "interrupted"})])
    with db.scheduler_scope() as s:
        new = store.claim(s, [job.id], "b")[0]
    assert (old.attempt, new.attempt) == (1, 2)
    [late] = record_outcomes(db, [(old, {"status": "succeeded", "result": {"kind": "diagnostic"}})])
    assert late.state is None
    info = state_of(db, p, job.id)
    assert info.state == "running" and info.attempt == 2
    with db.tenant_scope(p.tenant_id) as s:
        warnings = s.scalars(select(JobEvent.message).where(JobEvent.job_id == job.id,
                                                             JobEvent.type == "warning")).all()
    assert any("stale completion rejected" in w for w in warnings)
    [ok] = record_outcomes(db, [(new, {"status": "succeeded", "result": {"kind": "diagnostic"}})])
    assert ok.state is not None and state_of(db, p, job.id).state == "succeeded"


def test_an_attempt_past_its_timeout_is_stopped_and_retried(db):
    p = tenant(db)
    job = JobService(db).submit(p, diag("hangs", timeout_s=0.01, retry={"max_attempts": 1}))
    launcher = FakeLauncher()
    d = Dispatcher(db, launcher, policy(), owner="test", idle_poll_s=0)
    d.tick()
    time.sleep(0.05)  # past the deadline (ticks with a no-op launcher take well under a millisecond)
    drain(d, 3)
    info = state_of(db, p, job.id)
    assert launcher.cancelled == [job.id]
    assert info.state == "dead" and "timed out" in info.error


def test_a_job_bigger_than_the_cluster_fails_at_once(db):
    p = tenant(db)
    job = JobService(db).submit(p, diag("huge", resources={"num_cpus": 64}))
    launcher = FakeLauncher(cpus=2)
    drain(Dispatcher(db, launcher, policy(), owner="test", idle_poll_s=0), 2)
    info = state_of(db, p, job.id)
    assert info.state == "failed" and "64" in info.error and "2 CPUs" in info.error
    assert launcher.launched == []


def hpo(name: str, trials: int) -> object:
    return parse_spec({"kind": "hpo", "name": name, "metric": "val_loss", "mode": "min",
                       "max_concurrent_trials": trials,
                       "trainer": {"name": f"{name}-m", "framework": "baseline", "model": "logistic",
                                   "dataset": {"source": "sklearn", "name": "iris"}},
                       "search_space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1.0}}})


def torch_job(name: str, workers: int) -> object:
    return parse_spec({"kind": "training", "name": name, "framework": "torch", "model": "mlp",
                       "dataset": {"source": "sklearn", "name": "iris"}, "num_workers": workers})


def tick_until(d: Dispatcher, predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d.tick()
        if value := predicate():
            return value
        time.sleep(0.05)
    pytest.fail("the dispatcher never got there")


def test_a_search_whose_trials_do_not_all_fit_starts_with_those_that_do(db):
    # `mlhub start` on a 2-CPU machine: Serve replicas hold 0.6 CPUs, so 2 one-CPU trials never fit at once
    p = tenant(db)
    job = JobService(db).submit(p, hpo("search", 2))
    launcher = FakeLauncher(cpus=2, others=0.6)
    d = Dispatcher(db, launcher, policy(), owner="test", idle_poll_s=0, steady_s=1.0)
    # only once the CPUs have been seen held for steady_s (work about to end must not cut a search)
    started = tick_until(d, lambda: launcher.launched)[0]
    assert started.spec["max_concurrent_trials"] == 1  # the attempt runs one trial at a time ...
    assert (started.resources["num_cpus"], started.resources["granted"], started.resources["asked"]) == (1.0, 1, 2)
    with db.scheduler_scope(readonly=True) as s:  # ... while the job keeps what its owner asked for
        row = s.get(Job, job.id)
        assert (row.spec["max_concurrent_trials"], row.resources["num_cpus"]) == (2, 2.0)
    assert state_of(db, p, job.id).state == "running"

    # the attempt holds what it was granted: a one-CPU job cannot start beside it (0.4 left) ...
    second = JobService(db).submit(p, diag("one-cpu", resources={"num_cpus": 1}))
    drain(d, 5)
    assert [j.id for j in launcher.launched] == [job.id]
    launcher.finish(job.id)  # ... until the search ends
    tick_until(d, lambda: second.id in [j.id for j in launcher.launched])


def test_a_search_waits_for_its_trials_when_jobs_or_a_passing_blip_hold_the_cpus(db):
    # what mlhub's own jobs hold, or other work seen for a moment only, is about to be free: a search is not
    # cut for it (it would run with fewer trials to the end), it waits as before
    p = tenant(db)
    jobs = JobService(db)
    first = jobs.submit(p, diag("one-cpu", resources={"num_cpus": 1}))
    launcher = FakeLauncher(cpus=2)
    d = Dispatcher(db, launcher, policy(), owner="test", idle_poll_s=0, steady_s=5.0)
    tick_until(d, lambda: launcher.launched)
    search = jobs.submit(p, hpo("search", 2))
    drain(d, 5)
    assert [j.id for j in launcher.launched] == [first.id]
    launcher.others = 1.0  # a blip: the history of the last 5 s still shows the CPU free
    time.sleep(0.6)
    drain(d, 5)
    assert [j.id for j in launcher.launched] == [first.id]
    launcher.others = 0.0
    launcher.finish(first.id)
    started = tick_until(d, lambda: [j for j in launcher.launched if j.id == search.id])[0]
    assert started.spec["max_concurrent_trials"] == 2 and "granted" not in started.resources


def test_a_job_that_cannot_start_is_told_why_and_the_note_goes_when_it_starts(db):
    p = tenant(db)
    jobs = JobService(db)
    wide = jobs.submit(p, torch_job("wide", 2))  # 2 workers: fits the cluster, not beside the Serve replicas
    launcher = FakeLauncher(cpus=2, others=0.6)
    d = Dispatcher(db, launcher, policy(), owner="test", idle_poll_s=0)
    note = tick_until(d, lambda: (state_of(db, p, wide.id).progress or {}).get("waiting"))
    assert state_of(db, p, wide.id).state == "queued" and launcher.launched == []
    assert "needs 2 CPUs" in note and "1.4 CPUs of the cluster's 2 CPUs are free" in note, note
    assert "Serve replicas, holds 0.6 CPUs" in note and "cannot start while" in note and "MLHUB_SERVE_REPLICA_CPUS" in note

    # a job that only waits for a running one is told that, without the advice
    launcher.others = 0.0
    tick_until(d, lambda: launcher.launched)
    behind = jobs.submit(p, diag("behind"))
    note = tick_until(d, lambda: (state_of(db, p, behind.id).progress or {}).get("waiting"), timeout=8)
    assert "needs 1 CPUs; 0 CPUs of the cluster's 2 CPUs are free" in note and "cannot start" not in note, note
    launcher.finish(wide.id)
    tick_until(d, lambda: behind.id in [j.id for j in launcher.launched])
    assert state_of(db, p, behind.id).progress is None  # claimed: the note is gone
    assert state_of(db, p, wide.id).progress is None


@pytest.mark.postgres
def test_ten_thousand_jobs_of_three_tenants_follow_priority_and_fair_share(fresh_pg_url):
    db = Database(fresh_pg_url)
    db.upgrade()
    tenants = [tenant(db) for _ in range(3)]
    svc = JobService(db)
    # tenant 0: many low then a few critical; tenant 1: mixed; tenant 2: a handful submitted last
    plans = {0: [("low", 4000), ("critical", 200)], 1: [("normal", 2900), ("high", 2890)], 2: [("normal", 10)]}
    owner_of: dict[int, int] = {}
    prio_of: dict[int, int] = {}
    for t, plan in plans.items():
        for level, n in plan:
            ids = svc.submit_many(tenants[t], [diag(f"t{t}", priority=level) for _ in range(n)])
            pv = {"low": -50, "normal": 0, "high": 50, "critical": 100}[level]
            owner_of.update(dict.fromkeys(ids, t))
            prio_of.update(dict.fromkeys(ids, pv))
    assert len(owner_of) == 10_000
    launcher = FakeLauncher(cpus=1000, auto=lambda j: {"status": "succeeded", "result": {}})
    d = Dispatcher(db, launcher, policy(cap=30), owner="test", idle_poll_s=0)
    for _ in range(2000):
        if not d.tick() and not d.pending:
            break
    order = [j.id for j in launcher.launched]
    assert sorted(order) == sorted(owner_of)  # every job once
    for t in range(3):
        mine = [i for i in order if owner_of[i] == t]
        assert mine == sorted(mine, key=lambda i: (-prio_of[i], i)), f"priority inverted for tenant {t}"
    # tenant 2's ten jobs were submitted last but start among the first rounds (fair share, no starvation)
    first_t2 = order.index(min(i for i in order if owner_of[i] == 2))
    assert first_t2 < 30
    # while all three tenants still wait, their launched counts stay within one round of each other
    counts = [0, 0, 0]
    for i in order[:30]:
        counts[owner_of[i]] += 1
    assert max(counts) - min(counts) <= 1
    with db.scheduler_scope(readonly=True) as s:
        assert s.scalar(select(Job.id).where(Job.state != "succeeded").limit(1)) is None
    db.dispose()




def test_short_jobs_are_claimed_ahead_and_a_waiting_one_can_be_cancelled(db):
    p = tenant(db)
    svc = JobService(db)
    ids = svc.submit_many(p, [diag(f"j{i}") for i in range(6)])
    launcher = FakeLauncher(cpus=1)
    d = Dispatcher(db, launcher, policy(cap=1), owner="test", idle_poll_s=0, prefetch=3)
    d._recent_duration_s = 0.0  # recent attempts were short: the prefetch window is open
    d.tick()
    assert [j.id for j in launcher.launched] == ids[:1]
    assert [j.id for j in d.ready] == ids[1:4]  # claimed ahead in order, not started
    assert state_of(db, p, ids[2]).state == "running" and state_of(db, p, ids[5]).state == "queued"
    svc.cancel(p, ids[2])
    d.new_work.set()
    d.tick()
    assert state_of(db, p, ids[2]).state == "cancelled"
    for _ in range(30):
        for j in launcher.launched:
            if j.id in launcher._live:
                launcher.finish(j.id)
        d.tick()
    assert [j.id for j in launcher.launched] == [ids[0], ids[1], ids[3], ids[4], ids[5]]
    assert [state_of(db, p, i).state for i in ids] == ["succeeded"] * 2 + ["cancelled"] + ["succeeded"] * 3


def test_the_prefetch_window_stays_shut_while_jobs_are_long(db):
    p = tenant(db)
    ids = JobService(db).submit_many(p, [diag(f"j{i}") for i in range(4)])
    d = Dispatcher(db, FakeLauncher(cpus=1), policy(cap=1), owner="test", idle_poll_s=0, prefetch=3)
    d._recent_duration_s = 3600.0
    d.tick()
    assert d.ready == [] and state_of(db, p, ids[1]).state == "queued"


def test_a_waiting_job_of_higher_priority_preempts_a_lower_one_of_a_preemptible_queue(db):
    p = tenant(db)
    svc = JobService(db)
    low = svc.submit(p, diag("low", target_queue="training", priority="low", resources={"num_cpus": 2},
                             retry={"max_attempts": 1}))
    launcher = FakeLauncher(cpus=2)
    pol = DispatchPolicy(global_cap=4, queues={q: QueuePolicy(concurrency=4) for q in QUEUES},
                         preemptible=frozenset({"training"}))
    d = Dispatcher(db, launcher, pol, owner="test", idle_poll_s=0, preempt_after_s=0)
    d.tick()
    assert state_of(db, p, low.id).state == "running"
    high = svc.submit(p, diag("high", target_queue="evaluation", priority="high", resources={"num_cpus": 1}))
    for _ in range(30):  # the check runs once a second
        d.tick()
        if launcher.cancelled:
            break
        time.sleep(0.05)
    assert launcher.cancelled == [low.id]
    drain(d, 5)
    info = state_of(db, p, low.id)
    # back in line without a charged attempt: max_attempts was 1, yet it may run again
    assert info.state == "queued" and info.attempt == 1 and info.max_attempts == 2 and "preempted" in info.error
    assert [j.id for j in launcher.launched] == [low.id, high.id]  # the high job got the room
    launcher.finish(high.id)
    deadline = time.monotonic() + 10
    while len(launcher.launched) < 3 and time.monotonic() < deadline:  # after the preemption backoff
        d.tick()
        time.sleep(0.1)
    assert [j.id for j in launcher.launched] == [low.id, high.id, low.id]
    launcher.finish(low.id)
    drain(d, 5)
    assert state_of(db, p, low.id).state == "succeeded" and state_of(db, p, low.id).attempt == 2


def test_jobs_of_queues_that_did_not_opt_in_are_never_preempted(db):
    p = tenant(db)
    svc = JobService(db)
    low = svc.submit(p, diag("low", target_queue="evaluation", priority="low", resources={"num_cpus": 2}))
    launcher = FakeLauncher(cpus=2)
    pol = DispatchPolicy(global_cap=4, queues={q: QueuePolicy(concurrency=4) for q in QUEUES},
                         preemptible=frozenset({"training"}))
    d = Dispatcher(db, launcher, pol, owner="test", idle_poll_s=0, preempt_after_s=0)
    d.tick()
    svc.submit(p, diag("high", target_queue="evaluation", priority="critical"))
    for _ in range(25):
        d.tick()
        time.sleep(0.05)
    assert launcher.cancelled == [] and state_of(db, p, low.id).state == "running"

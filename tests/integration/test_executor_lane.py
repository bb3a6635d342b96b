"""The executor lane's logic (batches of short jobs in one process) against a real database, without Ray."""

from __future__ import annotations

from sqlalchemy import func, select

from mlhub.jobs.dispatcher import Dispatcher
from mlhub.jobs.service import JobService
from mlhub.store.models import JobEvent
from tests.integration.test_dispatcher import diag, drain, policy, state_of, tenant
from tests.support.fake_launcher import FakeLauncher

OK = {"status": "succeeded", "result": {"kind": "diagnostic"}, "duration_s": 0.001}


def drain_new(d: Dispatcher, rounds: int = 10) -> None:
    """Ticks as if woken by a submission each time (no waiting for the poll interval)."""
    for _ in range(rounds):
        d.new_work.set()
        d.tick()


def succeeded_events(db, job_id: int) -> int:
    with db.scheduler_scope(readonly=True) as s:
        return s.scalar(select(func.count()).select_from(JobEvent).where(
            JobEvent.job_id == job_id, JobEvent.type == "state", JobEvent.to_state == "succeeded"))


def warmed(db, p, launcher: FakeLauncher, cap: int = 2) -> Dispatcher:
    """A dispatcher that has seen one short diagnostic job (through a task): the kind is known to be short."""
    d = Dispatcher(db, launcher, policy(cap=cap), owner="test", idle_poll_s=0, prefetch=cap)
    first = JobService(db).submit(p, diag("warm-up"))
    drain(d, 3)
    assert state_of(db, p, first.id).state == "succeeded" and launcher.batches == []
    d._recent_duration_s = 0.001  # as after a run of such jobs: the claim window is wide open
    return d


def test_short_jobs_run_in_batches_each_recorded_once(db):
    p = tenant(db)
    launcher = FakeLauncher(cpus=2, lane=True, auto=lambda j: OK)
    d = warmed(db, p, launcher)
    ids = JobService(db).submit_many(p, [diag(f"j{i}") for i in range(40)])
    drain_new(d, 20)
    assert all(state_of(db, p, i).state == "succeeded" for i in ids)
    assert len(launcher.batches) < 40 and max(len(b) for b in launcher.batches) > 1
    assert sorted(j.id for b in launcher.batches for j in b) == ids  # each job in exactly one batch
    assert [succeeded_events(db, i) for i in ids] == [1] * 40
    assert d.batches == [] and d._in_flight().cpus == 0


def test_cancelling_a_job_mid_batch_stops_only_that_job(db):
    p = tenant(db)
    svc = JobService(db)
    held: set[int] = set()
    launcher = FakeLauncher(cpus=1, lane=True, auto=lambda j: None if j.id in held else OK)
    d = warmed(db, p, launcher, cap=1)
    ids = svc.submit_many(p, [diag(f"j{i}") for i in range(5)])
    held.add(ids[2])  # the third job of the batch runs until it is stopped
    drain_new(d, 1)
    [batch] = launcher.batches
    assert [j.id for j in batch] == ids
    svc.cancel(p, ids[2])
    d.new_work.set()
    drain_new(d, 10)
    assert len(launcher.stopped_batches) == 1  # its process was killed
    assert state_of(db, p, ids[2]).state == "cancelled"
    others = [i for i in ids if i != ids[2]]
    for i in others:  # back in line uncharged, run again, succeeded exactly once
        info = state_of(db, p, i)
        assert (info.state, info.attempt, info.max_attempts) == ("succeeded", 2, 4)
        assert succeeded_events(db, i) == 1
    assert ids[2] not in [j.id for b in launcher.batches[1:] for j in b]


def test_a_batch_whose_process_dies_is_retried_and_each_job_succeeds_once(db):
    p = tenant(db)
    svc = JobService(db)
    crash_next = {"on": False}
    launcher = FakeLauncher(cpus=1, lane=True, auto=lambda j: None if crash_next["on"] else OK)
    d = warmed(db, p, launcher, cap=1)
    crash_next["on"] = True
    ids = svc.submit_many(p, [diag(f"j{i}") for i in range(4)])
    drain_new(d, 1)
    [first] = launcher.batches
    assert len(first) == 4
    crash_next["on"] = False
    launcher.crash_batch(ids[0])  # SIGKILL of the process: nobody asked for it
    drain_new(d, 20)
    for i in ids:
        info = state_of(db, p, i)
        # no attempt charged: which job killed the process is unknown, so each ran again alone
        assert (info.state, info.attempt, info.max_attempts) == ("succeeded", 2, 4)
        assert succeeded_events(db, i) == 1
    assert [len(b) for b in launcher.batches[1:]] == [1, 1, 1, 1]


def test_a_job_that_kills_its_process_alone_is_charged_for_it(db):
    p = tenant(db)
    svc = JobService(db)
    launcher = FakeLauncher(cpus=1, lane=True, auto=lambda j: None if j.name == "killer" else OK)
    d = warmed(db, p, launcher, cap=1)
    job = svc.submit(p, diag("killer", retry={"max_attempts": 2, "backoff_s": 0}))
    for _ in (1, 2):
        deadline = 0
        while job.id not in launcher._open and deadline < 20:
            drain_new(d, 1)
            deadline += 1
        launcher.crash_batch(job.id)
        drain_new(d, 3)
    info = state_of(db, p, job.id)
    assert info.state == "dead" and info.attempt == 2 and "died" in info.error


def test_long_or_fanned_out_jobs_keep_one_task_per_attempt(db):
    p = tenant(db)
    svc = JobService(db)
    launcher = FakeLauncher(cpus=4, lane=True, auto=lambda j: OK)
    d = warmed(db, p, launcher, cap=4)
    d._kind_s[("training", "diagnostic")] = 30.0  # this queue's diagnostics were long
    long_ = svc.submit(p, diag("long", target_queue="training"))
    drain_new(d, 5)
    assert state_of(db, p, long_.id).state == "succeeded"
    assert long_.id not in [j.id for b in launcher.batches for j in b]

"""``mlhub.start_run`` from a plain Python process: what a script logs is what `mlhub runs show` reads back.

A SQLite file database under tmp_path (the embedded default); no Ray, no servers.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import mlhub
from mlhub.artifact_records import ArtifactService
from mlhub.audit import Principal
from mlhub.backends import Backends
from mlhub.config import load_settings
from mlhub.errors import ConflictError, NotFoundError, ValidationError
from mlhub.run_logging import _MetricWriter, job_run
from mlhub.store import runs as runs_repo
from mlhub.tenancy import TenantService
from mlhub.tracking import TrackingService


@pytest.fixture
def settings(tmp_path):
    return load_settings(home=tmp_path / "hub")


@pytest.fixture
def backends(settings):
    b = Backends(settings)
    b.ensure_schema()
    yield b
    b.close()


def reader(backends, run) -> tuple[TrackingService, Principal]:
    return TrackingService(backends.db), Principal(tenant_id=run.tenant_id, actor="test", source="python")


def test_params_metrics_tags_and_artifacts_land(settings, backends, tmp_path):
    report = tmp_path / "report.txt"
    report.write_text("all good\n")
    with mlhub.start_run("digits-mlp", experiment="digits", params={"lr": 0.01, "layers": 3},
                         tags={"team": "vision"}, settings=settings) as run:
        run.log_param("optimizer", "adam")
        run.log_params({"lr": 0.01})  # the same value again is fine
        for step in range(3):
            run.log_metrics({"loss": 1.0 / (step + 1), "acc": 0.5 + step / 10}, step=step)
        run.log_metric("f1", 0.8)
        run.log_metric("f1", 0.85)  # steps 0 and 1: a key's next step by default
        run.log_metric("f1", 0.9, step=10)
        run.set_tag("team", "vision-2")  # a tag set again takes the new value
        run.set_tags({"stage": "baseline"})
        file_rec = run.log_artifact(report)
        bytes_rec = run.log_artifact(b"\x89PNG fake", name="curve.png")
    assert run.status == "finished"

    svc, me = reader(backends, run)
    d = svc.get_run(me, run.id)
    assert (d.run.name, d.run.experiment, d.run.status, d.run.parent_run_id) == ("digits-mlp", "digits", "finished",
                                                                                 None)
    assert d.run.ended_at is not None
    assert d.params == {"lr": "0.01", "layers": "3", "optimizer": "adam"}
    assert d.tags == {"stage": "baseline", "team": "vision-2"}
    assert d.latest_metrics == {"acc": pytest.approx(0.7), "f1": 0.9, "loss": pytest.approx(1 / 3)}
    assert svc.metric_history(me, run.id, ["f1"]) == {"f1": [(0, 0.8), (1, 0.85), (10, 0.9)]}
    assert [(a.name, a.media_type, a.size_bytes) for a in d.artifacts] == [
        ("report.txt", "text/plain", 9), ("curve.png", "image/png", 9)]
    arts = ArtifactService(backends.db, backends.artifacts)
    assert arts.read_bytes(me, file_rec.id) == b"all good\n"
    assert arts.read_bytes(me, bytes_rec.id) == b"\x89PNG fake"


def test_two_runs_logging_the_same_bytes_each_list_them_under_their_own_name(settings, backends):
    with mlhub.start_run("first", settings=settings) as first:
        a = first.log_artifact(b"same plot bytes", name="curve.png")
    with mlhub.start_run("second", settings=settings) as second:
        b = second.log_artifact(b"same plot bytes", name="loss.png")
        second.log_artifact(b"same plot bytes", name="loss.png")  # logged twice: listed once
    assert a.id == b.id  # stored once, by content
    svc, me = reader(backends, first)
    assert [x.name for x in svc.get_run(me, first.id).artifacts] == ["curve.png"]
    assert [(x.id, x.name) for x in svc.get_run(me, second.id).artifacts] == [(a.id, "loss.png")]


def test_runs_nest_through_the_active_run_per_thread(settings, backends):
    seen_in_thread = {}
    with mlhub.start_run("outer", settings=settings) as outer:
        assert mlhub.active_run() is outer
        with mlhub.start_run("inner") as inner:
            assert mlhub.active_run() is inner
            with mlhub.start_run("innermost") as innermost:
                pass
        with mlhub.start_run("sibling") as sibling:
            pass
        with mlhub.start_run("detached", nested=False) as detached:
            pass

        def other_thread():  # a new thread starts with no active run
            seen_in_thread["active"] = mlhub.active_run()
            with mlhub.start_run("in-thread", settings=settings) as r:
                seen_in_thread["run"] = r

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    assert mlhub.active_run() is None
    assert (inner.parent_run_id, innermost.parent_run_id, sibling.parent_run_id) == (outer.id, inner.id, outer.id)
    assert detached.parent_run_id is None and outer.parent_run_id is None
    assert seen_in_thread["active"] is None and seen_in_thread["run"].parent_run_id is None

    svc, me = reader(backends, outer)
    by_id = {r.id: r for r in svc.list_runs(me)}
    assert by_id[innermost.id].parent_run_id == inner.id and by_id[inner.id].parent_run_id == outer.id
    assert {r.status for r in by_id.values()} == {"finished"}


def test_an_exception_in_the_block_fails_the_run_and_its_points_are_still_written(settings, backends):
    with pytest.raises(RuntimeError, match="diverged"):
        with mlhub.start_run("unstable", settings=settings) as run:
            for step in range(50):
                run.log_metric("loss", float(step), step=step)
            raise RuntimeError("loss diverged")
    with pytest.raises(KeyboardInterrupt):
        with mlhub.start_run("interrupted", settings=settings) as stopped:
            raise KeyboardInterrupt
    svc, me = reader(backends, run)
    assert svc.get_run(me, run.id).run.status == "failed"
    assert [s for s, _ in svc.metric_history(me, run.id, ["loss"])["loss"]] == list(range(50))
    assert svc.get_run(me, stopped.id).run.status == "killed"
    with pytest.raises(ValidationError, match="has ended"):
        run.log_metric("loss", 1.0)
    run.end("finished")  # ending again changes nothing
    assert svc.get_run(me, run.id).run.status == "failed"


def test_flush_writes_buffered_points_before_the_run_ends(settings, backends):
    run = mlhub.start_run("long", settings=settings)
    try:
        run.log_metrics({"loss": 0.5, "acc": 0.7}, step=0)
        run.flush()
        svc, me = reader(backends, run)
        assert svc.get_run(me, run.id).latest_metrics == {"acc": 0.7, "loss": 0.5}
        assert svc.get_run(me, run.id).run.status == "running"
    finally:
        run.end()


def test_the_buffer_is_bounded_the_logging_loop_waits_for_the_writer(settings, backends, monkeypatch):
    monkeypatch.setattr(_MetricWriter, "BATCH_SIZE", 10)
    monkeypatch.setattr(_MetricWriter, "MAX_PENDING", 25)
    monkeypatch.setattr(_MetricWriter, "FLUSH_INTERVAL_S", 3600.0)  # only size wakes the writer
    most_waiting = 0
    with mlhub.start_run("bounded", settings=settings) as run:
        for step in range(300):
            run.log_metrics({"a": 1.0, "b": 2.0}, step=step)
            most_waiting = max(most_waiting, len(run._metrics._pending))
    assert most_waiting < 25
    svc, me = reader(backends, run)
    assert svc.get_run(me, run.id).metric_points == {"a": 300, "b": 300}


def test_a_failed_write_is_kept_and_raised_at_flush_and_end(settings, backends):
    run = mlhub.start_run("orphaned", settings=settings)
    run.log_metric("loss", 1.0)
    with backends.db.tenant_scope(run.tenant_id) as s:  # the run disappears under the writer
        s.delete(runs_repo.get_run(s, run.tenant_id, run.id))
    with pytest.raises(ConflictError):
        run.flush()
    assert len(run._metrics._pending) == 1  # kept for the next try
    with pytest.raises(ConflictError):
        run.end()
    assert run.status == "finished" and mlhub.active_run() is None


@pytest.mark.parametrize(("call", "message"), [
    (lambda r: r.log_metric("loss", math.nan), "'loss': value must be a finite number, got nan"),
    (lambda r: r.log_metric("loss", math.inf), "finite number, got inf"),
    (lambda r: r.log_metric("loss", "0.5"), "finite number, got '0.5'"),
    (lambda r: r.log_metric("loss", True), "finite number, got True"),
    (lambda r: r.log_metric("loss", None), "finite number, got None"),
    (lambda r: r.log_metric("val/loss;drop", 1.0), "invalid metric key 'val/loss;drop'"),
    (lambda r: r.log_metric("", 1.0), "invalid metric key ''"),
    (lambda r: r.log_metric("x" * 129, 1.0), "invalid metric key"),
    (lambda r: r.log_metrics({1: 0.5}), "invalid metric key 1"),
    (lambda r: r.log_metrics([("loss", 0.5)]), "must be a mapping"),
    (lambda r: r.log_metric("loss", 1.0, step=-1), "step must be a non-negative integer, got -1"),
    (lambda r: r.log_metric("loss", 1.0, step=1.5), "step must be a non-negative integer, got 1.5"),
    (lambda r: r.log_params({"lr": 0.1}), r"params are set once per run; changed: 'lr' \('0.01' -> '0.1'\)"),
    (lambda r: r.log_param("bad\nkey", 1), "invalid param key"),
    (lambda r: r.set_tag(("a",), "b"), "invalid tag key"),
    (lambda r: r.log_artifact(b"data"), r"log_artifact\(bytes\) needs name="),
    (lambda r: r.log_artifact("/no/such/file.txt"), "not a file"),
    (lambda r: r.end("done"), "ends finished, failed or killed"),
])
def test_bad_input_is_refused_at_the_call(settings, backends, call, message):
    with mlhub.start_run("strict", params={"lr": 0.01}, settings=settings) as run:
        run.log_metric("good", 1.0)
        with pytest.raises(ValidationError, match=message):
            call(run)
        # a call that fails writes none of its points, even the good ones before the bad one
        with pytest.raises(ValidationError):
            run.log_metrics({"good": 2.0, "bad": math.nan})
    svc, me = reader(backends, run)
    d = svc.get_run(me, run.id)
    assert d.metric_points == {"good": 1} and d.params == {"lr": "0.01"} and d.run.status == "finished"


def test_bad_run_names_and_numpy_values(settings, backends):
    np = pytest.importorskip("numpy")
    with pytest.raises(ValidationError, match="invalid run name ''"):
        mlhub.start_run("", settings=settings)
    with pytest.raises(ValidationError, match="invalid experiment"):
        mlhub.start_run("ok", experiment="x" * 200, settings=settings)
    with pytest.raises(ValidationError, match="finite number"):
        with mlhub.start_run("np", settings=settings) as run:
            run.log_metrics({"f32": np.float32(0.25), "i64": np.int64(3)}, step=np.int64(2))
            run.log_metric("nan", np.float64("nan"))
    svc, me = reader(backends, run)
    assert svc.get_run(me, run.id).latest_metrics == {"f32": 0.25, "i64": 3.0}


def test_tenants_see_only_their_own_runs_and_never_nest_across(settings, backends):
    tenants = TenantService(backends.db)
    key_a, key_b = tenants.create_tenant("acme")[1], tenants.create_tenant("globex")[1]
    with mlhub.start_run("a-run", settings=settings, api_key=key_a) as a:
        a.log_metric("f1", 0.9)
        with mlhub.start_run("b-run", settings=settings, api_key=key_b) as b:
            b.log_metric("f1", 0.1)
    acme, globex = tenants.authenticate(key_a), tenants.authenticate(key_b)
    assert a.tenant_id == acme.tenant_id and b.tenant_id == globex.tenant_id
    assert b.parent_run_id is None  # the active run is another tenant's
    svc = TrackingService(backends.db)
    assert [r.id for r in svc.list_runs(acme)] == [a.id]
    assert [r.id for r in svc.list_runs(globex)] == [b.id]
    with pytest.raises(NotFoundError):
        svc.get_run(globex, a.id)


def test_inside_a_job_a_run_nests_under_the_jobs_run_as_the_jobs_tenant(settings, backends):
    tenants = TenantService(backends.db)
    job_tenant = tenants.authenticate(tenants.create_tenant("jobs")[1])
    with backends.db.tenant_scope(job_tenant.tenant_id) as s:
        job_run_id = runs_repo.create_run(s, job_tenant.tenant_id, "train-job").id
    with job_run(backends, job_tenant, job_run_id):
        with mlhub.start_run("user-loop") as run:  # no key: the job's tenant
            run.log_metric("loss", 0.3)
            with mlhub.start_run("fold-1") as fold:
                pass
        with mlhub.start_run("top-level", nested=False) as top:  # the job's tenant, no parent
            pass
        with mlhub.start_run("elsewhere", settings=settings) as own:  # the embedded default's tenant
            pass
    assert (run.tenant_id, run.parent_run_id) == (job_tenant.tenant_id, job_run_id)
    assert fold.parent_run_id == run.id
    assert (top.tenant_id, top.parent_run_id) == (job_tenant.tenant_id, None)
    assert own.parent_run_id is None and own.tenant_id != job_tenant.tenant_id  # never nested across tenants
    svc = TrackingService(backends.db)
    assert svc.get_run(job_tenant, run.id).latest_metrics == {"loss": 0.3}


SCRIPT = """
import mlhub
run = mlhub.start_run("forgotten", params={{"seed": 1}})
for step in range(1000):
    run.log_metrics({{"loss": 1.0 / (step + 1)}}, step=step)
print(run.id, flush=True)
{ending}
"""


@pytest.mark.parametrize(("ending", "status", "rc"), [("", "finished", 0),
                                                     ("raise SystemExit(0)", "finished", 0),
                                                     ("raise RuntimeError('crash')", "failed", 1)])
def test_a_run_never_ended_is_flushed_and_ended_at_interpreter_exit(settings, backends, ending, status, rc):
    env = {"PATH": "/usr/bin:/bin", "MLHUB_HOME": str(settings.home),
           **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT.format(ending=ending))], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == rc, proc.stderr
    run_id = int(proc.stdout.split()[0])
    tenant = runs_tenant(backends, run_id)
    svc = TrackingService(backends.db)
    me = Principal(tenant_id=tenant, actor="test", source="python")
    d = svc.get_run(me, run_id)
    assert d.run.status == status and d.run.ended_at is not None
    assert d.metric_points == {"loss": 1000} and d.latest_metrics == {"loss": 0.001}


def runs_tenant(backends, run_id: int) -> str:
    from sqlalchemy import select

    from mlhub.store.models import Run

    with backends.db.engine.connect() as conn:
        return conn.execute(select(Run.tenant_id).where(Run.id == run_id)).scalar_one()


def test_threads_may_log_to_one_run(settings, backends):
    with mlhub.start_run("threaded", settings=settings) as run:
        def worker(i: int) -> None:
            for step in range(500):
                run.log_metric(f"w{i}", float(step), step=step)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    svc, me = reader(backends, run)
    assert svc.get_run(me, run.id).metric_points == {f"w{i}": 500 for i in range(4)}


def test_import_mlhub_and_start_run_stay_light():
    code = ("import sys, mlhub; mlhub.start_run; mlhub.active_run\n"
            "heavy = [m for m in ('sqlalchemy', 'pydantic', 'ray', 'numpy') if m in sys.modules]\n"
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}})
    assert proc.returncode == 0, proc.stderr

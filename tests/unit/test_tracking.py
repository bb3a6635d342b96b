"""Tracked runs: the read service (tenant-scoped), `mlhub runs list|show|plot|compare`, and what `mlhub watch`
shows.

SQLite on the embedded default; no Ray.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from mlhub.cli.main import main
from mlhub.errors import NotFoundError, ValidationError
from mlhub.store import runs as runs_repo
from mlhub.store.database import Database
from mlhub.store.runs import MetricPoint
from mlhub.tenancy import TenantService
from mlhub.tracking import TrackingService

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def record_run(db: Database, tenant_id: str, name: str = "digits", *, epochs: int = 5, experiment: str = "exp",
               job_id: int | None = None, status: str = "finished", with_val: bool = True) -> int:
    """A run as a training job records it: params, per-epoch points (step = epoch), final_* points, summary."""
    with db.tenant_scope(tenant_id) as s:
        run = runs_repo.create_run(s, tenant_id, name, experiment=experiment, job_id=job_id,
                                   attempt=1 if job_id else None)
        runs_repo.log_params(s, tenant_id, run.id, {"framework": "baseline", "lr": 0.5, "epochs": epochs})
        points = []
        for e in range(epochs):
            points.append(MetricPoint("loss", 1.0 / (e + 1), e))
            if with_val:
                points += [MetricPoint("val_loss", 1.5 / (e + 1), e), MetricPoint("val_accuracy", 0.5 + e / 100, e)]
        if epochs:
            points.append(MetricPoint("final_accuracy", 0.91, 0))
        runs_repo.log_metrics(s, tenant_id, run.id, points)
        run.status = status
        run.summary = {"accuracy": 0.91} if epochs else {}
        return run.id


@pytest.fixture
def db(tmp_path):
    d = Database(f"sqlite:///{tmp_path / 't.db'}")
    d.upgrade()
    yield d
    d.dispose()


@pytest.fixture
def tenants(db):
    svc = TenantService(db)
    return [svc.authenticate(svc.create_tenant(n)[1]) for n in ("acme", "globex")]


def test_list_runs_newest_first_with_filters_and_only_the_callers_runs(db, tenants):
    acme, globex = tenants
    a1 = record_run(db, acme.tenant_id, "a1", experiment="digits")
    a2 = record_run(db, acme.tenant_id, "a2", experiment="iris", status="failed")
    a3 = record_run(db, acme.tenant_id, "a3", experiment="digits", status="running")
    g1 = record_run(db, globex.tenant_id, "g1", experiment="digits")
    svc = TrackingService(db)
    assert [r.id for r in svc.list_runs(acme)] == [a3, a2, a1]
    assert [r.id for r in svc.list_runs(globex)] == [g1]
    assert [r.id for r in svc.list_runs(acme, experiment="digits")] == [a3, a1]
    assert [r.id for r in svc.list_runs(acme, status="failed")] == [a2]
    assert [r.id for r in svc.list_runs(acme, limit=2)] == [a3, a2]
    assert svc.list_runs(acme, experiment="none") == []
    with pytest.raises(ValidationError, match="unknown run status 'done'"):
        svc.list_runs(acme, status="done")
    with pytest.raises(ValidationError, match="limit"):
        svc.list_runs(acme, limit=0)


def test_list_runs_by_job(db, tenants):
    from mlhub.store.models import Job
    from mlhub.store.types import utcnow

    acme = tenants[0]
    with db.tenant_scope(acme.tenant_id) as s:
        job = Job(tenant_id=acme.tenant_id, queue="training", kind="training", name="j", priority=0, state="running",
                  attempt=1, max_attempts=1, spec={}, resources={}, submitted_by="t", cancel_requested=False,
                  created_at=utcnow(), updated_at=utcnow())
        s.add(job)
        s.flush()
        job_id = job.id
    with_job = record_run(db, acme.tenant_id, "j", job_id=job_id)
    record_run(db, acme.tenant_id, "other")
    assert [r.id for r in TrackingService(db).list_runs(acme, job_id=job_id)] == [with_job]


def test_get_run_has_params_latest_metrics_summary_and_point_counts(db, tenants):
    acme = tenants[0]
    run_id = record_run(db, acme.tenant_id, epochs=4)
    d = TrackingService(db).get_run(acme, run_id)
    assert (d.run.id, d.run.name, d.run.experiment, d.run.status) == (run_id, "digits", "exp", "finished")
    assert d.params == {"framework": "baseline", "lr": "0.5", "epochs": "4"}
    assert d.tags == {}
    assert d.latest_metrics == {"loss": 0.25, "val_loss": 0.375, "val_accuracy": 0.53, "final_accuracy": 0.91}
    assert d.metric_points == {"loss": 4, "val_loss": 4, "val_accuracy": 4, "final_accuracy": 1}
    assert d.final_metrics == {"accuracy": 0.91}
    assert replace(d, run=replace(d.run, summary={})).final_metrics == {"accuracy": 0.91}  # from final_* points


def test_metric_history_all_or_selected_keys_in_step_order(db, tenants):
    acme = tenants[0]
    run_id = record_run(db, acme.tenant_id, epochs=3)
    svc = TrackingService(db)
    everything = svc.metric_history(acme, run_id)
    assert sorted(everything) == ["final_accuracy", "loss", "val_accuracy", "val_loss"]
    assert everything["loss"] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert svc.metric_history(acme, run_id, ["val_loss", "loss"]) == {
        "val_loss": [(0, 1.5), (1, 0.75), (2, 0.5)], "loss": everything["loss"]}
    with pytest.raises(NotFoundError, match=r"no metric 'nope' \(it has: final_accuracy, loss, val_acc"):
        svc.metric_history(acme, run_id, ["loss", "nope"])


def test_another_tenants_run_is_not_found_exactly_like_a_missing_one(db, tenants):
    acme, globex = tenants
    run_id = record_run(db, acme.tenant_id)
    svc = TrackingService(db)
    for call in (lambda: svc.get_run(globex, run_id), lambda: svc.metric_history(globex, run_id),
                 lambda: svc.metric_history(globex, run_id, ["loss"])):
        with pytest.raises(NotFoundError, match=f"run {run_id} not found"):
            call()
    with pytest.raises(NotFoundError, match="run 999 not found"):
        svc.get_run(acme, 999)


# --- the CLI, on the embedded default ------------------------------------------------------------------


@pytest.fixture
def embedded(mlhub_home):
    """The embedded default's database and its tenant `default` (as the CLI will act)."""
    from mlhub.client import Hub

    hub = Hub(source="cli")  # creates the schema, tenant default and the credentials file
    yield hub.backends.db, hub.principal
    hub.close()


def run_cli(capsys, *args: str):
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def one_error(rc: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_runs_list_json_and_table(capsys, embedded):
    db, me = embedded
    first = record_run(db, me.tenant_id, "first", experiment="a")
    second = record_run(db, me.tenant_id, "second", experiment="b")
    rc, out, err = run_cli(capsys, "runs", "list", "--json")
    assert rc == 0, err
    assert [r["id"] for r in json.loads(out)] == [second, first]
    rc, out, _ = run_cli(capsys, "runs", "list", "--experiment", "a", "--json")
    assert [r["name"] for r in json.loads(out)] == ["first"]
    rc, out, _ = run_cli(capsys, "runs", "list", "--limit", "1")
    assert rc == 0 and "second" in out and "first" not in out and "accuracy=0.9100" in out


def test_runs_show_has_params_final_metrics_and_a_compact_epoch_table(capsys, embedded):
    db, me = embedded
    run_id = record_run(db, me.tenant_id, epochs=40)
    rc, out, err = run_cli(capsys, "runs", "show", str(run_id))
    assert rc == 0, err
    assert f"run {run_id} digits" in out and "lr" in out and "0.5" in out and "accuracy" in out and "0.9100" in out
    assert "per-epoch metrics (40 steps, 12 shown; --json for all)" in out
    assert "val_accuracy" in out and "0.8900" in out  # the last epoch is always shown
    assert "final_accuracy" not in out.split("per-epoch")[1]  # one-point final series are not epochs
    rc, out, _ = run_cli(capsys, "runs", "show", str(run_id), "--json")
    doc = json.loads(out)
    assert doc["params"]["epochs"] == "40" and doc["final_metrics"] == {"accuracy": 0.91}
    assert len(doc["epochs"]) == 40 and doc["epochs"][-1] == {"step": 39, "loss": 1 / 40, "val_loss": 1.5 / 40,
                                                               "val_accuracy": 0.89}


def test_runs_plot_writes_a_png_to_the_default_path_or_out(capsys, embedded, tmp_path, monkeypatch):
    db, me = embedded
    run_id = record_run(db, me.tenant_id)
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(capsys, "runs", "plot", str(run_id))
    assert rc == 0, err
    default = tmp_path / f"run-{run_id}.png"
    assert out.strip() == str(default) and default.read_bytes()[:8] == PNG_MAGIC
    folder = tmp_path / "plots"
    folder.mkdir()
    rc, out, _ = run_cli(capsys, "runs", "plot", str(run_id), "--out", str(folder), "--metric", "loss", "--json")
    doc = json.loads(out)
    assert doc == {"run_id": run_id, "path": str(folder / f"run-{run_id}.png"), "metrics": ["loss"]}
    assert (folder / f"run-{run_id}.png").read_bytes()[:8] == PNG_MAGIC


def test_runs_errors_are_one_clear_line(capsys, embedded, tmp_path):
    db, me = embedded
    run_id = record_run(db, me.tenant_id)
    empty = record_run(db, me.tenant_id, "empty", epochs=0, status="running")
    other = TenantService(db).create_tenant("globex")[1]
    cases = [
        (["runs", "show", "999"], "run 999 not found", 4),
        (["runs", "plot", "999"], "run 999 not found", 4),
        (["--api-key", other, "runs", "show", str(run_id)], f"run {run_id} not found", 4),
        (["runs", "plot", str(empty)], f"run {empty} has no per-epoch metrics", 4),
        (["runs", "plot", str(run_id), "--metric", "f1"], "no metric 'f1'", 4),
        (["runs", "plot", str(run_id), "--out", str(tmp_path / "nope" / "x.png")], "does not exist", 2),
        (["runs", "list", "--status", "done"], "unknown run status", 2),
    ]
    for args, needle, code in cases:
        rc, _, err = run_cli(capsys, *args)
        assert needle in one_error(rc, err) and rc == code, (args, err)
    assert not (tmp_path / "nope").exists()


def scripted_runs() -> tuple[int, int, int]:
    """Three runs a script logs with mlhub.start_run on the embedded default (the CLI's tenant)."""
    import mlhub

    ids = []
    for name, lr, f1s, team in (("slow", 0.001, [0.5, 0.8, 0.93], "vision"), ("fast", 0.1, [0.6, 0.95], "nlp"),
                                ("tiny", 0.005, [0.4, 0.7], "vision")):
        with mlhub.start_run(name, params={"lr": lr, "optimizer": "adam"}, tags={"team": team}) as run:
            for step, f1 in enumerate(f1s):
                run.log_metrics({"f1": f1, "loss": 1 - f1}, step=step)
        ids.append(run.id)
    return tuple(ids)


def test_runs_list_filter_and_order_by(capsys, embedded):
    slow, fast, tiny = scripted_runs()
    rc, out, err = run_cli(capsys, "runs", "list", "--filter", "metrics.f1 > 0.9 and params.lr < 0.01", "--json")
    assert rc == 0, err
    assert [r["id"] for r in json.loads(out)] == [slow]
    rc, out, _ = run_cli(capsys, "runs", "list", "-f", "tags.team = 'vision'", "--order-by", "metrics.f1 desc",
                         "--json")
    assert [r["id"] for r in json.loads(out)] == [slow, tiny]
    rc, out, _ = run_cli(capsys, "runs", "list", "--order-by", "params.lr", "--json")
    assert [r["id"] for r in json.loads(out)] == [slow, tiny, fast]


def test_runs_show_has_the_tags_artifacts_and_parent_of_a_scripted_run(capsys, embedded, tmp_path):
    import mlhub

    with mlhub.start_run("parent") as parent, mlhub.start_run("child", tags={"fold": 2}) as child:
        child.log_artifact(b"a,b\n1,2\n", name="preds.csv")
    rc, out, err = run_cli(capsys, "runs", "show", str(child.id))
    assert rc == 0, err
    assert f"child of run {parent.id}" in out and "fold" in out and "preds.csv" in out and "text/csv" in out
    rc, out, _ = run_cli(capsys, "runs", "show", str(child.id), "--json")
    doc = json.loads(out)
    assert doc["tags"] == {"fold": "2"} and doc["parent_run_id"] == parent.id
    assert [(a["name"], a["size_bytes"]) for a in doc["artifacts"]] == [("preds.csv", 8)]


def test_runs_compare_marks_what_differs_and_plots_every_run(capsys, embedded, tmp_path):
    slow, fast, _ = scripted_runs()
    rc, out, err = run_cli(capsys, "runs", "compare", str(slow), str(fast), "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert [r["id"] for r in doc["runs"]] == [slow, fast]
    assert {c["key"]: (c["values"], c["differs"]) for c in doc["params"]} == {
        "lr": (["0.001", "0.1"], True), "optimizer": (["adam", "adam"], False)}
    assert {c["key"]: c["values"] for c in doc["metrics"]} == {"f1": [0.93, 0.95],
                                                               "loss": [pytest.approx(0.07), pytest.approx(0.05)]}
    assert doc["differing"] == {"params": ["lr"], "tags": ["team"], "metrics": ["f1", "loss"]}

    png = tmp_path / "cmp.png"
    rc, out, err = run_cli(capsys, "runs", "compare", str(slow), str(fast), "--plot", str(png), "-m", "f1")
    assert rc == 0, err
    assert png.read_bytes()[:8] == PNG_MAGIC and out.strip().endswith(str(png))
    lines = {line.split("│")[3].strip(): line for line in out.splitlines() if line.count("│") >= 5}
    assert "*" in lines["lr"] and "*" not in lines["optimizer"] and "*" in lines["f1"] and "loss" not in lines
    rc, out, _ = run_cli(capsys, "runs", "compare", str(slow), str(fast), "--diff")
    assert "optimizer" not in out and "lr" in out


def test_runs_filter_and_compare_errors_are_one_clear_line(capsys, embedded):
    slow, fast, _ = scripted_runs()
    other = TenantService(embedded[0]).create_tenant("globex")[1]
    cases = [
        (["runs", "list", "--filter", "metrics.f1 > high"], "a text value is quoted: 'high' at position 13", 2),
        (["runs", "list", "--order-by", "metrics.f1 down"], "at position 11", 2),
        (["runs", "compare", str(slow)], "compare 2 to 20 runs, got 1", 2),
        (["runs", "compare", str(slow), "999"], "run 999 not found", 4),
        (["runs", "compare", str(slow), str(fast), "-m", "auc"], "no compared run has metric 'auc'", 4),
        (["--api-key", other, "runs", "compare", str(slow), str(fast)], f"run {slow} not found", 4),
    ]
    for args, needle, code in cases:
        rc, _, err = run_cli(capsys, *args)
        assert needle in one_error(rc, err) and rc == code, (args, err)


# --- mlhub watch: what a training job's progress document shows ----------------------------------------


def _job_info(state: str, progress: dict | None):
    from mlhub.jobs.store import JobInfo

    now = datetime.now(UTC)
    return JobInfo(7, "t", "training", "training", "digits", 0, state, 1, 3, now, now, None, None, None, None,
                   progress, "tester", False)


# the document run_training writes after each epoch (mlhub/jobs/handlers.py)
PROGRESS = {"epoch": 3, "epochs": 10, "metrics": {"loss": 0.4321, "val_accuracy": 0.9}, "rows_per_s": 12345.6,
            "eta_s": 41.7}


def test_watch_line_shows_epoch_loss_metrics_throughput_and_eta():
    from mlhub.cli.follow import _describe

    line = _describe(_job_info("running", PROGRESS))
    for needle in ("job 7 digits", "running", "epoch 3/10", "loss 0.4321", "val_accuracy 0.9000",
                   "12,346 rows/s", "ETA 42s"):
        assert needle in line, (needle, line)
    assert _describe(_job_info("queued", None)) == "job 7 digits  queued"


def test_watch_follows_the_progress_until_the_job_ends(capsys):
    from mlhub.cli.follow import follow_job

    updates = [_job_info("running", PROGRESS),
               _job_info("succeeded", {**PROGRESS, "epoch": 10, "eta_s": 0.0})]

    class Handle:
        def status(self):
            return updates[0]

        def wait(self, timeout, poll_s, raise_on_failure, on_update):
            for info in updates:
                on_update(info)
            return updates[-1]

    class FakeHub:
        def job(self, job_id):
            assert job_id == 7
            return Handle()

    assert follow_job(FakeHub(), 7) == 0
    out = capsys.readouterr().out
    assert "epoch 10/10" in out and "loss 0.4321" in out and "12,346 rows/s" in out and "job 7 succeeded" in out

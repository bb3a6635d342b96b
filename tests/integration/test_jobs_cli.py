"""Job commands that only touch the store, driven in-process on the embedded default (no Ray needed)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import update

from mlhub.cli.main import main
from mlhub.config import load_settings
from mlhub.store.database import Database
from mlhub.store.models import Job, ModelVersion, RegisteredModel
from mlhub.store.types import utcnow


def run(capsys, *args):
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def submit(capsys, *args) -> int:
    rc, out, err = run(capsys, *args, "--json")
    assert rc == 0, err
    return json.loads(out)["id"]


def test_submit_read_cancel_and_clean_from_the_cli(capsys, mlhub_home):
    train = submit(capsys, "train", "--name", "iris", "--framework", "sklearn", "--model", "random_forest",
                   "--dataset", "sklearn:iris", "--param", "n_estimators=5", "--priority", "high")
    diag = submit(capsys, "diagnose", "--sleep", "5")
    rc, out, _ = run(capsys, "status", str(train), "--json")
    info = json.loads(out)
    assert (info["state"], info["queue"], info["priority"]) == ("queued", "training", 50)
    rc, out, _ = run(capsys, "status", "--json")
    assert json.loads(out) == {"training": {"queued": 1}, "evaluation": {"queued": 1}}
    # why a queued job waits (the orchestrator's note) is in the list's note column
    from mlhub.jobs import store

    db0 = Database(load_settings().effective_database_url)
    with db0.scheduler_scope() as s:
        store.set_waiting(s, {train: "waiting for resources: needs 2 CPUs"})
    db0.dispose()
    rc, out, _ = run(capsys, "jobs")
    assert rc == 0 and "note" in out and "waiting for resources: needs 2 CPUs" in out, out
    rc, out, _ = run(capsys, "cancel", str(diag))
    assert rc == 0 and f"job {diag} cancelled" in out
    rc, out, _ = run(capsys, "jobs", "--state", "cancelled", "--json")
    assert [j["id"] for j in json.loads(out)] == [diag]

    # age the finished jobs; one of them is in a model version's lineage and must survive `clean`
    db = Database(load_settings().effective_database_url)
    lineage = submit(capsys, "diagnose")
    with db.engine.begin() as conn:
        conn.execute(update(Job).where(Job.id.in_([diag, lineage])).values(
            state="succeeded", finished_at=utcnow() - timedelta(days=30)))
        conn.execute(update(Job).where(Job.id == diag).values(state="cancelled"))
        tenant = conn.execute(Job.__table__.select().where(Job.id == lineage)).first().tenant_id
        model_id = conn.execute(RegisteredModel.__table__.insert().values(
            tenant_id=tenant, name="m", tags={}, gates=[], created_at=utcnow(), updated_at=utcnow())
        ).inserted_primary_key[0]
        conn.execute(ModelVersion.__table__.insert().values(
            tenant_id=tenant, model_id=model_id, version=1, framework="sklearn", model_format="skops",
            job_id=lineage, created_by="t", tags={}, metrics={}, stage="none", status="ready", created_at=utcnow()))
    rc, out, _ = run(capsys, "clean", "--older-than", "7d", "--dry-run", "--json")
    assert json.loads(out) == {"dry_run": True, "job_ids": [diag]}
    rc, out, _ = run(capsys, "clean", "--older-than", "7d")
    assert rc == 0 and "deleted 1 finished job" in out
    rc, out, _ = run(capsys, "jobs", "--json")
    assert sorted(j["id"] for j in json.loads(out)) == sorted([train, lineage])
    db.dispose()


def test_tune_is_accepted_and_queued_on_the_hpo_queue(capsys, mlhub_home, tmp_path):
    spec = tmp_path / "hpo.yaml"
    spec.write_text("kind: hpo\nname: search\nmetric: val_accuracy\nmode: max\nnum_samples: 4\n"
                    "trainer: {name: t, framework: sklearn, model: random_forest,"
                    " dataset: {source: sklearn, name: iris}}\n"
                    "search_space: {n_estimators: {type: randint, low: 5, high: 50}}\n")
    rc, out, err = run(capsys, "tune", str(spec))
    assert rc == 0 and "queued on hpo" in out, err
    from actors.orchestrator import dispatch_policy

    assert dispatch_policy(load_settings()).queues["hpo"].concurrency == load_settings().max_concurrent_jobs


@pytest.mark.parametrize(("args", "needle"), [
    (["train", "--name", "x", "--framework", "sklearn", "--model", "rf", "--dataset", "mnist"], "--dataset"),
    (["train", "--name", "x", "--framework", "sklearn", "--model", "random_forest", "--dataset", "sklearn:iris",
      "--param", "oops"], "--param"),
    (["train", "--name", "x", "--framework", "sklearn", "--model", "no_such_model", "--dataset", "sklearn:iris"],
     "no_such_model"),
    (["train", "--name", "bad name", "--framework", "torchy", "--model", "m", "--dataset", "sklearn:mnist"],
     "framework"),
    (["evaluate", "--model", "a@@b", "--dataset", "sklearn:iris"], "model"),
    (["status", "999"], "job 999 not found"),
    (["logs", "999"], "job 999 not found"),
])
def test_bad_job_input_is_one_clear_line(capsys, mlhub_home, args, needle):
    rc, out, err = run(capsys, *args)
    assert rc != 0 and err.startswith("error:") and needle in err and "Traceback" not in err
    rc, out, _ = run(capsys, "jobs", "--json")
    assert json.loads(out) == []  # nothing half-written


def test_a_distributed_evaluation_holds_all_its_workers_with_a_free_driver(capsys, mlhub_home):
    job = submit(capsys, "evaluate", "--model", "digits-net/1", "--dataset", "sklearn:digits", "--num-workers", "3",
                 "--cpus", "0.5")
    rc, out, _ = run(capsys, "status", str(job), "--json")
    info = json.loads(out)
    assert rc == 0 and info["resources"] == {"num_cpus": 1.5, "num_gpus": 0.0, "driver": True}
    rc, _, err = run(capsys, "evaluate", "--model", "m/1", "--dataset", "sklearn:iris", "--num-workers", "0")
    assert rc != 0 and "num_workers" in err


def test_predict_flags_build_the_batch_spec(capsys, mlhub_home):
    job = submit(capsys, "predict", "--model", "iris@champion", "--input", "rows/", "--workers", "2",
                 "--batch-size", "512", "--no-cache", "--on-error", "skip", "--cpus", "0.5")
    db = Database(load_settings().effective_database_url)
    with db.scheduler_scope(readonly=True) as s:
        spec, resources = s.query(Job.spec, Job.resources).filter(Job.id == job).one()
    db.dispose()
    assert (spec["model"], spec["input"], spec["num_workers"], spec["batch_size"], spec["use_cache"],
            spec["on_error"], spec["name"]) == ("iris@champion", "rows/", 2, 512, False, "skip", "predict-iris")
    assert resources["driver"] is True and resources["num_cpus"] == 1.0  # two actors of 0.5 CPU; driver 0
    rc, _, err = run(capsys, "predict", "--model", "iris", "--input", "x.csv", "--workers", "0")
    assert rc == 2 and "--workers" in err

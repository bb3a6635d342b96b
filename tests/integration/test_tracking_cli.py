"""`mlhub runs list|show|plot|compare` on PostgreSQL (row-level security on): runs recorded through the store as
a training job records them, or by a script with mlhub.start_run, read back, filtered and compared through the
CLI as their tenant, invisible to another tenant. No Ray."""

from __future__ import annotations

import json
import uuid

import pytest

from mlhub.cli.main import main
from mlhub.store.database import Database
from mlhub.tenancy import TenantService
from tests.unit.test_tracking import PNG_MAGIC, record_run

pytestmark = pytest.mark.postgres


def run_cli(capsys, *args: str):
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_runs_cli_reads_a_tracked_run_on_postgres_and_hides_it_from_other_tenants(
        capsys, migrated_pg_url, monkeypatch, tmp_path):
    monkeypatch.setenv("MLHUB_DATABASE_URL", migrated_pg_url)
    db = Database(migrated_pg_url)
    try:
        tenants = TenantService(db)
        key = tenants.create_tenant(f"trk-{uuid.uuid4().hex[:8]}")[1]
        other_key = tenants.create_tenant(f"trk-{uuid.uuid4().hex[:8]}")[1]
        me = tenants.authenticate(key)
        run_id = record_run(db, me.tenant_id, "pg-digits", epochs=6, experiment="pg")
    finally:
        db.dispose()

    rc, out, err = run_cli(capsys, "--api-key", key, "runs", "list", "--experiment", "pg", "--json")
    assert rc == 0, err
    assert [(r["id"], r["name"], r["status"]) for r in json.loads(out)] == [(run_id, "pg-digits", "finished")]

    rc, out, err = run_cli(capsys, "--api-key", key, "runs", "show", str(run_id), "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["params"] == {"framework": "baseline", "lr": "0.5", "epochs": "6"}
    assert doc["final_metrics"] == {"accuracy": 0.91}
    assert [e["step"] for e in doc["epochs"]] == list(range(6)) and doc["epochs"][-1]["val_accuracy"] == 0.55

    rc, out, err = run_cli(capsys, "--api-key", key, "runs", "plot", str(run_id), "--out", str(tmp_path / "c.png"))
    assert rc == 0, err
    assert out.strip() == str(tmp_path / "c.png") and (tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC

    # another tenant: nothing listed, the run itself not found (RLS and the repository's own filter)
    rc, out, _ = run_cli(capsys, "--api-key", other_key, "runs", "list", "--json")
    assert rc == 0 and json.loads(out) == []
    for cmd in ("show", "plot"):
        rc, _, err = run_cli(capsys, "--api-key", other_key, "runs", cmd, str(run_id))
        assert rc == 4 and err.strip() == f"error: run {run_id} not found"


def test_scripted_runs_filtered_and_compared_through_the_cli_on_postgres(capsys, migrated_pg_url, monkeypatch,
                                                                          tmp_path):
    """What a user does: a script logs runs with mlhub.start_run, then `runs list --filter`, `runs compare`."""
    import mlhub
    from mlhub.config import load_settings

    monkeypatch.setenv("MLHUB_DATABASE_URL", migrated_pg_url)
    db = Database(migrated_pg_url)
    try:
        tenants = TenantService(db)
        key = tenants.create_tenant(f"trk-{uuid.uuid4().hex[:8]}")[1]
        other_key = tenants.create_tenant(f"trk-{uuid.uuid4().hex[:8]}")[1]
    finally:
        db.dispose()
    settings = load_settings(home=tmp_path / "hub", database_url=migrated_pg_url)
    ids = {}
    for name, lr, f1s in (("a", 0.001, [0.7, 0.92]), ("b", 0.05, [0.8, 0.97]), ("c", 0.002, [0.95, 0.85])):
        with mlhub.start_run(name, experiment="pg-script", params={"lr": lr}, settings=settings,
                             api_key=key) as run:
            for step, f1 in enumerate(f1s):
                run.log_metrics({"f1": f1}, step=step)
            run.log_artifact(f"model {name}".encode(), name=f"{name}.txt")
        ids[name] = run.id

    rc, out, err = run_cli(capsys, "--api-key", key, "runs", "list", "--filter",
                           "metrics.f1 > 0.9 and params.lr < 0.01", "--json")
    assert rc == 0, err
    assert [r["id"] for r in json.loads(out)] == [ids["a"]]  # c's best f1 is not its latest
    rc, out, err = run_cli(capsys, "--api-key", key, "runs", "list", "--experiment", "pg-script", "--order-by",
                           "metrics.f1 desc", "--json")
    assert [r["name"] for r in json.loads(out)] == ["b", "a", "c"]

    rc, out, err = run_cli(capsys, "--api-key", key, "runs", "compare", str(ids["a"]), str(ids["b"]), "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert {c["key"]: c["values"] for c in doc["metrics"]} == {"f1": [0.92, 0.97]}
    assert doc["differing"]["params"] == ["lr"]
    png = tmp_path / "ab.png"
    rc, out, err = run_cli(capsys, "--api-key", key, "runs", "compare", str(ids["a"]), str(ids["b"]), str(ids["c"]),
                           "--plot", str(png))
    assert rc == 0, err
    assert png.read_bytes()[:8] == PNG_MAGIC and f"{ids['c']} c" in out

    rc, out, err = run_cli(capsys, "--api-key", key, "runs", "show", str(ids["b"]), "--json")
    assert [a["name"] for a in json.loads(out)["artifacts"]] == ["b.txt"]

    # another tenant: the filter finds nothing of theirs, compare refuses
    rc, out, _ = run_cli(capsys, "--api-key", other_key, "runs", "list", "--filter", "metrics.f1 > 0", "--json")
    assert rc == 0 and json.loads(out) == []
    rc, _, err = run_cli(capsys, "--api-key", other_key, "runs", "compare", str(ids["a"]), str(ids["b"]))
    assert rc == 4 and err.strip() == f"error: run {ids['a']} not found"

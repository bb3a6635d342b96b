"""`mlhub runs list|show|plot` on PostgreSQL (row-level security on): a run recorded through the store as a
training job records it, read back through the CLI as its tenant, invisible to another tenant. No Ray."""

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

"""The installed ``mlhub`` console script against a real, empty PostgreSQL database, one process per command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.postgres


def _mlhub_script() -> str:
    beside = Path(sys.executable).parent / "mlhub"
    if beside.exists():
        return str(beside)
    found = shutil.which("mlhub")
    assert found, "the mlhub console script is not installed"
    return found


@dataclass
class Run:
    rc: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def mlhub(fresh_pg_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_") or k == "MLHUB_HOME"}
    env["MLHUB_DATABASE_URL"] = fresh_pg_url
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    script = _mlhub_script()

    def run(*args: str, api_key: str | None = None) -> Run:
        argv = [script, *(["--api-key", api_key] if api_key else []), *args]
        p = subprocess.run(argv, check=False, env=env, cwd=workdir, capture_output=True, text=True, timeout=120)
        return Run(p.returncode, p.stdout, p.stderr)

    return run


def _ok(r: Run) -> Run:
    assert r.rc == 0, (r.rc, r.out, r.err)
    return r


def _refused(r: Run) -> str:
    assert r.rc != 0, r.out
    assert "Traceback" not in r.err
    assert len(r.err_lines) == 1, r.err
    assert r.err_lines[0].startswith("error: ")
    return r.err_lines[0]


def _create_tenant(mlhub, name: str) -> str:
    return _ok(mlhub("tenants", "create", name, "--json")).json()["api_key"]


def test_a_fresh_database_is_refused_until_db_upgrade_then_is_up_to_date(mlhub):
    line = _refused(mlhub("keys", "list"))
    assert "mlhub db upgrade" in line
    assert _refused(mlhub("tenants", "create", "t1")).count("mlhub db upgrade") == 1

    before = _ok(mlhub("db", "current", "--json")).json()
    assert before["current"] is None and before["up_to_date"] is False
    assert before["database"].startswith("postgresql+psycopg://")

    upgraded = _ok(mlhub("db", "upgrade"))
    assert f"empty -> {before['head']}" in upgraded.out

    after = _ok(mlhub("db", "current", "--json")).json()
    assert after["current"] == after["head"] == before["head"]
    assert after["up_to_date"] is True


def test_tenants_see_only_their_own_keys_and_audit_events(mlhub):
    _ok(mlhub("db", "upgrade"))
    k1 = _create_tenant(mlhub, "t1")
    k2 = _create_tenant(mlhub, "t2")
    extra = _ok(mlhub("keys", "create", "--name", "ci", "--json", api_key=k1)).json()

    t1_keys = _ok(mlhub("keys", "list", "--json", api_key=k1)).json()
    t2_keys = _ok(mlhub("keys", "list", "--json", api_key=k2)).json()

    t1_prefixes = {k["prefix"] for k in t1_keys}
    t2_prefixes = {k["prefix"] for k in t2_keys}
    assert t1_prefixes == {k1.split("_")[1], extra["key"]["prefix"]}
    assert t2_prefixes == {k2.split("_")[1]}
    assert not t1_prefixes & t2_prefixes

    # t2 cannot touch t1's key: to t2 it does not exist
    line = _refused(mlhub("keys", "revoke", extra["key"]["prefix"], api_key=k2))
    assert "no API key" in line

    t1_events = _ok(mlhub("audit", "list", "--json", api_key=k1)).json()
    t2_events = _ok(mlhub("audit", "list", "--json", api_key=k2)).json()
    assert [e["action"] for e in t1_events] == ["key.create", "tenant.create"]
    assert [(e["action"], e["outcome"]) for e in t2_events] == [("key.revoke", "failure"), ("tenant.create", "success")]
    assert len({e["tenant_id"] for e in t2_events}) == 1
    assert not {e["id"] for e in t1_events} & {e["id"] for e in t2_events}
    t2_text = json.dumps(t2_events)
    assert "t1" not in [e["details"].get("name") for e in t2_events]
    assert k1.split("_")[1] not in t2_text


def test_a_revoked_key_stops_working_and_other_keys_keep_working(mlhub):
    _ok(mlhub("db", "upgrade"))
    k1 = _create_tenant(mlhub, "t1")
    second = _ok(mlhub("keys", "create", "--name", "laptop", "--json", api_key=k1)).json()
    assert _ok(mlhub("tenants", "current", "--json", api_key=second["api_key"])).json()["name"] == "t1"

    revoked = _ok(mlhub("keys", "revoke", str(second["key"]["id"]), "--json", api_key=k1)).json()
    assert revoked["revoked_at"] is not None

    line = _refused(mlhub("keys", "list", api_key=second["api_key"]))
    assert f"mlh_{second['key']['prefix']}_***" in line and "revoked" in line
    assert [k["name"] for k in _ok(mlhub("keys", "list", "--json", api_key=k1)).json()] == ["initial"]


def test_without_an_api_key_a_postgres_deployment_refuses_tenant_commands(mlhub):
    _ok(mlhub("db", "upgrade"))

    line = _refused(mlhub("keys", "list"))

    assert "no API key" in line and "--api-key" in line


def test_downgrade_to_base_and_upgrade_again(mlhub):
    _ok(mlhub("db", "upgrade"))
    k1 = _create_tenant(mlhub, "t1")

    assert "--yes" in _refused(mlhub("db", "downgrade", "base"))
    assert _ok(mlhub("db", "current", "--json")).json()["up_to_date"] is True

    _ok(mlhub("db", "downgrade", "base", "--yes"))
    assert _ok(mlhub("db", "current", "--json")).json()["current"] is None
    assert "mlhub db upgrade" in _refused(mlhub("keys", "list", api_key=k1))

    _ok(mlhub("db", "upgrade"))
    assert _ok(mlhub("db", "current", "--json")).json()["up_to_date"] is True
    # the old data went with the old schema; the new schema works from scratch
    assert "unknown or revoked" in _refused(mlhub("keys", "list", api_key=k1))
    k1_again = _create_tenant(mlhub, "t1")
    assert _ok(mlhub("tenants", "current", "--json", api_key=k1_again)).json()["name"] == "t1"


def test_health_reports_postgresql_ok(mlhub, fresh_pg_url):
    _ok(mlhub("db", "upgrade"))

    report = _ok(mlhub("health", "--json")).json()

    assert report["ok"] is True
    db = next(b for b in report["backends"] if b["name"] == "database")
    assert (db["kind"], db["status"]) == ("postgresql", "ok")
    assert fresh_pg_url.rsplit("/", 1)[1] in db["detail"]

"""The ``mlhub`` CLI driven in-process, as a user types it, on the embedded default (SQLite in MLHUB_HOME).

Each call goes through :func:`mlhub.cli.main.main`, which returns the exit status and prints what the user
sees; capsys collects stdout and stderr.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlhub.cli.main import main
from mlhub.store.migrate import head_revision
from tests.conftest import free_port

KEY_RE = re.compile(r"^mlh_[A-Za-z0-9]{8}_[A-Za-z0-9]{32}$")


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def cli(capsys):
    def run(*args: str) -> Result:
        capsys.readouterr()
        rc = main(list(args))
        out, err = capsys.readouterr()
        return Result(rc, out, err)

    return run


def _ok(result: Result) -> Result:
    assert result.rc == 0, (result.rc, result.out, result.err)
    return result


def _one_error_line(result: Result) -> str:
    """The failure contract: non-zero exit, exactly one stderr line starting 'error:', no traceback."""
    assert result.rc != 0, result.out
    assert "Traceback" not in result.err
    assert len(result.err_lines) == 1, result.err
    line = result.err_lines[0]
    assert line.startswith("error: "), line
    return line


def _home() -> Path:
    return Path(os.environ["MLHUB_HOME"])


# --- help and schema ---------------------------------------------------------------------------------


def test_help_lists_every_command_group(cli):
    result = _ok(cli("--help"))

    for group in ("db", "tenants", "keys", "audit", "health"):
        assert re.search(rf"\b{group}\b", result.out), group
    assert "--api-key" in result.out


def test_db_current_reports_an_empty_database_until_db_upgrade(cli):
    before = _ok(cli("db", "current", "--json")).json()
    assert before["current"] is None
    assert before["head"] == head_revision()
    assert before["up_to_date"] is False
    assert before["database"].startswith("sqlite:///")

    _ok(cli("db", "upgrade"))

    after = _ok(cli("db", "current", "--json")).json()
    assert after["current"] == head_revision()
    assert after["up_to_date"] is True
    assert after["database"] == before["database"]


def test_db_upgrade_says_what_it_did(cli):
    result = _ok(cli("db", "upgrade"))
    assert f"empty -> {head_revision()}" in result.out

    again = _ok(cli("db", "upgrade"))
    assert f"{head_revision()} -> {head_revision()}" in again.out


def test_db_downgrade_without_yes_refuses_and_keeps_the_schema(cli):
    _ok(cli("db", "upgrade"))

    line = _one_error_line(cli("db", "downgrade", "base"))

    assert "--yes" in line
    assert _ok(cli("db", "current", "--json")).json()["current"] == head_revision()


def test_db_downgrade_base_with_yes_removes_the_schema(cli):
    _ok(cli("db", "upgrade"))

    _ok(cli("db", "downgrade", "base", "--yes"))

    assert _ok(cli("db", "current", "--json")).json()["current"] is None


# --- the embedded default tenant ---------------------------------------------------------------------


def test_first_tenant_command_bootstraps_the_default_tenant_and_a_private_credentials_file(cli):
    creds = _home() / "credentials"
    assert not creds.exists()

    keys = _ok(cli("keys", "list", "--json")).json()

    assert creds.exists()
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    key = creds.read_text().strip()
    assert KEY_RE.match(key)
    assert [(k["name"], k["prefix"], k["created_by"]) for k in keys] == [
        ("initial", key.split("_")[1], "system:bootstrap")
    ]
    # the stored key is what later commands use, and it works when given explicitly too
    assert _ok(cli("tenants", "current", "--json")).json()["name"] == "default"
    assert _ok(cli("--api-key", key, "tenants", "current", "--json")).json()["name"] == "default"
    # a second command does not bootstrap again
    assert _ok(cli("keys", "list", "--json")).json() == keys
    assert creds.read_text().strip() == key


def test_a_lost_credentials_file_gives_a_way_back_in(cli):
    _ok(cli("keys", "list"))
    (_home() / "credentials").unlink()

    line = _one_error_line(cli("keys", "list"))

    assert "already exists" not in line
    assert "credentials" in line or "--api-key" in line


def test_the_embedded_schema_is_created_on_first_use_without_db_upgrade(cli):
    _ok(cli("keys", "list"))

    assert _ok(cli("db", "current", "--json")).json()["up_to_date"] is True


# --- tenants and keys --------------------------------------------------------------------------------


def test_tenants_create_prints_the_key_once_and_it_acts_as_that_tenant(cli):
    created = _ok(cli("tenants", "create", "acme"))

    keys_in_output = [line for line in created.out.splitlines() if KEY_RE.match(line.strip())]
    assert len(keys_in_output) == 1
    key = keys_in_output[0].strip()
    assert created.out.count(key) == 1
    assert "tenant acme" in created.out
    assert "shown once" in created.err

    assert _ok(cli("--api-key", key, "tenants", "current", "--json")).json()["name"] == "acme"
    acme_keys = _ok(cli("--api-key", key, "keys", "list", "--json")).json()
    assert [k["prefix"] for k in acme_keys] == [key.split("_")[1]]
    # only the key's hash is stored: the secret never reaches the database file
    for f in _home().glob("mlhub.db*"):
        assert key.split("_")[2].encode() not in f.read_bytes(), f


def test_keys_list_shows_only_the_callers_tenant(cli):
    default_prefixes = {k["prefix"] for k in _ok(cli("keys", "list", "--json")).json()}
    acme_key = _ok(cli("tenants", "create", "acme", "--json")).json()["api_key"]
    _ok(cli("--api-key", acme_key, "keys", "create", "--name", "ci", "--json"))

    acme = _ok(cli("--api-key", acme_key, "keys", "list", "--json")).json()
    default = _ok(cli("keys", "list", "--json")).json()

    assert sorted(k["name"] for k in acme) == ["ci", "initial"]
    assert not default_prefixes & {k["prefix"] for k in acme}
    assert {k["prefix"] for k in default} == default_prefixes


def test_a_tenant_cannot_revoke_another_tenants_key(cli):
    default_prefix = _ok(cli("keys", "list", "--json")).json()[0]["prefix"]
    acme_key = _ok(cli("tenants", "create", "acme", "--json")).json()["api_key"]

    line = _one_error_line(cli("--api-key", acme_key, "keys", "revoke", default_prefix))

    assert default_prefix in line
    assert _ok(cli("keys", "list", "--json")).json()[0]["revoked_at"] is None


def test_tenants_create_rejects_a_duplicate_name(cli):
    _ok(cli("tenants", "create", "acme"))

    line = _one_error_line(cli("tenants", "create", "acme"))

    assert "acme" in line and "already exists" in line


def test_a_revoked_key_stops_working_at_once(cli):
    _ok(cli("keys", "list"))
    created = _ok(cli("keys", "create", "--name", "laptop", "--json")).json()
    new_key, prefix = created["api_key"], created["key"]["prefix"]
    assert _ok(cli("--api-key", new_key, "tenants", "current", "--json")).json()["name"] == "default"

    revoked = _ok(cli("keys", "revoke", prefix, "--json")).json()
    assert revoked["prefix"] == prefix and revoked["revoked_at"] is not None

    result = cli("--api-key", new_key, "keys", "list")
    line = _one_error_line(result)
    assert f"mlh_{prefix}_***" in line
    assert "revoked" in line
    assert new_key not in result.err


def test_keys_revoke_by_id_and_list_all_shows_revoked_keys(cli):
    _ok(cli("keys", "list"))
    first = _ok(cli("keys", "create", "--name", "one", "--json")).json()["key"]
    second = _ok(cli("keys", "create", "--name", "two", "--json")).json()["key"]

    _ok(cli("keys", "revoke", str(first["id"])))
    result = _ok(cli("keys", "revoke", second["prefix"]))
    assert f"key {second['prefix']} revoked" in result.out

    active = _ok(cli("keys", "list", "--json")).json()
    assert [k["name"] for k in active] == ["initial"]
    everything = {k["name"]: k for k in _ok(cli("keys", "list", "--all", "--json")).json()}
    assert set(everything) == {"initial", "one", "two"}
    assert everything["one"]["revoked_at"] is not None
    assert everything["two"]["revoked_at"] is not None


def test_revoking_twice_is_a_conflict(cli):
    _ok(cli("keys", "list"))
    prefix = _ok(cli("keys", "create", "--json")).json()["key"]["prefix"]
    _ok(cli("keys", "revoke", prefix))

    line = _one_error_line(cli("keys", "revoke", prefix))

    assert "already revoked" in line


def test_an_unknown_or_malformed_api_key_is_refused(cli):
    _ok(cli("keys", "list"))

    unknown = _one_error_line(cli("--api-key", "mlh_AAAAAAAA_" + "b" * 32, "keys", "list"))
    assert "mlh_AAAAAAAA_***" in unknown and "b" * 32 not in unknown

    malformed = _one_error_line(cli("--api-key", "not-a-key", "keys", "list"))
    assert "malformed API key" in malformed


def test_mlhub_api_key_variable_selects_the_tenant(cli, monkeypatch):
    acme_key = _ok(cli("tenants", "create", "acme", "--json")).json()["api_key"]
    monkeypatch.setenv("MLHUB_API_KEY", acme_key)

    assert _ok(cli("tenants", "current", "--json")).json()["name"] == "acme"
    assert not (_home() / "credentials").exists()  # no default tenant was bootstrapped


# --- audit -------------------------------------------------------------------------------------------


def _audited_history(cli) -> dict:
    """Bootstrap, create a key, revoke it, and fail to revoke an unknown key."""
    _ok(cli("keys", "list"))
    default_prefix = (_home() / "credentials").read_text().split("_")[1]
    created = _ok(cli("keys", "create", "--name", "laptop", "--json")).json()["key"]
    _ok(cli("keys", "revoke", created["prefix"]))
    _one_error_line(cli("keys", "revoke", "NOSUCHKY"))
    return {"actor": f"key:{default_prefix}", "key": created}


def test_audit_list_shows_one_event_per_operation_newest_first(cli):
    h = _audited_history(cli)

    events = _ok(cli("audit", "list", "--json")).json()

    summary = [(e["action"], e["outcome"], e["actor"], e["target_type"], e["target_id"]) for e in events]
    assert summary == [
        ("key.revoke", "failure", h["actor"], "api_key", "NOSUCHKY"),
        ("key.revoke", "success", h["actor"], "api_key", str(h["key"]["id"])),
        ("key.create", "success", h["actor"], "api_key", str(h["key"]["id"])),
        ("tenant.create", "success", "system:bootstrap", "tenant", events[-1]["tenant_id"]),
    ]
    assert all(e["source"] == "cli" for e in events)
    assert "NOSUCHKY" in events[0]["message"]
    assert events[1]["details"]["prefix"] == h["key"]["prefix"]
    assert len({e["tenant_id"] for e in events}) == 1


def test_audit_list_filters_by_action_prefix_and_time(cli):
    _audited_history(cli)

    key_events = _ok(cli("audit", "list", "--action", "key.", "--json")).json()
    assert [e["action"] for e in key_events] == ["key.revoke", "key.revoke", "key.create"]

    revokes = _ok(cli("audit", "list", "--action", "key.revoke", "--json")).json()
    assert {e["outcome"] for e in revokes} == {"success", "failure"}

    assert len(_ok(cli("audit", "list", "--since", "1h", "--json")).json()) == 4
    assert _ok(cli("audit", "list", "--since", "2999-01-01", "--json")).json() == []
    assert _ok(cli("audit", "list", "--until", "1h", "--json")).json() == []
    assert len(_ok(cli("audit", "list", "--limit", "1", "--json")).json()) == 1


def test_audit_list_renders_a_table_for_people(cli):
    _audited_history(cli)

    result = _ok(cli("audit", "list"))

    assert "audit log" in result.out
    for header in ("actor", "action", "target", "outcome"):
        assert header in result.out
    assert "failure" in result.out and "success" in result.out


def test_audit_table_keeps_whole_action_names(cli):
    _audited_history(cli)

    result = _ok(cli("audit", "list"))

    assert "…" not in result.out
    assert result.out.count("key.revoke") == 2
    assert "tenant.create" in result.out


def test_keys_table_shows_creation_time_to_the_second(cli):
    result = _ok(cli("keys", "list"))

    assert re.search(r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\b", result.out), result.out


def test_another_tenant_sees_none_of_these_events(cli):
    _audited_history(cli)
    acme_key = _ok(cli("tenants", "create", "acme", "--json")).json()["api_key"]

    events = _ok(cli("--api-key", acme_key, "audit", "list", "--json")).json()

    assert [(e["action"], e["details"]["name"]) for e in events] == [("tenant.create", "acme")]


# --- bad input: one clear line, no traceback ---------------------------------------------------------

@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        pytest.param(["nosuch"], {}, ["nosuch"], id="unknown-command"),
        pytest.param(["audit", "list", "--limit", "0"], {}, ["--limit"], id="bad-option-value"),
        pytest.param(["keys", "list", "--bogus"], {}, ["--bogus"], id="unknown-option"),
        pytest.param(["keys", "revoke"], {}, ["Missing argument 'key'"], id="missing-argument"),
        pytest.param(["tenants", "create", "Bad Name!"], {}, ["Bad Name!", "tenant name"], id="bad-tenant-name"),
        pytest.param(["audit", "list", "--since", "yesterday"], {}, ["--since", "yesterday"], id="bad-since"),
        pytest.param(["keys", "list"], {"MLHUB_DATABASE_URL": "mysql://x"}, ["MLHUB_DATABASE_URL"],
                     id="bad-database-url"),
        pytest.param(["health"], {"MLHUB_MAX_CONCURRENT_JOBS": "0"}, ["MLHUB_MAX_CONCURRENT_JOBS"],
                     id="bad-setting"),
    ],
)
def test_bad_input_exits_2_with_one_error_line_naming_the_problem(cli, monkeypatch, args, env, names):
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    result = cli(*args)

    line = _one_error_line(result)
    assert result.rc == 2, line
    assert "internal error" not in line
    for name in names:
        assert name in line, (name, line)
    assert result.out == ""


def test_debug_shows_the_traceback_of_an_mlhub_error(cli):
    result = cli("--debug", "tenants", "create", "Bad Name!")

    assert result.rc == 2
    assert "Traceback (most recent call last)" in result.err
    assert "ValidationError" in result.err
    assert result.err_lines[-1].startswith("error: invalid tenant name")


def test_no_arguments_prints_help_without_an_error_line(cli):
    for args in ([], ["db"]):
        result = cli(*args)

        assert result.rc == 0
        assert "Usage" in result.out + result.err
        assert "internal error" not in result.err
        assert not [line for line in result.err_lines if line.startswith("error:")]  # the help is the answer


def test_each_invocation_in_one_process_uses_its_own_api_key_and_settings(cli, monkeypatch, tmp_path):
    # a program (or a Ray job driver) may call main() several times: nothing carries over between calls
    _ok(cli("keys", "list"))  # acts as the bootstrapped default tenant
    acme_key = _ok(cli("tenants", "create", "acme", "--json")).json()["api_key"]

    assert _ok(cli("--api-key", acme_key, "tenants", "current", "--json")).json()["name"] == "acme"
    assert _ok(cli("tenants", "current", "--json")).json()["name"] == "default"

    monkeypatch.setenv("MLHUB_HOME", str(tmp_path / "elsewhere"))
    assert str(tmp_path / "elsewhere") in _ok(cli("db", "current", "--json")).json()["database"]


# --- health ------------------------------------------------------------------------------------------


def test_health_is_ok_on_the_embedded_defaults(cli):
    result = _ok(cli("health", "--json"))

    report = result.json()
    assert report["ok"] is True
    status = {b["name"]: (b["kind"], b["status"]) for b in report["backends"]}
    assert status == {
        "database": ("sqlite", "ok"),
        "redis": ("redis", "not configured"),
        "mongodb": ("mongodb", "not configured"),
        "ray": ("ray", "not configured"),
    }


def test_health_reports_an_unreachable_redis_as_down_and_exits_1(cli, monkeypatch):
    port = free_port()
    monkeypatch.setenv("MLHUB_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setenv("MLHUB_BACKEND_TIMEOUT_S", "1")

    result = cli("health", "--json")

    assert result.rc == 1
    assert "Traceback" not in result.err
    assert not any(line.startswith("error:") for line in result.err_lines)
    report = result.json()
    assert report["ok"] is False
    by_name = {b["name"]: b for b in report["backends"]}
    assert by_name["redis"]["status"] == "down"
    assert str(port) in by_name["redis"]["detail"]
    assert by_name["database"]["status"] == "ok"


def test_health_table_for_people(cli):
    result = _ok(cli("health"))

    assert "mlhub health" in result.out
    assert "database" in result.out and "sqlite" in result.out


# --- a SQLite file the user named is not the embedded default ---------------------------------------


def test_a_user_named_sqlite_database_without_schema_is_refused_and_left_untouched(cli, monkeypatch, tmp_path):
    db_file = tmp_path / "other.db"
    monkeypatch.setenv("MLHUB_DATABASE_URL", f"sqlite:///{db_file}")

    result = cli("keys", "list")

    line = _one_error_line(result)
    assert "mlhub db upgrade" in line
    if db_file.exists():
        with sqlite3.connect(db_file) as conn:
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        assert tables == []
    assert not (_home() / "credentials").exists()
    assert not (_home() / "mlhub.db").exists()


def test_a_user_named_sqlite_database_needs_an_api_key_after_db_upgrade(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("MLHUB_DATABASE_URL", f"sqlite:///{tmp_path}/other.db")
    _ok(cli("db", "upgrade"))

    line = _one_error_line(cli("keys", "list"))

    assert "no API key" in line
    key = _ok(cli("tenants", "create", "team", "--json")).json()["api_key"]
    assert _ok(cli("--api-key", key, "tenants", "current", "--json")).json()["name"] == "team"

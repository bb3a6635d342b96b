"""`mlhub models ...` on PostgreSQL (row-level security on) as a user drives it: gates, a refused and a forced
promotion, rollback, history, tags, compare with its PNG, delete rules and gc; another tenant sees nothing. No Ray."""

from __future__ import annotations

import json

import pytest

from mlhub.store.database import Database
from tests.integration.test_registry import Setup
from tests.integration.test_tracking_cli import run_cli
from tests.unit.test_tracking import PNG_MAGIC

pytestmark = pytest.mark.postgres


def test_models_cli_promotes_through_gates_rolls_back_and_cleans_up(capsys, migrated_pg_url, monkeypatch, tmp_path):
    monkeypatch.setenv("MLHUB_DATABASE_URL", migrated_pg_url)
    monkeypatch.setenv("MLHUB_HOME", str(tmp_path))
    monkeypatch.delenv("MLHUB_REDIS_URL", raising=False)
    db = Database(migrated_pg_url)
    try:
        reg = Setup(db, tmp_path)  # artifacts under MLHUB_HOME/artifacts, where the CLI looks
        for acc in (0.95, 0.80, 0.97):
            reg.version("iris", {"accuracy": acc, "log_loss": 1 - acc})
        reg.evaluate("iris", 3, "holdout", {"accuracy": 0.96})
        my_key, other_key = reg.key, reg.other_key
    finally:
        db.dispose()

    def cli(*args, key=my_key):
        return run_cli(capsys, "--api-key", key, "models", *args)

    rc, out, err = cli("gates", "iris", "--set", "accuracy >= 0.9", "--set", "log_loss better than champion")
    assert rc == 0, err
    assert out.splitlines() == ["accuracy >= 0.9", "log_loss better than champion"]
    rc, out, err = cli("promote", "iris", "1", "--to", "champion", "--reason", "first")
    assert rc == 0, err
    assert "iris@champion -> version 1" in out

    rc, out, err = cli("promote", "iris", "2", "--to", "champion")           # accuracy 0.80: refused
    assert rc == 5 and "refused by 2 of 2 gates" in err and "accuracy = 0.8" in err, (out, err)
    assert "FAIL" in out
    rc, _, err = cli("promote", "iris", "2", "--to", "champion", "--force")  # no reason
    assert rc == 2 and "--reason" in err
    rc, out, err = cli("promote", "iris", "3", "--to", "champion", "--dry-run", "--json")
    assert rc == 0 and [g["passed"] for g in json.loads(out)] == [True, True], err
    rc, out, err = cli("promote", "iris", "2", "--to", "champion", "--force", "--reason", "rollback drill")
    assert rc == 0 and "FORCED" in out, err
    rc, out, err = cli("promote", "iris", "3", "--to", "champion")
    assert rc == 0, err

    rc, out, err = cli("rollback", "iris", "--alias", "champion")
    assert rc == 0 and "version 2 (rolled back from version 3)" in out, err
    rc, out, err = cli("history", "iris", "--json")
    assert rc == 0, err
    assert [(h["action"], h["to_version"], h["forced"]) for h in json.loads(out)] == [
        ("rollback", 2, False), ("promote", 3, False), ("promote", 2, True), ("promote", 1, False)]

    rc, out, err = cli("tag", "iris", "3", "--set", "team=vision", "--json")
    assert rc == 0 and json.loads(out) == {"team": "vision"}, err
    rc, out, err = cli("show", "iris", "--json")
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["aliases"] == {"champion": 2} and [v["version"] for v in shown["version_list"]] == [1, 2, 3]

    png = tmp_path / "cmp.png"
    rc, out, err = cli("compare", "iris/1", "iris@champion", "iris/3", "--plot", str(png))
    assert rc == 0, err
    assert "accuracy" in out and "0.9700 *" in out and png.read_bytes()[:8] == PNG_MAGIC

    rc, _, err = cli("delete", "iris", "2")
    assert rc == 5 and "holds alias champion" in err
    rc, out, err = cli("delete", "iris", "1")
    assert rc == 0, err
    rc, out, err = cli("gc", "--older-than", "0s", "--json")
    assert rc == 0 and json.loads(out)["removed"] == 1, err
    rc, out, err = cli("versions", "iris", "--json")
    assert rc == 0 and [v["version"] for v in json.loads(out)] == [2, 3]
    rc, _, err = cli("delete", "iris")
    assert rc == 2 and "--yes" in err

    rc, out, _ = cli("list", "--json", key=other_key)
    assert rc == 0 and json.loads(out) == []
    rc, _, err = cli("show", "iris", key=other_key)
    assert rc == 4 and "not found" in err

"""The same migrations run on SQLite and PostgreSQL: upgrade, downgrade to base, upgrade again, and the
migrated schema matches the SQLAlchemy models exactly (so a model change without a migration fails here)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from mlhub.errors import SchemaOutdated
from mlhub.store.database import Database
from mlhub.store.migrate import head_revision
from mlhub.store.models import Base


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db(request, tmp_path):
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    else:
        db = Database(request.getfixturevalue("fresh_pg_url"))
    yield db
    db.dispose()


def _tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade_round_trip(empty_db):
    db = empty_db
    assert db.current_revision() is None
    db.upgrade()
    assert db.current_revision() == head_revision()
    assert _tables(db) == set(Base.metadata.tables)
    db.downgrade("base")
    assert db.current_revision() is None
    assert _tables(db) == set()
    db.upgrade()
    assert db.current_revision() == head_revision()
    assert _tables(db) == set(Base.metadata.tables)


def test_migrated_schema_matches_the_models(empty_db):
    db = empty_db
    db.upgrade()
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"


def test_every_constraint_is_named(empty_db):
    db = empty_db
    db.upgrade()
    insp = inspect(db.engine)
    unnamed = []
    for table in Base.metadata.tables:
        for fk in insp.get_foreign_keys(table):
            if not fk.get("name"):
                unnamed.append(f"{table} fk {fk['constrained_columns']}")
        for uq in insp.get_unique_constraints(table):
            if not uq.get("name"):
                unnamed.append(f"{table} uq {uq['column_names']}")
    assert unnamed == []


def test_the_app_refuses_an_old_or_missing_schema(empty_db):
    db = empty_db
    with pytest.raises(SchemaOutdated, match="mlhub db upgrade"):
        db.check_schema()
    db.upgrade()
    db.check_schema()  # at head: accepted
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    with pytest.raises(SchemaOutdated, match="newer than this mlhub"):
        db.check_schema()


def test_upgrading_a_populated_database_keeps_its_rows(empty_db):
    """0002 rebuilds the jobs table on SQLite: child rows must survive (foreign keys are off meanwhile)."""
    db = empty_db
    db.upgrade("0001")
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, status, settings, created_at) "
                          "VALUES ('t1', 'keep', 'active', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO jobs (tenant_id, queue, kind, name, priority, state, attempt, max_attempts, "
                          "spec, resources, submitted_by, cancel_requested, updated_at, created_at) VALUES "
                          "('t1', 'training', 'training', 'j', 0, 'queued', 0, 3, '{}', '{}', 'x', false, "
                          "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        job_id = conn.execute(text("SELECT id FROM jobs")).scalar_one()
        conn.execute(text("INSERT INTO job_events (tenant_id, job_id, attempt, type, data, created_at) "
                          "VALUES ('t1', :j, 0, 'state', '{}', CURRENT_TIMESTAMP)"), {"j": job_id})
    db.upgrade()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM job_events")).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 1

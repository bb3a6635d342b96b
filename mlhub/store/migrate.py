"""Schema migrations through Alembic, driven from the installed package (no alembic.ini needed).

``mlhub db upgrade|downgrade|current`` call these. The running system never migrates behind the user's
back, except to create the schema of a brand-new embedded SQLite database on first use.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from mlhub.errors import SchemaOutdated


def migrations_dir() -> Path:
    return Path(str(resources.files("migrations")))


def alembic_config(url: str, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # '%' must be escaped for ConfigParser interpolation (URL-encoded passwords contain it)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    script = ScriptDirectory(str(migrations_dir()))
    head = script.get_current_head()
    assert head is not None, "migrations folder has no revisions"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _run(engine: Engine, fn, revision: str) -> None:
    with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            # batch migrations rebuild tables on SQLite; with foreign keys on, dropping the old table would
            # cascade-delete child rows. The pragma only works outside a transaction, hence the raw driver.
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                fn(alembic_config(engine.url.render_as_string(hide_password=False), conn), revision)
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, command.downgrade, revision)


def ensure_current(current: str | None) -> None:
    """Refuse to run on a schema that is not this mlhub's head."""
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaOutdated("the database has no mlhub schema: run `mlhub db upgrade`")
    known = {rev.revision for rev in ScriptDirectory(str(migrations_dir())).walk_revisions()}
    if current not in known:
        raise SchemaOutdated(
            f"the database schema ({current}) is newer than this mlhub ({head}): upgrade mlhub"
        )
    raise SchemaOutdated(
        f"the database schema ({current}) is older than this mlhub ({head}): run `mlhub db upgrade`"
    )

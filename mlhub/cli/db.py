"""``mlhub db``: schema migrations."""

from __future__ import annotations

import re

import typer

from mlhub.cli.context import STATE
from mlhub.cli.output import console, print_json
from mlhub.errors import ValidationError

app = typer.Typer(help="Database schema: upgrade, downgrade, current.", no_args_is_help=True)

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@app.command()
def upgrade(
    revision: str = typer.Argument("head", help="Target revision."),
    create_app_role: str | None = typer.Option(
        None, "--create-app-role", metavar="LOGIN",
        help="PostgreSQL: also create a LOGIN role that is a member of mlhub_app and mlhub_scheduler only "
             "(no ownership, no BYPASSRLS), for MLHUB_DATABASE_APP_URL / MLHUB_DATABASE_SCHEDULER_URL.",
    ),
) -> None:
    """Migrate the database to the latest (or given) schema."""
    backends = STATE.raw_backends()
    before = backends.db.current_revision()
    backends.db.upgrade(revision)
    after = backends.db.current_revision()
    console.print(f"schema: {before or 'empty'} -> {after}  ({backends.db.safe_url})")
    if create_app_role:
        _create_login_role(backends.db, create_app_role)


def _create_login_role(db, login: str) -> None:
    if not db.is_postgres:
        raise ValidationError("--create-app-role needs PostgreSQL (SQLite has no roles)")
    if not _ROLE_NAME.match(login):
        raise ValidationError(f"invalid role name {login!r}")
    from sqlalchemy import text

    with db.engine.begin() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": login}).first()
        if not exists:
            conn.execute(text(f"CREATE ROLE {login} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"))
        conn.execute(text(f"GRANT mlhub_app, mlhub_scheduler TO {login}"))
    console.print(f"login role {login!r} is a member of mlhub_app and mlhub_scheduler; set its password and use it "
                  "in MLHUB_DATABASE_APP_URL / MLHUB_DATABASE_SCHEDULER_URL")


@app.command()
def downgrade(
    revision: str = typer.Argument(..., help="Target revision, or 'base' to remove every table."),
    yes: bool = typer.Option(False, "--yes", help="Confirm: downgrading deletes data."),
) -> None:
    """Migrate the database down to an older schema (destroys data in dropped tables)."""
    if not yes:
        raise ValidationError("downgrade deletes data: pass --yes to confirm")
    backends = STATE.raw_backends()
    before = backends.db.current_revision()
    backends.db.downgrade(revision)
    console.print(f"schema: {before or 'empty'} -> {backends.db.current_revision() or 'empty'}")


@app.command()
def current(json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the database's schema revision and this mlhub's head."""
    from mlhub.store.migrate import head_revision

    backends = STATE.raw_backends()
    cur, head = backends.db.current_revision(), head_revision()
    info = {"current": cur, "head": head, "up_to_date": cur == head, "database": backends.db.safe_url}
    if json_:
        print_json(info)
    else:
        state = "up to date" if cur == head else "run `mlhub db upgrade`"
        console.print(f"current: {cur or 'empty'}  head: {head}  ({state})")

"""The database schema reference: the SQLAlchemy models and the PostgreSQL row-level security policies."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mlhub.cli.reference.markdown import (
    GENERATED,
    _anchor,
    _code,
    _first_paragraph,
    _table,
)

# ----------------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class Policy:
    """One row-level security policy, as ``CREATE POLICY`` in ``migrations/rls.py`` states it."""

    table: str
    name: str
    command: str  # ALL, SELECT, INSERT, UPDATE or DELETE
    roles: tuple[str, ...]
    using: str | None
    with_check: str | None


@dataclass(frozen=True)
class RlsCatalog:
    enabled: tuple[str, ...]  # tables with ROW LEVEL SECURITY enabled
    forced: tuple[str, ...]  # ... and FORCED (the owner obeys it too)
    policies: tuple[Policy, ...]
    statements: tuple[str, ...]  # every statement run, in order


class _RecordingConnection:
    """Just enough of a PostgreSQL connection for ``migrations.rls`` to run against: it records each statement
    and answers the two questions rls asks (the current schema, the tables that have ``tenant_id``)."""

    class dialect:  # noqa: N801 - mimics Connection.dialect
        name = "postgresql"

    class _Result:
        def __init__(self, rows: list[tuple[Any, ...]]) -> None:
            self.rows = rows

        def __iter__(self):
            return iter(self.rows)

        def scalar_one(self) -> Any:
            (row,) = self.rows
            return row[0]

    def __init__(self, tenant_tables: list[str]) -> None:
        self.tenant_tables = tenant_tables
        self.statements: list[str] = []

    def execute(self, clause: Any, *args: Any, **kwargs: Any) -> _Result:
        sql = " ".join(str(clause).split())
        if sql.startswith("SELECT current_schema()"):
            return self._Result([("public",)])
        if sql.startswith("SELECT table_name FROM information_schema.columns"):
            return self._Result([(t,) for t in self.tenant_tables])
        self.statements.append(sql)
        return self._Result([])


_POLICY_RE = re.compile(r"^CREATE POLICY (?P<name>\w+) ON (?P<table>\w+)(?: FOR (?P<cmd>\w+))? TO (?P<roles>[\w, ]+?)"
                        r"(?: USING \((?P<using>.*?)\))?(?: WITH CHECK \((?P<check>.*)\))?$")


def rls_catalog() -> RlsCatalog:
    """The row-level security of the head schema on PostgreSQL, from the statements ``migrations/rls.py`` runs.

    ``rls.apply`` runs in the first migration and protects every table that then has ``tenant_id``; later
    migrations call ``rls.protect_table`` with the defaults for the tenant tables they add. Running ``apply`` over
    the tenant tables of the head models therefore states the same policies: ``tests/integration`` checks this
    against ``pg_policies`` on a real, migrated PostgreSQL.
    """
    from migrations import rls
    from mlhub.store.models import Base

    tenant_tables = sorted(t.name for t in Base.metadata.tables.values() if "tenant_id" in t.columns)
    conn = _RecordingConnection(tenant_tables)
    rls.apply(conn)  # type: ignore[arg-type]
    enabled, forced, policies = [], [], []
    for sql in conn.statements:
        if m := re.fullmatch(r"ALTER TABLE (\w+) (ENABLE|FORCE) ROW LEVEL SECURITY", sql):
            (enabled if m[2] == "ENABLE" else forced).append(m[1])
        elif sql.startswith("CREATE POLICY"):
            m = _POLICY_RE.fullmatch(sql)
            if m is None:
                raise ValueError(f"a CREATE POLICY the docs generator cannot read: {sql}")
            policies.append(Policy(m["table"], m["name"], (m["cmd"] or "ALL").upper(),
                                   tuple(r.strip() for r in m["roles"].split(",")), m["using"], m["check"]))
    return RlsCatalog(tuple(enabled), tuple(forced), tuple(policies), tuple(conn.statements))


def _table_docs() -> dict[str, str]:
    from mlhub.store.models import Base

    return {m.local_table.name: _first_paragraph(m.class_.__doc__) for m in Base.registry.mappers
            if "__doc__" in vars(m.class_)}


def _column_type(column: Any) -> str:
    from sqlalchemy.dialects import postgresql, sqlite

    pg = column.type.compile(dialect=postgresql.dialect())
    lite = column.type.compile(dialect=sqlite.dialect())
    if lite == pg or (pg == "TIMESTAMP WITH TIME ZONE" and lite == "DATETIME"):  # the intro says so, once
        return pg
    return f"{pg} (SQLite: {lite})"


def _column_default(column: Any) -> str:
    parts = []
    if column.server_default is not None:
        parts.append(f"{_code(getattr(column.server_default, 'arg', column.server_default))} (database)")
    for what, default in (("", column.default), ("on update: ", column.onupdate)):
        if default is None or column.server_default is not None and not what:
            continue
        arg = default.arg
        if callable(arg):
            name = getattr(arg, "__name__", "")
            shown = {"utcnow": "`utcnow()`", "dict": "`{}`", "list": "`[]`"}.get(name, "computed")
        else:
            shown = _code(json.dumps(arg) if isinstance(arg, bool) else arg)
        parts.append(f"{what}{shown}")
    if column.autoincrement is True or (column.primary_key and column.autoincrement == "auto"
                                        and column.type._type_affinity.__name__ in ("Integer", "BigInteger")):
        parts.append("autoincrement")
    return ", ".join(parts)


def _column_keys(column: Any) -> str:
    keys = []
    if column.primary_key:
        keys.append("PK")
    for fk in sorted(column.foreign_keys, key=lambda f: f.target_fullname):
        on_delete = f" on delete {fk.ondelete.lower()}" if fk.ondelete else ""
        keys.append(f"FK {fk.target_fullname}{on_delete}")
    table = column.table
    if any(list(c.columns.keys()) == [column.name] for c in table.constraints
           if type(c).__name__ == "UniqueConstraint") or column.unique:
        keys.append("unique")
    if column.index:
        keys.append("indexed")
    return ", ".join(keys)


def schema_reference() -> str:
    """``docs/reference/schema.md``: every table, column, index, constraint and RLS policy."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CheckConstraint, UniqueConstraint

    from migrations import rls
    from mlhub.store.migrate import head_revision
    from mlhub.store.models import NOT_TENANT_SCOPED, Base

    catalog = rls_catalog()
    docs = _table_docs()
    tables = sorted(Base.metadata.tables.values(), key=lambda t: t.name)
    by_table: dict[str, list[Policy]] = {}
    for policy in catalog.policies:
        by_table.setdefault(policy.table, []).append(policy)

    lines = ["# Database schema", "", GENERATED, "",
             f"The schema at migration head `{head_revision()}` (`mlhub db upgrade`). Tables and columns come from "
             "the SQLAlchemy models in `mlhub/store/models/`; `tests/integration/test_migrations.py` proves the "
             "migrated schema (SQLite and PostgreSQL) equals them. Types are PostgreSQL's, with SQLite's where "
             "they differ; timestamps are `TIMESTAMP WITH TIME ZONE` (SQLite: `DATETIME`), always UTC. Constraint and "
             "index names follow one naming convention.", "",
             "Defaults marked (database) are server defaults; the others are set by the application when it "
             "inserts a row.", "",
             "## Tenancy and row-level security (PostgreSQL)", "",
             "Policies, roles and grants are applied by `migrations/rls.py` (a no-op on SQLite). The tables below "
             "are rendered from the statements it runs; `tests/integration/test_docs_postgres.py` compares them "
             "with `pg_policies` of a migrated PostgreSQL.", "",
             f"- `{rls.APP_ROLE}`: everything a tenant does; each transaction sets `app.tenant_id` "
             "(`SET LOCAL`). An unset tenant sees nothing.",
             f"- `{rls.SCHEDULER_ROLE}`: the orchestrator's cross-tenant work: "
             + ", ".join(f"`{t}`" for t in rls.SCHEDULER_TABLES) + ", and reading `tenants`.",
             f"- `{rls.RESOLVER_ROLE}`: owns the `SECURITY DEFINER` function `{rls.RESOLVE_FUNCTION}(key_hash)` "
             "that maps an API key hash to its tenant id.",
             "- Append-only for the app role (SELECT and INSERT granted, no UPDATE or DELETE): "
             + ", ".join(f"`{t}`" for t in rls.APPEND_ONLY_TABLES) + ".", "",
             f"Row-level security is enabled on {len(catalog.enabled)} tables and forced (the table owner obeys "
             f"it too) on {len(catalog.forced)}. Tables without RLS: "
             + ", ".join(f"`{t.name}`" for t in tables if t.name not in catalog.enabled) + ".", ""]
    same: dict[tuple[Any, ...], list[str]] = {}  # one row per policy definition, with the tables that have it
    for p in sorted(catalog.policies, key=lambda p: (p.name, p.table)):
        same.setdefault((p.name, p.command, p.roles, p.using, p.with_check), []).append(p.table)
    rows = [[_code(name), command, ", ".join(roles), _code(using) if using else "",
             _code(check) if check else "", ", ".join(f"`{t}`" for t in tables)]
            for (name, command, roles, using, check), tables in same.items()]
    lines += _table(["policy", "command", "to role", "USING", "WITH CHECK", "on tables"], rows)
    lines += ["", "Tables that are not tenant-scoped by `tenant_id`, each deliberately:", ""]
    lines += [f"- `{name}`: {why}" for name, why in sorted(NOT_TENANT_SCOPED.items())]
    lines += ["", "## Tables", ""]
    for table in tables:
        rls_note = " (RLS forced)" if table.name in catalog.forced else ""
        about = f": {docs[table.name]}" if docs.get(table.name) else ""
        lines.append(f"- [{table.name}](#{_anchor(table.name)}){rls_note}{about}")

    for table in tables:
        lines += ["", f"## {table.name}", ""]
        if docs.get(table.name):
            lines += [docs[table.name], ""]
        rows = [[_code(c.name), _column_type(c), "yes" if c.nullable else "no", _column_default(c), _column_keys(c)]
                for c in table.columns]
        lines += _table(["column", "type", "nullable", "default", "keys"], rows)
        extra = []
        for index in sorted(table.indexes, key=lambda i: i.name or ""):
            unique = "unique " if index.unique else ""
            extra.append(f"- {unique}index {_code(index.name)} on ({', '.join(c.name for c in index.columns)})")
        constraints = sorted(table.constraints, key=lambda c: (type(c).__name__, str(c.name)))
        for c in constraints:
            if isinstance(c, UniqueConstraint) and len(c.columns) > 1:
                extra.append(f"- unique {_code(c.name)} on ({', '.join(col.name for col in c.columns)})")
        for c in constraints:
            if isinstance(c, CheckConstraint):
                sql = str(c.sqltext.compile(dialect=postgresql.dialect()))
                extra.append(f"- check {_code(c.name)}: {_code(' '.join(sql.split()))}")
        for fk in sorted(table.foreign_key_constraints, key=lambda f: str(f.name)):
            if len(fk.columns) > 1:
                extra.append(f"- foreign key {_code(fk.name)} ({', '.join(fk.column_keys)}) -> {fk.referred_table.name}")
        for policy in sorted(by_table.get(table.name, []), key=lambda p: p.name):
            extra.append(f"- policy {_code(policy.name)} ({policy.command}, to {', '.join(policy.roles)})")
        if extra:
            lines += ["", *extra]
    return "\n".join(lines) + "\n"

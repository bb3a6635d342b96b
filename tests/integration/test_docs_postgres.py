"""docs/reference/schema.md renders the row-level security that migrations/rls.py states, recorded without a
server. Here the same catalog is compared with what a real PostgreSQL holds after ``upgrade head``."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import create_engine, text

from mlhub.cli.reference import rls_catalog

pytestmark = pytest.mark.postgres


def _normal(expr: str | None) -> str | None:
    """PostgreSQL prints ``tenant_id = current_setting('app.tenant_id', true)`` as
    ``((tenant_id)::text = current_setting('app.tenant_id'::text, true))``: drop casts, parentheses, spaces."""
    if expr is None:
        return None
    return re.sub(r"[()\s]", "", re.sub(r"::(text|character varying|name)\b", "", expr))


def test_the_documented_policies_are_those_of_a_migrated_postgresql(migrated_pg_url):
    catalog = rls_catalog()
    engine = create_engine(migrated_pg_url)
    try:
        with engine.connect() as conn:
            live = conn.execute(text(
                "SELECT tablename, policyname, cmd, roles::text[], qual, with_check, permissive FROM pg_policies "
                "WHERE schemaname = current_schema()")).all()
            flags = conn.execute(text(
                "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                "WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r'")).all()
    finally:
        engine.dispose()
    assert {r.permissive for r in live} == {"PERMISSIVE"}
    assert {(r.tablename, r.policyname, r.cmd, tuple(r.roles), _normal(r.qual), _normal(r.with_check))
            for r in live} == {
        (p.table, p.name, p.command, p.roles, _normal(p.using), _normal(p.with_check)) for p in catalog.policies}
    assert {r.relname for r in flags if r.relrowsecurity} == set(catalog.enabled)
    assert {r.relname for r in flags if r.relforcerowsecurity} == set(catalog.forced)

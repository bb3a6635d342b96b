"""``mlhub health`` and ``mlhub audit``."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import typer

from mlhub.audit import AuditLog
from mlhub.cli.context import STATE
from mlhub.cli.output import print_json, print_table, to_plain
from mlhub.errors import ValidationError
from mlhub.health import HealthStatus, any_configured_down, check_all
from mlhub.store.types import utcnow

audit_app = typer.Typer(help="The audit log of your tenant.", no_args_is_help=True)

_STYLE = {HealthStatus.OK: "green", HealthStatus.DOWN: "bold red", HealthStatus.NOT_CONFIGURED: "dim"}


def health(json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Check every backend (database, Redis, MongoDB, Ray). Exit status 1 if a configured one is down."""
    report = check_all(STATE.settings)
    if json_:
        print_json({"ok": not any_configured_down(report), "backends": [h.to_dict() for h in report]})
    else:
        rows = [dict(h.to_dict(), _style=_STYLE[h.status]) for h in report]
        print_table(rows, ["name", "kind", "status", "latency_ms", "detail"], "mlhub health")
    if any_configured_down(report):
        raise typer.Exit(1)


_RELATIVE = re.compile(r"^(\d+)([smhd])$")


def parse_when(value: str | None, option: str) -> datetime | None:
    """``2026-01-31``, ``2026-01-31T12:00:00+00:00`` or relative ``30m``, ``2h``, ``7d`` (ago)."""
    if value is None:
        return None
    m = _RELATIVE.match(value.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m[2]]
        return utcnow() - timedelta(**{unit: int(m[1])})
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{option}: expected an ISO date/time or a duration like 30m, 2h, 7d; got {value!r}") \
            from None
    from datetime import UTC

    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@audit_app.command("list")
def audit_list(
    action: str | None = typer.Option(None, "--action", help="Action or prefix, e.g. key. or key.revoke."),
    target: str | None = typer.Option(None, "--target", help="Target type or type:id, e.g. api_key:3."),
    since: str | None = typer.Option(None, "--since", help="ISO time or duration ago (30m, 2h, 7d)."),
    until: str | None = typer.Option(None, "--until", help="ISO time or duration ago."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show audit events, newest first."""
    records = AuditLog(STATE.backends.db).list(
        STATE.principal(), action=action, target=target, since=parse_when(since, "--since"),
        until=parse_when(until, "--until"), limit=limit,
    )
    rows = to_plain(records)
    if json_:
        print_json(rows)
        return
    for r in rows:
        r["target"] = f"{r['target_type']}:{r['target_id']}" if r["target_id"] else r["target_type"]
        r["_style"] = None if r["outcome"] == "success" else "red"
    print_table(rows, ["id", "created_at", "actor", "source", "action", "target", "outcome", "message"], "audit log")

"""``mlhub tenants`` and ``mlhub keys``."""

from __future__ import annotations

import typer

from mlhub.cli.context import STATE
from mlhub.cli.output import console, err_console, print_json, print_table, to_plain
from mlhub.tenancy import TenantService

tenants_app = typer.Typer(help="Tenants (operators): create, list, show the current one.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of your tenant: create, list, revoke.", no_args_is_help=True)

JSON_OPT = typer.Option(False, "--json", help="Print JSON.")


def _service() -> TenantService:
    return TenantService(STATE.backends.db)


@tenants_app.command("create")
def tenants_create(name: str = typer.Argument(..., help="Tenant name: lowercase letters, digits, - and _."),
                   json_: bool = JSON_OPT) -> None:
    """Create a tenant and print its first API key (shown once; only its hash is stored)."""
    tenant, key = _service().create_tenant(name)
    if json_:
        print_json({"tenant": to_plain(tenant), "api_key": key})
        return
    console.print(f"tenant {tenant.name} ({tenant.id}) created")
    err_console.print("API key (shown once, store it now):")
    print(key)


@tenants_app.command("list")
def tenants_list(json_: bool = JSON_OPT) -> None:
    """List every tenant."""
    rows = to_plain(_service().list_tenants())
    print_json(rows) if json_ else print_table(rows, ["name", "id", "status", "created_at"], "tenants")


@tenants_app.command("current")
def tenants_current(json_: bool = JSON_OPT) -> None:
    """Show the tenant your API key belongs to."""
    info = to_plain(_service().get_tenant(STATE.principal()))
    print_json(info) if json_ else console.print(f"{info['name']} ({info['id']})")


@keys_app.command("create")
def keys_create(name: str = typer.Option("default", "--name", help="A label for the key."),
                json_: bool = JSON_OPT) -> None:
    """Create an API key for your tenant and print it once."""
    info, key = _service().create_key(STATE.principal(), name)
    if json_:
        print_json({"key": to_plain(info), "api_key": key})
        return
    err_console.print(f"key {info.prefix} (id {info.id}) created; shown once, store it now:")
    print(key)


@keys_app.command("list")
def keys_list(all_: bool = typer.Option(False, "--all", help="Include revoked keys."), json_: bool = JSON_OPT) -> None:
    """List your tenant's API keys (prefixes only; secrets are never stored)."""
    rows = to_plain(_service().list_keys(STATE.principal(), include_revoked=all_))
    if json_:
        print_json(rows)
    else:
        print_table(rows, ["id", "prefix", "name", "created_by", "created_at", "revoked_at"], "API keys")


@keys_app.command("revoke")
def keys_revoke(key: str = typer.Argument(..., help="Key id or prefix."), json_: bool = JSON_OPT) -> None:
    """Revoke a key; it stops working at once."""
    info = _service().revoke_key(STATE.principal(), key)
    print_json(to_plain(info)) if json_ else console.print(f"key {info.prefix} revoked")

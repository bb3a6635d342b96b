"""``mlhub models ...``: the model registry from the shell, as the calling tenant (reads and writes the store;
works while Ray is down). Promotions go through the model's gates; ``--force`` needs ``--reason`` and is audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mlhub.cli.context import STATE
from mlhub.cli.output import console, err_console, print_json, print_table, to_plain
from mlhub.errors import PromotionRefused, ValidationError

app = typer.Typer(help="Model registry: versions, aliases, stages, gated promotion, rollback, compare, gc.",
                  no_args_is_help=True)

JSON_OPT = typer.Option(False, "--json", help="Print JSON.")
NAME_ARG = typer.Argument(..., metavar="NAME", help="A registered model name.")
_SHOWN_METRICS = 6


def _models():
    from mlhub.registry.api import Models
    from mlhub.registry.service import RegistryService

    backends = STATE.backends
    service = RegistryService(backends.db, cache=backends.cache, cache_ttl_s=STATE.settings.cache_ttl_s)
    return Models(service, STATE.principal(), backends.artifacts)


def _metrics(m: dict[str, Any], n: int = _SHOWN_METRICS) -> str:
    shown = [(k, v) for k, v in m.items() if isinstance(v, int | float) and not k.startswith("class.")][:n]
    return ", ".join(f"{k}={v:.4g}" for k, v in shown) or "-"


def _gate_rows(gates) -> list[dict[str, Any]]:
    return [{"gate": g.gate, "verdict": "pass" if g.passed else "FAIL", "detail": g.detail,
             "_style": None if g.passed else "red"} for g in gates]


@app.command("list")
def list_models(json_: bool = JSON_OPT) -> None:
    """Your registered models: latest version, aliases, metrics of the latest version."""
    rows = to_plain(_models().list())
    if json_:
        print_json(rows)
        return
    for r in rows:
        r["metrics"] = _metrics(r["latest_metrics"])
        r["aliases"] = ", ".join(f"{a}->{v}" for a, v in r["aliases"].items()) or "-"
    print_table(rows, ["name", "latest_version", "versions", "aliases", "framework", "metrics", "updated_at"],
                "models")


@app.command("show")
def show(name: str = NAME_ARG, json_: bool = JSON_OPT) -> None:
    """One model: description, tags, gates, aliases, stages and its versions."""
    models = _models()
    detail, versions = models.show(name), models.versions(name)
    if json_:
        print_json({**to_plain(detail), "version_list": to_plain(versions)})
        return
    console.print(f"[bold]{name}[/bold]  task={detail.task or '-'}  versions={detail.versions}  "
                  f"latest={detail.latest_version or '-'}", markup=True, highlight=False)
    if detail.description:
        console.print(detail.description, markup=False)
    console.print("aliases: " + (", ".join(f"{a} -> {v}" for a, v in detail.aliases.items()) or "none"),
                  markup=False)
    console.print("gates:   " + ("; ".join(detail.gates) or "none (any version may be promoted)"), markup=False)
    if detail.tags:
        console.print("tags:    " + ", ".join(f"{k}={v}" for k, v in detail.tags.items()), markup=False)
    _versions_table(versions, name)


def _versions_table(versions, name: str) -> None:
    number = {v.id: v.version for v in versions}
    rows = [{"version": v.version, "parent": number.get(v.parent_version_id), "label": v.label, "stage": v.stage, "aliases": ", ".join(v.aliases) or "-",
             "status": v.status, "framework": v.framework, "metrics": _metrics(v.metrics), "job": v.job_id,
             "run": v.run_id, "sha256": (v.artifact_sha256 or "")[:12], "created_at": v.created_at,
             "_style": "dim" if v.status == "deleted" else None} for v in versions]
    print_table(rows, ["version", "parent", "label", "stage", "aliases", "status", "framework", "metrics", "job", "run",
                       "sha256", "created_at"], f"versions of {name}")


@app.command("versions")
def versions(name: str = NAME_ARG, all_: bool = typer.Option(False, "--all", help="Include deleted versions."),
             json_: bool = JSON_OPT) -> None:
    """Every version of a model with its label, stage, aliases, metrics and lineage."""
    rows = _models().versions(name, include_deleted=all_)
    if json_:
        print_json(to_plain(rows))
        return
    _versions_table(rows, name)


@app.command("promote")
def promote(name: str = NAME_ARG, version: int = typer.Argument(..., min=1, help="The version number."),
            to: str = typer.Option(..., "--to", help="An alias (champion, challenger, any name) or a stage "
                                   "(staging, production, archived)."),
            reason: str | None = typer.Option(None, "--reason", help="Why (kept in the promotion history)."),
            force: bool = typer.Option(False, "--force", help="Promote even if a gate fails (needs --reason; "
                                       "audited)."),
            dry_run: bool = typer.Option(False, "--dry-run", help="Only check the gates."),
            json_: bool = JSON_OPT) -> None:
    """Move an alias to a version, or set its stage, through the model's gates."""
    models = _models()
    if dry_run:
        verdicts = models.check(name, version, to)
        if json_:
            print_json([g.to_dict() for g in verdicts])
        elif verdicts:
            print_table(_gate_rows(verdicts), ["gate", "verdict", "detail"], f"gates for {name}/{version} -> {to}")
        else:
            console.print(f"no gate guards {to}", markup=False)
        if any(not g.passed for g in verdicts):
            raise typer.Exit(5)
        return
    try:
        result = models.promote(name, version, to, reason=reason, force=force)
    except PromotionRefused as exc:
        if not json_:
            from mlhub.domain.gates import GateResult

            gates = [GateResult(**g) for g in exc.details.get("gates", [])]
            print_table(_gate_rows(gates), ["gate", "verdict", "detail"], f"gates for {name}/{version} -> {to}")
        raise
    if json_:
        print_json(to_plain(result))
        return
    if result.gates:
        print_table(_gate_rows(result.gates), ["gate", "verdict", "detail"], f"gates for {name}/{version} -> {to}")
    if not result.changed:
        console.print(f"{name}/{version} already holds {to}", markup=False)
        return
    was = f" (was version {result.previous})" if result.previous else ""
    forced = " FORCED past failing gates" if result.forced else ""
    console.print(f"{name}@{to} -> version {version}{was}{forced}" if result.target_kind == "alias"
                  else f"{name}/{version} stage -> {to}{was}{forced}", markup=False)


@app.command("rollback")
def rollback(name: str = NAME_ARG,
             alias: str = typer.Option("champion", "--alias", help="The alias to give back to its previous holder."),
             reason: str | None = typer.Option(None, "--reason", help="Why (kept in the promotion history)."),
             json_: bool = JSON_OPT) -> None:
    """Give an alias back to the version that held it before its last promotion."""
    result = _models().rollback(name, alias, reason=reason)
    if json_:
        print_json(to_plain(result))
        return
    console.print(f"{name}@{alias} -> version {result.version} (rolled back from version {result.previous})",
                  markup=False)


@app.command("history")
def history(name: str = NAME_ARG, target: str | None = typer.Option(None, "--target", help="Only this alias/stage."),
            limit: int = typer.Option(50, "--limit", min=1, max=10_000), json_: bool = JSON_OPT) -> None:
    """Every alias and stage move: who, when, why, forced or not, the gate verdicts."""
    rows = _models().history(name, target=target, limit=limit)
    if json_:
        print_json(to_plain(rows))
        return
    table = [{"when": r.created_at, "target": r.target, "action": r.action, "from": r.from_version,
              "to": r.to_version, "actor": r.actor, "forced": "FORCED" if r.forced else "",
              "gates": f"{sum(g['passed'] for g in r.gates)}/{len(r.gates)} passed" if r.gates else "-",
              "reason": r.reason, "_style": "yellow" if r.forced else None} for r in rows]
    print_table(table, ["when", "target", "action", "from", "to", "actor", "forced", "gates", "reason"],
                f"promotion history of {name}")


@app.command("gates")
def gates(name: str = NAME_ARG,
          set_: list[str] | None = typer.Option(None, "--set", help="A gate (repeatable; replaces all gates): "
                                                "'accuracy >= 0.9', 'f1_macro better than champion by 0.01', "
                                                "'evaluated on iris', each optionally '... on DATASET for T1,T2'."),
          clear: bool = typer.Option(False, "--clear", help="Remove every gate."), json_: bool = JSON_OPT) -> None:
    """Show or replace the gates a version must pass to be promoted (default targets: champion, production)."""
    models = _models()
    if set_ and clear:
        raise ValidationError("give --set or --clear, not both")
    if set_ or clear:
        models.set_gates(name, list(set_ or []))
    current = models.show(name).gates
    if json_:
        print_json(current)
    else:
        console.print("\n".join(current) or "no gates", markup=False)


def _parse_tags(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ValidationError(f"--set takes KEY=VALUE, got {p!r}")
        out[key] = value
    return out


@app.command("tag")
def tag(name: str = NAME_ARG, version: int | None = typer.Argument(None, min=1, help="A version (default: the model)."),
        set_: list[str] | None = typer.Option(None, "--set", help="KEY=VALUE (repeatable)."),
        remove: list[str] | None = typer.Option(None, "--remove", help="A tag key to remove (repeatable)."),
        json_: bool = JSON_OPT) -> None:
    """Set or remove tags on a model or one of its versions."""
    tags = _models().tag(name, version, set_tags=_parse_tags(set_), remove=remove or [])
    if json_:
        print_json(tags)
    else:
        console.print(", ".join(f"{k}={v}" for k, v in tags.items()) or "no tags", markup=False)


@app.command("describe")
def describe(name: str = NAME_ARG, text: str = typer.Argument(..., help="The description ('' clears it)."),
             version: int | None = typer.Option(None, "--version", min=1, help="Describe this version.")) -> None:
    """Set the description of a model or of one version."""
    _models().describe(name, text, version)
    console.print(f"described {name}{f'/{version}' if version else ''}", markup=False)


@app.command("delete")
def delete(name: str = NAME_ARG, version: int | None = typer.Argument(None, min=1, help="A version (default: the "
                                                                          "whole model; needs --yes)."),
           yes: bool = typer.Option(False, "--yes", help="Confirm deleting a whole model.")) -> None:
    """Delete a version (refused while an alias or a running deployment uses it), or a whole model."""
    models = _models()
    if version is None:
        if not yes:
            raise ValidationError(f"deleting model {name!r} with all its versions needs --yes")
        n = models.delete(name)
        console.print(f"deleted model {name} ({n} versions); `mlhub models gc` removes their artifacts",
                      markup=False)
        return
    models.delete(name, version)
    console.print(f"deleted {name}/{version}; `mlhub models gc` removes its artifact", markup=False)


@app.command("compare")
def compare(refs: list[str] = typer.Argument(..., metavar="REF...", help="2 to 8 of NAME/VERSION or NAME@ALIAS."),
            plot: Path | None = typer.Option(None, "--plot", help="Write a PNG: metrics side by side and the "
                                             "newest confusion matrix of each version."),
            json_: bool = JSON_OPT) -> None:
    """Versions side by side: training metrics and each evaluation's metrics, the best of each row marked."""
    result = _models().compare(refs)
    if json_:
        print_json({"versions": to_plain(result.versions), "rows": result.rows, "best": result.best,
                    "confusion": result.confusion})
    else:
        names = [f"{v.model}/{v.version}" for v in result.versions]
        table = []
        for key, values in result.rows.items():
            row: dict[str, Any] = {"metric": key}
            for i, (col, v) in enumerate(zip(names, values, strict=True)):
                row[col] = "-" if v is None else (f"{v:.4f} *" if result.best[key] == i else f"{v:.4f}")
            table.append(row)
        print_table(table, ["metric", *names], "comparison (* best)")
    if plot is not None:
        from mlhub.registry.compare_plot import plot_comparison

        out = plot_comparison(result, plot)
        if not json_:
            console.print(str(out), markup=False)


@app.command("evaluations")
def evaluations(ref: str = typer.Argument(..., metavar="REF", help="NAME/VERSION or NAME@ALIAS."),
                json_: bool = JSON_OPT) -> None:
    """The evaluations of one version, newest first."""
    rows = _models().evaluations(ref)
    if json_:
        print_json(to_plain(rows))
        return
    print_table([{"id": e.id, "dataset": e.dataset, "task": e.task, "metrics": _metrics(e.metrics, 8), "job": e.job_id,
                  "confusion_png": e.plot_artifact_id, "created_at": e.created_at} for e in rows],
                ["id", "dataset", "task", "metrics", "job", "confusion_png", "created_at"], f"evaluations of {ref}")


@app.command("gc")
def gc(older_than: str = typer.Option("1h", "--older-than", help="Keep artifacts younger than this (30m, 12h, 7d): "
                                      "a finishing job may be registering them."),
       dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be removed."),
       json_: bool = JSON_OPT) -> None:
    """Remove your model artifacts that no live version references (deleted versions and models, failed jobs)."""
    from mlhub.cli.ops import parse_when
    from mlhub.store.types import utcnow

    cutoff = parse_when(older_than, "--older-than")
    age = max((utcnow() - cutoff).total_seconds(), 0.0)
    report = _models().gc(older_than_s=age, dry_run=dry_run)  # this tenant's only, as every tenant command
    if json_:
        print_json(to_plain(report))
        return
    verb = "would remove" if dry_run else "removed"
    console.print(f"{verb} {report.removed} model artifacts ({report.bytes_freed:,} bytes)", markup=False)
    for tenant, shas in report.per_tenant.items():
        for sha in shas:
            err_console.print(f"  {tenant} {sha}", markup=False)

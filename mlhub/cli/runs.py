"""``mlhub runs list|show|plot|compare``: tracked runs (training jobs' and ``mlhub.start_run``'s), their params,
tags, artifacts and per-step metrics, their curves as a PNG, and several runs side by side.

Reads the store only (works while Ray is down), as the calling tenant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mlhub.cli.context import STATE
from mlhub.cli.output import console, print_json, print_table, to_plain
from mlhub.errors import NotFoundError

app = typer.Typer(help="Tracked runs: list (with filters), show, compare, plot their loss and metric curves.",
                  no_args_is_help=True)

JSON_OPT = typer.Option(False, "--json", help="Print JSON.")
TABLE_ROWS = 12  # epochs shown by `runs show` for people (--json has them all)
_STATUS_STYLE = {"finished": "green", "failed": "red", "killed": "yellow", "running": "cyan"}


def _service():
    from mlhub.tracking import TrackingService

    return TrackingService(STATE.backends.db), STATE.principal()


def epoch_rows(history: dict[str, list[tuple[int, float]]]) -> tuple[list[str], list[dict[str, Any]]]:
    """The per-step series as table rows ``{"step": s, key: value, ...}`` in step order, and their keys."""
    from mlhub.plots import is_loss_key
    from mlhub.tracking import step_series

    series = step_series(history)
    keys = sorted(series, key=lambda k: (not is_loss_key(k), k))
    by_step: dict[int, dict[str, Any]] = {}
    for key in keys:
        for step, value in series[key]:
            by_step.setdefault(step, {"step": step})[key] = value
    return keys, [by_step[s] for s in sorted(by_step)]


def _sample(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """At most ``n`` rows, evenly spread, always the first and the last."""
    if len(rows) <= n:
        return rows
    idx = sorted({round(i * (len(rows) - 1) / (n - 1)) for i in range(n)})
    return [rows[i] for i in idx]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.4f}"
    return "-" if v is None else str(v)


@app.command("list")
def list_runs(experiment: str | None = typer.Option(None, "--experiment", help="Only runs of this experiment."),
              job: int | None = typer.Option(None, "--job", help="Only runs of this job (one per attempt)."),
              status: str | None = typer.Option(None, "--status", help="running, finished, failed or killed."),
              filter_: str | None = typer.Option(
                  None, "--filter", "-f",
                  help="e.g. \"metrics.f1 > 0.9 and params.lr < 0.01\", \"params.optimizer = 'adam'\", "
                       "\"tags.team = 'vision' or status = 'failed'\" (metrics compare their latest value)."),
              order_by: str | None = typer.Option(None, "--order-by",
                                                  help="e.g. \"metrics.f1 desc, params.lr\" (default: newest first)."),
              limit: int = typer.Option(50, "--limit", min=1, max=1000),
              json_: bool = JSON_OPT) -> None:
    """List your tracked runs, newest first, or filtered and ordered by metrics, params, tags and attributes."""
    svc, principal = _service()
    runs = svc.list_runs(principal, experiment=experiment, job_id=job, status=status, filter=filter_,
                         order_by=order_by, limit=limit)
    rows = to_plain(runs)
    if json_:
        print_json(rows)
        return
    for r, info in zip(rows, runs, strict=True):
        r["_style"] = _STATUS_STYLE.get(r["status"])
        r["duration_s"] = info.duration_s
        r["summary"] = {k: _fmt(v) for k, v in info.summary.items() if isinstance(v, int | float)}
    print_table(rows, ["id", "name", "experiment", "status", "parent_run_id", "job_id", "attempt", "started_at",
                       "duration_s", "summary"], "runs")


@app.command("show")
def show(run_id: int = typer.Argument(..., metavar="RUN", help="A run id (see `mlhub runs list`)."),
         json_: bool = JSON_OPT) -> None:
    """One run: its params, tags, final metrics, artifacts and a compact per-step table."""
    svc, principal = _service()
    detail = svc.get_run(principal, run_id)
    history = svc.metric_history(principal, run_id)
    keys, rows = epoch_rows(history)
    if json_:
        print_json({**to_plain(detail.run), "params": detail.params, "tags": detail.tags,
                    "final_metrics": detail.final_metrics, "latest_metrics": detail.latest_metrics,
                    "metric_points": detail.metric_points, "artifacts": to_plain(list(detail.artifacts)),
                    "epochs": rows})
        return
    r = detail.run
    head = f"run {r.id} {r.name}  experiment {r.experiment}  {r.status}"
    if r.parent_run_id is not None:
        head += f"  child of run {r.parent_run_id}"
    if r.job_id is not None:
        head += f"  job {r.job_id}" + (f" attempt {r.attempt}" if r.attempt else "")
    if r.duration_s is not None:
        head += f"  {r.duration_s:.1f} s"
    console.print(head, style=_STATUS_STYLE.get(r.status), highlight=False, markup=False)
    if detail.params:
        print_table([{"param": k, "value": v} for k, v in detail.params.items()], ["param", "value"], "params")
    if detail.tags:
        print_table([{"tag": k, "value": v} for k, v in detail.tags.items()], ["tag", "value"], "tags")
    finals = detail.final_metrics
    if finals:
        print_table([{"metric": k, "value": _fmt(v)} for k, v in finals.items()], ["metric", "value"],
                    "final metrics")
    if detail.artifacts:
        print_table([{"id": a.id, "name": a.name, "media_type": a.media_type, "size": f"{a.size_bytes:,} B",
                      "sha256": a.sha256[:12]} for a in detail.artifacts],
                    ["id", "name", "media_type", "size", "sha256"], "artifacts")
    if not rows:
        console.print("no per-epoch metrics recorded", style="dim")
        return
    shown = _sample(rows, TABLE_ROWS)
    title = f"per-epoch metrics ({len(rows)} steps" + (
        f", {len(shown)} shown; --json for all)" if len(shown) < len(rows) else ")")
    table = [{"epoch": row["step"], **{k: _fmt(row.get(k)) for k in keys}} for row in shown]
    print_table(table, ["epoch", *keys], title)


@app.command("plot")
def plot(run_id: int = typer.Argument(..., metavar="RUN", help="A run id (see `mlhub runs list`)."),
         out: Path | None = typer.Option(None, "--out", "-o",
                                         help="PNG to write (default: run-RUN.png here; a folder: run-RUN.png in it)."),
         metric: list[str] | None = typer.Option(None, "--metric", "-m",
                                                 help="Only this metric (repeatable); default: every per-epoch one."),
         json_: bool = typer.Option(False, "--json", help="Print the written path as JSON.")) -> None:
    """Write a PNG of a run's curves: loss (train and validation) on one panel, other metrics on another."""
    from mlhub.plots import plot_loss_and_metrics
    from mlhub.tracking import step_series

    svc, principal = _service()
    detail = svc.get_run(principal, run_id)
    history = svc.metric_history(principal, run_id, metric or None)
    series = history if metric else step_series(history)
    if not any(series.values()):
        raise NotFoundError(f"run {run_id} has no per-epoch metrics to plot"
                            + (f" (only {', '.join(sorted(history))})" if history else ""))
    target = out if out is not None else Path(f"run-{run_id}.png")
    if target.is_dir():
        target = target / f"run-{run_id}.png"
    r = detail.run
    path = plot_loss_and_metrics(series, target, f"run {r.id}: {r.name} ({r.experiment}, {r.status})")
    if json_:
        print_json({"run_id": run_id, "path": str(path), "metrics": sorted(series)})
    else:
        print(path)


@app.command("compare")
def compare(run_ids: list[int] = typer.Argument(..., metavar="RUN...", help="Two or more run ids."),
            plot_to: Path | None = typer.Option(None, "--plot",
                                                help="Also write one PNG with every run's curves overlaid."),
            metric: list[str] | None = typer.Option(None, "--metric", "-m",
                                                    help="Only this metric (repeatable), in the table and the plot."),
            only_diff: bool = typer.Option(False, "--diff", help="Only the rows whose values differ."),
            json_: bool = JSON_OPT) -> None:
    """Runs side by side: params, tags and each metric's latest value; rows that differ are marked '*'."""
    svc, principal = _service()
    cmp = svc.compare(principal, run_ids)
    wanted = set(metric or [])
    metrics = [c for c in cmp.metrics if not wanted or c.key in wanted]
    missing = sorted(wanted - {c.key for c in cmp.metrics})
    if missing:
        raise NotFoundError(f"no compared run has metric {', '.join(map(repr, missing))}")
    path = _plot_compared(svc, principal, cmp.runs, sorted(wanted) or None, plot_to) if plot_to else None
    if json_:
        doc = to_plain(cmp)
        doc["metrics"] = to_plain(metrics)
        doc["differing"] = cmp.differing
        if path is not None:
            doc["plot"] = str(path)
        print_json(doc)
        return
    columns = [f"{r.id} {r.name}" for r in cmp.runs]
    rows = []
    for kind, items in (("param", cmp.params), ("tag", cmp.tags), ("metric", metrics)):
        for c in items:
            if only_diff and not c.differs:
                continue
            rows.append({"": "*" if c.differs else "", "kind": kind, "key": c.key,
                         **{col: _fmt(v) for col, v in zip(columns, c.values, strict=True)},
                         "_style": "yellow" if c.differs else None})
    title = f"{len(cmp.runs)} runs: " + ", ".join(f"{r.id} ({r.status})" for r in cmp.runs)
    print_table(rows, ["", "kind", "key", *columns], title)
    if path is not None:
        print(path)


def _plot_compared(svc, principal, runs, keys: list[str] | None, target: Path) -> Path:
    from mlhub.plots import plot_curves
    from mlhub.tracking import step_series

    if target.is_dir():
        target = target / ("compare-" + "-".join(str(r.id) for r in runs) + ".png")
    series = {}
    for r in runs:
        history = step_series(svc.metric_history(principal, r.id))
        for key in sorted(history):
            if keys is None or key in keys:
                series[f"{key} (run {r.id})"] = history[key]
    if not any(series.values()):
        raise NotFoundError("the compared runs have no per-step metrics to plot")
    return plot_curves(series, target, "runs " + " vs ".join(f"{r.id} {r.name}" for r in runs), xlabel="step")

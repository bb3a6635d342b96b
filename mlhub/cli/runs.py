"""``mlhub runs list|show|plot``: tracked runs, their params and per-epoch metrics, and their curves as a PNG.

Reads the store only (works while Ray is down), as the calling tenant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mlhub.cli.context import STATE
from mlhub.cli.output import console, print_json, print_table, to_plain
from mlhub.errors import NotFoundError

app = typer.Typer(help="Tracked runs: list, show, plot their loss and metric curves.", no_args_is_help=True)

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
              limit: int = typer.Option(50, "--limit", min=1, max=1000),
              json_: bool = JSON_OPT) -> None:
    """List your tracked runs, newest first."""
    svc, principal = _service()
    runs = svc.list_runs(principal, experiment=experiment, job_id=job, status=status, limit=limit)
    rows = to_plain(runs)
    if json_:
        print_json(rows)
        return
    for r, info in zip(rows, runs, strict=True):
        r["_style"] = _STATUS_STYLE.get(r["status"])
        r["duration_s"] = info.duration_s
        r["summary"] = {k: _fmt(v) for k, v in info.summary.items() if isinstance(v, int | float)}
    print_table(rows, ["id", "name", "experiment", "status", "job_id", "attempt", "started_at", "duration_s",
                       "summary"], "runs")


@app.command("show")
def show(run_id: int = typer.Argument(..., metavar="RUN", help="A run id (see `mlhub runs list`)."),
         json_: bool = JSON_OPT) -> None:
    """One run: its params, final metrics and a compact per-epoch table."""
    svc, principal = _service()
    detail = svc.get_run(principal, run_id)
    history = svc.metric_history(principal, run_id)
    keys, rows = epoch_rows(history)
    if json_:
        print_json({**to_plain(detail.run), "params": detail.params, "tags": detail.tags,
                    "final_metrics": detail.final_metrics, "latest_metrics": detail.latest_metrics,
                    "metric_points": detail.metric_points, "epochs": rows})
        return
    r = detail.run
    head = f"run {r.id} {r.name}  experiment {r.experiment}  {r.status}"
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

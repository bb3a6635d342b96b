"""``mlhub hpo ...``: the trials of a hyperparameter search (live table) and its plot; ``mlhub tune --wait``
follows a search with the same live table. Everything reads the store: it works while Ray is down."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mlhub.cli.context import STATE
from mlhub.cli.output import console, print_json, to_plain
from mlhub.domain.enums import JobState

app = typer.Typer(help="Hyperparameter searches: trials (live) and plots.", no_args_is_help=True)
POLL_S = 0.5
EXIT_CODES = {"succeeded": 0}
STATUS_STYLE = {"running": "cyan", "terminated": "green", "stopped": "yellow", "error": "red", "pending": "dim"}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def trials_table(info, trials) -> Table:
    """Rows: trial, status, params, the search's metric, epochs; the best trial marked with '*'."""
    sign = 1 if info.mode == "max" else -1
    scored = [t for t in trials if isinstance(t.metrics.get(info.metric), int | float) and t.status != "error"]
    best = max(scored, key=lambda t: sign * t.metrics[info.metric]).trial_id if scored else None
    p = info.progress or {}
    caption = f"job {info.job_id} {info.name}: {info.state}"
    if p.get("trials") is not None:
        caption += f"; {p.get('done', 0)}/{p['trials']} trials done, {p.get('running', 0)} running"
    elif p.get("waiting") and info.state in ("queued", "retrying"):
        caption += f"; {p['waiting']}"
    table = Table(title=f"trials ({info.metric}, {info.mode})", caption=caption)
    for col in ("trial", "status", "params", info.metric, "epochs"):
        table.add_column(col, overflow="fold")
    for t in trials:
        value = t.metrics.get(info.metric)
        mark = "*" if t.trial_id == best else ""
        table.add_row(Text(t.trial_id + mark), Text(t.status, style=STATUS_STYLE.get(t.status, "")),
                      Text(", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())),
                      Text("-" if value is None else _fmt(value)), Text(str(t.iterations)))
    return table


def _trial_docs(trials) -> list[dict[str, Any]]:
    return [{"trial_id": t.trial_id, "status": t.status, "params": t.params, "metrics": t.metrics,
             "iterations": t.iterations, "run_id": t.run_id} for t in trials]


def follow_trials(db, tenant_id: str, job_id: int, *, json_: bool = False, timeout: float | None = None) -> int:
    """A live trial table until the job ends (or ``timeout``); returns 0 only if it succeeded."""
    from mlhub.hpo.trials import list_trials, search_info

    deadline = None if timeout is None else time.monotonic() + timeout

    def snapshot():
        return search_info(db, tenant_id, job_id), list_trials(db, tenant_id, job_id)

    info, trials = snapshot()
    with Live(trials_table(info, trials), console=console, refresh_per_second=4, transient=json_) as live:
        while not JobState(info.state).is_terminal and (deadline is None or time.monotonic() < deadline):
            time.sleep(POLL_S)
            info, trials = snapshot()
            live.update(trials_table(info, trials))
    if json_:
        print_json({"job_id": job_id, "state": info.state, "trials": _trial_docs(trials)})
    else:
        style = "green" if info.state == "succeeded" else "red"
        console.print(f"[{style}]job {job_id} {info.state}[/]", highlight=False)
    return EXIT_CODES.get(info.state, 1)


def submit_and_follow(doc: dict[str, Any], *, json_: bool = False, working_dir: Any = None) -> int:
    """``mlhub tune SPEC --wait``: queue the search and show its trials live until it ends."""
    from mlhub.client import Hub
    from mlhub.domain.specs import parse_spec

    spec = parse_spec(doc)
    hub = Hub(STATE.settings, api_key=STATE.api_key, source="cli")
    try:
        handle = hub.submit(spec, working_dir=working_dir)  # packs the trainer's custom code, if it names any
        if not hasattr(handle, "wait"):  # a recurring search: nothing to follow
            console.print(f"schedule {handle.id} created")
            return 0
        if not json_:
            console.print(f"job {handle.id} queued on hpo")
        return follow_trials(hub.backends.db, hub.principal.tenant_id, handle.id, json_=json_)
    finally:
        hub.close()


@app.command("trials")
def trials(job_id: int = typer.Argument(..., help="The HPO job."),
           follow: bool = typer.Option(False, "--follow", "-f", help="Keep the table live until the job ends."),
           json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The trials of a search: params, the search's metric, epochs run, status (best marked '*')."""
    from mlhub.hpo.trials import list_trials, search_info

    db, tenant = STATE.backends.db, STATE.principal().tenant_id
    if follow:
        raise typer.Exit(follow_trials(db, tenant, job_id, json_=json_))
    info, rows = search_info(db, tenant, job_id), list_trials(db, tenant, job_id)
    if json_:
        print_json(to_plain({"job_id": job_id, "state": info.state, "metric": info.metric, "mode": info.mode,
                             "trials": _trial_docs(rows)}))
    else:
        console.print(trials_table(info, rows))


@app.command("plot")
def plot(job_id: int = typer.Argument(..., help="The HPO job."),
         out: Path = typer.Option(..., "--out", "-o", help="PNG file to write."),
         metric: str | None = typer.Option(None, "--metric", help="Metric to draw (default: the search's).")) -> None:
    """Write a PNG: the metric per epoch of every trial, and each param vs the trials' final scores."""
    from mlhub.hpo.plot import plot_trials
    from mlhub.hpo.trials import list_trials, search_info, trial_curves

    db, tenant = STATE.backends.db, STATE.principal().tenant_id
    info = search_info(db, tenant, job_id)
    key = metric or info.metric
    path = plot_trials(trial_curves(db, tenant, job_id, key), list_trials(db, tenant, job_id), key, out,
                       f"job {job_id} {info.name}: {info.state}", log_params=info.log_params)
    console.print(f"wrote {path}")

"""Following jobs live: ``mlhub watch`` (progress bar) and ``mlhub logs [--follow]``. Both read the store."""

from __future__ import annotations

import time

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from mlhub.cli.context import STATE
from mlhub.cli.output import console, print_json, to_plain
from mlhub.domain.enums import JobState

POLL_S = 0.3
QUEUED_HINT_S = 30.0
EXIT_CODES = {"succeeded": 0, "failed": 1, "dead": 1, "cancelled": 1}


def _describe(info) -> str:
    p = info.progress or {}
    parts = [f"job {info.id} {info.name}", info.state]
    if info.attempt > 1:
        parts.append(f"attempt {info.attempt}/{info.max_attempts}")
    if info.state in (JobState.QUEUED, JobState.RETRYING) and p.get("waiting"):
        parts.append(str(p["waiting"]))
    if "epoch" in p:
        parts.append(f"epoch {p['epoch']}/{p.get('epochs', '?')}")
    for k, v in (p.get("metrics") or {}).items():
        parts.append(f"{k} {v:.4f}")
    if p.get("rows_per_s"):
        parts.append(f"{p['rows_per_s']:,.0f} rows/s")
    if p.get("eta_s"):
        parts.append(f"ETA {p['eta_s']:.0f}s")
    return "  ".join(parts)


def follow_job(hub, job_id: int, *, json_: bool = False, timeout: float | None = None) -> int:
    """Show a live progress bar until the job ends; return the exit status (0 only if it succeeded)."""
    handle = hub.job(job_id)
    info = handle.status()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console, transient=json_) as bar:
        task = bar.add_task(_describe(info), total=None)
        waiting_since = time.monotonic()
        hinted = False

        def update(i) -> None:
            nonlocal hinted
            if (i.state == JobState.QUEUED and not hinted and not (i.progress or {}).get("waiting")
                    and time.monotonic() - waiting_since > QUEUED_HINT_S):
                hinted = True
                bar.console.print(f"job {i.id} is still queued after {QUEUED_HINT_S:.0f} s: is the orchestrator "
                                  "running (`mlhub start`), and does the cluster have room for it?")
            p = i.progress or {}
            total = p.get("epochs") or p.get("of_s")
            done = p.get("epoch") or p.get("slept_s")
            if i.state == JobState.SUCCEEDED:
                total, done = (total or 1), (total or 1)
            bar.update(task, description=_describe(i), total=total, completed=done or 0)

        info = handle.wait(timeout=timeout, poll_s=POLL_S, raise_on_failure=False, on_update=update)
    if json_:
        print_json(to_plain(info))
    else:
        style = "green" if info.state == "succeeded" else "red"
        tail = f": {info.error.splitlines()[-1]}" if info.error and info.state != "succeeded" else ""
        console.print(f"[{style}]job {info.id} {info.state}[/]{tail}", highlight=False)
    return EXIT_CODES.get(info.state, 1)


def watch(job_id: int = typer.Argument(..., help="The job to follow."),
          timeout: float | None = typer.Option(None, "--timeout", min=0.1, help="Stop following after this many seconds."),
          json_: bool = typer.Option(False, "--json", help="Print the final job as JSON.")) -> None:
    """Follow a job with a live progress bar (epoch, metrics, throughput, ETA) until it ends."""
    from mlhub.client import Hub

    hub = Hub(STATE.settings, api_key=STATE.api_key, source="cli")
    try:
        raise typer.Exit(follow_job(hub, job_id, json_=json_, timeout=timeout))
    finally:
        hub.close()


def logs(job_id: int = typer.Argument(..., help="The job whose output to print."),
         attempt: int | None = typer.Option(None, "--attempt", min=1, help="Only this attempt."),
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends."),
         json_: bool = typer.Option(False, "--json", help="Print chunks as JSON.")) -> None:
    """Print the captured stdout/stderr of a job's attempts (stored: works after the cluster is gone)."""
    import sys

    from mlhub.jobs.service import JobService

    svc = JobService(STATE.backends.db)
    principal = STATE.principal()
    last_id, last_attempt, out = 0, None, []
    while True:
        chunks = svc.logs(principal, job_id, attempt=attempt, after_id=last_id)
        for c in chunks:
            last_id = c.id
            if json_:
                out.append({"attempt": c.attempt, "worker": c.worker, "stream": c.stream, "text": c.text})
                continue
            if c.attempt != last_attempt:
                print(f"--- attempt {c.attempt} ---", flush=True)
                last_attempt = c.attempt
            (sys.stderr if c.stream == "stderr" else sys.stdout).write(c.text)
        sys.stdout.flush()
        if not follow or JobState(svc.get(principal, job_id).state).is_terminal:
            if follow:  # the last chunks of a job that just ended
                for c in svc.logs(principal, job_id, attempt=attempt, after_id=last_id):
                    (sys.stderr if c.stream == "stderr" else sys.stdout).write(c.text)
            break
        time.sleep(POLL_S)
    if json_:
        print_json(out)

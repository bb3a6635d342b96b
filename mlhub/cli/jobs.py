"""Job commands: train, evaluate, predict, tune, diagnose, cancel, clean, jobs, status, list-models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from mlhub.cli.context import STATE
from mlhub.cli.ops import parse_when
from mlhub.cli.output import console, print_json, print_table, to_plain
from mlhub.errors import ValidationError

JSON_OPT = typer.Option(False, "--json", help="Print JSON.")
WAIT_OPT = typer.Option(False, "--wait", help="Follow the job until it ends; exit non-zero unless it succeeded.")
SPEC_ARG = typer.Argument(None, help="A YAML/JSON spec file (flags override its top-level fields).",
                          exists=False, dir_okay=False)


def _hub():
    from mlhub.client import Hub

    return Hub(STATE.settings, api_key=STATE.api_key, source="cli")


def parse_dataset(value: str, target: str | None) -> dict[str, Any]:
    """``sklearn:iris``, ``synthetic:classification``, ``csv:PATH`` or ``parquet:PATH`` (with --target)."""
    source, sep, rest = value.partition(":")
    if not sep or not rest:
        raise ValidationError(f"--dataset {value!r}: use sklearn:NAME, synthetic:TASK, csv:PATH or parquet:PATH")
    if source == "sklearn":
        return {"source": "sklearn", "name": rest}
    if source == "synthetic":
        return {"source": "synthetic", "task": rest}
    if source in ("csv", "parquet"):
        return {"source": source, "path": rest, "target": target}
    raise ValidationError(f"--dataset {value!r}: unknown source {source!r} (sklearn, synthetic, csv, parquet)")


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValidationError(f"--param {pair!r}: use KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _document(spec_file: Path | None, kind: str, flags: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if spec_file is not None:
        from mlhub.domain.specs import load_spec_file, spec_to_document

        doc = spec_to_document(load_spec_file(spec_file))
        if doc.get("kind") != kind:
            raise ValidationError(f"{spec_file} is a {doc.get('kind')} spec, not {kind}")
    doc["kind"] = kind
    for key, value in flags.items():
        if value is None or value == {}:
            continue
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


def _common(name, priority, max_attempts, cpus, gpus, timeout) -> dict[str, Any]:
    pr: Any = priority
    if priority is not None and priority.lstrip("-").isdigit():
        pr = int(priority)
    resources = {k: v for k, v in {"num_cpus": cpus, "num_gpus": gpus}.items() if v is not None}
    return {"name": name, "priority": pr, "retry": {"max_attempts": max_attempts} if max_attempts else None,
            "resources": resources or None, "timeout_s": timeout}


def _submit(doc: dict[str, Any], wait: bool, json_: bool, working_dir: Path | None = None) -> None:
    from mlhub.domain.specs import parse_spec

    spec = parse_spec(doc)
    hub = _hub()
    try:
        from mlhub.jobs.code import attach_code, needs_code

        if working_dir is not None and not needs_code(spec) and not json_:
            console.print("note: --working-dir ignored: the spec names no custom code (entrypoint)")
        spec = attach_code(hub.backends, hub.principal, spec, working_dir,
                           on_packed=None if json_ else _print_packed)
        handle = hub.submit(spec)
        if not hasattr(handle, "wait"):  # a schedule
            print_json(to_plain(handle)) if json_ else console.print(
                f"schedule {handle.id} created: next run at {handle.next_run_at:%Y-%m-%d %H:%M:%S} UTC")
            return
        info = handle.status()
        if json_ and not wait:
            print_json(to_plain(info))
            return
        console.print(f"job {info.id} queued on {info.queue} (priority {info.priority})")
        if wait:
            from mlhub.cli.follow import follow_job

            raise typer.Exit(follow_job(hub, info.id, json_=json_))
    finally:
        hub.close()


def _print_packed(packed, record) -> None:
    console.print(f"code: {len(packed.files)} file(s), {packed.size_bytes:,} bytes from {packed.root} "
                  f"(artifact {record.id}, sha256 {record.sha256[:12]})")
    for path, why in packed.skipped[:20]:
        console.print(f"  left out {path}: {why}")


NAME_OPT = typer.Option(None, "--name", help="Job name (letters, digits, _ . -).")
PRIORITY_OPT = typer.Option(None, "--priority", help="low, normal, high, critical or an integer -1000..1000.")
ATTEMPTS_OPT = typer.Option(None, "--max-attempts", min=1, max=20, help="Attempts before the job is dead.")
CPUS_OPT = typer.Option(None, "--cpus", min=0, help="CPUs per attempt.")
GPUS_OPT = typer.Option(None, "--gpus", min=0, help="GPUs per attempt.")
TIMEOUT_OPT = typer.Option(None, "--timeout", min=0.001, help="Seconds before an attempt is stopped.")
DATASET_OPT = typer.Option(None, "--dataset", help="sklearn:NAME, synthetic:TASK, csv:PATH or parquet:PATH.")
TARGET_OPT = typer.Option(None, "--target", help="Label column of a CSV/Parquet dataset.")


def train(
    spec_file: Path | None = SPEC_ARG,
    name: str | None = NAME_OPT,
    framework: str | None = typer.Option(None, "--framework", help="baseline, sklearn, torch or tensorflow."),
    model: str | None = typer.Option(None, "--model", help="baseline: linear|logistic; sklearn: estimator name."),
    dataset: str | None = DATASET_OPT,
    target: str | None = TARGET_OPT,
    param: list[str] | None = typer.Option(None, "--param", help="Hyperparameter KEY=VALUE (repeatable)."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Passes over the training data."),
    register_as: str | None = typer.Option(None, "--register-as", help="Registered model name (default: --name)."),
    version_label: str | None = typer.Option(None, "--version", help="A label for the registered version, e.g. "
                                             "1.0.0 (the registry numbers versions 1, 2, 3 itself)."),
    priority: str | None = PRIORITY_OPT, max_attempts: int | None = ATTEMPTS_OPT, cpus: float | None = CPUS_OPT,
    gpus: float | None = GPUS_OPT, timeout: float | None = TIMEOUT_OPT, wait: bool = WAIT_OPT,
    json_: bool = JSON_OPT,
    working_dir: Path | None = typer.Option(
        None, "--working-dir", help="Folder of the custom training code (entrypoint) to send with the job "
        "(default: the current directory)."),
) -> None:
    """Queue a training job (spec file and/or flags)."""
    flags = _common(name, priority, max_attempts, cpus, gpus, timeout)
    flags.update(framework=framework, model=model, params=parse_params(param), epochs=epochs,
                 register_as=register_as, version_label=version_label,
                 dataset=parse_dataset(dataset, target) if dataset else None)
    _submit(_document(spec_file, "training", flags), wait, json_, working_dir)


def evaluate(
    spec_file: Path | None = SPEC_ARG, name: str | None = NAME_OPT,
    model: str | None = typer.Option(None, "--model", help="name, name@alias or name/VERSION."),
    dataset: str | None = DATASET_OPT, target: str | None = TARGET_OPT,
    num_workers: int | None = typer.Option(None, "--num-workers", help="torch models: split the rows across "
                                           "this many Ray workers (each with --cpus/--gpus)."),
    priority: str | None = PRIORITY_OPT, max_attempts: int | None = ATTEMPTS_OPT, cpus: float | None = CPUS_OPT,
    gpus: float | None = GPUS_OPT, timeout: float | None = TIMEOUT_OPT, wait: bool = WAIT_OPT, json_: bool = JSON_OPT,
) -> None:
    """Queue an evaluation of a registered model on a dataset."""
    flags = _common(name or (f"eval-{model.split('@')[0].split('/')[0]}" if model else None), priority,
                    max_attempts, cpus, gpus, timeout)
    flags.update(model=model, dataset=parse_dataset(dataset, target) if dataset else None, num_workers=num_workers)
    _submit(_document(spec_file, "evaluation", flags), wait, json_)


def predict(
    spec_file: Path | None = SPEC_ARG, name: str | None = NAME_OPT,
    model: str | None = typer.Option(None, "--model", help="name, name@alias or name/VERSION."),
    input_: str | None = typer.Option(None, "--input", help="CSV or Parquet file or folder."),
    output: str | None = typer.Option(None, "--output", help="Parquet file to write (default: an artifact)."),
    id_column: str | None = typer.Option(None, "--id-column", help="Input column copied to the output to identify rows."),
    on_error: str | None = typer.Option(None, "--on-error", help="skip or fail on bad rows."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Ray Data actors scoring the rows, "
                                       "--cpus each (default 1: the job's own process)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Rows per model call (default 4096)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Predict every row, neither reading nor writing "
                                  "the prediction cache."),
    priority: str | None = PRIORITY_OPT, max_attempts: int | None = ATTEMPTS_OPT, cpus: float | None = CPUS_OPT,
    gpus: float | None = GPUS_OPT, timeout: float | None = TIMEOUT_OPT, wait: bool = WAIT_OPT, json_: bool = JSON_OPT,
) -> None:
    """Queue a batch prediction job (Parquet out: the id column and `prediction`)."""
    flags = _common(name or (f"predict-{model.split('@')[0].split('/')[0]}" if model else None), priority,
                    max_attempts, cpus, gpus, timeout)
    flags.update(model=model, input=input_, output=output, id_column=id_column, on_error=on_error,
                 num_workers=workers, batch_size=batch_size, use_cache=False if no_cache else None)
    _submit(_document(spec_file, "batch_prediction", flags), wait, json_)


def tune(spec_file: Path = typer.Argument(..., help="An HPO spec file (YAML/JSON)."),
         priority: str | None = PRIORITY_OPT, wait: bool = typer.Option(
             False, "--wait", help="Show the trials live until the search ends; exit non-zero unless it succeeded."),
         json_: bool = JSON_OPT,
         working_dir: Path | None = typer.Option(
             None, "--working-dir", help="Folder of the trainer's custom code (entrypoint) to send to every trial "
             "(default: the current directory).")) -> None:
    """Queue a hyperparameter search on Ray Tune (see `mlhub hpo trials|plot`)."""
    doc = _document(spec_file, "hpo", _common(None, priority, None, None, None, None))
    if wait:
        from mlhub.cli.hpo import submit_and_follow

        raise typer.Exit(submit_and_follow(doc, json_=json_, working_dir=working_dir))
    _submit(doc, False, json_, working_dir)


def diagnose(
    name: str = typer.Option("diagnostic", "--name", help="Job name."),
    queue: str = typer.Option("evaluation", "--queue", help="Queue to run on."),
    sleep: float = typer.Option(0.0, "--sleep", min=0, help="Seconds to sleep."),
    lines: int = typer.Option(0, "--lines", min=0, help="Lines to print."),
    fail_attempts: int = typer.Option(0, "--fail-attempts", min=0, help="Fail this many attempts first."),
    priority: str | None = PRIORITY_OPT, max_attempts: int | None = ATTEMPTS_OPT, cpus: float | None = CPUS_OPT,
    timeout: float | None = TIMEOUT_OPT, wait: bool = WAIT_OPT, json_: bool = JSON_OPT,
) -> None:
    """Queue a diagnostic job (sleeps, prints, fails on purpose): a smoke test of the whole pipeline."""
    flags = _common(name, priority, max_attempts, cpus, None, timeout)
    flags.update(target_queue=queue, sleep_s=sleep, print_lines=lines, fail_attempts=fail_attempts)
    _submit(_document(None, "diagnostic", flags), wait, json_)


def cancel(job_id: int = typer.Argument(..., help="The job to cancel."), json_: bool = JSON_OPT) -> None:
    """Cancel a job: a queued one at once, a running one is stopped by the orchestrator."""
    from mlhub.jobs.service import JobService

    info = JobService(STATE.backends.db).cancel(STATE.principal(), job_id)
    if json_:
        print_json(to_plain(info))
    elif info.state == "cancelled":
        console.print(f"job {job_id} cancelled")
    else:
        console.print(f"job {job_id} is {info.state}: cancellation requested; the orchestrator stops it")


def clean(older_than: str = typer.Option("7d", "--older-than", help="Age: 30m, 12h, 7d or an ISO date."),
          dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be deleted."),
          json_: bool = JSON_OPT) -> None:
    """Delete finished jobs older than a cutoff (never a job a model version's lineage points to)."""
    from mlhub.jobs.service import JobService

    cutoff = parse_when(older_than, "--older-than")
    ids = JobService(STATE.backends.db).clean(STATE.principal(), older_than=cutoff, dry_run=dry_run)
    if json_:
        print_json({"dry_run": dry_run, "job_ids": ids})
    else:
        verb = "would delete" if dry_run else "deleted"
        console.print(f"{verb} {len(ids)} finished job(s) older than {cutoff:%Y-%m-%d %H:%M:%S} UTC")


def jobs(state: str | None = typer.Option(None, "--state", help="Only jobs in this state (queued, running, ...)."),
         queue: str | None = typer.Option(None, "--queue", help="Only jobs on this queue."),
         name: str | None = typer.Option(None, "--name", help="Only jobs with exactly this name."), limit: int = typer.Option(50, "--limit", min=1, max=1000),
         json_: bool = JSON_OPT) -> None:
    """List your jobs, newest first."""
    from mlhub.jobs.service import JobService

    rows = to_plain(JobService(STATE.backends.db).list(STATE.principal(), state=state, queue=queue, name=name,
                                                       limit=limit))
    if json_:
        print_json(rows)
        return
    for r in rows:
        r["_style"] = _STATE_STYLE.get(r["state"])
        waiting = (r.get("progress") or {}).get("waiting") if r["state"] in ("queued", "retrying") else None
        r["note"] = r.get("error") or waiting  # a failure's error, or why a queued job waits
    print_table(rows, ["id", "queue", "name", "priority", "state", "attempt", "created_at", "finished_at", "note"],
                "jobs")


_STATE_STYLE = {"succeeded": "green", "failed": "red", "dead": "bold red", "cancelled": "yellow",
                "running": "cyan", "retrying": "magenta"}


def status(job_id: int | None = typer.Argument(None, help="A job id; without it, per-queue counts."),
           json_: bool = JSON_OPT) -> None:
    """One job's state, or per-queue counts of your jobs (reads the store: works while Ray is down)."""
    from mlhub.jobs.service import JobService

    svc = JobService(STATE.backends.db)
    principal = STATE.principal()
    if job_id is None:
        stats = svc.queue_stats(principal)
        if json_:
            print_json(stats)
            return
        states = ["queued", "retrying", "running", "succeeded", "failed", "dead", "cancelled"]
        rows = [{"queue": q, **{s: stats.get(q, {}).get(s, 0) for s in states}}
                for q in ("training", "evaluation", "batch_prediction", "hpo")]
        print_table(rows, ["queue", *states], "queues")
        return
    info = to_plain(svc.get(principal, job_id))
    if json_:
        print_json(info)
        return
    rows = [{"field": k, "value": json.dumps(v) if isinstance(v, dict | list) else v} for k, v in info.items()]
    print_table(rows, ["field", "value"], f"job {job_id}")


def list_models(json_: bool = JSON_OPT) -> None:
    """Your registered models with their latest version (reads the store)."""
    from mlhub.registry.service import RegistryService

    rows = to_plain(RegistryService(STATE.backends.db).list_models(STATE.principal()))
    if json_:
        print_json(rows)
        return
    for r in rows:
        r["metrics"] = {k: round(v, 4) for k, v in r["latest_metrics"].items() if isinstance(v, int | float)}
    print_table(rows, ["name", "latest_version", "versions", "framework", "metrics", "updated_at"], "models")

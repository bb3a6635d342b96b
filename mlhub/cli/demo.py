"""``mlhub demo``: the tour, on the embedded defaults, in a throw-away home and a throw-away Ray session.

It grows with each floor of the platform. Today: tenants and keys, health, the orchestrator on a local
Ray session, jobs at different priorities with live progress, a retry, a cancelled job, training,
evaluation and batch prediction, gated promotion and a ready model that checks its inputs, the model table, a loss-curve plot, tenant isolation, integrity checks,
and the audit log.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer
from rich.live import Live
from rich.table import Table

from mlhub.cli.output import console, print_table, to_plain

STYLE = {"succeeded": "green", "failed": "red", "dead": "bold red", "cancelled": "yellow", "running": "cyan",
         "retrying": "magenta", "queued": "dim"}


def demo(
    home: Path | None = typer.Option(None, "--home", help="MLHUB_HOME for the tour (default: a new temp folder)."),
    output: Path = typer.Option(Path("demo-output"), "--output", help="Folder for the plots the tour writes."),
    epochs: int = typer.Option(40, "--epochs", min=1, max=500, help="Epochs of the tracked training job."),
) -> None:
    """Run the tour on the embedded defaults (SQLite, filesystem artifacts, in-process cache, local Ray)."""
    import ray

    from actors import orchestrator
    from mlhub.client import Hub
    from mlhub.config import load_settings
    from mlhub.health import check_all
    from mlhub.tenancy import TenantService

    started = time.perf_counter()
    home = home or Path(tempfile.mkdtemp(prefix="mlhub-demo-"))
    output.mkdir(parents=True, exist_ok=True)
    # explicit embedded settings: the tour never touches the user's own MLHUB_HOME or servers
    settings = load_settings(home=home, database_url=None, redis_url=None, mongodb_uri=None, ray_address=None,
                             api_key=None, max_concurrent_jobs=2)
    (settings.home / "data").mkdir(parents=True, exist_ok=True)
    console.rule("[bold]mlhub demo")
    console.print(f"home: {settings.home}  (SQLite, filesystem artifacts, in-process cache, local Ray)")

    hub = Hub(settings, source="cli")  # first use: creates the schema and tenant "default"
    tenants = TenantService(hub.backends.db)
    other = tenants.authenticate(tenants.create_tenant("globex")[1])
    console.print("[green]1[/] schema created; tenants [bold]default[/] and [bold]globex[/] with API keys "
                  "(only their hashes are stored)")
    print_table([h.to_dict() for h in check_all(settings, hub.backends.db)],
                ["name", "kind", "status", "latency_ms", "detail"], "2  backend health")

    with console.status("3  starting a local Ray session and the orchestrator..."):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 namespace="mlhub", _temp_dir=tempfile.mkdtemp(prefix="mlhub-ray-"))
        actor = orchestrator.start(settings.to_document(), name=f"mlhub-demo-{time.time_ns()}")
        ray.get(actor.ping.remote(), timeout=120)
    console.print("[green]3[/] Ray and the orchestrator are up")
    try:
        _jobs_tour(hub, epochs, output)
        _platform_checks(hub, other)
    finally:
        ray.kill(actor, no_restart=True)
        ray.shutdown()
        hub.close()
    console.rule(f"[bold]done in {time.perf_counter() - started:.0f} s")
    console.print(f"plots: {output.resolve()}\nstate: {settings.home} (delete it when done)")


def _jobs_tour(hub, epochs: int, output: Path) -> None:
    diag = {"kind": "diagnostic"}
    jobs = {
        "wine-forest (high)": hub.train({"name": "wine-forest", "framework": "sklearn", "model": "random_forest",
                                         "params": {"n_estimators": 50}, "priority": "high",
                                         "dataset": {"source": "sklearn", "name": "wine"}}),
        "digits-logit (normal)": hub.train({"name": "digits-logit", "framework": "baseline", "model": "logistic",
                                            "epochs": epochs, "params": {"lr": 0.5},
                                            "dataset": {"source": "sklearn", "name": "digits"}}),
        "flaky (retries)": hub.submit({**diag, "name": "flaky", "sleep_s": 1, "fail_attempts": 1,
                                       "retry": {"max_attempts": 3, "backoff_s": 1}}),
        "nightly-report (low)": hub.submit({**diag, "name": "nightly-report", "priority": "low", "sleep_s": 60}),
    }
    console.print("[green]4[/] submitted 4 jobs at different priorities; the low-priority one gets cancelled")
    cancelled = False
    with Live(_jobs_table(jobs), console=console, refresh_per_second=4) as live:
        while True:
            infos = {k: h.status() for k, h in jobs.items()}
            live.update(_jobs_table(jobs, infos))
            if not cancelled and infos["nightly-report (low)"].state == "running":
                jobs["nightly-report (low)"].cancel()
                cancelled = True
            if all(i.state in ("succeeded", "failed", "dead", "cancelled") for i in infos.values()):
                break
            time.sleep(0.25)
    console.print()
    ev = hub.evaluate({"name": "eval-wine", "model": "wine-forest", "dataset": {"source": "sklearn", "name": "wine"}})
    _write_rows(hub)
    pj = hub.predict({"name": "score-wine", "model": "wine-forest/1",
                      "input": str(hub.settings.home / "data" / "wine-rows.csv")})
    ev_info, pj_info = ev.wait(timeout=180), pj.wait(timeout=180)
    m = ev_info.result["metrics"]
    console.print(f"[green]5[/] evaluation of wine-forest/1: accuracy {m['accuracy']:.3f}, "
                  f"f1 (macro) {m['f1_macro']:.3f}; batch prediction scored {pj_info.result['rows']} rows "
                  f"into {pj_info.result['output']}")
    _registry_tour(hub, ev_info, output)
    rows = []
    for model in hub.list_models():
        d = to_plain(model)
        d["metrics"] = {k: round(v, 3) for k, v in model.latest_metrics.items() if isinstance(v, int | float)}
        rows.append(d)
    print_table(rows, ["name", "latest_version", "framework", "metrics"], "6  registered models")
    plot = _plot_run(hub, jobs["digits-logit (normal)"].status().result["run_id"], output / "loss_curve.png")
    console.print(f"[green]7[/] loss curve of digits-logit: {plot}")
    flaky = jobs["flaky (retries)"]
    console.print(f"[green]8[/] flaky took {flaky.status().attempt} attempts; its stored logs, attempt 1:")
    console.print(flaky.logs(attempt=1).strip().splitlines()[-1], style="dim", highlight=False)


def _registry_tour(hub, evaluation, output: Path) -> None:
    """Gates, a promotion that passes and one that is refused with its numbers, a ready model that checks its
    inputs, and the evaluation's confusion matrix copied into the plots folder."""
    from mlhub.artifact_records import ArtifactService
    from mlhub.errors import PromotionRefused, ValidationError

    models = hub.models
    models.set_gates("wine-forest", ["evaluated on wine", "accuracy >= 0.8",
                                     "evaluated on wine-holdout-2027 for production"])
    done = models.promote("wine-forest", 1, to="champion", reason="first evaluated version")
    console.print(f"[green]5a[/] gates of wine-forest: {'; '.join(models.show('wine-forest').gates)}\n"
                  f"    promoted wine-forest/1 to champion: {len(done.gates)} gates passed")
    try:
        models.promote("wine-forest", 1, to="production")
        raise SystemExit("a version without the required evaluation reached production")
    except PromotionRefused as exc:
        console.print(f"    promotion to production refused: {exc.details['gates'][0]['detail']}", highlight=False)
    ready = models.load("wine-forest@champion")
    x = [[13.0] * len(ready.feature_names)]
    console.print(f"    wine-forest@champion predicts class {ready.predict(x)[0]} for one row; a row with text in "
                  f"it is refused: ", end="")
    try:
        ready.predict([["thirteen"] + [13.0] * (len(ready.feature_names) - 1)])
    except ValidationError as exc:
        console.print(exc.message.split(": ", 1)[1], highlight=False, markup=False)
    plot_id = evaluation.result.get("confusion_matrix_artifact_id")
    if plot_id:
        target = ArtifactService(hub.backends.db, hub.backends.artifacts).download_to(
            hub.principal, plot_id, output / "confusion_matrix.png")
        console.print(f"    confusion matrix of the evaluation: {target}")


def _jobs_table(jobs, infos=None) -> Table:
    table = Table(title="jobs (live)")
    for col in ("job", "id", "queue", "priority", "state", "attempt", "progress"):
        table.add_column(col)
    for label, handle in jobs.items():
        i = (infos or {}).get(label)
        if i is None:
            table.add_row(label, str(handle.id), "", "", "queued", "", "")
            continue
        p = i.progress or {}
        prog = f"epoch {p['epoch']}/{p['epochs']}" if "epoch" in p else (
            f"{p['slept_s']:.1f}/{p['of_s']:.0f} s" if "slept_s" in p else "")
        if "metrics" in p:
            prog += "  " + " ".join(f"{k} {v:.3f}" for k, v in p["metrics"].items())
        table.add_row(label, str(i.id), i.queue, str(i.priority), i.state, str(i.attempt), prog,
                      style=STYLE.get(i.state))
    return table


def _write_rows(hub) -> None:
    import pandas as pd
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    version = hub.registry.resolve(hub.principal, "wine-forest")
    names = [f["name"] for f in version.input_schema["features"]]
    frame = pd.DataFrame(data.data.to_numpy(), columns=names)
    frame.to_csv(hub.settings.home / "data" / "wine-rows.csv", index=False)


def _platform_checks(hub, other) -> None:
    from mlhub.artifact_records import ArtifactService
    from mlhub.audit import AuditLog
    from mlhub.errors import ArtifactIntegrityError, NotFoundError

    artifacts = ArtifactService(hub.backends.db, hub.backends.artifacts)
    version = hub.registry.resolve(hub.principal, "wine-forest")
    try:
        artifacts.read_bytes(other, version.artifact_id)
        raise SystemExit("isolation broken: globex read default's model")
    except NotFoundError:
        console.print("[green]9[/] globex asking for default's model artifact: not found "
                      "(tenants never see each other)")
    broken = artifacts.upload(hub.principal, b"bytes that will rot on disk", name="corrupt-me")
    blob = next(p for p in (hub.settings.artifacts_dir / "blobs").rglob(broken.sha256))
    blob.write_bytes(b"bytes that will ROT on disk")
    try:
        artifacts.read_bytes(hub.principal, broken.id)
        raise SystemExit("integrity check missed a corrupted blob")
    except ArtifactIntegrityError as exc:
        console.print(f"[green]10[/] a corrupted blob is refused: {exc.code}")
    events = AuditLog(hub.backends.db).list(hub.principal, limit=12)
    rows = [dict(to_plain(e), target=f"{e.target_type}:{e.target_id}") for e in reversed(events)]
    print_table(rows, ["id", "actor", "source", "action", "target", "outcome"], "11  audit log (latest)")


def _plot_run(hub, run_id: int, path: Path) -> Path:
    from mlhub.plots import plot_loss_and_metrics
    from mlhub.store import runs as runs_repo

    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        series = {k: runs_repo.metric_history(s, hub.principal.tenant_id, run_id, k)
                  for k in ("loss", "val_loss", "val_accuracy")}
    return plot_loss_and_metrics(series, path, f"run {run_id}: digits-logit (tracked by mlhub)")

"""``mlhub demo``: the full tour, on the embedded defaults, in a throw-away home and a throw-away Ray session.

Tenants and keys, backend health, the orchestrator on a local Ray session, jobs at different priorities with
live progress (scikit-learn, numpy baseline, PyTorch DDP on 2 workers, TensorFlow when installed, an ASHA
search, a retried job and a cancelled one), evaluation, gated promotion, batch prediction twice (the second
from the prediction cache), a deployment answering HTTP, an A/B experiment whose outcomes are real
(was the prediction right?), drift on shifted traffic firing an alert, tenant isolation, integrity checks, the
audit log and a closing summary. The plots land in one folder. Where the tour shows a command, it runs that
very command (``mlhub ...``) in-process against the tour's own home.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.live import Live
from rich.table import Table

from mlhub.cli.output import console, print_table, to_plain

STYLE = {"succeeded": "green", "failed": "red", "dead": "bold red", "cancelled": "yellow", "running": "cyan",
         "retrying": "magenta", "queued": "dim"}
FINAL = ("succeeded", "failed", "dead", "cancelled")


@dataclass
class Tour:
    """The tour's shared state: settings, the hub, where plots go, and the steps' timings for the summary."""

    settings: object
    hub: object
    output: Path
    started: float = field(default_factory=time.perf_counter)
    steps: list[tuple[str, str, float]] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)
    _mark: float = field(default_factory=time.perf_counter)

    def step(self, number: str, text: str, *, summary: str | None = None) -> None:
        """Print a finished step and record its duration (since the previous step) for the summary."""
        now = time.perf_counter()
        console.print(f"[green]{number}[/] {text}", highlight=False)
        self.steps.append((number, summary or text.split(";")[0][:70], now - self._mark))
        self._mark = now

    def cli(self, *args: str) -> None:
        """Run ``mlhub ARGS`` in this process against the tour's settings, showing the command first."""
        from mlhub.cli.main import main

        console.print(f"[bold]$ mlhub {' '.join(args)}[/]", highlight=False)
        rc = main(list(args), settings=self.settings)
        if rc != 0:
            raise SystemExit(f"demo: `mlhub {' '.join(args)}` failed with exit status {rc}")

    def plot(self, label: str, path: Path) -> Path:
        self.plots[label] = path
        return path


def demo(
    home: Path | None = typer.Option(None, "--home", help="MLHUB_HOME for the tour (default: a new temp folder)."),
    output: Path = typer.Option(Path("demo-output"), "--output", help="Folder for the plots the tour writes."),
    epochs: int = typer.Option(40, "--epochs", min=1, max=500, help="Epochs of the tracked baseline job."),
    keep: bool = typer.Option(False, "--keep", help="Leave the endpoint up at the end (Ctrl-C stops it)."),
    tensorflow: bool = typer.Option(True, "--tensorflow/--no-tensorflow",
                                    help="Train the TensorFlow job too when TensorFlow is installed."),
) -> None:
    """Run the full tour on the embedded defaults (SQLite, filesystem artifacts, in-process cache, local Ray)."""
    import ray

    from actors import orchestrator
    from mlhub.cli import demo_live
    from mlhub.client import Hub
    from mlhub.config import load_settings
    from mlhub.health import check_all
    from mlhub.tenancy import TenantService

    home = home or Path(tempfile.mkdtemp(prefix="mlhub-demo-"))
    output.mkdir(parents=True, exist_ok=True)
    # explicit embedded settings: the tour never touches the user's own MLHUB_HOME or servers; every answer
    # of the endpoint is logged (drift needs them) and the HTTP port is 8000 unless something holds it
    settings = load_settings(home=home, database_url=None, redis_url=None, mongodb_uri=None, ray_address=None,
                             api_key=None, max_concurrent_jobs=2, prediction_log_sample_rate=1.0,
                             serve_http_host="127.0.0.1", serve_http_port=demo_live.http_port(8000))
    (settings.home / "data").mkdir(parents=True, exist_ok=True)
    console.rule("[bold]mlhub demo")
    console.print(f"home: {settings.home}  (SQLite, filesystem artifacts, in-process cache, local Ray)")

    hub = Hub(settings, source="cli")  # first use: creates the schema and tenant "default"
    tour = Tour(settings, hub, output)
    tenants = TenantService(hub.backends.db)
    other = tenants.authenticate(tenants.create_tenant("globex")[1])
    tour.step("1", "schema created; tenants [bold]default[/] and [bold]globex[/] with API keys "
              "(only their hashes are stored)", summary="schema, tenants and API keys")
    print_table([h.to_dict() for h in check_all(settings, hub.backends.db)],
                ["name", "kind", "status", "latency_ms", "detail"], "2  backend health")

    with console.status("3  starting a local Ray session and the orchestrator..."):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 namespace="mlhub", _temp_dir=tempfile.mkdtemp(prefix="mlhub-ray-"))
        actor = orchestrator.start(settings.to_document(), name=f"mlhub-demo-{time.time_ns()}")
        ray.get(actor.ping.remote(), timeout=120)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # the tour prints what Serve did itself
    tour.step("3", "Ray and the orchestrator are up", summary="local Ray session and orchestrator")
    try:
        jobs = _jobs_tour(tour, epochs, tensorflow=tensorflow)
        _results_tour(tour, jobs)
        live = demo_live.LiveTour(tour)
        live.serve()
        live.ab_test()
        live.drift()
        _platform_checks(tour, other)
        _summary(tour, live)
        if keep:
            live.keep()
    finally:
        ray.kill(actor, no_restart=True)
        ray.shutdown()
        hub.close()
    console.print(f"state: {settings.home} (delete it when done)")


def _jobs_tour(tour: Tour, epochs: int, *, tensorflow: bool) -> dict:
    hub = tour.hub
    diag = {"kind": "diagnostic"}
    digits = {"source": "sklearn", "name": "digits"}
    jobs = {
        "wine-forest (high)": hub.train({"name": "wine-forest", "framework": "sklearn", "model": "random_forest",
                                         "params": {"n_estimators": 50}, "priority": "high",
                                         "dataset": {"source": "sklearn", "name": "wine"}}),
        "digits-logit": hub.train({"name": "digits-logit", "framework": "baseline", "model": "logistic",
                                   "epochs": epochs, "params": {"lr": 0.5}, "dataset": digits}),
        "flaky (retries)": hub.submit({**diag, "name": "flaky", "sleep_s": 1, "fail_attempts": 1,
                                       "retry": {"max_attempts": 3, "backoff_s": 1}}),
        "nightly-report (low)": hub.submit({**diag, "name": "nightly-report", "priority": "low", "sleep_s": 60}),
        "digits-cnn (torch DDP x2)": hub.train({"name": "digits-cnn", "framework": "torch", "model": "cnn",
                                                "num_workers": 2, "epochs": 6, "checkpoint_every": 2,
                                                "params": {"lr": 0.003, "batch_size": 64}, "dataset": digits}),
        "iris-search (ASHA)": hub.tune({
            "name": "iris-search", "metric": "val_loss", "mode": "min", "num_samples": 8,
            "max_concurrent_trials": 2, "scheduler": "asha",
            "trainer": {"name": "iris-tuned", "framework": "baseline", "model": "logistic", "epochs": 15,
                        "dataset": {"source": "sklearn", "name": "iris"}},
            "search_space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1.0},
                             "l2": {"type": "choice", "values": [0.0, 0.001, 0.01]}}}),
    }
    has_tf = importlib.util.find_spec("tensorflow") is not None
    if tensorflow and has_tf:
        jobs["wine-keras (TF MWMS x2)"] = hub.train({
            "name": "wine-keras", "framework": "tensorflow", "model": "mlp", "num_workers": 2, "epochs": 5,
            "params": {"hidden": [32], "lr": 0.01, "batch_size": 16}, "dataset": {"source": "sklearn", "name": "wine"}})
    tf_note = ("" if tensorflow and has_tf else " (no TensorFlow job: --no-tensorflow)" if has_tf
               else " (TensorFlow is not installed: `pip install mlhub[tensorflow]` adds its job)")
    console.print(f"    submitted {len(jobs)} jobs on the training, hpo and evaluation queues at different "
                  f"priorities{tf_note}; the low-priority one gets cancelled", highlight=False)
    cancelled = False
    with Live(_jobs_table(jobs), console=console, refresh_per_second=4) as live:
        while True:
            infos = {k: h.status() for k, h in jobs.items()}
            live.update(_jobs_table(jobs, infos))
            if not cancelled and infos["nightly-report (low)"].state == "running":
                jobs["nightly-report (low)"].cancel()
                cancelled = True
            if all(i.state in FINAL for i in infos.values()):
                break
            time.sleep(0.25)
    failed = {k: i.state for k, i in infos.items() if i.state != "succeeded" and k != "nightly-report (low)"}
    if failed:
        raise SystemExit(f"demo: jobs did not succeed: {failed}")
    tour.step("4", f"submitted {len(jobs)} jobs; all finished (one cancelled on purpose)",
              summary=f"{len(jobs)} jobs: sklearn, baseline, torch DDP, ASHA, retries"
              + (", TensorFlow" if tf_note == "" else ""))
    return jobs


def _results_tour(tour: Tour, jobs: dict) -> None:
    hub, output = tour.hub, tour.output
    ev = hub.evaluate({"name": "eval-wine", "model": "wine-forest", "dataset": {"source": "sklearn", "name": "wine"}})
    # a weaker second version of wine-forest, the challenger of the A/B test later on
    weak = hub.train({"name": "wine-forest", "framework": "sklearn", "model": "random_forest",
                      "params": {"n_estimators": 2, "max_depth": 1}, "dataset": {"source": "sklearn", "name": "wine"}})
    _write_rows(hub)
    rows_csv = str(hub.settings.home / "data" / "wine-rows.csv")
    pj = hub.predict({"name": "score-wine", "model": "wine-forest/1", "input": rows_csv})
    ev_info, pj_info, _ = ev.wait(timeout=180), pj.wait(timeout=180), weak.wait(timeout=180)
    again = hub.predict({"name": "score-wine-again", "model": "wine-forest/1", "input": rows_csv}).wait(timeout=180)
    m = ev_info.result["metrics"]
    tour.step("5", f"evaluation of wine-forest/1: accuracy {m['accuracy']:.3f}, f1 (macro) {m['f1_macro']:.3f}; "
              f"batch prediction scored {pj_info.result['rows']} rows into {pj_info.result['output']}; the same "
              f"job again took {again.result['cached_rows']} of {again.result['rows']} rows from the prediction "
              "cache", summary="evaluation; batch prediction, then again from the cache")
    _registry_tour(tour, ev_info)
    rows = []
    for model in hub.list_models():
        d = to_plain(model)
        d["metrics"] = {k: round(v, 3) for k, v in model.latest_metrics.items() if isinstance(v, int | float)}
        rows.append(d)
    print_table(rows, ["name", "latest_version", "framework", "metrics"], "6  registered models")
    logit_run = jobs["digits-logit"].status().result["run_id"]
    cnn_run = jobs["digits-cnn (torch DDP x2)"].status().result["run_id"]
    tour.cli("runs", "plot", str(logit_run), "--out", str(tour.plot("baseline loss curve", output / "loss_curve.png")))
    tour.cli("runs", "plot", str(cnn_run), "--out",
             str(tour.plot("torch DDP loss curve", output / "torch_ddp_curves.png")))
    search = jobs["iris-search (ASHA)"]
    tour.cli("hpo", "trials", str(search.id))
    tour.cli("hpo", "plot", str(search.id), "--out", str(tour.plot("HPO trials", output / "hpo_trials.png")))
    flaky = jobs["flaky (retries)"]
    tour.step("7", f"plots of the runs and the search written; flaky took {flaky.status().attempt} attempts, its "
              "stored logs, attempt 1:", summary="run and HPO plots; a retried job's logs")
    console.print(flaky.logs(attempt=1).strip().splitlines()[-1], style="dim", highlight=False)


def _registry_tour(tour: Tour, evaluation) -> None:
    """Gates, a promotion that passes and one that is refused with its numbers, a ready model that checks its
    inputs, and the evaluation's confusion matrix copied into the plots folder."""
    from mlhub.artifact_records import ArtifactService
    from mlhub.errors import PromotionRefused, ValidationError

    hub = tour.hub
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
        ArtifactService(hub.backends.db, hub.backends.artifacts).download_to(
            hub.principal, plot_id, tour.plot("confusion matrix", tour.output / "confusion_matrix.png"))


def _jobs_table(jobs, infos=None) -> Table:
    table = Table(title="jobs (live)")
    for col in ("job", "id", "queue", "priority", "state", "attempt", "progress"):
        table.add_column(col)
    for label, handle in jobs.items():
        i = (infos or {}).get(label)
        if i is None:
            table.add_row(label, str(handle.id), "", "", "queued", "", "")
            continue
        table.add_row(label, str(i.id), i.queue, str(i.priority), i.state, str(i.attempt), _progress(i.progress),
                      style=STYLE.get(i.state))
    return table


def _progress(p: dict | None) -> str:
    p = p or {}
    if "trials" in p:  # a search
        best = p.get("best") or {}
        return f"trials {p.get('done', 0)}/{p['trials']}" + (
            f", best {p['metric']} {best['value']:.3f}" if best.get("value") is not None else "")
    text = f"epoch {p['epoch']}/{p['epochs']}" if "epoch" in p else (
        f"{p['slept_s']:.1f}/{p['of_s']:.0f} s" if "slept_s" in p else "")
    if "metrics" in p:
        text += "  " + " ".join(f"{k} {v:.3f}" for k, v in p["metrics"].items() if isinstance(v, int | float))
    return text


def _write_rows(hub) -> None:
    import pandas as pd
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    version = hub.registry.resolve(hub.principal, "wine-forest/1")
    names = [f["name"] for f in version.input_schema["features"]]
    frame = pd.DataFrame(data.data.to_numpy(), columns=names)
    frame.to_csv(hub.settings.home / "data" / "wine-rows.csv", index=False)


def _platform_checks(tour: Tour, other) -> None:
    from mlhub.artifact_records import ArtifactService
    from mlhub.audit import AuditLog
    from mlhub.errors import ArtifactIntegrityError, NotFoundError

    hub = tour.hub
    artifacts = ArtifactService(hub.backends.db, hub.backends.artifacts)
    version = hub.registry.resolve(hub.principal, "wine-forest/1")
    try:
        artifacts.read_bytes(other, version.artifact_id)
        raise SystemExit("isolation broken: globex read default's model")
    except NotFoundError:
        pass
    broken = artifacts.upload(hub.principal, b"bytes that will rot on disk", name="corrupt-me")
    blob = next(p for p in (hub.settings.artifacts_dir / "blobs").rglob(broken.sha256))
    blob.write_bytes(b"bytes that will ROT on disk")
    try:
        artifacts.read_bytes(hub.principal, broken.id)
        raise SystemExit("integrity check missed a corrupted blob")
    except ArtifactIntegrityError as exc:
        tour.step("11", "globex asking for default's model artifact: not found (tenants never see each other); "
                  f"a corrupted blob is refused: {exc.code}", summary="tenant isolation and integrity checks")
    events = AuditLog(hub.backends.db).list(hub.principal, limit=12)
    rows = [dict(to_plain(e), target=f"{e.target_type}:{e.target_id}") for e in reversed(events)]
    print_table(rows, ["id", "actor", "source", "action", "target", "outcome"], "12  audit log (latest)")


def _summary(tour: Tour, live) -> None:
    total = time.perf_counter() - tour.started
    console.rule(f"[bold]done in {total:.0f} s")
    print_table([{"step": n, "what": what, "seconds": f"{s:.1f}"} for n, what, s in tour.steps],
                ["step", "what", "seconds"], "summary")
    for label, path in tour.plots.items():
        console.print(f"  {label + ':':24} {path.resolve()}", highlight=False)
    console.print(f"plots: {tour.output.resolve()}", highlight=False)
    if live.url:
        console.print(f"endpoint: {live.url} (champion: wine-forest/1; stops with the tour unless --keep)",
                      highlight=False)
    if getattr(live, "console_url", None):
        console.print(f"web console: {live.console_url} (log in with an API key of tenant default, e.g. the "
                      "demo key --keep prints; stops with the tour unless --keep)", highlight=False)

"""``mlhub demo``: a tour of what mlhub does today, on the embedded defaults, in a throw-away home.

It grows with each floor of the platform. Today: schema, tenants and keys, health, a tracked training run
with a loss-curve plot, the model stored as a verified artifact, tenant isolation, integrity checking,
the cache, and the audit log.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from mlhub.cli.output import console, print_table, to_plain


def demo(
    home: Path | None = typer.Option(None, "--home", help="MLHUB_HOME for the tour (default: a new temp folder)."),
    output: Path = typer.Option(Path("demo-output"), "--output", help="Folder for the plots the tour writes."),
    epochs: int = typer.Option(30, "--epochs", min=1, max=500, help="Training epochs of the tracked run."),
) -> None:
    """Run the tour on the embedded defaults (SQLite, filesystem artifacts, in-process cache)."""
    from mlhub.config import load_settings

    started = time.perf_counter()
    home = home or Path(tempfile.mkdtemp(prefix="mlhub-demo-"))
    output.mkdir(parents=True, exist_ok=True)
    # the demo never touches the user's own MLHUB_HOME or servers: explicit embedded settings
    settings = load_settings(home=home, database_url=None, redis_url=None, mongodb_uri=None, ray_address=None)
    console.rule("[bold]mlhub demo")
    console.print(f"home: {settings.home}  (SQLite, filesystem artifacts, in-process cache)")

    from mlhub.artifact_records import ArtifactService
    from mlhub.audit import AuditLog
    from mlhub.backends import Backends
    from mlhub.cache import keys as cache_keys
    from mlhub.errors import ArtifactIntegrityError, NotFoundError
    from mlhub.health import check_all
    from mlhub.tenancy import TenantService

    backends = Backends(settings)
    try:
        backends.ensure_schema()
        console.print(f"[green]1[/] schema created at revision {backends.db.current_revision()}")

        tenants = TenantService(backends.db)
        acme = tenants.authenticate(tenants.create_tenant("acme")[1])
        globex = tenants.authenticate(tenants.create_tenant("globex")[1])
        console.print("[green]2[/] tenants acme and globex created, each with an API key (only hashes stored)")

        print_table([h.to_dict() for h in check_all(settings, backends.db)],
                    ["name", "kind", "status", "latency_ms", "detail"], "3  backend health")

        run_id, model_bytes, losses = _tracked_training(backends, acme, epochs)
        plot = _plot_losses(losses, output / "loss_curve.png")
        console.print(f"[green]4[/] run {run_id}: {epochs} epochs tracked, final loss {losses[-1][1]:.3f}; "
                      f"curve: {plot}")

        artifacts = ArtifactService(backends.db, backends.artifacts)
        record = artifacts.upload(acme, io.BytesIO(model_bytes), media_type="application/x-skops",
                                  name="digits-sgd.skops", run_id=run_id)
        assert artifacts.read_bytes(acme, record.id) == model_bytes
        console.print(f"[green]5[/] model stored as artifact {record.id}: {record.size_bytes:,} bytes, "
                      f"sha256 {record.sha256[:16]}..., verified on read")

        try:
            artifacts.read_bytes(globex, record.id)
            raise SystemExit("isolation broken: globex read acme's artifact")
        except NotFoundError:
            console.print("[green]6[/] globex asking for acme's artifact: not found (tenants never see each other)")

        broken = artifacts.upload(acme, b"bytes that will rot on disk", name="corrupt-me")
        blob = next(p for p in (settings.artifacts_dir / "blobs").rglob(broken.sha256))
        blob.write_bytes(b"bytes that will ROT on disk")
        try:
            artifacts.read_bytes(acme, broken.id)
            raise SystemExit("integrity check missed a corrupted blob")
        except ArtifactIntegrityError as exc:
            console.print(f"[green]7[/] a corrupted blob is refused: {exc.code}")

        cache = backends.cache
        key = cache_keys.registry_model(acme.tenant_id, "digits")
        loads = []
        for _ in range(3):
            cache.get_or_load(key, lambda: loads.append(1) or {"run": run_id})
        console.print(f"[green]8[/] cache: 3 lookups, {len(loads)} load from the store, stats {cache.stats}")

        events = AuditLog(backends.db).list(acme)
        rows = [dict(to_plain(e), target=f"{e.target_type}:{e.target_id}") for e in reversed(events)]
        print_table(rows, ["id", "actor", "action", "target", "outcome"], "9  audit log of acme")
    finally:
        backends.close()
    console.rule(f"[bold]done in {time.perf_counter() - started:.1f} s")
    console.print(f"plots: {output.resolve()}\nstate: {settings.home} (delete it when done)")


def _tracked_training(backends, principal, epochs: int):
    """Train a real classifier epoch by epoch on scikit-learn's digits, logging loss and accuracy."""
    import numpy as np
    import skops.io as sio
    from sklearn.datasets import load_digits
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import accuracy_score, log_loss
    from sklearn.model_selection import train_test_split

    from mlhub.store import runs as runs_repo
    from mlhub.store.runs import MetricPoint

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    model = SGDClassifier(loss="log_loss", alpha=1e-4, learning_rate="constant", eta0=0.05, random_state=0)
    classes = np.unique(y)
    with backends.db.tenant_scope(principal.tenant_id) as s:
        run = runs_repo.create_run(s, principal.tenant_id, "digits-sgd", experiment="demo")
        runs_repo.log_params(s, principal.tenant_id, run.id, {"model": "SGDClassifier", "alpha": 1e-4, "eta0": 0.05})
    losses: list[tuple[int, float]] = []
    points: list[MetricPoint] = []
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} epochs"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("training digits-sgd", total=epochs)
        for epoch in range(epochs):
            model.partial_fit(x_tr, y_tr, classes=classes)
            loss = float(log_loss(y_te, model.predict_proba(x_te), labels=classes))
            acc = float(accuracy_score(y_te, model.predict(x_te)))
            losses.append((epoch, loss))
            points += [MetricPoint("val_loss", loss, epoch), MetricPoint("val_accuracy", acc, epoch)]
            bar.update(task, advance=1, description=f"training digits-sgd  loss {loss:.3f}  acc {acc:.3f}")
    with backends.db.tenant_scope(principal.tenant_id) as s:
        runs_repo.log_metrics(s, principal.tenant_id, run.id, points)  # one batch: the fast path
    return run.id, sio.dumps(model), losses


def _plot_losses(losses: list[tuple[int, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([e for e, _ in losses], [v for _, v in losses], marker="o", markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation log loss")
    ax.set_title("digits-sgd (tracked by mlhub)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.resolve()

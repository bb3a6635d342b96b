"""``mlhub start`` and ``mlhub stop``: the Ray cluster and the orchestrator actor."""

from __future__ import annotations

import typer

from mlhub.cli.context import STATE
from mlhub.cli.output import console, print_json
from mlhub.errors import BackendUnavailable

ACTOR_TIMEOUT_S = 120.0


def start(
    address: str | None = typer.Option(None, "--address", help="Connect to this Ray cluster instead of a local head."),
    num_cpus: int | None = typer.Option(None, "--num-cpus", min=1, help="CPUs of the local head (default: all)."),
    no_serve: bool = typer.Option(False, "--no-serve", help="Do not deploy the REST API and inference apps."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Start (or connect to) Ray, the orchestrator, the REST API and the inference application. Idempotent."""
    from mlhub.cluster import prepare_client_env

    prepare_client_env()  # before Ray is imported: it reads its auth mode once
    import ray

    from actors import orchestrator
    from mlhub import cluster

    settings = STATE.settings
    address = address or STATE.address
    STATE.backends  # noqa: B018 - refuse an old schema before touching the cluster
    head = None
    if not (address or settings.ray_address):
        with console.status("starting a local Ray head (token auth on)..."):
            head = cluster.start_local_head(settings, num_cpus=num_cpus)
    with console.status("connecting to Ray..."):
        info = cluster.connect(settings, address)
    with console.status("starting the orchestrator..."):
        actor = orchestrator.start(settings.to_document())
        try:
            ping = ray.get(actor.ping.remote(), timeout=ACTOR_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise BackendUnavailable(f"the orchestrator did not answer within {ACTOR_TIMEOUT_S:.0f} s") from None
    serving = None if no_serve else _start_serving(settings)
    out = {"ray_address": info["address"], "dashboard": head.dashboard_url if head else None,
           "orchestrator": ping, "local_head_pid": head.pid if head else None, "serve": serving}
    if json_:
        print_json(out)
        return
    console.print(f"Ray: {info['address']}" + (f"  dashboard: {head.dashboard_url}" if head else ""))
    console.print(f"orchestrator: running (pid {ping['pid']}, requeued {ping['recovered']} interrupted job(s))")
    if serving:
        console.print(f"REST API: {serving['api']}  (OpenAPI: {serving['api']}/openapi.json)")
        console.print(f"web console: {serving['console']}  (log in with your API key; `mlhub ui` opens it)")
        console.print(f"inference: {serving['inference']}/models/MODEL/predict  (ingress: {serving['ingress']})")
        if serving["ingress"] == "proxy" and head is not None and settings.serve_ingress == "auto":
            console.print(f"hint: {cluster.HAPROXY_HINT}, then `mlhub stop && mlhub start`")


def _start_serving(settings) -> dict:
    """The REST API (with the web console) and the inference application on Ray Serve (idempotent)."""
    from mlhub import cluster
    from serve_apps import control

    with console.status("deploying the REST API and the inference application on Ray Serve..."):
        control.ensure_api(settings)
        control.ensure_inference(settings)
    base = control.base_url(settings)
    ingress = "haproxy" if settings.serve_ingress != "proxy" and cluster.haproxy_path(settings) else "proxy"
    return {"api": f"{base}{control.API_PREFIX}", "console": control.console_url(settings), "inference": f"{base}/v1",
            "ingress": ingress}


def stop(keep_cluster: bool = typer.Option(False, "--keep-cluster", help="Stop only the orchestrator."),
         address: str | None = typer.Option(None, "--address", help="The Ray cluster to stop the orchestrator on "
                                             "(default: MLHUB_RAY_ADDRESS, else the local head).")) -> None:
    """Stop the orchestrator and the local head `mlhub start` launched (never someone else's cluster)."""
    from mlhub.cluster import prepare_client_env

    prepare_client_env()
    import ray

    from actors import orchestrator
    from mlhub import cluster

    settings = STATE.settings
    address = address or STATE.address
    stopped_actor = False
    if cluster.target_address(settings, address) is not None:
        try:
            cluster.connect(settings, address)
            actor = orchestrator.get()
            try:
                ray.get(actor.shutdown.remote(), timeout=30)
            except (ray.exceptions.RayError, TimeoutError):
                pass
            ray.kill(actor, no_restart=True)
            stopped_actor = True
        except (ValueError, BackendUnavailable):
            pass
        try:  # mlhub's Serve applications, and nobody else's (a local head about to stop takes them along)
            if ray.is_initialized() and (keep_cluster or cluster.local_head(settings) is None):
                from ray import serve

                from serve_apps import control, inference

                for app in (control.API_APP, inference.APP_NAME):
                    if control.app_status(app) is not None:
                        serve.delete(app)
        except Exception:  # noqa: BLE001 - Serve not running there: nothing to remove
            pass
        finally:
            if ray.is_initialized():
                ray.shutdown()
    stopped_head = False if keep_cluster else cluster.stop_local_head(settings)
    console.print(f"orchestrator: {'stopped' if stopped_actor else 'not running'}; "
                  f"local Ray head: {'stopped' if stopped_head else 'not running (or kept)'}")

"""``mlhub deploy``, ``mlhub undeploy``, ``mlhub endpoints``: what the inference application serves.

An endpoint records which version of a model answers on ``/v1/models/{name}/predict`` (an alias, followed
per request, or a pinned version); ``deploy`` also makes sure the shared inference application runs on the
cluster (``mlhub start`` deploys it too) and resizes it when ``--replicas``/``--autoscale`` are given.
"""

from __future__ import annotations

import typer

from mlhub.cli.context import STATE
from mlhub.cli.output import console, err_console, print_json, print_table, to_plain
from mlhub.errors import BackendUnavailable

JSON_OPT = typer.Option(False, "--json", help="Print JSON.")


def _service():
    from mlhub.serving.endpoints import EndpointService

    return EndpointService(STATE.backends.db)


def _serve(scaling: dict | None) -> str:
    """Connect to the cluster and make sure the inference application runs (resized when asked)."""
    from mlhub import cluster

    cluster.prepare_client_env()
    try:
        cluster.connect(STATE.settings, STATE.address)
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"{exc.message}; the endpoint is recorded and is served once the inference "
                                 "application runs (`mlhub start` deploys it)") from None
    from serve_apps import control

    with console.status("deploying the inference application on Ray Serve..."):
        control.ensure_inference(STATE.settings, scaling)
    return control.base_url(STATE.settings)


def deploy(
    name: str = typer.Argument(..., metavar="MODEL", help="A registered model (the endpoint takes its name)."),
    alias: str | None = typer.Option(None, "--alias", help="Serve the version this alias names, followed as it "
                                     "moves (default: champion)."),
    version: int | None = typer.Option(None, "--version", min=1, help="Pin one version instead of an alias."),
    replicas: int | None = typer.Option(None, "--replicas", min=1, max=64,
                                        help="Replicas of the inference application."),
    autoscale: str | None = typer.Option(None, "--autoscale", metavar="MIN,MAX",
                                         help="Autoscale the inference application between MIN and MAX replicas."),
    no_serve: bool = typer.Option(False, "--no-serve", help="Only record the endpoint (the cluster is not touched)."),
    json_: bool = JSON_OPT,
) -> None:
    """Serve a model over HTTP: POST /v1/models/MODEL/predict with your API key."""
    from mlhub.serving.endpoints import Scaling, parse_autoscale

    bounds = parse_autoscale(autoscale)
    if replicas is not None and bounds is not None:
        raise typer.BadParameter("give --replicas or --autoscale, not both")
    scaling = Scaling(replicas=replicas) if bounds is None else Scaling(min_replicas=bounds[0],
                                                                        max_replicas=bounds[1])
    ep = _service().deploy(STATE.principal(), name, alias=alias, version=version, scaling=scaling)
    url = None if no_serve else _serve(scaling.serve_options() or None)
    out = {**to_plain(ep), "ref": ep.ref, "url": f"{url}/v1/models/{ep.name}/predict" if url else None}
    if json_:
        print_json(out)
        return
    console.print(f"endpoint {ep.name}: serves {ep.ref}" + (f" at {out['url']}" if url else " (recorded only)"))
    if url:
        console.print(f"  try: curl -s -H 'Authorization: Bearer $MLHUB_API_KEY' -d '{{\"inputs\": [[...]]}}' "
                      f"{out['url']}")


def undeploy(name: str = typer.Argument(..., metavar="MODEL", help="The endpoint's model name."),
             json_: bool = JSON_OPT) -> None:
    """Stop serving a model (its route answers 404 within seconds; the application keeps serving the rest)."""
    ep = _service().undeploy(STATE.principal(), name)
    if json_:
        print_json(to_plain(ep))
        return
    console.print(f"endpoint {ep.name}: stopped")


def endpoints(all_: bool = typer.Option(False, "--all", help="Include stopped endpoints."),
              json_: bool = JSON_OPT) -> None:
    """Your endpoints: the model, what they serve (alias or version), status and scaling."""
    rows = []
    for ep in _service().list(STATE.principal(), include_stopped=all_):
        scaling = ep.config.get("scaling") or {}
        rows.append({**to_plain(ep), "serves": ep.ref,
                     "scaling": ", ".join(f"{k}={v}" for k, v in scaling.items()) or "-",
                     "route": f"/v1/models/{ep.name}/predict"})
    if json_:
        print_json(rows)
        return
    if not rows:
        err_console.print("no endpoints: `mlhub deploy MODEL` serves one")
        return
    print_table(rows, ["name", "serves", "status", "scaling", "route", "updated_at"], "endpoints")

"""Starting and updating mlhub's Serve applications on a connected cluster (used by `mlhub start`,
`mlhub deploy` and tests). Every wait has a timeout."""

import time
from typing import Any

from ray import serve

from mlhub.config import Settings
from mlhub.errors import BackendUnavailable
from serve_apps import inference

API_APP = "mlhub-api"
API_ROUTE_PREFIX = "/"  # the application's route prefix: it mounts the REST API and the console below it
API_PREFIX = "/api"  # where the REST API answers
UI_PREFIX = "/ui"  # where the web console answers


def ensure_serve(settings: Settings) -> None:
    """Start Serve's controller and HTTP ingress on the configured address (no-op when running)."""
    serve.start(http_options={"host": settings.serve_http_host, "port": settings.serve_http_port})


def app_status(name: str) -> str | None:
    """RUNNING / DEPLOYING / ... of one Serve application, None when it is not deployed."""
    app = serve.status().applications.get(name)
    return None if app is None else str(getattr(app.status, "value", app.status))


def ensure_inference(settings: Settings, scaling: dict[str, Any] | None = None, *, timeout_s: float = 180.0) -> str:
    """Deploy the inference application if it is not running, or resize it when ``scaling`` is given.
    Returns the application's status once it settled."""
    ensure_serve(settings)
    if scaling is None and app_status(inference.APP_NAME) == "RUNNING":
        return "RUNNING"
    serve.run(inference.build_app(settings.to_document(), scaling=scaling or None), name=inference.APP_NAME,
              route_prefix=inference.ROUTE_PREFIX, blocking=False)
    return wait_running(inference.APP_NAME, timeout_s)


def ensure_api(settings: Settings, *, timeout_s: float = 180.0) -> str:
    """Deploy the API application (REST API and web console) unless it runs already on its route prefix (one
    deployed by an older mlhub on ``/api`` is redeployed on ``/``)."""
    ensure_serve(settings)
    if app_status(API_APP) == "RUNNING" and route_prefix(API_APP) in (API_ROUTE_PREFIX, None):
        return "RUNNING"
    from serve_apps.api import build_app

    serve.run(build_app(settings.to_document()), name=API_APP, route_prefix=API_ROUTE_PREFIX, blocking=False)
    return wait_running(API_APP, timeout_s)


def route_prefix(name: str) -> str | None:
    """The route prefix a running application was deployed with; None when Serve does not say."""
    try:
        import ray
        from ray.serve.context import _get_global_client

        controller = _get_global_client()._controller
        details = ray.get(controller.get_serve_instance_details.remote(), timeout=30)
        return (details.get("applications", {}).get(name) or {}).get("route_prefix")
    except Exception:  # a private API (Ray 2.60): not knowing only means no redeploy
        return None


def wait_running(name: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        status = app_status(name)
        if status == "RUNNING":
            return status
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            app = serve.status().applications[name]
            raise BackendUnavailable(f"Serve application {name} is {status}: {app.message[:500]}")
        time.sleep(0.5)
    raise BackendUnavailable(f"Serve application {name} still {status} after {timeout_s:.0f} s")


def console_url(settings: Settings) -> str:
    """The web console's address (its login page when no session is open)."""
    return f"{base_url(settings)}{UI_PREFIX}/"


def base_url(settings: Settings) -> str:
    host = settings.serve_http_host if settings.serve_http_host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{settings.serve_http_port}"

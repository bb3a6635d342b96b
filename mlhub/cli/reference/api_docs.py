"""The REST API reference and OpenAPI document, from the API's FastAPI app built without Ray."""

from __future__ import annotations

import json
from typing import Any

from mlhub.cli.reference.markdown import (
    GENERATED,
    _code,
    _first_paragraph,
    _table,
)
from mlhub.config import Settings

# --------------------------------------------------------------------------------------------------- REST API


def api_app() -> Any:
    """The REST API's FastAPI app, built without Ray and without backends (only its routes are needed)."""
    from serve_apps.api import create_app

    class _NoBackends:
        def close(self) -> None:
            pass

    return create_app(Settings.model_construct(), backends=_NoBackends())  # type: ignore[arg-type]


def openapi_document(app: Any = None) -> dict[str, Any]:
    """The OpenAPI document the API serves at ``/api/openapi.json`` (its server URL is where it is mounted)."""
    from serve_apps.api import REST_PREFIX

    doc = dict((app or api_app()).openapi())
    doc["servers"] = [{"url": REST_PREFIX}]
    return doc


def openapi_json(app: Any = None) -> str:
    return json.dumps(openapi_document(app), indent=2, ensure_ascii=False) + "\n"


_METHODS = ("get", "post", "put", "patch", "delete")


def rest_api_reference(app: Any = None) -> str:
    """``docs/reference/rest-api.md``: every operation with its method, path, summary and authentication."""
    doc = openapi_document(app)
    prefix = doc["servers"][0]["url"]
    schemes = doc.get("components", {}).get("securitySchemes", {})
    lines = ["# REST API reference", "", GENERATED, "",
             _first_paragraph(doc["info"].get("description")), "",
             f"Every path is under `{prefix}` (where the `mlhub-api` Serve application mounts the REST API; its web "
             "console is under `/ui`). The "
             f"full OpenAPI {doc['openapi']} document is [openapi.json](openapi.json); a running API serves it at "
             f"`{prefix}/openapi.json` and an interactive page at `{prefix}/docs`.", "",
             "Errors have one shape: `{\"error\": {\"code\", \"message\", \"details\"}}`.", ""]
    for name, scheme in schemes.items():
        lines.append(f"- `{name}`: {scheme.get('type')} {scheme.get('scheme', '')}. {scheme.get('description', '')}")
    lines.append("")
    rows = []
    for path, item in doc["paths"].items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            security = op.get("security", doc.get("security", []))
            auth = ", ".join(sorted({name for req in security for name in req})) or "none"
            tags = ", ".join(op.get("tags", []))
            rows.append([method.upper(), _code(prefix + path), op.get("summary", ""), auth, tags])
    lines += _table(["method", "path", "summary", "auth", "tag"], rows)
    return "\n".join(lines) + "\n"

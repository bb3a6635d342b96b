"""cluster/serve.yaml is a valid Serve config whose applications are mlhub's builders.

:func:`validate_serve_config` is shared with tests/unit/test_cluster_configs.py, which holds the RayService's
serveConfigV2 to the same rules and to the same applications as serve.yaml."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from mlhub.config import Settings

CONFIG = Path(__file__).resolve().parents[2] / "cluster" / "serve.yaml"
EXPECTED_APPS = {"mlhub-inference": "/v1", "mlhub-api": "/"}


def validate_serve_config(doc: dict) -> dict:
    """Validate ``doc`` with Ray's own schema and check each application names an importable, callable builder
    whose ``args`` are mlhub settings; returns the applications by name."""
    schema = ServeDeploySchema.model_validate(doc) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(doc)
    apps = {a.name: a for a in schema.applications}
    for app in apps.values():
        module, _, attr = app.import_path.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), app.import_path
        unknown = set(app.args or {}) - set(Settings.model_fields)
        assert not unknown, f"{app.name}: args {sorted(unknown)} are not mlhub settings"
    return apps


def test_serve_yaml_validates_and_names_importable_builders():
    apps = validate_serve_config(yaml.safe_load(CONFIG.read_text()))
    assert {name: app.route_prefix for name, app in apps.items()} == EXPECTED_APPS

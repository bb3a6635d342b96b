"""cluster/serve.yaml is a valid Serve config whose applications are mlhub's builders."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

CONFIG = Path(__file__).resolve().parents[2] / "cluster" / "serve.yaml"


def test_serve_yaml_validates_and_names_importable_builders():
    doc = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(doc) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(doc)
    apps = {a.name: a for a in schema.applications}
    assert set(apps) == {"mlhub-inference", "mlhub-api"}
    assert apps["mlhub-inference"].route_prefix == "/v1" and apps["mlhub-api"].route_prefix == "/api"
    for app in apps.values():
        module, _, attr = app.import_path.partition(":")
        assert callable(getattr(importlib.import_module(module), attr))

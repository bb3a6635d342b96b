"""The job spec reference, from the pydantic models' JSON schema."""

from __future__ import annotations

import json
from typing import Any

from mlhub.cli.reference.markdown import (
    GENERATED,
    _anchor,
    _cell,
    _code,
    _table,
)

# -------------------------------------------------------------------------------------------------- job specs

SPEC_KINDS = ("TrainingSpec", "EvaluationSpec", "BatchPredictionSpec", "HpoSpec", "DiagnosticSpec",
              "DriftCheckSpec")


def _schema_type(node: dict[str, Any]) -> str:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if "anyOf" in node:
        return " or ".join(_schema_type(n) for n in node["anyOf"])
    if "const" in node:
        return _code(json.dumps(node["const"]))
    if "enum" in node:
        return " or ".join(_code(json.dumps(v)) for v in node["enum"])
    kind = node.get("type")
    if kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, dict):
            return f"map of string to {_schema_type(values)}"
        return "object"
    if kind == "array":
        return f"list of {_schema_type(node['items'])}" if "items" in node else "list"
    if kind is None:
        return "any"
    return {"integer": "int", "number": "float", "string": "string", "boolean": "bool", "null": "null"}[kind]


_BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1e6:
        return f"{value:.0e}".replace("e+0", "e").replace("e+", "e")
    return f"{value:,}" if isinstance(value, int) and abs(value) >= 10_000 else str(value)


def _schema_constraints(node: dict[str, Any]) -> list[str]:
    out = [f"{op} {_number(node[key])}" for key, op in _BOUNDS if key in node]
    if "minLength" in node and "maxLength" in node:
        out.append(f"length {node['minLength']}-{_number(node['maxLength'])}")
    elif "maxLength" in node:
        out.append(f"length <= {_number(node['maxLength'])}")
    elif "minLength" in node:
        out.append(f"length >= {node['minLength']}")
    if "pattern" in node:
        out.append(f"pattern {_code(node['pattern'])}")
    for key, what in (("minProperties", "at least {} entries"), ("maxProperties", "at most {} entries"),
                      ("minItems", "at least {} items"), ("maxItems", "at most {} items")):
        if key in node:
            out.append(what.format(_number(node[key])))
    values = node.get("additionalProperties")
    if isinstance(values, dict) and "$ref" not in values:
        out += [f"values {c}" for c in _schema_constraints(values)]
    for branch in node.get("anyOf", []):
        out += _schema_constraints(branch)
    return out


def _spec_default(field: Any, node: dict[str, Any], required: bool) -> str:
    from pydantic import BaseModel

    if required:
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            name = type(value).__name__
            return f"[{name}](#{_anchor(name)}) defaults"
        return _code(json.dumps(value))
    return _code(json.dumps(node.get("default", field.default)))


def job_spec_reference() -> str:
    """``docs/reference/job-spec.md``: every job kind and every nested model, field by field."""
    from mlhub.domain import specs

    schema = specs._ADAPTER.json_schema()
    defs: dict[str, dict[str, Any]] = schema["$defs"]
    nested = sorted(set(defs) - set(SPEC_KINDS), key=lambda n: (n != "DatasetSpec", n))
    lines = ["# Job spec reference", "", GENERATED, "",
             "A job spec is a YAML or JSON document (`mlhub train -f spec.yaml`, or the body of `POST /api/jobs`). "
             "Its `kind` picks one of the models below; unknown fields are refused, and a bad spec reports every "
             f"bad field at once. A spec is at most {specs.MAX_SPEC_BYTES:,} bytes. CLI flags override the "
             "file's top-level fields.", "",
             "Names (`name`, `register_as`) are 1-64 of letters, digits, `_`, `.`, `-`, starting with a letter "
             "or digit. Model references are `name` (the latest version), `name@alias` or `name/VERSION`. "
             "`priority` is an integer from "
             f"{specs.PRIORITY_RANGE[0]} to {specs.PRIORITY_RANGE[1]} or one of "
             + ", ".join(f"`{k}` ({v})" for k, v in specs.PRIORITY_LEVELS.items())
             + "; higher runs first, FIFO within a level.", "",
             "| kind | model | queue |", "| --- | --- | --- |"]
    for name in SPEC_KINDS:
        kind = defs[name]["properties"]["kind"]["const"]
        queue = specs.KIND_QUEUE.get(kind, "the spec's `target_queue`")
        lines.append(f"| `{kind}` | [{name}](#{_anchor(name)}) | {_cell(queue)} |")
    lines += ["", "Nested models: " + ", ".join(f"[{n}](#{_anchor(n)})" for n in nested) + "."]
    for name in [*SPEC_KINDS, *nested]:
        model = getattr(specs, name)
        node = defs[name]
        lines += ["", f"## {name}", ""]
        doc = " ".join((model.__doc__ or "").split()) if "__doc__" in vars(model) else ""
        if doc:
            lines += [doc, ""]
        required = set(node.get("required", []))
        rows = []
        for field_name, prop in sorted(node["properties"].items(), key=lambda kv: kv[0] != "kind"):  # kind first
            field = model.model_fields[field_name]
            rows.append([_code(field_name), _schema_type(prop),
                         _spec_default(field, prop, field_name in required),
                         "; ".join(_schema_constraints(prop)), prop.get("description", "")])
        lines += _table(["field", "type", "default", "constraints", "description"], rows)
    return "\n".join(lines) + "\n"

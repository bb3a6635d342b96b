"""Reference text generated from the code, so the docs cannot drift from it (tests compare them).

Every generator is a pure function that returns a string. ``python -m mlhub.cli.reference`` writes them all:

- ``docs/reference/cli.md``       every command of the Typer app (click's introspection of ``mlhub.cli.main:app``)
- ``docs/reference/job-spec.md``  every job spec kind and nested model (the pydantic models' JSON schema)
- ``docs/reference/schema.md``    every table (the SQLAlchemy models, which a migration test proves equal to the
  migrated schema) and the PostgreSQL row-level security policies (the statements ``migrations/rls.py`` runs,
  recorded without a server; an integration test compares them with ``pg_policies`` after ``upgrade head``)
- ``docs/reference/openapi.json`` and ``docs/reference/rest-api.md``  the REST API's FastAPI app, built without Ray
- ``README.md``  the CLI overview between ``<!-- cli:start -->`` and ``<!-- cli:end -->``, and the configuration table

A build tool for the docs, not runtime library code: it lives with the CLI, the face that may import the other
faces (``serve_apps``) and ``migrations``, lazily, inside the generators that need them. Modules: ``markdown``
(helpers), ``cli_docs`` (settings table, CLI), ``spec_docs``, ``schema_docs``, ``api_docs``; this one writes them.
"""

from __future__ import annotations

from pathlib import Path

from mlhub.cli.reference.api_docs import api_app, openapi_document, openapi_json, rest_api_reference
from mlhub.cli.reference.cli_docs import cli_commands, cli_overview, cli_reference, settings_table
from mlhub.cli.reference.markdown import REFERENCE, REGENERATE, ROOT
from mlhub.cli.reference.schema_docs import rls_catalog, schema_reference
from mlhub.cli.reference.spec_docs import job_spec_reference

__all__ = ["REFERENCE", "REGENERATE", "ROOT", "api_app", "cli_commands", "cli_overview", "cli_reference",
           "job_spec_reference", "main", "openapi_document", "openapi_json", "reference_files", "render_readme",
           "replace_block", "replace_settings_table", "rest_api_reference", "rls_catalog", "schema_reference",
           "settings_table", "write_all"]


# --------------------------------------------------------------------------------------------------- writing


def reference_files() -> dict[str, str]:
    """Every generated file under docs/reference, by path relative to the repository root."""
    app = api_app()
    return {
        str(REFERENCE / "cli.md"): cli_reference(),
        str(REFERENCE / "job-spec.md"): job_spec_reference(),
        str(REFERENCE / "schema.md"): schema_reference(),
        str(REFERENCE / "openapi.json"): openapi_json(app),
        str(REFERENCE / "rest-api.md"): rest_api_reference(app),
    }


def replace_block(text: str, name: str, content: str) -> str:
    """Replace what lies between ``<!-- name:start -->`` and ``<!-- name:end -->`` (which must both be there)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"README.md needs exactly one {start} ... {end} block")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{content}\n{end}{tail}"


def replace_settings_table(text: str) -> str:
    """Replace README's configuration table (markers ``settings`` if present, else the table under its header)."""
    if "<!-- settings:start -->" in text:
        return replace_block(text, "settings", settings_table())
    header = settings_table().splitlines()[0]
    lines = text.split("\n")
    if header not in lines:
        raise ValueError(f"README.md has no configuration table (a line {header!r})")
    start = lines.index(header)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join([*lines[:start], settings_table(), *lines[end:]])


def render_readme(text: str) -> str:
    """README.md with its generated parts brought up to date; everything else untouched."""
    return replace_settings_table(replace_block(text, "cli", cli_overview()))


def write_all(root: Path = ROOT) -> list[str]:
    """Write every generated file under ``root``; return the paths that changed."""
    changed = []
    outputs = dict(reference_files())
    readme = root / "README.md"
    outputs["README.md"] = render_readme(readme.read_text())
    for rel, content in outputs.items():
        path = root / rel
        if path.exists() and path.read_text() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        changed.append(rel)
    return changed


def main() -> int:
    changed = write_all()
    print("\n".join(f"wrote {p}" for p in changed) or "all generated docs are up to date")
    return 0



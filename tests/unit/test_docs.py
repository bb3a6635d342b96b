"""The docs stay true: README's generated parts and every file under docs/reference are what mlhub.cli.reference renders
from the code now, and the generators themselves cover what they claim to (no Ray, no servers)."""

import json
import re
import shutil
from pathlib import Path

import pytest

from mlhub.cli import reference as docs
from mlhub.cli.reference import api_docs, cli_docs, settings_table, spec_docs

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
STALE = "is stale: run python -m mlhub.cli.reference (and commit what it writes)"


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return docs.reference_files()


def test_the_readme_configuration_table_matches_settings():
    assert settings_table() in README.read_text(), f"README.md's configuration table {STALE}"


def test_the_readme_opens_with_the_two_commands():
    first_block = README.read_text().split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_the_readme_generated_blocks_are_current():
    text = README.read_text()
    assert docs.render_readme(text) == text, f"README.md's CLI overview or configuration table {STALE}"
    cli_section = text.split("## CLI reference", 1)[1].split("\n## ", 1)[0]
    assert "docs/reference/cli.md" in cli_section
    assert text.index("## CLI reference") < text.index("## Configuration")


@pytest.mark.parametrize("path", ["cli.md", "job-spec.md", "schema.md", "openapi.json", "rest-api.md"])
def test_each_reference_file_is_what_the_generator_renders_now(generated, path):
    rel = str(docs.REFERENCE / path)
    on_disk = ROOT / rel
    assert on_disk.exists(), f"{rel} is missing: run python -m mlhub.cli.reference"
    assert on_disk.read_text() == generated[rel], f"{rel} {STALE}"


def test_the_generators_write_every_file_and_then_find_nothing_to_change(tmp_path):
    shutil.copy(README, tmp_path / "README.md")
    written = docs.write_all(tmp_path)
    assert set(docs.reference_files()) <= set(written)
    assert docs.write_all(tmp_path) == []


def test_cli_reference_covers_every_command_and_option():
    text = docs.cli_reference()
    for name in ("mlhub train", "mlhub deploy", "mlhub ab", "mlhub ab create", "mlhub drift monitor create",
                 "mlhub alerts rules add", "mlhub db upgrade"):
        assert f"\n## {name}\n" in text, name
    for cmd in docs.cli_commands():
        assert f"## {cmd.name}\n" in text or cmd.path == ("mlhub",)
        for param in cmd.command.params:
            if not param.hidden:
                assert f"`{cli_docs._param_names(param)}`" in text, f"{cmd.name} {param.name}"
    section = text.split("\n## mlhub train\n", 1)[1].split("\n## ", 1)[0]
    assert "`--num-workers`" in section or "`--epochs`" in section
    assert "| `--epochs` | int |" in section and "[at least 1]" in section
    assert "required" in text.split("\n## mlhub cancel\n", 1)[1].split("\n## ", 1)[0]  # JOB_ID


def test_cli_overview_lists_each_top_level_command_once():
    overview = docs.cli_overview()
    top = [c for c in docs.cli_commands() if len(c.path) == 2]
    assert len(overview.splitlines()) == 2 + len(top)
    for name in ("train", "deploy", "ab", "models", "drift"):
        assert f"[`mlhub {name}`](docs/reference/cli.md#mlhub-{name})" in overview


def test_job_spec_reference_covers_every_kind_and_field():
    from mlhub.domain import specs

    text = docs.job_spec_reference()
    for name in (*spec_docs.SPEC_KINDS, "DatasetSpec", "Resources", "RetryPolicy", "ScheduleSpec", "SearchDimension",
                 "CodeRef"):
        model = getattr(specs, name)
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for field in model.model_fields:
            assert f"| `{field}` |" in section, f"{name}.{field}"
    training = text.split("\n## TrainingSpec\n", 1)[1].split("\n## ", 1)[0]
    assert "| `num_workers` | int | `1` | >= 1; <= 1024 |" in training
    assert "| `dataset` | [DatasetSpec](#datasetspec) | required |" in training
    assert "[Resources](#resources) defaults" in training


def test_schema_reference_names_every_table_column_and_policy():
    from mlhub.store.models import Base

    text = docs.schema_reference()
    for table in Base.metadata.tables.values():
        section = text.split(f"\n## {table.name}\n", 1)[1].split("\n## ", 1)[0]
        for column in table.columns:
            assert f"| `{column.name}` |" in section, f"{table.name}.{column.name}"
    jobs = text.split("\n## jobs\n", 1)[1].split("\n## ", 1)[0]
    assert "| `tenant_id` | VARCHAR(36) | no |  | FK tenants.id on delete cascade, indexed |" in jobs
    assert "policy `tenant_isolation` (ALL, to mlhub_app)" in jobs
    assert "policy `scheduler_access` (ALL, to mlhub_scheduler)" in jobs
    assert "`tenant_id = current_setting('app.tenant_id', true)`" in text


def test_the_rls_catalog_protects_every_tenant_table():
    from mlhub.store.models import NOT_TENANT_SCOPED, Base

    catalog = docs.rls_catalog()
    tenant_tables = {t.name for t in Base.metadata.tables.values() if "tenant_id" in t.columns}
    assert tenant_tables | {"tenants"} == set(catalog.enabled) == set(catalog.forced)
    isolated = {p.table for p in catalog.policies if p.name == "tenant_isolation" and p.roles == ("mlhub_app",)}
    assert isolated == tenant_tables | {"tenants"}
    assert set(Base.metadata.tables) - isolated == set(NOT_TENANT_SCOPED) - {"alembic_version", "tenants"}
    assert {p.table for p in catalog.policies if p.name == "scheduler_access"} == {
        "jobs", "job_events", "job_logs", "schedules"}


def test_openapi_has_exactly_the_apps_operations(generated):
    from fastapi.routing import APIRoute

    doc = json.loads(generated[str(docs.REFERENCE / "openapi.json")])
    def operations(routes, prefix=""):
        for r in routes:
            if isinstance(r, APIRoute):
                path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + r.path)  # OpenAPI drops {x:path} converters
                yield from ((m.lower(), path) for m in r.methods)
            else:  # an included router (FastAPI >= 0.16x keeps it whole: _IncludedRouter.original_router)
                inner = getattr(r, "original_router", None) or r
                yield from operations(getattr(inner, "routes", []), prefix + getattr(r, "prefix", ""))

    routes = set(operations(docs.api_app().routes))
    assert len(routes) > 20
    documented = {(m, p) for p, item in doc["paths"].items() for m in item if m in api_docs._METHODS}
    assert documented == routes
    assert doc["servers"] == [{"url": "/api"}]
    rest = generated[str(docs.REFERENCE / "rest-api.md")]
    for method, path in routes:
        assert f"| {method.upper()} | `/api{path}` |" in rest
    assert "| GET | `/api/health` | Health of every backend (no API key needed) | none |" in rest
    assert "| POST | `/api/jobs` |" in rest and "| HTTPBearer |" in rest


def test_readme_blocks_are_replaced_only_between_their_markers():
    text = "a\n<!-- cli:start -->\nold\n<!-- cli:end -->\nb\n"
    assert docs.replace_block(text, "cli", "new") == "a\n<!-- cli:start -->\nnew\n<!-- cli:end -->\nb\n"
    with pytest.raises(ValueError, match="cli:start"):
        docs.replace_block("no markers", "cli", "new")
    table = settings_table()
    text = f"x\n\n{table.splitlines()[0]}\n| --- |\n| `OLD` | 1 | gone |\n\n## Next\n"
    assert docs.replace_settings_table(text) == f"x\n\n{table}\n\n## Next\n"

"""Each queue has its own concurrency limit and default resource shape, set from configuration."""

import pytest

from actors.orchestrator import dispatch_policy
from mlhub.audit import Principal
from mlhub.config import load_settings
from mlhub.domain.specs import parse_spec
from mlhub.errors import ConfigError
from mlhub.jobs.service import job_row

P = Principal(tenant_id="t1", actor="key:x")
TRAIN = {"kind": "training", "name": "m", "framework": "sklearn", "model": "random_forest",
         "dataset": {"source": "sklearn", "name": "iris"}}


def test_queues_take_their_concurrency_from_settings(monkeypatch):
    monkeypatch.setenv("MLHUB_MAX_CONCURRENT_JOBS", "6")
    monkeypatch.setenv("MLHUB_QUEUE_CONCURRENCY", '{"training": 1, "batch_prediction": 3}')
    queues = dispatch_policy(load_settings()).queues
    assert {q: p.concurrency for q, p in queues.items()} == {
        "training": 1, "evaluation": 6, "batch_prediction": 3, "hpo": 6}


def test_a_spec_without_resources_gets_its_queues_shape():
    shapes = {"training": {"num_cpus": 2.0, "num_gpus": 1.0}}
    row = job_row(P, parse_spec(TRAIN), shapes)
    assert row["resources"]["num_cpus"] == 2.0 and row["resources"]["num_gpus"] == 1.0
    assert row["spec"]["resources"] == row["resources"]
    explicit = job_row(P, parse_spec({**TRAIN, "resources": {"num_cpus": 0.5}}), shapes)
    assert explicit["resources"]["num_cpus"] == 0.5 and explicit["resources"]["num_gpus"] == 0.0


@pytest.mark.parametrize(("var", "value", "needle"), [
    ("MLHUB_QUEUE_CONCURRENCY", '{"gpu": 1}', "unknown queue"),
    ("MLHUB_QUEUE_CONCURRENCY", '{"training": -1}', "between 0 and 10000"),
    ("MLHUB_QUEUE_RESOURCES", '{"training": {"cores": 2}}', "unknown resource"),
])
def test_bad_queue_settings_name_the_variable(monkeypatch, var, value, needle):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=needle) as info:
        load_settings()
    assert var in info.value.message

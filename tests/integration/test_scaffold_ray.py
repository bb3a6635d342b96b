"""Custom training code end to end on the shared 2-CPU cluster: `mlhub scaffold trainer` writes a torch
trainer, `mlhub train NAME.yaml --wait` run from its folder packs that folder with the job, a Ray Train worker
fetches and runs it, and the model it stored is registered and loads from the registry."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from mlhub.store.models import Job

pytestmark = [pytest.mark.ray, pytest.mark.postgres]


def test_a_scaffolded_torch_trainer_runs_as_a_job_and_registers_a_loadable_model(hub, hub_settings, tmp_path,
                                                                                 monkeypatch, capsys):
    from mlhub.cli.main import main
    from mlhub.jobs.code import pack_directory
    from mlhub.training.datasets import load_dataset

    name = "scaffolded_net"
    project = tmp_path / "project"
    assert main(["scaffold", "trainer", name, "--framework", "torch", "--dir", str(project)]) == 0
    module = project / f"{name}.py"  # a user's edit, to see that the worker ran this very file
    module.write_text(module.read_text().replace("    spec = session.spec\n",
                                                 "    session.log('hello from my edited loop')\n    spec = session.spec\n", 1))
    (project / "README.txt").write_text("not code, travels anyway\n")
    (project / ".venv").mkdir()
    (project / ".venv" / "big.bin").write_bytes(b"\0" * 1024)  # never packed
    capsys.readouterr()

    monkeypatch.chdir(project)  # the CLI packs the directory it runs in, as under `ray job submit --working-dir`
    monkeypatch.setenv("MLHUB_DATABASE_URL", hub_settings.effective_database_url)
    monkeypatch.setenv("MLHUB_HOME", str(hub_settings.home))
    rc = main(["--api-key", hub.api_key, "train", f"{name}.yaml", "--epochs", "2", "--wait"])
    out = capsys.readouterr().out
    assert rc == 0, out
    sha = pack_directory(project).sha256
    assert "code: 3 file(s)" in out and f"sha256 {sha[:12]}" in out, out

    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        job_id, spec = s.execute(select(Job.id, Job.spec).where(Job.tenant_id == hub.principal.tenant_id)).one()
    assert spec["entrypoint"] == f"{name}:train_loop" and spec["code"]["sha256"] == sha
    info = hub.job(job_id).status()
    assert info.state == "succeeded" and info.result["model_version"] == 1 and info.result["framework"] == "torch"
    logs = hub.job(job_id).logs()
    assert f"code: {sha[:12]}" in logs and "hello from my edited loop" in logs and "epoch 2/2" in logs, logs[-3000:]

    version, model = hub.load_model(name)
    assert version.version == 1 and model.task == "classification"
    data = load_dataset(load_spec(project / f"{name}.yaml").dataset, allowed_roots=[])
    accuracy = float(np.mean(model.predict(data.x_test) == data.y_test))
    assert accuracy == pytest.approx(info.result["metrics"]["accuracy"])


def load_spec(path):
    from mlhub.domain.specs import load_spec_file

    return load_spec_file(path)


def test_a_scaffolded_sklearn_trainer_runs_in_the_job_driver(hub, tmp_path):
    """A single-process framework's entrypoint runs in the job's own Ray task (no Ray Train), from the code
    fetched for it; submitted from Python with an explicit working directory."""
    from mlhub.cli.main import main

    name = "scaffolded_sgd"
    project = tmp_path / "elsewhere"
    assert main(["scaffold", "trainer", name, "--framework", "sklearn", "--dir", str(project)]) == 0
    job = hub.submit(project / f"{name}.yaml", working_dir=project)
    info = job.wait(timeout=120)
    assert info.result["framework"] == "sklearn" and info.result["model_format"] == "skops"
    assert "epoch 10/10" in job.logs()
    version, model = hub.load_model(name)
    assert version.version == 1 and sorted(model.classes) == [0, 1, 2]

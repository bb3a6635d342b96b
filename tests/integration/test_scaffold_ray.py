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
    probe = ("    session.log('hello from my edited loop')\n"
             "    import mlhub\n"
             "    with mlhub.start_run('inner-probe') as probe:  # the user's own tracking, inside the job\n"
             "        probe.log_metric('probe', 1.0)\n")
    module.write_text(module.read_text().replace("    spec = session.spec\n", probe + "    spec = session.spec\n", 1))
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

    # the loop's own start_run wrote as the job's tenant, nested under the job's run (one per Train worker)
    probes = hub.runs.list_runs(hub.principal, filter="name = 'inner-probe'")
    assert probes and {p.parent_run_id for p in probes} == {info.result["run_id"]}
    assert all(hub.runs.get_run(hub.principal, p.id).latest_metrics == {"probe": 1.0} for p in probes)

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


def test_a_search_over_a_scaffolded_trainer_sends_its_code_to_every_trial(hub, hub_settings, tmp_path, monkeypatch,
                                                                          capsys):
    """`mlhub tune --wait` from the trainer's folder: the folder is packed once, every trial runs the user's
    loop from the package (extracted where the trial runs), and the best params are retrained and registered."""
    import yaml

    from mlhub.cli.main import main

    name = "tuned_sgd"
    project = tmp_path / "tuned"
    assert main(["scaffold", "trainer", name, "--framework", "sklearn", "--dir", str(project)]) == 0
    module = project / f"{name}.py"
    text = module.read_text().replace("    spec = session.spec\n",
                                      "    session.log('my sgd loop, alpha=%s' % session.spec.params)\n"
                                      "    spec = session.spec\n", 1)
    marked = 'metrics = {f"val_{k}": v for k, v in test.items()}'
    assert marked in text
    module.write_text(text.replace(marked, marked + '\n        metrics["edited_loop"] = 1.0', 1))
    trainer = yaml.safe_load((project / f"{name}.yaml").read_text())
    trainer.pop("kind", None)
    trainer["epochs"] = 2
    search = {"kind": "hpo", "name": "tune-sgd", "metric": "val_accuracy", "mode": "max", "num_samples": 2,
              "max_concurrent_trials": 2, "trainer": trainer,
              "search_space": {"alpha": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}
    (project / "search.yaml").write_text(yaml.safe_dump(search))
    capsys.readouterr()
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLHUB_DATABASE_URL", hub_settings.effective_database_url)
    monkeypatch.setenv("MLHUB_HOME", str(hub_settings.home))
    rc = main(["--api-key", hub.api_key, "tune", "search.yaml", "--wait"])
    out = capsys.readouterr().out
    assert rc == 0, out

    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        job_id, spec = s.execute(select(Job.id, Job.spec).where(Job.tenant_id == hub.principal.tenant_id,
                                                               Job.name == "tune-sgd")).one()
    assert spec["trainer"]["code"]["sha256"]  # the trainer carries its packed folder
    info = hub.job(job_id).status()
    assert info.state == "succeeded" and info.result["trials"] == 2, info
    trials = hub.trials(job_id)
    # every trial ran the edited loop from the package: only it reports `edited_loop`
    assert len(trials) == 2 and all(t.metrics.get("edited_loop") == 1.0 and t.iterations == 2 for t in trials)
    logs = hub.job(job_id).logs()
    assert "goes to every trial" in logs and "my sgd loop" in logs, logs[-3000:]  # the retrain ran the user's loop
    version, model = hub.load_model(trainer["register_as"] if trainer.get("register_as") else trainer["name"])
    assert version.job_id == job_id and version.code_version == spec["trainer"]["code"]["sha256"]

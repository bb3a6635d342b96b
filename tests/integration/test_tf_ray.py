"""TensorFlow training jobs on Ray Train (TensorflowTrainer, MultiWorkerMirroredStrategy, tf-keras) through the
orchestrator, on the shared 2-CPU test cluster: two workers of one CPU, per-epoch metrics from rank 0, both
workers' logs stored, a model version registered, loaded and evaluated. One job, because each Ray Train start
with TensorFlow costs tens of seconds here."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from mlhub.store.models import JobLog, Metric

pytestmark = [pytest.mark.ray, pytest.mark.postgres]

pytest.importorskip("tf_keras", reason="the tensorflow extra is not installed here (pip install "
                                       "'mlhub[tensorflow]'); CI installs it")

DATA = {"source": "synthetic", "task": "classification", "n_samples": 2000, "n_features": 16, "n_classes": 3,
        "seed": 2}


def test_tensorflow_job_trains_on_two_workers_and_its_model_evaluates(hub):
    epochs = 4
    job = hub.train({
        "name": "tf-mwms", "framework": "tensorflow", "model": "mlp", "num_workers": 2,
        "params": {"hidden": [64, 64], "lr": 0.003, "batch_size": 32},
        "dataset": DATA, "epochs": epochs, "checkpoint_every": 2,
    })
    assert job.status().resources["num_cpus"] == 2.0  # two workers of one CPU, the driver none
    info = job.wait(timeout=400)
    logs = job.logs()
    assert info.state == "succeeded", logs[-4000:]
    assert info.result["framework"] == "tensorflow" and info.result["model_version"] == 1
    assert info.result["metrics"]["accuracy"] > 0.6
    assert "TensorflowTrainer, 2 worker(s)" in logs and "Collective all_reduce" in logs  # gradients all-reduced
    assert "[rank 1] MultiWorkerMirroredStrategy across 2 replicas, tf-keras 2." in logs  # not Keras 3

    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        workers = set(s.scalars(select(JobLog.worker).where(JobLog.job_id == job.id)).all())
        metrics = s.execute(select(Metric.key, Metric.step).where(Metric.run_id == info.result["run_id"])).all()
    assert {"driver", "rank-0", "rank-1"} <= {w.split(".")[0] for w in workers}
    steps = {}
    for key, step in metrics:
        steps.setdefault(key, set()).add(step)
    reported = {"loss", "accuracy", "val_loss", "val_accuracy", "seconds", "samples_per_s"}
    assert reported <= set(steps), sorted(steps)
    assert all(steps[k] == set(range(epochs)) for k in reported)  # every epoch reached the run

    _, model = hub.load_model("tf-mwms")
    assert model.framework == "tensorflow" and model.predict(np.zeros((4, 16))).shape == (4,)
    ev = hub.evaluate({"name": "eval-tf", "model": "tf-mwms/1", "dataset": DATA})
    result = ev.wait(timeout=120)
    assert result.state == "succeeded"
    assert result.result["metrics"]["accuracy"] == pytest.approx(info.result["metrics"]["accuracy"])

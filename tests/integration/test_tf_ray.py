"""TensorFlow training jobs on Ray Train (TensorflowTrainer, MultiWorkerMirroredStrategy, tf-keras) through the
orchestrator, on the shared 2-CPU test cluster: two workers of one CPU, a worker SIGKILLed mid-training and the
group resumed from its last checkpoint (weights and optimizer state restored into a new MultiWorkerMirroredStrategy),
per-epoch metrics from rank 0, both workers' logs stored, a model version registered, loaded and evaluated. One
job, because each Ray Train start with TensorFlow costs tens of seconds here."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from sqlalchemy import select

from mlhub.store.models import JobLog, Metric
from tests.integration.test_torch_ray import _train_workers, _wait_for

pytestmark = [pytest.mark.ray, pytest.mark.postgres]

pytest.importorskip("tf_keras", reason="the tensorflow extra is not installed here (pip install "
                                       "'mlhub[tensorflow]'); CI installs it")

DATA = {"source": "synthetic", "task": "classification", "n_samples": 2000, "n_features": 16, "n_classes": 3,
        "seed": 2}


def test_tensorflow_job_trains_on_two_workers_resumes_after_a_worker_dies_and_its_model_evaluates(hub):
    epochs = 8
    job = hub.train({
        "name": "tf-mwms", "framework": "tensorflow", "model": "mlp", "num_workers": 2,
        "params": {"hidden": [64, 64], "lr": 0.003, "batch_size": 32},
        "dataset": DATA, "epochs": epochs, "checkpoint_every": 1, "max_worker_failures": 2,
    })
    assert job.status().resources["num_cpus"] == 2.0  # two workers of one CPU, the driver none
    at_kill = _wait_for(lambda: (job.status().progress or {}).get("epoch", 0) >= 2 and job.status().progress["epoch"],
                        300, "epoch 2")
    pids = _wait_for(_train_workers, 30, "Train worker actors")
    os.kill(pids[-1], signal.SIGKILL)
    info = job.wait(timeout=400)
    logs = job.logs()
    assert info.state == "succeeded" and info.attempt == 1, logs[-4000:]  # restarted within the attempt
    assert info.result["framework"] == "tensorflow" and info.result["model_version"] == 1
    assert info.result["metrics"]["accuracy"] > 0.6
    assert "TensorflowTrainer, 2 worker(s)" in logs and "Collective all_reduce" in logs  # gradients all-reduced
    assert "[rank 1] MultiWorkerMirroredStrategy across 2 replicas, tf-keras 2." in logs  # not Keras 3
    resumed = [line for line in logs.splitlines() if "resuming from the checkpoint after epoch" in line]
    assert resumed, logs[-4000:]
    resumed_at = int(resumed[0].split("after epoch ")[1].split()[0])
    assert at_kill - 1 <= resumed_at < epochs  # from the newest complete checkpoint, never from scratch
    assert f"from epoch {resumed_at}" in logs  # the new strategy's workers started there

    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        workers = set(s.scalars(select(JobLog.worker).where(JobLog.job_id == job.id)).all())
        metrics = s.execute(select(Metric.key, Metric.step).where(Metric.run_id == info.result["run_id"])).all()
    assert {"driver", "rank-0", "rank-1"} <= {w.split(".")[0] for w in workers}
    assert len(workers) >= 5  # driver + two processes per rank: the group was restarted
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

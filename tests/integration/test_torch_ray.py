"""PyTorch training jobs on Ray Train (TorchTrainer, DDP on gloo) through the orchestrator, on the shared
2-CPU test cluster. One job covers the whole path, because each Ray Train start costs ~30 s here: two
workers, per-epoch progress and metrics, a worker SIGKILLed mid-training and the group resumed from its last
checkpoint, both workers' logs stored, a model version registered, then evaluated."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import ray
from sqlalchemy import select

from mlhub.store.models import JobEvent, JobLog, Metric

pytestmark = [pytest.mark.ray, pytest.mark.postgres]


def _train_workers() -> list[int]:
    """PIDs of this cluster's live Ray Train workers (never another cluster's on the same machine)."""
    return [a["Pid"] for a in ray._private.state.actors().values()
            if "RayTrainWorker" in a.get("ActorClassName", "") and a.get("State") == "ALIVE"]


def _logs_by_worker(hub, job_id: int) -> str:
    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        rows = s.execute(select(JobLog.worker, JobLog.stream, JobLog.text).where(JobLog.job_id == job_id)
                         .order_by(JobLog.id)).all()
    return "\n".join(f"--- {w} {st}\n{t[-1500:]}" for w, st, t in rows)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_ddp_job_resumes_from_its_checkpoint_after_a_worker_dies(hub):
    epochs = 10
    job = hub.train({
        "name": "torch-ddp", "framework": "torch", "model": "mlp", "num_workers": 2,
        "params": {"hidden": [256, 256], "lr": 0.003, "batch_size": 64},
        "dataset": {"source": "synthetic", "task": "classification", "n_samples": 8000, "n_features": 20,
                    "n_classes": 3, "seed": 1},
        "epochs": epochs, "checkpoint_every": 1, "max_worker_failures": 2,
    })
    # the job holds both CPUs (2 workers x 1 CPU) and its driver task none
    assert job.status().resources["num_cpus"] == 2.0 and job.status().resources["driver"] is True

    at_kill = _wait_for(lambda: (job.status().progress or {}).get("epoch", 0) >= 3 and job.status().progress["epoch"],
                        240, "epoch 3")
    pids = _wait_for(_train_workers, 30, "Train worker actors")
    os.kill(pids[-1], signal.SIGKILL)

    info = job.wait(timeout=300)
    assert info.state == "succeeded" and info.attempt == 1  # Ray Train restarted the group within the attempt
    assert info.result["model_version"] == 1 and info.result["framework"] == "torch"
    assert info.result["metrics"]["accuracy"] > 0.5

    logs = job.logs()
    resumed = [line for line in logs.splitlines() if "resuming from the checkpoint after epoch" in line]
    assert resumed, _logs_by_worker(hub, job.id)
    resumed_at = int(resumed[0].split("after epoch ")[1].split()[0])
    # from the newest complete checkpoint: the epoch the progress showed, or the one before when the kill
    # came between recording progress and writing the checkpoint; never from scratch
    assert at_kill - 1 <= resumed_at < epochs
    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        workers = set(s.scalars(select(JobLog.worker).where(JobLog.job_id == job.id)).all())
        steps = s.scalars(select(Metric.step).where(Metric.run_id == info.result["run_id"],
                                                    Metric.key == "val_loss")).all()
        progress = s.scalars(select(JobEvent.data).where(JobEvent.job_id == job.id,
                                                         JobEvent.type == "progress")).all()
    ranks = {w.split(".")[0] for w in workers}
    assert {"driver", "rank-0", "rank-1"} <= ranks  # every worker's output is stored
    assert len(workers) >= 5  # driver + two processes per rank: the group was restarted
    assert sorted(set(steps)) == list(range(epochs))  # every epoch's metrics reached the run
    assert any(p.get("resumed_from_epoch") == resumed_at for p in progress)
    assert any(p.get("workers") == 2 and p.get("eta_s") is not None for p in progress)

    _, model = hub.load_model("torch-ddp")
    assert model.predict(np.zeros((4, 20))).shape == (4,)
    ev = hub.evaluate({"name": "eval-ddp", "model": "torch-ddp/1",
                       "dataset": {"source": "synthetic", "task": "classification", "n_samples": 8000,
                                   "n_features": 20, "n_classes": 3, "seed": 1}})
    assert ev.wait(timeout=120).result["metrics"]["accuracy"] == pytest.approx(info.result["metrics"]["accuracy"])


def test_fsdp_job_shards_the_model_across_two_cpu_workers(hub):
    """FSDP2 (fully_shard) on gloo: PyTorch's FSDP1 needs an accelerator, FSDP2 runs on CPU too."""
    job = hub.train({
        "name": "torch-fsdp", "framework": "torch", "model": "tabular", "num_workers": 2, "strategy": "fsdp",
        "params": {"width": 64, "depth": 2, "lr": 0.003}, "epochs": 3, "checkpoint_every": 1,
        "dataset": {"source": "sklearn", "name": "breast_cancer"},
    })
    info = job.wait(timeout=300)
    assert info.state == "succeeded" and info.result["metrics"]["accuracy"] > 0.8
    assert "TorchTrainer, 2 worker(s)" in job.logs() and "strategy fsdp" in job.logs()
    _, model = hub.load_model("torch-fsdp")  # the gathered full state loads into a plain model
    assert model.predict(np.zeros((2, 30))).shape == (2,)


def test_a_low_priority_training_job_is_preempted_and_resumes_from_its_checkpoint(hub):
    """Two jobs on this 2-CPU machine: a low-priority DDP job holds both CPUs; a high-priority job arrives; the
    low one is stopped, put back on its queue, and later resumes from its last checkpoint."""
    low = hub.train({
        "name": "torch-low", "framework": "torch", "model": "mlp", "num_workers": 2, "priority": "low",
        "params": {"hidden": [128], "lr": 0.003}, "epochs": 8, "checkpoint_every": 1,
        "dataset": {"source": "synthetic", "task": "classification", "n_samples": 6000, "n_features": 20,
                    "seed": 2},
    })
    _wait_for(lambda: (low.status().progress or {}).get("epoch", 0) >= 2, 240, "epoch 2 of the low job")
    high = hub.train({"name": "sk-high", "framework": "sklearn", "model": "random_forest", "priority": "high",
                      "params": {"n_estimators": 10}, "dataset": {"source": "sklearn", "name": "iris"}})
    assert high.wait(timeout=240).state == "succeeded"
    info = low.wait(timeout=300)
    assert info.state == "succeeded" and info.attempt == 2
    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        events = s.execute(select(JobEvent.attempt, JobEvent.to_state, JobEvent.message)
                           .where(JobEvent.job_id == low.id, JobEvent.type == "state")
                           .order_by(JobEvent.id)).all()
    back = [e for e in events if e.to_state == "queued" and e.message and "preempted by job" in e.message]
    assert back and back[0].attempt == 1 and f"job {high.id}" in back[0].message
    high_started = high.status().started_at
    assert high_started is not None and high_started < info.finished_at
    logs = low.logs(attempt=2)
    resumed = [line for line in logs.splitlines() if "resuming from the checkpoint after epoch" in line]
    assert resumed, _logs_by_worker(hub, low.id)
    assert int(resumed[0].split("after epoch ")[1].split()[0]) >= 1

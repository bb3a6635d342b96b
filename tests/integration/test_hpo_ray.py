"""HPO jobs on the shared Ray cluster (2 CPUs) and PostgreSQL: ASHA end to end with the best model registered
(baseline and torch trials), cancellation that kills the trials and frees their CPUs, and a killed driver
resumed from the Tune experiment state."""

from __future__ import annotations

import os
import signal
import time

import pytest
import ray
from sqlalchemy import select

from mlhub.errors import JobFailed
from mlhub.store.models import Metric, ModelVersion, RegisteredModel, Run, RunParam
from tests.integration.conftest import pid_of

pytestmark = [pytest.mark.ray, pytest.mark.postgres]


def search(name: str, *, epochs: int, n_samples: int = 400, n_features: int = 10, **kw) -> dict:
    return {"name": name, "metric": "val_loss", "mode": "min", "max_concurrent_trials": 2,
            "trainer": {"name": f"{name}-model", "framework": "baseline", "model": "logistic", "epochs": epochs,
                        "dataset": {"source": "synthetic", "task": "classification", "n_samples": n_samples,
                                    "n_features": n_features}},
            "search_space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1.0},
                             "l2": {"type": "choice", "values": [0.0, 0.01]}}, **kw}


def final_trials(hub, job_id: int):
    return [t for t in hub.trials(job_id) if t.status in ("terminated", "stopped", "error")]


def wait_for(what, predicate, timeout: float = 60.0, poll: float = 0.2, hub=None, job=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what}")


def test_asha_search_records_trials_and_registers_the_best_with_lineage(hub):
    job = hub.tune(search("asha", epochs=15, num_samples=8, scheduler="asha"))
    info = job.wait(timeout=120)
    result = info.result
    trials = hub.trials(job.id)
    assert len(trials) == 8 and {t.status for t in trials} <= {"terminated", "stopped"}
    assert any(t.status == "stopped" and t.iterations < 15 for t in trials)  # ASHA stopped some early
    assert all(t.run_id is not None and t.iterations >= 1 and "val_loss" in t.metrics for t in trials)
    best = min(trials, key=lambda t: t.metrics["val_loss"])
    assert (result["best_trial_id"], result["best_params"]) == (best.trial_id, best.params)
    assert result["best_metric"] == pytest.approx(best.metrics["val_loss"])
    assert result["trials"] == 8 and sum(result["trial_states"].values()) == 8
    assert info.progress["done"] == 8 and info.progress["best"]["trial_id"] == best.trial_id
    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        versions = s.execute(select(ModelVersion.version, ModelVersion.job_id, ModelVersion.run_id)
                             .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
                             .where(RegisteredModel.name == "asha-model")).all()
        retrain = s.get(Run, result["run_id"])
        params = dict(s.execute(select(RunParam.key, RunParam.value).where(RunParam.run_id == retrain.id)).all())
    assert [tuple(v) for v in versions] == [(1, job.id, result["run_id"])] and info.result["model_version"] == 1
    assert retrain.job_id == job.id and retrain.status == "finished"
    assert float(params["lr"]) == pytest.approx(best.params["lr"])  # the best params, trained once more
    version, model = hub.load_model("asha-model")
    assert version.metrics["log_loss"] == pytest.approx(result["metrics"]["log_loss"])


@ray.remote(num_cpus=0.6)
class _Holder:
    """Holds CPUs the way the Serve replicas that `mlhub start` deploys do (inference 0.5 + API 0.1)."""

    def ping(self) -> bool:
        return True


def test_a_search_starts_with_the_trials_that_fit_beside_serve_replicas(hub):
    # 2 CPUs, 0.6 held: 2 concurrent 1-CPU trials never fit. The search must start with one, not wait for ever
    # (once the orchestrator has seen the CPUs held for STEADY_S: work about to end does not cut a search).
    holder = _Holder.remote()
    try:
        ray.get(holder.ping.remote(), timeout=60)
        time.sleep(2)  # Ray's report of available resources lags an actor's start by up to a second
        job = hub.tune(search("beside-serve", epochs=3, num_samples=3))
        try:
            info = job.wait(timeout=120)
        except (TimeoutError, JobFailed):
            pytest.fail(f"{job.status()}\n{job.logs()[-4000:]}")
    finally:
        ray.kill(holder)
        # the next test's search must see the 2 CPUs free, not be cut for work that has just gone
        wait_for("the held CPUs back", lambda: ray.available_resources().get("CPU", 0) >= 2, timeout=30)
        time.sleep(1)
    assert info.result["trials"] == 3 and info.result["model_version"] == 1
    assert {t.status for t in hub.trials(job.id)} == {"terminated"}
    logs = job.logs()
    assert "room for 1 of the 2 max_concurrent_trials asked for" in logs and "3 trials, 1 at a time" in logs, logs
    assert info.resources["num_cpus"] == 2.0  # the job keeps what was asked for


def _trial_actor_pids() -> set[int]:
    return {a["Pid"] for a in ray._private.state.actors().values()
            if a.get("ActorClassName", "").startswith(("ImplicitFunc", "wrap_function")) and a.get("State") == "ALIVE"}


def _placement_groups_of(hub, job_id: int) -> list[str]:
    """The trial placement groups the job's driver recorded (what the orchestrator releases when it ends)."""
    from mlhub.jobs.placement import recorded_placement_groups

    return recorded_placement_groups(hub.settings.ray_storage_path, hub.principal.tenant_id, job_id)


def test_cancelling_a_search_kills_its_trial_actors_and_the_orchestrator_frees_their_cpus(hub):
    from ray.util.placement_group import placement_group_table

    from mlhub.jobs.placement import release_placement_groups

    job = hub.tune(search("cancelled", epochs=100_000, num_samples=4))
    try:
        wait_for("two running trials", lambda: sum(t.status == "running" and t.iterations > 0
                                                   for t in hub.trials(job.id)) >= 2)
    except BaseException:
        job.cancel()  # it would run for ever and hold the shared cluster's CPUs from the tests after this one
        raise
    pids = _trial_actor_pids()
    driver = pid_of(hub, job.id)
    assert len(pids) >= 2, ray._private.state.actors()
    groups = wait_for("the driver to record both trials' placement groups",
                      lambda: (g := _placement_groups_of(hub, job.id)) and len(g) >= 2 and g)
    assert ray.available_resources().get("CPU", 0) < 1  # the two trials hold the CPUs
    job.cancel()
    with pytest.raises(JobFailed, match="cancelled"):
        job.wait(timeout=30)

    def all_dead() -> bool:
        alive = []
        for pid in [*pids, driver]:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        return not alive and not (_trial_actor_pids() & pids)

    wait_for(f"trial processes {sorted(pids)} to exit", all_dead, timeout=30)
    # the trials' placement groups outlive the killed driver (they belong to the orchestrator's Ray job): the
    # orchestrator removes them when the attempt ends, with no call from anyone else
    wait_for("the trials' CPUs to be free again", lambda: ray.available_resources().get("CPU", 0) >= 2)
    table = placement_group_table()
    assert all(table[g]["state"] == "REMOVED" for g in groups if g in table), {g: table.get(g) for g in groups}
    assert release_placement_groups(hub.settings.ray_storage_path, hub.principal.tenant_id, job.id) == 0


def test_a_torch_search_with_pbt_registers_the_best_trials_own_weights(hub):
    import numpy as np

    job = hub.tune({
        "name": "torch-search", "metric": "val_loss", "mode": "min", "max_concurrent_trials": 2, "num_samples": 2,
        "scheduler": "pbt", "perturbation_interval": 2, "pbt_synch": True,
        "trainer": {"name": "torch-search-model", "framework": "torch", "model": "mlp", "epochs": 4,
                    "params": {"hidden": [16], "batch_size": 32}, "dataset": {"source": "sklearn", "name": "iris"}},
        "search_space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 0.1}}})
    # admitted for two trials of one Train worker's share each (1 CPU), which is what each trial reserves
    assert job.status().resources["num_cpus"] == 2.0 and job.status().resources["driver"] is True
    try:
        info = job.wait(timeout=240)
    except (TimeoutError, JobFailed):
        pytest.fail(f"{job.status()}\n{job.logs()[-4000:]}")
    trials = hub.trials(job.id)
    best = min(trials, key=lambda t: t.metrics["val_loss"])
    # (see the baseline PBT test: only the best trial is held to all of its epochs)
    assert {t.status for t in trials} == {"terminated"} and best.iterations == 4
    assert all({"loss", "val_loss", "val_accuracy"} <= set(t.metrics) for t in trials)
    result = info.result
    assert result["best_trial_id"] == best.trial_id and result["framework"] == "torch"
    assert result["model_version"] == 1
    logs = job.logs()
    # the trial's weights (torch state: model and optimizer) went on through Ray Train for its last epoch
    assert "training the best trial's last epoch again from its checkpoint after epoch 3" in logs
    assert "starting from the given state after epoch 3 (of 4)" in logs
    version, model = hub.load_model("torch-search-model")
    assert version.job_id == job.id
    assert model.predict(np.zeros((5, 4))).shape == (5,)


def test_a_killed_search_resumes_from_the_tune_experiment_state(hub):
    # 8 trials, 2 at a time: after the first 2 finish, 3 rounds remain, so some trial is still to run when the
    # driver is killed even on a fast machine (with 6, a quiet machine once finished them all before the kill)
    job = hub.tune(search("resumed", epochs=150, n_samples=20_000, n_features=40, num_samples=8,
                          retry={"max_attempts": 2, "backoff_s": 0}))
    first = wait_for(f"two finished trials of job {job.id}", lambda: final_trials(hub, job.id)
                     if len(final_trials(hub, job.id)) >= 2 else None, timeout=90)
    time.sleep(2.5)  # at least one experiment-state save after they finished
    done_before = {t.trial_id: t.run_id for t in first}
    os.kill(pid_of(hub, job.id), signal.SIGKILL)
    try:
        info = job.wait(timeout=150)
    except TimeoutError:
        pytest.fail(f"{job.status()}\n{job.logs()[-4000:]}")
    result = info.result
    assert info.attempt == 2 and result["resumed"] is True
    assert result["trials_carried_over"] >= 2 and result["trials"] == 8
    trials = {t.trial_id: t for t in hub.trials(job.id)}
    assert len(trials) == 8 and all(t.status == "terminated" for t in trials.values())
    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        attempts = {tid: s.get(Run, t.run_id).attempt for tid, t in trials.items()}
    # trials finished before the kill were not run again: their runs are still attempt 1's
    assert all(attempts[tid] == 1 and trials[tid].run_id == run for tid, run in done_before.items())
    assert any(a == 2 for a in attempts.values())
    assert "resuming the Tune experiment" in job.logs(attempt=2)


def test_pbt_exploits_a_better_trial_and_continues_from_its_checkpointed_weights(hub):
    from pathlib import Path

    from mlhub.hpo.driver import experiment_name

    # two trials of 30 epochs, PBT looking every 10 epochs with both trials there (synch): the worse trial copies
    # the better one's checkpoint at each look, and both continue from a checkpoint (the one that waited resumes
    # its own). Asynchronous PBT may find no comparison to make when one trial runs ahead of the other.
    job = hub.tune(search("pbt", epochs=30, num_samples=2, scheduler="pbt", search="random",
                          perturbation_interval=10, pbt_synch=True,
                          search_space={"lr": {"type": "loguniform", "low": 1e-4, "high": 1.0}}))
    try:
        info = job.wait(timeout=150)
    except (TimeoutError, JobFailed):
        pytest.fail(f"{job.status()}\n{job.logs()[-4000:]}")
    trials = hub.trials(job.id)
    # Tune 2.60's synchronous PBT once (1 CI run of ~8) ended an exploited trial right after its first epoch
    # past the look (terminated at 21 of 30, no error): only the best trial is held to all of its epochs here
    best = min(trials, key=lambda t: t.metrics["val_loss"])
    assert {t.status for t in trials} == {"terminated"} and best.iterations == 30, job.logs()[-3000:]
    assert info.result["model_version"] == 1
    # the registered model is the best trial's own: its last epoch trained again from its checkpoint after
    # epoch 29, which gives (full-batch gradient descent is deterministic) exactly the trial's final score
    assert "training the best trial's last epoch again from its checkpoint after epoch 29" in job.logs()
    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        final = s.execute(select(Metric.step, Metric.value).where(Metric.run_id == info.result["run_id"],
                                                                  Metric.key == "val_loss")).all()
    assert [step for step, _ in final] == [29] and final[0][1] == pytest.approx(best.metrics["val_loss"], rel=1e-9)
    experiment = Path(hub.settings.ray_storage_path) / experiment_name(hub.principal.tenant_id, job.id)
    files = sorted(str(p.relative_to(experiment)) for p in experiment.rglob("*") if p.is_file())
    exploits = (experiment / "pbt_global.txt").read_text().splitlines() if (experiment / "pbt_global.txt").exists() else []
    assert exploits, (files, job.logs()[-6000:])  # PBT copied the better trial at least once
    # every checkpoint holds the weights an exploiting trial continues from, not only the epoch count
    checkpoints = [p for p in experiment.rglob("checkpoint_*") if p.is_dir()]
    assert checkpoints and all((c / "state.npz").is_file() and (c / "mlhub_trial.json").is_file()
                               for c in checkpoints), files

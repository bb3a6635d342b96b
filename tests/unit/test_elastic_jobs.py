"""An elastic job (an HPO search) started with fewer units than it asked for: what its attempt carries."""

from __future__ import annotations

from datetime import UTC, datetime

from mlhub.domain.queueing import Demand
from mlhub.domain.specs import job_demand, parse_spec
from mlhub.jobs.launching import candidate_of, scaled_down
from mlhub.jobs.store import ClaimedJob


def claimed(spec: dict, resources: dict) -> ClaimedJob:
    return ClaimedJob(7, "t", "hpo", "hpo", "s", 1, spec, resources, datetime.now(UTC))


def test_the_attempt_gets_the_granted_concurrency_and_per_trial_amounts_scale_with_it():
    res = {"num_cpus": 4.0, "num_gpus": 0.0, "memory_mb": 4000, "custom": {"fpga": 4.0}, "driver": True,
           "unit": {"num_cpus": 1.0, "num_gpus": 0.0}, "scales": "max_concurrent_trials"}
    job = claimed({"kind": "hpo", "max_concurrent_trials": 4}, res)
    assert candidate_of(job).unit == Demand(1.0) and candidate_of(job).start_demand == Demand(1.0)
    small = scaled_down(job, Demand(2.0))
    assert small.spec["max_concurrent_trials"] == 2 and job.spec["max_concurrent_trials"] == 4  # a copy
    assert (small.resources["num_cpus"], small.resources["memory_mb"], small.resources["custom"]) == \
        (2.0, 2000, {"fpga": 2.0})
    assert (small.resources["asked"], small.resources["granted"], small.resources["driver"]) == (4, 2, True)
    assert candidate_of(small).demand == Demand(4.0)  # retried, it asks for all it asked for again


def test_a_job_that_is_not_elastic_is_never_scaled_down():
    job = claimed({"kind": "training", "num_workers": 2}, {"num_cpus": 2.0, "driver": True})
    assert scaled_down(job, Demand(1.0)) is job and candidate_of(job).unit is None


def test_the_unit_of_a_search_is_one_trial_of_its_trainer():
    spec = parse_spec({"kind": "hpo", "name": "h", "metric": "val_loss", "max_concurrent_trials": 3,
                       "trainer": {"name": "m", "framework": "torch", "model": "mlp", "num_workers": 4,
                                   "resources_per_worker": {"num_cpus": 0.5, "num_gpus": 0.25},
                                   "dataset": {"source": "sklearn", "name": "iris"}},
                       "search_space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1.0}}})
    res = job_demand(spec)
    # a trial trains in one process (never num_workers Train workers): one worker's resources
    assert res["unit"] == {"num_cpus": 0.5, "num_gpus": 0.25} and (res["num_cpus"], res["num_gpus"]) == (1.5, 0.75)


def test_the_waiting_note_says_what_is_needed_what_is_free_and_what_to_do():
    from mlhub.domain.queueing import Candidate
    from mlhub.jobs.waiting import wait_reason

    total, serve = Demand(2.0), Demand(0.6)
    free = total.minus(serve)
    search = Candidate(1, "t", "hpo", 0, Demand(2.0), unit=Demand(1.0))
    # not watched long enough to cut it (room unknown): it says it will start smaller if the work stays
    note = wait_reason(search, free, total, serve)
    assert "needs 2 CPUs (2 trials at once); 1.4 CPUs of the cluster's 2 CPUs are free" in note
    assert "holds 0.6 CPUs" in note and "starts in a few seconds with the trials that fit" in note
    # cut to one trial that waits for a running job: no advice, nothing to do
    note = wait_reason(search.capped(Demand(1.4)), Demand(0.4), total, serve, Demand(1.4))
    assert "needs 1 CPUs (1 trial at once); 0.4 CPUs" in note and "cannot start" not in note and "seconds" not in note
    wide = Candidate(2, "t", "training", 0, Demand(2.0))
    note = wait_reason(wide, free, total, serve)
    assert "cannot start while that other work runs" in note and "MLHUB_SERVE_REPLICA_CPUS" in note
    assert wait_reason(wide, Demand(2.0), total, Demand(0.0)).startswith("waiting for a free slot")
    gpu = Candidate(3, "t", "training", 0, Demand(1.0, 1.0))
    assert "needs 1 CPUs and 1 GPUs" in wait_reason(gpu, Demand(2.0), total, Demand(0.0))

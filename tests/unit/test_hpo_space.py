"""Spec -> Ray Tune objects (no Ray started: building domains, searchers and schedulers needs no cluster)."""

from __future__ import annotations

import pytest
from ray import tune
from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
)
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.sample import Categorical, Float, Integer

from mlhub.domain.specs import parse_spec
from mlhub.hpo import space

TRAINER = {"name": "t", "framework": "baseline", "model": "logistic", "epochs": 30,
           "dataset": {"source": "synthetic", "task": "classification", "seed": 7}}


def hpo(**kw):
    doc = {"kind": "hpo", "name": "s", "trainer": TRAINER, "metric": "val_accuracy",
           "search_space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1.0}}}
    return parse_spec({**doc, **kw})


def test_each_distribution_becomes_its_tune_domain():
    spec = hpo(search_space={
        "a": {"type": "uniform", "low": 0, "high": 2}, "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
        "n": {"type": "randint", "low": 2, "high": 5}, "c": {"type": "choice", "values": ["x", "y"]},
        "g": {"type": "grid", "values": [1, 2, 3]}})
    ps = space.param_space(spec)
    assert isinstance(ps["a"], Float) and (ps["a"].lower, ps["a"].upper) == (0, 2)
    assert isinstance(ps["lr"].get_sampler(), Float._LogUniform)
    assert isinstance(ps["n"], Integer) and (ps["n"].lower, ps["n"].upper) == (2, 6)  # high included
    assert isinstance(ps["c"], Categorical) and ps["c"].categories == ["x", "y"]
    assert ps["g"] == {"grid_search": [1, 2, 3]}


def test_randint_samples_reach_both_ends():
    dom = space.domain(parse_spec({"kind": "hpo", "name": "s", "trainer": TRAINER, "metric": "val_accuracy",
                                   "search_space": {"n": {"type": "randint", "low": 1, "high": 3}}}
                                  ).search_space["n"])
    assert set(dom.sample(size=400, random_state=0)) == {1, 2, 3}


def test_grid_search_enumerates_choices_once_and_counts_trials():
    spec = hpo(search="grid", num_samples=10, search_space={"c": {"type": "choice", "values": [1, 2]},
                                                           "g": {"type": "grid", "values": [1, 2, 3]}})
    assert space.param_space(spec)["c"] == {"grid_search": [1, 2]}
    assert space.tune_config_kwargs(spec)["num_samples"] == 1
    assert space.expected_trials(spec) == 6
    random = hpo(num_samples=4, search_space={"c": {"type": "choice", "values": [1, 2]},
                                              "g": {"type": "grid", "values": [1, 2, 3]}})
    assert space.expected_trials(random) == 12  # Tune's semantics: each sample crossed with the grid
    assert space.expected_trials(hpo(search="optuna", num_samples=9)) == 9


def test_search_algorithms_limit_concurrency_themselves():
    rnd = space.search_algorithm(hpo(max_concurrent_trials=3))
    assert isinstance(rnd, BasicVariantGenerator) and rnd.max_concurrent == 3
    opt = space.search_algorithm(hpo(search="optuna", max_concurrent_trials=2))
    assert isinstance(opt, ConcurrencyLimiter) and opt.max_concurrent == 2
    assert isinstance(opt.searcher, OptunaSearch)
    kw = space.tune_config_kwargs(hpo(search="optuna", time_budget_s=60))
    assert kw["max_concurrent_trials"] is None and kw["reuse_actors"] is True and kw["time_budget_s"] == 60
    assert (kw["metric"], kw["mode"]) == ("val_accuracy", "max")
    tune.TuneConfig(**kw)  # accepted as is


@pytest.mark.parametrize(("name", "cls"), [("asha", AsyncHyperBandScheduler), ("hyperband", HyperBandScheduler),
                                           ("median", MedianStoppingRule), ("pbt", PopulationBasedTraining)])
def test_schedulers_count_epochs(name, cls):
    sched = space.scheduler(hpo(scheduler=name))
    assert isinstance(sched, cls) and sched._time_attr == "training_iteration"
    assert space.needs_checkpoints(hpo(scheduler=name)) is (name == "pbt")


def test_asha_and_hyperband_stop_at_the_most_epochs_a_trial_can_run():
    assert space.scheduler(hpo(scheduler="asha"))._max_t == 30
    spec = hpo(scheduler="asha", search_space={"epochs": {"type": "choice", "values": [5, 50]},
                                               "lr": {"type": "uniform", "low": 0.01, "high": 1}})
    assert space.max_epochs(spec) == 50 and space.scheduler(spec)._max_t == 50
    assert space.scheduler(hpo(scheduler="hyperband"))._max_t_attr == 30
    assert space.scheduler(hpo()) is None


def test_pbt_mutates_the_searched_params():
    spec = hpo(scheduler="pbt", search_space={"lr": {"type": "loguniform", "low": 1e-3, "high": 1.0},
                                              "l2": {"type": "choice", "values": [0.0, 0.1]}})
    sched = space.scheduler(spec)
    assert set(sched._hyperparam_mutations) == {"lr", "l2"}
    assert sched._hyperparam_mutations["l2"] == [0.0, 0.1] and sched._perturbation_interval == 7
    assert sched._synch is False
    tuned = space.scheduler(spec.model_copy(update={"perturbation_interval": 3, "pbt_synch": True}))
    assert tuned._perturbation_interval == 3 and tuned._synch is True


def test_trial_config_merges_into_params_and_epochs_is_top_level():
    spec = hpo()
    trial = space.apply_config(spec.trainer.model_copy(update={"params": {"l2": 0.1, "lr": 9.0}}),
                               {"lr": 0.05, "epochs": 4})
    assert trial.params == {"l2": 0.1, "lr": 0.05} and trial.epochs == 4 and trial.model == "logistic"
    import numpy as np

    assert type(space.apply_config(spec.trainer, {"lr": np.float64(0.5)}).params["lr"]) is float


def test_each_trial_asks_for_the_trainers_resources():
    spec = hpo(trainer={**TRAINER, "resources": {"num_cpus": 0.5, "num_gpus": 1, "memory_mb": 256,
                                                 "custom": {"tpu": 2}}})
    assert space.trial_resources(spec.trainer) == {"cpu": 0.5, "gpu": 1.0, "memory": 256 * 2**20, "tpu": 2.0}
    assert space.trial_resources(hpo().trainer) == {"cpu": 1.0, "gpu": 0.0}


def test_torch_and_tensorflow_trials_ask_for_one_train_workers_share_as_admission_counts_it():
    from mlhub.domain.specs import job_demand

    torch = {"name": "t", "framework": "torch", "model": "mlp", "epochs": 2, "num_workers": 3,
             "dataset": {"source": "sklearn", "name": "iris"}}
    default = hpo(max_concurrent_trials=2, trainer=torch)
    assert space.trial_resources(default.trainer) == {"cpu": 1.0, "gpu": 0.0}
    gpu = hpo(trainer={**torch, "framework": "tensorflow", "use_gpu": True,
                       "resources": {"num_cpus": 4}})  # the driver-side resources are not a trial's
    assert space.trial_resources(gpu.trainer) == {"cpu": 1.0, "gpu": 1.0}
    per_worker = hpo(max_concurrent_trials=3, trainer={**torch, "resources_per_worker": {
        "num_cpus": 0.5, "num_gpus": 0.25, "memory_mb": 64, "custom": {"tpu": 1}}})
    assert space.trial_resources(per_worker.trainer) == {"cpu": 0.5, "gpu": 0.25, "memory": 64 * 2**20, "tpu": 1.0}
    for spec in (default, gpu, per_worker):  # what the trials hold at once is what the job was admitted for
        demand, res, n = job_demand(spec), space.trial_resources(spec.trainer), spec.max_concurrent_trials
        assert (demand["num_cpus"], demand["num_gpus"]) == (res["cpu"] * n, res["gpu"] * n)

"""An HPO spec translated into Ray Tune's objects. Pure code: building these objects never starts Ray.

Search space (``search_space: {key: {type, low, high, values}}``):

| type | Tune domain | meaning |
| --- | --- | --- |
| ``uniform`` | ``tune.uniform(low, high)`` | a float in [low, high) |
| ``loguniform`` | ``tune.loguniform(low, high)`` | a float, uniform in log space (low > 0) |
| ``randint`` | ``tune.randint(low, high + 1)`` | an integer in [low, high], **both ends included** |
| ``choice`` | ``tune.choice(values)`` | one of the values (``search: grid`` enumerates them) |
| ``grid`` | ``tune.grid_search(values)`` | every value, crossed with the other dimensions |

Keys name the trainer's ``params``; the key ``epochs`` (:data:`TOP_LEVEL_KEYS`) sets the trainer's
top-level ``epochs`` instead.

Search algorithms: ``random`` (Tune's BasicVariantGenerator: ``num_samples`` draws, each crossed with the
grid dimensions), ``grid`` (every combination of the grid/choice values exactly once: ``num_samples`` is
not used) and ``optuna`` (Optuna's TPE sampler through Tune's ``OptunaSearch``: ``num_samples`` trials).
``max_concurrent_trials`` is enforced by the search algorithm itself (a ``ConcurrencyLimiter`` around
Optuna), so ``TuneConfig.max_concurrent_trials`` stays unset.

Schedulers count time in epochs (``training_iteration``: one ``tune.report`` per epoch), up to the largest
number of epochs a trial can run (:func:`max_epochs`): ``asha`` (ASHA, reduction factor 3),
``hyperband`` (synchronous HyperBand), ``median`` (median stopping rule) and ``pbt`` (population based
training: every ``perturbation_interval`` epochs the worst quarter of trials copy a top-quarter trial's
params, perturbed) and continue from its weights where the framework can warm-start (baseline, torch,
tensorflow; else the new params are retrained from scratch: see :mod:`mlhub.hpo.trainable`).
"""

from __future__ import annotations

import math
from typing import Any

from mlhub.domain.specs import HpoSpec, SearchDimension, TrainingSpec, worker_resources

__all__ = [
    "TOP_LEVEL_KEYS",
    "apply_config",
    "candidates",
    "expected_trials",
    "max_epochs",
    "param_space",
    "scheduler",
    "search_algorithm",
    "trial_resources",
    "tune_config_kwargs",
]

#: search-space keys that set a top-level field of the trainer spec rather than one of its ``params``
TOP_LEVEL_KEYS = frozenset({"epochs"})
#: ASHA / HyperBand reduction factor (the best third of a rung is promoted)
REDUCTION_FACTOR = 3


def _plain(v: Any) -> Any:
    """numpy scalars (what some samplers return) as plain Python values."""
    item = getattr(v, "item", None)
    return item() if callable(item) and not isinstance(v, list | dict | str) else v


def domain(dim: SearchDimension, *, as_grid: bool = False) -> Any:
    """The Tune domain of one dimension (``as_grid``: a ``choice`` is enumerated like a ``grid``)."""
    from ray import tune

    if dim.type == "uniform":
        return tune.uniform(float(dim.low), float(dim.high))
    if dim.type == "loguniform":
        return tune.loguniform(float(dim.low), float(dim.high))
    if dim.type == "randint":
        return tune.randint(int(dim.low), int(dim.high) + 1)  # Tune's upper bound is exclusive
    if dim.type == "grid" or (dim.type == "choice" and as_grid):
        return tune.grid_search(list(dim.values))
    return tune.choice(list(dim.values))


def param_space(spec: HpoSpec) -> dict[str, Any]:
    """``Tuner(param_space=...)``: one Tune domain per search-space key."""
    return {key: domain(dim, as_grid=spec.search == "grid") for key, dim in spec.search_space.items()}


def candidates(dim: SearchDimension) -> list[Any]:
    """Representative values of a dimension, for validation: the ends of a range, every listed value."""
    if dim.type in ("uniform", "loguniform"):
        return [float(dim.low), float(dim.high)]
    if dim.type == "randint":
        return [int(dim.low), int(dim.high)]
    return list(dim.values or [])


def expected_trials(spec: HpoSpec) -> int:
    """How many trials the search will run (before a time budget cuts it short)."""
    grid = math.prod(len(d.values or []) for d in spec.search_space.values()
                     if d.type == "grid" or (spec.search == "grid" and d.type == "choice"))
    if spec.search == "grid":
        return grid
    if spec.search == "optuna":
        return spec.num_samples
    return spec.num_samples * grid


def max_epochs(spec: HpoSpec) -> int:
    """The most epochs any trial can run: the trainer's, or the top of an ``epochs`` search dimension."""
    dim = spec.search_space.get("epochs")
    if dim is None:
        return spec.trainer.epochs
    values = candidates(dim)
    try:
        return max(1, max(int(v) for v in values))
    except (TypeError, ValueError):
        return spec.trainer.epochs


def _seed(spec: HpoSpec, seed: int | None) -> int:
    return spec.trainer.dataset.seed if seed is None else seed


def search_algorithm(spec: HpoSpec, *, seed: int | None = None) -> Any:
    """The Tune search algorithm, limited to ``max_concurrent_trials`` running trials."""
    if spec.search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=_seed(spec, seed)), max_concurrent=spec.max_concurrent_trials)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(max_concurrent=spec.max_concurrent_trials, random_state=_seed(spec, seed))


def _pbt_mutations(spec: HpoSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, dim in spec.search_space.items():
        if key in TOP_LEVEL_KEYS:
            continue
        out[key] = list(dim.values or []) if dim.type in ("choice", "grid") else domain(dim)
    return out


def scheduler(spec: HpoSpec, **overrides: Any) -> Any:
    """The trial scheduler (``None``: Tune's FIFO, every trial runs to the end). Metric and mode come from
    the TuneConfig. ``overrides`` reach the scheduler's constructor (benchmarks tune them)."""
    if spec.scheduler == "none":
        return None
    from ray.tune import schedulers

    top = max_epochs(spec)
    if spec.scheduler == "asha":
        kw = {"time_attr": "training_iteration", "max_t": top, "grace_period": max(1, top // 27),
              "reduction_factor": REDUCTION_FACTOR, **overrides}
        return schedulers.ASHAScheduler(**kw)
    if spec.scheduler == "hyperband":
        kw = {"time_attr": "training_iteration", "max_t": top, "reduction_factor": REDUCTION_FACTOR, **overrides}
        return schedulers.HyperBandScheduler(**kw)
    if spec.scheduler == "median":
        kw = {"time_attr": "training_iteration", "grace_period": max(1, top // 4), "min_samples_required": 3,
              **overrides}
        return schedulers.MedianStoppingRule(**kw)
    kw = {"time_attr": "training_iteration", "perturbation_interval": spec.perturbation_interval or max(1, top // 4),
          "hyperparam_mutations": _pbt_mutations(spec), "quantile_fraction": 0.25, "synch": spec.pbt_synch,
          **overrides}
    return schedulers.PopulationBasedTraining(**kw)


def needs_checkpoints(spec: HpoSpec) -> bool:
    """PBT only exploits trials that have a checkpoint: the trainable then saves one per epoch."""
    return spec.scheduler == "pbt"


def tune_config_kwargs(spec: HpoSpec, *, seed: int | None = None, **scheduler_overrides: Any) -> dict[str, Any]:
    """Keyword arguments of ``tune.TuneConfig`` for ``spec``."""
    return {
        "metric": spec.metric, "mode": spec.mode,
        "num_samples": 1 if spec.search == "grid" else spec.num_samples,
        "search_alg": search_algorithm(spec, seed=seed),
        "scheduler": scheduler(spec, **scheduler_overrides),
        "time_budget_s": spec.time_budget_s,
        "reuse_actors": True,  # short trials: actor start-up would otherwise dominate (RAY_NOTES.md)
        "max_concurrent_trials": None,  # enforced by the search algorithm (see search_algorithm)
    }


def trial_resources(trainer: TrainingSpec) -> dict[str, float]:
    """What each trial asks Tune for (``tune.with_resources``): one training process's resources,
    :func:`mlhub.domain.specs.worker_resources` (a torch/tensorflow trainer's ``resources_per_worker``, else
    1 CPU plus 1 GPU with ``use_gpu``; any other trainer's ``resources``). The orchestrator admits the job for
    that times ``max_concurrent_trials`` (:func:`mlhub.domain.specs.job_demand`), so admission and what the
    trials reserve agree. A trial trains in its own process: it never starts ``num_workers`` Train workers."""
    res = worker_resources(trainer)
    out: dict[str, float] = {"cpu": float(res.get("num_cpus", 0.0)), "gpu": float(res.get("num_gpus", 0.0))}
    if res.get("memory_mb"):
        out["memory"] = float(res["memory_mb"]) * 1024 * 1024
    out.update({k: float(v) for k, v in (res.get("custom") or {}).items()})
    return out


def apply_config(trainer: TrainingSpec, config: dict[str, Any]) -> TrainingSpec:
    """The trainer spec a trial trains: its params with the trial's values merged in (top-level keys set the
    field), validated again. Raises ``pydantic.ValidationError`` for a value the spec itself refuses."""
    doc = trainer.model_dump(mode="json", exclude_none=True)
    params = dict(doc.get("params") or {})
    for key, value in config.items():
        value = _plain(value)
        if key in TOP_LEVEL_KEYS:
            doc[key] = value
        else:
            params[key] = value
    doc["params"] = params
    return TrainingSpec.model_validate(doc)

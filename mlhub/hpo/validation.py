"""Every problem with an HPO spec, found at submit time (no Ray, no data loaded).

Checked beyond the spec's own shape (ranges, distributions: :class:`~mlhub.domain.specs.SearchDimension`):

- the search algorithm fits the space (``grid`` needs listed values everywhere, ``optuna`` samples: no
  ``grid`` dimension) and the scheduler fits the search (``pbt`` needs random or grid search and at least
  2 epochs; an early-stopping scheduler needs trials of at least 2 epochs);
- ``randint`` bounds are whole numbers; ``epochs`` takes whole numbers >= 1;
- each search-space key is a valid param of the trainer, for every representative value of its dimension
  (the ends of a range, each listed value), checked by the framework adapter's own ``validate``;
- the metric is one the trainable reports on every epoch (the adapter's ``reported_metrics(spec)``) for
  every representative value.
"""

from __future__ import annotations

from typing import Any

import pydantic

from mlhub.domain.specs import HpoSpec, TrainingSpec, error_lines
from mlhub.errors import ValidationError
from mlhub.hpo.space import TOP_LEVEL_KEYS, apply_config, candidates, max_epochs

__all__ = ["hpo_problems", "validate_hpo_spec"]

EARLY_STOPPING = ("asha", "hyperband", "median", "pbt")


def _space_problems(spec: HpoSpec) -> list[str]:
    problems: list[str] = []
    for key, dim in spec.search_space.items():
        where = f"search_space.{key}"
        if dim.type == "randint" and not (float(dim.low).is_integer() and float(dim.high).is_integer()):
            problems.append(f"{where}: randint needs whole-number low and high (got {dim.low:g}, {dim.high:g})")
        if spec.search == "grid" and dim.type not in ("grid", "choice"):
            problems.append(f"{where}: search grid enumerates listed values: use type grid or choice "
                            f"(not {dim.type})")
        if spec.search == "optuna" and dim.type == "grid":
            problems.append(f"{where}: search optuna samples every dimension: use type choice (not grid)")
        if key in TOP_LEVEL_KEYS:
            if dim.type in ("uniform", "loguniform"):
                problems.append(f"{where}: epochs are whole numbers: use randint, choice or grid")
            elif any(isinstance(v, bool) or not isinstance(v, int | float) or v < 1 or float(v) != int(v)
                     for v in candidates(dim)):
                problems.append(f"{where}: epochs must be whole numbers >= 1")
            elif spec.scheduler == "pbt":
                problems.append(f"{where}: pbt mutates params between epochs; it cannot search epochs")
    if spec.perturbation_interval is not None and spec.scheduler != "pbt":
        problems.append(f"perturbation_interval is a pbt setting; scheduler is {spec.scheduler}")
    if spec.pbt_synch and spec.scheduler != "pbt":
        problems.append(f"pbt_synch is a pbt setting; scheduler is {spec.scheduler}")
    if spec.scheduler == "pbt" and spec.search == "optuna":
        problems.append("scheduler: pbt picks and mutates params itself: use search random or grid with it")
    if spec.scheduler in EARLY_STOPPING and not problems and max_epochs(spec) < 2:
        problems.append(f"scheduler: {spec.scheduler} acts between epochs, and trials run 1 epoch: set "
                        "trainer.epochs to 2 or more (or scheduler none)")
    return problems


def _without_search_keys(trainer: TrainingSpec, keys) -> TrainingSpec:
    params = {k: v for k, v in trainer.params.items() if k not in keys}
    return trainer.model_copy(update={"params": params})


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else repr(v)


def _trainer_problems(spec: HpoSpec) -> list[str]:
    from mlhub.training.adapters import get_adapter

    try:
        adapter = get_adapter(spec.trainer.framework)
    except ValidationError as exc:
        return [f"trainer.framework: {exc.message}"]
    reported = getattr(adapter, "reported_metrics", None)
    base = _without_search_keys(spec.trainer, set(spec.search_space))
    base_problems = adapter.validate(base)
    problems = [f"trainer: {p}" for p in base_problems]
    seen = set(base_problems)
    metric_missing: dict[str, list[str]] = {}  # what the trial reports -> the values it is missing with
    checked = [0]

    def trial_spec(where: str, config: dict[str, Any]) -> TrainingSpec | None:
        try:
            return apply_config(base, config)
        except pydantic.ValidationError as exc:
            for line in error_lines(exc):
                if line not in seen:
                    seen.add(line)
                    problems.append(f"{where}: {line}")
            return None

    def check_metric(trial: TrainingSpec, label: str) -> None:
        # custom code reports what it likes: a missing metric fails its trials at run time, by name
        if reported is None or trial.entrypoint or adapter.validate(trial):
            return
        checked[0] += 1
        names = set(reported(trial))
        if spec.metric not in names:
            metric_missing.setdefault(", ".join(sorted(names)) or "nothing", []).append(label)

    bad: set[str] = set()
    for key, dim in spec.search_space.items():
        where = f"search_space.{key}"
        for value in candidates(dim):
            # this key alone on the trainer, so a problem is pinned on the key that causes it
            trial = trial_spec(where, {key: value})
            new = [p for p in adapter.validate(trial) if p not in seen] if trial is not None else [""]
            if trial is None or new:
                bad.add(key)
            for p in filter(None, new):
                seen.add(p)
                problems.append(f"{where}: {p}")
    # the metric, over whole trials' specs: the valid keys at their first value, one key varied at a time
    first = {k: candidates(d)[0] for k, d in spec.search_space.items() if k not in bad}
    first_spec = trial_spec("search_space", first)
    if first_spec is not None:
        check_metric(first_spec, "")
        for key in first:
            for value in candidates(spec.search_space[key])[1:]:
                trial = trial_spec(f"search_space.{key}", {**first, key: value})
                if trial is not None:
                    check_metric(trial, f"{key}={_fmt(value)}")
    missing = sum(len(v) for v in metric_missing.values())
    trainer = f"{spec.trainer.framework} {spec.trainer.model}"
    for names, labels in metric_missing.items():
        if missing == checked[0]:
            problems.append(f"metric: {spec.metric!r} is never reported by {trainer} (it reports: {names})")
        else:
            when = ", ".join([x for x in labels if x][:5])
            problems.append(f"metric: {spec.metric!r} is not reported by {trainer} with {when} "
                            f"(it reports: {names})")
    return problems


def hpo_problems(spec: HpoSpec) -> list[str]:
    """Every problem with ``spec`` beyond its own shape; ``[]`` when it can run."""
    problems = _space_problems(spec)
    return problems + _trainer_problems(spec)


def validate_hpo_spec(spec: HpoSpec) -> None:
    """Raise :class:`~mlhub.errors.ValidationError` listing every problem (``details["errors"]``)."""
    problems = hpo_problems(spec)
    if problems:
        raise ValidationError("invalid HPO spec: " + "; ".join(problems), details={"errors": problems})

"""Bad HPO specs are refused at submit time, every problem at once, each pinned on what causes it."""

from __future__ import annotations

import pytest

from mlhub.domain.specs import parse_spec
from mlhub.errors import ValidationError
from mlhub.hpo.validation import hpo_problems
from mlhub.jobs.service import validate_for_submit
from mlhub.training.baseline import BaselineAdapter
from mlhub.training.sklearn_models import SklearnAdapter

BASELINE = {"name": "t", "framework": "baseline", "model": "logistic", "epochs": 10,
            "dataset": {"source": "synthetic", "task": "classification"}}
IRIS = {"name": "t", "framework": "sklearn", "model": "random_forest", "dataset": {"source": "sklearn", "name": "iris"}}


def hpo(trainer=BASELINE, **kw):
    doc = {"kind": "hpo", "name": "s", "trainer": trainer, "metric": "val_accuracy",
           "search_space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1.0}}}
    return parse_spec({**doc, **kw})


def test_a_good_spec_has_no_problems():
    assert hpo_problems(hpo(scheduler="asha", search="optuna")) == []
    assert hpo_problems(hpo(IRIS, search_space={"n_estimators": {"type": "randint", "low": 5, "high": 50},
                                                 "max_depth": {"type": "choice", "values": [2, 4, None]}})) == []


@pytest.mark.parametrize("dim", [{"type": "uniform", "low": 1, "high": 1}, {"type": "randint", "low": 5, "high": 2},
                                 {"type": "loguniform", "low": 0, "high": 1}, {"type": "choice", "values": []},
                                 {"type": "normal", "low": 0, "high": 1}, {"type": "grid"}])
def test_empty_ranges_and_unknown_distributions_are_refused(dim):
    with pytest.raises(ValidationError) as exc:
        hpo(search_space={"lr": dim})
    assert any(e.startswith("search_space.lr") for e in exc.value.details["errors"])


def test_every_problem_is_listed_at_once_and_pinned_on_its_key():
    spec = hpo(metric="val_f1", search="optuna", scheduler="pbt", search_space={
        "lr": {"type": "uniform", "low": -1, "high": 1}, "momentum": {"type": "uniform", "low": 0, "high": 1},
        "n": {"type": "randint", "low": 0.5, "high": 3}, "l2": {"type": "grid", "values": [0, 1]},
        "epochs": {"type": "uniform", "low": 1, "high": 5}})
    with pytest.raises(ValidationError) as exc:
        validate_for_submit(spec)
    errors = exc.value.details["errors"]
    assert "search_space.n: randint needs whole-number low and high (got 0.5, 3)" in errors
    assert "search_space.l2: search optuna samples every dimension: use type choice (not grid)" in errors
    assert "search_space.epochs: epochs are whole numbers: use randint, choice or grid" in errors
    assert "scheduler: pbt picks and mutates params itself: use search random or grid with it" in errors
    assert "search_space.lr: param 'lr' must be > 0 (got -1.0)" in errors
    assert any(e.startswith("search_space.momentum: unknown params for baseline logistic: momentum") for e in errors)
    assert ("metric: 'val_f1' is never reported by baseline logistic (it reports: loss, val_accuracy, val_loss)"
            in errors)
    assert "search_space.n: unknown params for baseline logistic: n (valid: l2, lr)" in errors
    assert len(errors) == 8 and exc.value.message.startswith("invalid HPO spec: ")


def test_a_problem_of_the_trainer_itself_is_reported_as_such():
    errors = hpo_problems(hpo({**BASELINE, "model": "svm"}))
    assert errors[0].startswith("trainer: unknown baseline model 'svm'")


def test_a_searched_param_overrides_a_bad_value_in_the_trainer():
    assert hpo_problems(hpo({**BASELINE, "params": {"lr": -5}})) == []


def test_the_metric_must_be_reported_for_every_value_searched():
    spec = hpo({"name": "t", "framework": "sklearn", "model": "svm", "dataset": {"source": "sklearn", "name": "iris"}},
               metric="val_log_loss", search_space={"C": {"type": "loguniform", "low": 0.1, "high": 10},
                                                    "probability": {"type": "choice", "values": [True, False]}})
    assert hpo_problems(spec) == ["metric: 'val_log_loss' is not reported by sklearn svm with probability=False "
                                  "(it reports: val_accuracy, val_f1_macro)"]
    ok = hpo({"name": "t", "framework": "sklearn", "model": "svm", "params": {"probability": True},
              "dataset": {"source": "sklearn", "name": "iris"}}, metric="val_log_loss",
             search_space={"C": {"type": "loguniform", "low": 0.1, "high": 10}})
    assert hpo_problems(ok) == []


def test_value_problems_name_the_value():
    spec = hpo(IRIS, search_space={"n_estimators": {"type": "choice", "values": [10, -3]},
                                    "criterion": {"type": "choice", "values": ["gini", "nonsense"]}})
    errors = hpo_problems(spec)
    assert len(errors) == 2 and all(e.startswith(("search_space.n_estimators: ", "search_space.criterion: "))
                                    for e in errors)
    assert "-3" in errors[0] and "nonsense" in errors[1]


def test_grid_search_needs_listed_values_and_schedulers_need_epochs():
    errors = hpo_problems(hpo(search="grid", scheduler="asha", trainer={**BASELINE, "epochs": 1}))
    assert errors == ["search_space.lr: search grid enumerates listed values: use type grid or choice (not loguniform)"]
    errors = hpo_problems(hpo(scheduler="median", trainer={**BASELINE, "epochs": 1}))
    assert errors == ["scheduler: median acts between epochs, and trials run 1 epoch: set trainer.epochs to 2 or "
                      "more (or scheduler none)"]
    assert hpo_problems(hpo(scheduler="asha", trainer={**BASELINE, "epochs": 1},
                            search_space={"epochs": {"type": "randint", "low": 1, "high": 9}})) == []


def test_submit_refuses_a_bad_search_before_anything_is_queued(mlhub_home):
    from mlhub.client import Hub

    with Hub() as hub, pytest.raises(ValidationError, match="never reported"):
        hub.tune({"name": "s", "trainer": IRIS, "metric": "accuracy",
                  "search_space": {"n_estimators": {"type": "randint", "low": 5, "high": 50}}})
    with Hub() as hub:
        assert hub.list_jobs() == []


@pytest.mark.parametrize(("trainer", "expected"), [
    (BASELINE, {"loss", "val_accuracy", "val_loss"}),
    ({**BASELINE, "model": "linear", "dataset": {"source": "synthetic", "task": "regression"}}, {"loss", "val_rmse"}),
])
def test_baseline_reports_what_it_says(trainer, expected):
    from mlhub.training.datasets import load_dataset

    spec = parse_spec({"kind": "training", **trainer, "epochs": 3})
    seen: list[set[str]] = []
    BaselineAdapter().train(spec, load_dataset(spec.dataset, allowed_roots=[]), lambda r: seen.append(set(r.metrics)))
    assert BaselineAdapter().reported_metrics(spec) == expected and all(s == expected for s in seen)


@pytest.mark.parametrize(("model", "params", "dataset", "epochs"), [
    ("random_forest", {}, {"source": "sklearn", "name": "iris"}, 1),
    ("svm", {}, {"source": "sklearn", "name": "iris"}, 1),
    ("ridge", {}, {"source": "sklearn", "name": "diabetes"}, 1),
    ("sgd", {"loss": "log_loss"}, {"source": "sklearn", "name": "iris"}, 3),
    ("sgd", {"loss": "hinge"}, {"source": "sklearn", "name": "iris"}, 3),
    ("sgd", {}, {"source": "sklearn", "name": "diabetes"}, 3),
])
def test_sklearn_reports_what_it_says(model, params, dataset, epochs):
    from mlhub.training.datasets import load_dataset

    spec = parse_spec({"kind": "training", "name": "t", "framework": "sklearn", "model": model, "params": params,
                       "dataset": dataset, "epochs": epochs})
    seen: list[set[str]] = []
    SklearnAdapter().train(spec, load_dataset(spec.dataset, allowed_roots=[]), lambda r: seen.append(set(r.metrics)))
    assert seen and all(s == SklearnAdapter().reported_metrics(spec) for s in seen)


def test_a_perturbation_interval_needs_the_pbt_scheduler():
    with pytest.raises(ValidationError) as exc:
        validate_for_submit(hpo(scheduler="asha", perturbation_interval=2, pbt_synch=True))
    assert exc.value.details["errors"] == ["perturbation_interval is a pbt setting; scheduler is asha",
                                           "pbt_synch is a pbt setting; scheduler is asha"]

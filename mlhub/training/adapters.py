"""One training interface for every framework.

An :class:`Adapter` validates a :class:`TrainingSpec` (every problem at once) and trains it on a
:class:`~mlhub.training.datasets.Dataset`, calling ``report`` with an :class:`EpochReport` as it goes and
returning a :class:`TrainedModel` whose ``payload`` is a safe serialisation (npz or skops), never pickle.
Persistence is the caller's job: nothing here touches a store, Ray or the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from mlhub.domain.specs import TrainingSpec
from mlhub.errors import ValidationError

__all__ = [
    "Adapter",
    "EpochReport",
    "TrainedModel",
    "available_frameworks",
    "get_adapter",
    "json_params",
    "split_metrics",
    "task_of",
    "validate_training_spec",
    "warm_start_compatible",
]

PLANNED_FRAMEWORKS: tuple[str, ...] = ()


@dataclass
class EpochReport:
    """Progress after one epoch, e.g. ``{"loss": 0.41, "val_accuracy": 0.93}``. ``state`` is the training
    state to resume from after this epoch (file name -> bytes) when the adapter was asked for checkpoints
    (``train(..., checkpoint_every=N)``), else ``None``."""

    epoch: int
    metrics: dict[str, float]
    state: dict[str, bytes] | None = None


@dataclass
class TrainedModel:
    """What a training run produces: the serialised model and everything the registry records with it."""

    framework: str
    model_format: str
    payload: bytes
    metrics: dict[str, float]
    params: dict
    input_schema: dict
    reference_stats: dict
    task: str
    classes: list | None = field(default=None)


class Adapter(Protocol):
    """A framework's trainer.

    An adapter that can *warm-start* (continue from another run's training state, as a PBT exploit does)
    also has ``warm_start_params``: the params that may differ between the state's run and the one that
    continues from it (learning rate, regularisation: not the architecture), and its ``train`` takes
    ``resume={"epoch": epochs_done, "files": state}`` and ``checkpoint_every=N`` (put the state on the
    ``EpochReport`` of every N-th epoch)."""

    framework: str

    def validate(self, spec: TrainingSpec) -> list[str]:
        """Every problem with ``spec`` for this framework (unknown model, bad hyperparameters); [] if fine."""
        ...

    def train(self, spec: TrainingSpec, data: Any, report: Callable[[EpochReport], None]) -> TrainedModel:
        """Train on ``data`` (a Dataset), reporting per-epoch metrics; raise ValidationError on bad input.

        ``report`` may raise ``SystemExit`` (Ray Tune stopping a trial early): let it propagate."""
        ...

    def reported_metrics(self, spec: TrainingSpec) -> set[str]:
        """The metric names that *every* ``EpochReport`` of ``train(spec, ...)`` carries, known without data
        (an HPO metric must be one of them). Where the task is only known once the data is read, the union
        over both tasks. Never raises: a spec that ``validate`` refuses may give any answer."""
        ...


def _adapters() -> dict[str, Callable[[], Adapter]]:
    from mlhub.training.baseline import BaselineAdapter
    from mlhub.training.sklearn_models import SklearnAdapter
    from mlhub.training.tf_adapter import TensorflowAdapter
    from mlhub.training.torch_adapter import TorchAdapter

    return {"baseline": BaselineAdapter, "sklearn": SklearnAdapter, "tensorflow": TensorflowAdapter,
            "torch": TorchAdapter}


def available_frameworks() -> list[str]:
    """Frameworks that can train today."""
    return sorted(_adapters())


def get_adapter(framework: str) -> Adapter:
    """The adapter for ``framework``; ValidationError for planned ("not available yet") or unknown ones."""
    factories = _adapters()
    if framework in factories:
        return factories[framework]()
    if framework in PLANNED_FRAMEWORKS:
        raise ValidationError(f"framework {framework} is not available yet (available: "
                              f"{', '.join(sorted(factories))})")
    raise ValidationError(f"unknown framework {framework!r} (available: {', '.join(sorted(factories))})")


def warm_start_compatible(adapter: Any, donor_params: dict[str, Any] | None, params: dict[str, Any]) -> bool:
    """Whether ``adapter`` can continue, with ``params``, from a state trained with ``donor_params``: it
    warm-starts at all, and every param that differs is one of its ``warm_start_params``."""
    free = getattr(adapter, "warm_start_params", None)
    if free is None or donor_params is None:
        return False
    keys = set(donor_params) | set(params)
    return all(donor_params.get(k) == params.get(k) for k in keys - set(free))


def validate_training_spec(spec: TrainingSpec) -> None:
    """Raise ValidationError listing every problem with ``spec`` (``details["errors"]``)."""
    problems = get_adapter(spec.framework).validate(spec)
    if problems:
        raise ValidationError("invalid training spec: " + "; ".join(problems), details={"errors": problems})


# --- helpers shared by adapters ------------------------------------------------------------------------

_KNOWN_TASKS = {"diabetes": "regression"}


def task_of(spec: TrainingSpec) -> str | None:
    """The task a spec's dataset will have, when it can be known before loading (else ``None``)."""
    ds = spec.dataset
    if ds.source == "sklearn":
        return _KNOWN_TASKS.get(ds.name or "", "classification")
    return ds.task


def json_params(params: dict[str, Any]) -> list[str]:
    """Problems with parameter values that are not plain JSON (numbers, strings, booleans, null, lists)."""
    def ok(v: Any) -> bool:
        if v is None or isinstance(v, bool | int | float | str):
            return True
        return isinstance(v, list | tuple) and all(ok(x) for x in v)

    return [f"param {k!r}: values must be numbers, strings, booleans, null or lists of them"
            for k, v in params.items() if not ok(v)]


def split_metrics(task: str, y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None = None,
                 classes: list | None = None) -> dict[str, float]:
    """Metrics on the test split. classification: accuracy, f1_macro (+ log_loss with probabilities);
    regression: rmse, mae, r2."""
    from sklearn import metrics as m

    if task == "classification":
        out = {"accuracy": float(m.accuracy_score(y_true, y_pred)),
               "f1_macro": float(m.f1_score(y_true, y_pred, average="macro", zero_division=0))}
        if proba is not None and classes is not None and set(np.unique(y_true).tolist()) <= set(classes):
            out["log_loss"] = float(m.log_loss(y_true, np.clip(proba, 1e-15, 1.0), labels=classes))
        return out
    err = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    out = {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}
    if len(y_true) > 1 and np.ptp(np.asarray(y_true, dtype=np.float64)) > 0:  # else r2 is undefined
        out["r2"] = float(m.r2_score(y_true, y_pred))
    return out

"""The Tune trainable without Ray: a trial of each framework trains in-process and reports once per epoch, and when
the scheduler stops it (Tune's ``report`` raises ``SystemExit`` inside the training loop) nothing in the torch or
TensorFlow loop swallows it: the trial ends right there, with no further epoch trained.

Tune's ``report``, ``get_checkpoint`` and the current placement group are replaced by stand-ins; the trial code
itself (:func:`mlhub.hpo.trainable.run_trial`, the adapters' loops) runs unchanged."""

from __future__ import annotations

import os

import pytest
import ray
import ray.util
from ray import tune

from mlhub.domain.specs import parse_spec
from mlhub.errors import ValidationError
from mlhub.hpo.trainable import PG_KEY, run_trial

TF_SKIP = "the tensorflow extra is not installed here (pip install 'mlhub[tensorflow]'); CI installs it"


def trainer(framework: str, epochs: int = 4) -> dict:
    return parse_spec({"kind": "training", "name": "t", "framework": framework, "model": "mlp", "epochs": epochs,
                       "params": {"hidden": [8], "batch_size": 32},
                       "dataset": {"source": "sklearn", "name": "iris"}}).model_dump(mode="json", exclude_none=True)


@pytest.fixture
def tune_session(monkeypatch):
    """Tune's session calls as the trial sees them; ``stop_after`` epochs, ``report`` raises SystemExit as Tune's
    does (``sys.exit(0)`` in the training thread) for a trial the scheduler stopped."""
    class Session:
        reports: list[dict] = []
        stop_after: int | None = None

        def report(self, metrics, checkpoint=None):
            self.reports.append(dict(metrics))
            if self.stop_after is not None and len(self.reports) >= self.stop_after:
                raise SystemExit(0)

    session = Session()
    session.reports = []
    monkeypatch.setattr(tune, "report", session.report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(ray.util, "get_current_placement_group", lambda: None)
    return session


def _data(doc: dict):
    from mlhub.training.datasets import load_dataset

    return load_dataset(parse_spec({"kind": "training", **doc}).dataset, allowed_roots=[])


@pytest.fixture
def framework(request):
    if request.param == "tensorflow":
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        pytest.importorskip("tensorflow", reason=TF_SKIP)
        pytest.importorskip("tf_keras", reason=TF_SKIP)
    return request.param


@pytest.mark.parametrize("framework", ["torch", "tensorflow"], indirect=True)
def test_a_trial_reports_every_epoch_with_the_configs_params(tune_session, framework):
    doc = trainer(framework, epochs=3)
    run_trial({"lr": 0.05}, trainer_doc=doc, data=_data(doc), metric="val_loss")
    assert len(tune_session.reports) == 3
    assert all({"loss", "val_loss", "val_accuracy", PG_KEY} <= set(r) for r in tune_session.reports)


@pytest.mark.parametrize("framework", ["torch", "tensorflow"], indirect=True)
def test_a_trial_the_scheduler_stops_ends_at_that_epoch(tune_session, framework):
    doc = trainer(framework, epochs=6)
    tune_session.stop_after = 2
    with pytest.raises(SystemExit):
        run_trial({"lr": 0.05}, trainer_doc=doc, data=_data(doc), metric="val_loss")
    assert len(tune_session.reports) == 2  # no epoch trained (nor reported) after the stop


def test_a_metric_the_trainer_never_reports_fails_the_trial_with_a_clear_error(tune_session):
    doc = trainer("torch", epochs=2)
    with pytest.raises(ValidationError, match="not the metric 'val_f1'"):
        run_trial({}, trainer_doc=doc, data=_data(doc), metric="val_f1")
    assert tune_session.reports == []

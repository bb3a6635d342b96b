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
from mlhub.hpo.trainable import EPOCH_KEY, PG_KEY, run_trial

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
    assert [r[EPOCH_KEY] for r in tune_session.reports] == [1, 2, 3]


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


# --- PBT: a trial restarted from another trial's checkpoint continues from its weights -------------------

def _checkpointing(tune_session, monkeypatch, restore: dict[str, bytes] | None, tmp_path):
    """Keep each report's checkpoint files (Tune deletes the folder after ``report``); ``restore``: the files
    ``tune.get_checkpoint()`` hands the trial, as a PBT exploit does."""
    from pathlib import Path

    tune_session.checkpoints = []
    inner = tune_session.report

    def report(metrics, checkpoint=None):
        if checkpoint is not None:
            tune_session.checkpoints.append({p.name: p.read_bytes() for p in Path(checkpoint.path).iterdir()})
        inner(metrics, checkpoint)

    monkeypatch.setattr(tune, "report", report)
    if restore is not None:
        folder = tmp_path / "restored"
        folder.mkdir(parents=True)
        for name, payload in restore.items():
            (folder / name).write_bytes(payload)
        monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(folder)))


def _trainer_for(framework: str, epochs: int) -> dict:
    if framework == "baseline":
        return parse_spec({"kind": "training", "name": "t", "framework": "baseline", "model": "logistic",
                           "epochs": epochs, "dataset": {"source": "sklearn", "name": "digits"}}
                          ).model_dump(mode="json", exclude_none=True)
    return trainer(framework, epochs)


@pytest.mark.parametrize("framework", ["baseline", "torch", "tensorflow"], indirect=True)
def test_a_pbt_exploit_continues_from_the_donors_weights_with_its_own_learning_rate(
        tune_session, framework, monkeypatch, tmp_path):
    doc = _trainer_for(framework, epochs=10)
    data = _data(doc)
    good, tiny = (0.5, 1e-6) if framework == "baseline" else (0.05, 1e-7)
    _checkpointing(tune_session, monkeypatch, None, tmp_path)
    run_trial({"lr": good}, trainer_doc=doc, data=data, metric="val_loss", checkpoints=True)
    donor = [r["val_loss"] for r in tune_session.reports]
    state = tune_session.checkpoints[4]  # after 5 epochs
    assert len(tune_session.checkpoints) == 10 and len(state) >= 2  # the state files beside mlhub_trial.json

    # the exploiting trial: the donor's checkpoint, a (mutated) learning rate so small it barely moves
    tune_session.reports = []
    _checkpointing(tune_session, monkeypatch, state, tmp_path)
    run_trial({"lr": tiny}, trainer_doc=doc, data=data, metric="val_loss", checkpoints=True)
    warm = [r["val_loss"] for r in tune_session.reports]
    assert [r[EPOCH_KEY] for r in tune_session.reports] == [6, 7, 8, 9, 10]  # epochs 5..9 only
    # it starts where the donor was after 5 epochs, and its own (tiny) rate applies from there: flat
    assert warm[0] == pytest.approx(donor[4], rel=0.05) and warm[-1] == pytest.approx(warm[0], rel=0.02)

    # the same restart trained from scratch (what a framework without warm start does) is far behind
    tune_session.reports = []
    _checkpointing(tune_session, monkeypatch, {"mlhub_trial.json": state["mlhub_trial.json"]}, tmp_path / "x")
    run_trial({"lr": tiny}, trainer_doc=doc, data=data, metric="val_loss", checkpoints=True)
    cold = [r["val_loss"] for r in tune_session.reports]
    assert len(cold) == 5 and cold[0] > 1.5 * warm[0]


def test_a_pbt_exploit_across_architectures_retrains_from_scratch(tune_session, monkeypatch, tmp_path):
    doc = trainer("torch", epochs=6)
    data = _data(doc)
    _checkpointing(tune_session, monkeypatch, None, tmp_path)
    run_trial({"lr": 0.05}, trainer_doc=doc, data=data, metric="val_loss", checkpoints=True)
    state = tune_session.checkpoints[2]
    tune_session.reports = []
    _checkpointing(tune_session, monkeypatch, state, tmp_path)
    # another hidden size: the donor's weights do not fit, so the trial trains its own from the start
    run_trial({"lr": 0.05, "hidden": [16]}, trainer_doc=doc, data=data, metric="val_loss", checkpoints=True)
    assert len(tune_session.reports) == 3


def test_plan_resume_warm_starts_only_compatible_states_with_epochs_left():
    from mlhub.hpo.trainable import plan_resume
    from mlhub.training.baseline import BaselineAdapter
    from mlhub.training.sklearn_models import SklearnAdapter

    files = {"state.npz": b"x"}
    saved = {"epochs_done": 3, "params": {"lr": 0.1, "l2": 0.0}, "files": files}
    adapter = BaselineAdapter()
    assert plan_resume(adapter, None, {"lr": 0.2}, 10, warm=True) == (0, None)
    assert plan_resume(adapter, saved, {"lr": 0.2, "l2": 0.1}, 10, warm=True) == (3, {"epoch": 3, "files": files})
    assert plan_resume(adapter, saved, {"lr": 0.2, "solver": "gd"}, 10, warm=True) == (3, None)  # other solver
    assert plan_resume(adapter, saved, {"lr": 0.2}, 3, warm=True) == (3, None)  # nothing left to train
    assert plan_resume(adapter, saved, {"lr": 0.2}, 10, warm=False) == (3, None)
    assert plan_resume(adapter, {**saved, "files": {}}, {"lr": 0.2}, 10, warm=True) == (3, None)
    assert plan_resume(SklearnAdapter(), saved, {"lr": 0.1, "l2": 0.0}, 10, warm=True) == (3, None)


def test_a_checkpoint_file_name_cannot_escape_the_checkpoint_folder(tmp_path):
    from mlhub.hpo.trainable import read_trial_state, write_trial_state

    with pytest.raises(ValidationError, match="not allowed"):
        write_trial_state(tmp_path, 1, {}, {"../evil": b"x"})
    write_trial_state(tmp_path, 2, {"lr": 0.1}, {"state.npz": b"abc"})
    assert read_trial_state(tmp_path) == {"epochs_done": 2, "params": {"lr": 0.1}, "files": {"state.npz": b"abc"}}


def test_the_state_a_pbt_search_registers_from_is_the_newest_before_the_last_epoch(tmp_path):
    from mlhub.hpo.trainable import last_trial_state, write_trial_state

    for i, done in enumerate((4, 9, 10)):  # Tune's checkpoint folders of one trial; 10 = after its last epoch
        folder = tmp_path / f"checkpoint_{i:06d}"
        folder.mkdir()
        write_trial_state(folder, done, {"lr": 0.1 * done}, {"state.npz": bytes([done])})
    (tmp_path / "checkpoint_000009").mkdir()  # one Tune had not finished writing
    assert last_trial_state(tmp_path, 10) == {"epochs_done": 9, "params": {"lr": 0.9}, "files": {"state.npz": b"\t"}}
    assert last_trial_state(tmp_path, 4) is None

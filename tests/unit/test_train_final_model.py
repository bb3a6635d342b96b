"""Where a finished Ray Train run's final model comes from (no Ray started: checkpoints are plain folders)."""

from __future__ import annotations

import hashlib
import json

import pytest

from mlhub.errors import PermanentJobFailure
from mlhub.training.distributed import MODEL_META, STATE_META, _final_model_of


def _checkpoint(folder, epoch: int, model: bytes | None = None):
    folder.mkdir(parents=True)
    state = b"weights at epoch %d" % epoch
    (folder / "state.pt").write_bytes(state)
    (folder / STATE_META).write_text(json.dumps({"epoch": epoch, "files": ["state.pt"],
                                                 "sha256": {"state.pt": hashlib.sha256(state).hexdigest()}}))
    if model is not None:
        (folder / "model.pt").write_bytes(model)
        (folder / MODEL_META).write_text(json.dumps({"model_format": "pt", "info": {"epochs": epoch}}))
    return folder


def test_the_last_reported_checkpoint_holds_the_final_model(tmp_path):
    from ray.train import Checkpoint

    last = _checkpoint(tmp_path / "run" / "checkpoint_2", 8, model=b"final")
    final = _final_model_of(Checkpoint.from_directory(str(last)), tmp_path / "run")
    assert (final.payload, final.model_format, final.info) == (b"final", "pt", {"epochs": 8})


def test_an_attempt_resumed_after_the_last_epoch_takes_the_final_model_from_its_folder(tmp_path):
    """Preempted right after the last epoch's checkpoint was written: the next attempt resumes at the end, reports
    nothing, and Ray Train's snapshot still names an older checkpoint without the model."""
    from ray.train import Checkpoint

    run = tmp_path / "run"
    older = _checkpoint(run / "checkpoint_2026-11-28_16-00-01", 6)
    _checkpoint(run / "checkpoint_2026-11-28_16-00-09", 8, model=b"the final weights")
    assert _final_model_of(Checkpoint.from_directory(str(older)), run).payload == b"the final weights"
    with pytest.raises(PermanentJobFailure, match="never passed final_model"):
        _final_model_of(Checkpoint.from_directory(str(older)), None)  # URI storage: nothing to scan


def test_a_run_that_never_stored_a_model_fails_permanently(tmp_path):
    from ray.train import Checkpoint

    run = tmp_path / "run"
    only = _checkpoint(run / "checkpoint_1", 3)
    with pytest.raises(PermanentJobFailure, match="never passed final_model"):
        _final_model_of(Checkpoint.from_directory(str(only)), run)
    with pytest.raises(PermanentJobFailure, match="without a checkpoint"):
        _final_model_of(None, tmp_path / "nothing")

"""The Tune trainable: one trial, trained in-process by its framework's adapter, one ``tune.report`` per epoch.

Any framework with an adapter works unchanged (``get_adapter(framework).train(spec, data, report)``).
A scheduler that stops a trial early makes ``tune.report`` raise ``SystemExit`` inside the adapter's loop,
which ends the trial's training there (adapters must let it propagate).

With PBT (:func:`mlhub.hpo.space.needs_checkpoints`) each epoch also saves a tiny checkpoint holding the
number of epochs done. Adapters cannot warm-start from another trial's weights, so a trial that PBT restarts
from a checkpoint retrains its (new) params from scratch and reports only from the epoch it took over: its
iteration count stays the scheduler's, and every metric it reports is honest for its current params.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from mlhub.errors import ValidationError

STATE_FILE = "mlhub_trial.json"
PG_KEY = "mlhub_placement_group"


def run_trial(config: dict[str, Any], *, trainer_doc: dict[str, Any], data: Any, metric: str,
              checkpoints: bool = False, code: dict[str, Any] | None = None,
              allowed_roots: tuple[str, ...] = ()) -> None:
    """Train ``trainer_doc`` with ``config`` merged in (see :func:`mlhub.hpo.space.apply_config`). A trainer
    with custom code (``code``: see :func:`mlhub.jobs.code.trial_code`) runs it from the package, extracted
    on this trial's node: its ``entrypoint`` loop, or a built-in adapter importing its ``module:factory`` model."""
    import ray
    from ray import tune

    from mlhub.domain.specs import TrainingSpec
    from mlhub.hpo.space import apply_config
    from mlhub.training.adapters import get_adapter

    spec = apply_config(TrainingSpec.model_validate(trainer_doc), config)
    adapter = get_adapter(spec.framework)
    resume_from = 0
    pg = ray.util.get_current_placement_group()
    pg_id = pg.id.hex() if pg is not None else None  # reported so the driver can release it if it is killed
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume_from = int(json.loads((Path(folder) / STATE_FILE).read_text())["epochs_done"])

    def report(epoch_report) -> None:
        if epoch_report.epoch < resume_from:
            return  # a PBT restart replaying epochs the trial already reported
        metrics = {k: float(v) for k, v in epoch_report.metrics.items()}
        if metric not in metrics:
            raise ValidationError(f"the trainer reported {', '.join(sorted(metrics))} but not the metric "
                                  f"{metric!r}")
        if not math.isfinite(metrics[metric]):
            raise ValidationError(f"metric {metric!r} is {metrics[metric]} at epoch {epoch_report.epoch}")
        metrics[PG_KEY] = pg_id
        if not checkpoints:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="mlhub-trial-") as folder:
            (Path(folder) / STATE_FILE).write_text(json.dumps({"epochs_done": epoch_report.epoch + 1}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    if code is None:
        adapter.train(spec, data, report)
        return
    from mlhub.jobs.code import activate, modules_needed, run_local_loop, trial_folder

    folder = trial_folder(code)
    if spec.entrypoint:
        run_local_loop(spec, data, report, folder, [Path(r) for r in allowed_roots])
    else:
        activate(folder, modules_needed(spec))
        adapter.train(spec, data, report)


def build_trainable(spec: Any, data: Any, *, code: dict[str, Any] | None = None,
                    allowed_roots: tuple[str, ...] = ()) -> Any:
    """``run_trial`` bound to the spec's trainer, the loaded data and the trainer's code package (each put in
    the object store once), with each trial's resources (:func:`mlhub.hpo.space.trial_resources`)."""
    from ray import tune

    from mlhub.hpo.space import needs_checkpoints, trial_resources

    bound = tune.with_parameters(run_trial, trainer_doc=spec.trainer.model_dump(mode="json", exclude_none=True),
                                 data=data, metric=spec.metric, checkpoints=needs_checkpoints(spec), code=code,
                                 allowed_roots=tuple(allowed_roots))
    return tune.with_resources(bound, trial_resources(spec.trainer))

"""The Tune trainable: one trial, trained in-process by its framework's adapter, one ``tune.report`` per epoch.

Any framework with an adapter works unchanged (``get_adapter(framework).train(spec, data, report)``).
A scheduler that stops a trial early makes ``tune.report`` raise ``SystemExit`` inside the adapter's loop,
which ends the trial's training there (adapters must let it propagate).

With PBT (:func:`mlhub.hpo.space.needs_checkpoints`) each epoch also saves a checkpoint: the number of epochs
done, the trial's params and, from an adapter that can warm-start (baseline, torch, tensorflow: see
:class:`~mlhub.training.adapters.Adapter`), its training state (weights, optimizer). When PBT exploits a
better trial, the restarted trial continues from that trial's state with its own mutated params (a new
learning rate, say) at the epoch the state was saved. Where the params differ in more than the adapter
allows (another architecture), or the framework cannot warm-start (sklearn, custom training loops), the
trial retrains its new params from scratch and reports only from the epoch it took over: its iteration count
stays the scheduler's, and every metric it reports is honest for its current params.
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
#: the epochs a trial's model has been trained for, reported with every result: Tune's ``training_iteration``
#: counts reports, and after a PBT exploit it was seen to restart from 1 instead of the checkpoint's epoch
EPOCH_KEY = "mlhub_epoch"


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
    pg = ray.util.get_current_placement_group()
    pg_id = pg.id.hex() if pg is not None else None  # reported so the driver can release it if it is killed
    checkpoint = tune.get_checkpoint()
    saved = None
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = read_trial_state(Path(folder))
    warm = checkpoints and code is None and hasattr(adapter, "warm_start_params")
    resume_from, resume = plan_resume(adapter, saved, spec.params, spec.epochs, warm=warm)

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
        metrics[EPOCH_KEY] = epoch_report.epoch + 1
        if not checkpoints:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="mlhub-trial-") as folder:
            write_trial_state(Path(folder), epoch_report.epoch + 1, spec.params, epoch_report.state)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    if code is None:
        if warm:
            adapter.train(spec, data, report, resume=resume, checkpoint_every=1)
        else:
            adapter.train(spec, data, report)
        return
    from mlhub.jobs.code import activate, modules_needed, run_local_loop, trial_folder

    folder = trial_folder(code)
    if spec.entrypoint:
        run_local_loop(spec, data, report, folder, [Path(r) for r in allowed_roots])
    else:
        activate(folder, modules_needed(spec))
        adapter.train(spec, data, report)


def write_trial_state(folder: Path, epochs_done: int, params: dict[str, Any],
                      state: dict[str, bytes] | None) -> None:
    """A trial checkpoint in ``folder``: :data:`STATE_FILE` (epochs done, the params) and the state's files."""
    for name, payload in (state or {}).items():
        if name == STATE_FILE or Path(name).name != name:
            raise ValidationError(f"checkpoint file name {name!r} is not allowed")
        (folder / name).write_bytes(payload)
    (folder / STATE_FILE).write_text(json.dumps({"epochs_done": epochs_done, "params": params}))


def read_trial_state(folder: Path) -> dict[str, Any]:
    """What :func:`write_trial_state` wrote: ``{"epochs_done", "params", "files"}``."""
    meta = json.loads((folder / STATE_FILE).read_text())
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != STATE_FILE}
    return {"epochs_done": int(meta["epochs_done"]), "params": meta.get("params"), "files": files}


def plan_resume(adapter: Any, saved: dict[str, Any] | None, params: dict[str, Any], epochs: int, *,
                warm: bool) -> tuple[int, dict[str, Any] | None]:
    """(the first epoch this trial reports, the state it continues from or None to train from scratch).

    A trial restored from ``saved`` reports from ``saved["epochs_done"]`` either way; it continues from the
    saved state only when ``warm`` (the adapter can, on built-in code), the checkpoint holds a state and the
    params differ only where the adapter allows (:func:`~mlhub.training.adapters.warm_start_compatible`) and
    some of the trial's ``epochs`` are left to train (the final model comes from the last one)."""
    from mlhub.training.adapters import warm_start_compatible

    if saved is None:
        return 0, None
    done = saved["epochs_done"]
    if warm and saved["files"] and done < epochs and warm_start_compatible(adapter, saved["params"], params):
        return done, {"epoch": done, "files": saved["files"]}
    return done, None


def last_trial_state(trial_dir: Path, epochs: int) -> dict[str, Any] | None:
    """The newest checkpoint in a Tune trial folder written before the trial's last epoch (what
    :func:`read_trial_state` reads), or None."""
    best = None
    for folder in sorted(trial_dir.glob("checkpoint_*")):
        if not (folder / STATE_FILE).is_file():
            continue
        saved = read_trial_state(folder)
        if saved["epochs_done"] < epochs and (best is None or saved["epochs_done"] > best["epochs_done"]):
            best = saved
    return best


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

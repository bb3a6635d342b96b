"""One attempt of an HPO job: the Tune experiment started, or resumed where an earlier attempt left it.

The experiment lives at ``{ray_storage_path}/hpo-{tenant_id}-{job_id}``. When an earlier attempt of the same
job left state there (the driver was killed, the orchestrator restarted), ``Tuner.restore`` carries on:
finished trials are kept, unfinished and errored ones run again, the search algorithm continues where it
stopped. Tune saves the experiment state at least every :data:`EXPERIMENT_CHECKPOINT_S` seconds.

Trials are recorded as they run (``hpo_trials`` + a run per trial with its per-epoch metrics) and the job's
progress says how many are done and running and the best so far. Cancelling the job force-kills this
driver's process; the trial actors it owns die with it (Ray fate-shares actors with their owner).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from mlhub.domain.specs import HpoSpec, TrainingSpec
from mlhub.errors import PermanentJobFailure
from mlhub.hpo.space import apply_config, expected_trials, param_space, tune_config_kwargs
from mlhub.hpo.trainable import EPOCH_KEY, PG_KEY
from mlhub.hpo.trials import FINAL, TrialUpdate, list_trials, write_trials
from mlhub.jobs.placement import record_placement_groups, release_placement_groups
from mlhub.store.runs import MetricPoint

__all__ = ["EXPERIMENT_CHECKPOINT_S", "SearchOutcome", "experiment_name", "run_search"]

#: how often (at most) Tune saves the experiment state a resumed attempt starts from
EXPERIMENT_CHECKPOINT_S = 2
FLUSH_INTERVAL_S = 0.5
#: result keys that are Tune's bookkeeping, not the trainer's metrics
_NOT_METRICS = frozenset({
    "training_iteration", "time_total_s", "time_this_iter_s", "time_since_restore", "timestamp", "date",
    "pid", "hostname", "node_ip", "done", "trial_id", "experiment_tag", "iterations_since_restore",
    "timesteps_since_restore", "timesteps_total", "episodes_total", "should_checkpoint", "checkpoint_dir_name",
    "config", EPOCH_KEY,
})

#: the live recorder of each running experiment in this process, looked up by the (pickled) callback
_RECORDERS: dict[str, TrialRecorder] = {}


def experiment_name(tenant_id: str, job_id: int) -> str:
    return f"hpo-{tenant_id}-{job_id}"


def _plain(v: Any) -> Any:
    item = getattr(v, "item", None)
    if callable(item) and not isinstance(v, list | dict | str):
        v = item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def metrics_of(result: dict[str, Any]) -> dict[str, float]:
    """The trainer's metrics in a Tune result (Tune's own bookkeeping left out)."""
    out = {}
    for k, v in result.items():
        v = _plain(v)
        if k in _NOT_METRICS or k.startswith("_") or isinstance(v, bool) or not isinstance(v, int | float):
            continue
        out[k] = float(v)
    return out


@dataclass
class SearchOutcome:
    best_trial_id: str
    best_params: dict[str, Any]
    best_metric: float
    best_spec: TrainingSpec
    trials: int
    states: dict[str, int]
    resumed: bool
    carried_over: int = 0
    errors: list[str] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)
    #: PBT: the best trial's state before its last epoch (``{"epoch", "files"}``) to register its own weights
    warm_start: dict[str, Any] | None = None


class TrialRecorder:
    """Trial state kept by the driver and written to the store at most every FLUSH_INTERVAL_S seconds."""

    def __init__(self, ctx: Any, spec: HpoSpec, *, known: list | None = None) -> None:
        self.ctx = ctx
        self.spec = spec
        self.expected = expected_trials(spec)
        self.trials: dict[str, TrialUpdate] = {}
        self.final: dict[str, TrialUpdate] = {}  # finished trials (also those of earlier attempts)
        for t in known or ():
            u = TrialUpdate(t.trial_id, t.status, t.params, t.metrics, t.iterations, run_id=t.run_id)
            (self.final if t.status in FINAL else self.trials)[t.trial_id] = u
        self.dirty: set[str] = set()
        self.started_here: set[str] = set()
        self.stopping: set[str] = set()
        self.placement_groups: set[str] = set()  # the trials' groups, recorded for the orchestrator to free
        self.last_flush = 0.0

    def _trial(self, trial_id: str, config: dict[str, Any]) -> TrialUpdate:
        u = self.trials.get(trial_id) or self.final.pop(trial_id, None)
        if u is None:
            u = TrialUpdate(trial_id, "pending", {}, {}, 0)
        u.params = {k: _plain(v) for k, v in (config or {}).items()}
        self.trials[trial_id] = u
        self.dirty.add(trial_id)
        return u

    def started(self, trial_id: str, config: dict[str, Any]) -> None:
        u = self._trial(trial_id, config)
        if trial_id not in self.started_here:  # (re)run in this attempt: a run of this attempt's own
            self.started_here.add(trial_id)
            u.run_id, u.points = None, []
        u.status = "running"
        self.flush()

    def result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        u = self._trial(trial_id, config)
        metrics = metrics_of(result)
        pg_hex = result.get(PG_KEY)
        if isinstance(pg_hex, str) and pg_hex not in self.placement_groups:  # recorded once, at first sight
            record_placement_groups(self.ctx.settings.ray_storage_path, self.ctx.tenant_id, self.ctx.job_id,
                                    [pg_hex])
            self.placement_groups.add(pg_hex)
        it = int(result.get(EPOCH_KEY) or result.get("training_iteration") or u.iterations + 1)
        u.status, u.metrics, u.iterations = "running", metrics, it
        u.points.extend(MetricPoint(k, v, it - 1) for k, v in metrics.items())
        # a result the scheduler (or the time budget) stops on arrives with done set; a trial that ends by
        # itself reports done only in a duplicate result, which callbacks never see
        epochs = u.params.get("epochs", self.spec.trainer.epochs)
        if result.get("done") and isinstance(epochs, int) and it < epochs:
            self.stopping.add(trial_id)
        self.flush()

    def finished(self, trial_id: str, config: dict[str, Any], *, error: bool) -> None:
        u = self._trial(trial_id, config)
        u.status = "error" if error else ("stopped" if trial_id in self.stopping else "terminated")
        self.final[trial_id] = self.trials.pop(trial_id)
        self.flush(force=True)
        value = u.metrics.get(self.spec.metric)
        print(f"trial {trial_id} {u.status} after {u.iterations} epoch(s): {self.spec.metric}="
              f"{'-' if value is None else f'{value:.4f}'} params={u.params}", flush=True)

    def best(self) -> tuple[str, float, dict[str, Any]] | None:
        sign = 1 if self.spec.mode == "max" else -1
        scored = [(u.metrics[self.spec.metric], u) for u in [*self.final.values(), *self.trials.values()]
                  if self.spec.metric in u.metrics and u.status != "error"]
        if not scored:
            return None
        value, u = max(scored, key=lambda x: sign * x[0])
        return u.trial_id, value, u.params

    def summary(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for u in [*self.final.values(), *self.trials.values()]:
            states[u.status] = states.get(u.status, 0) + 1
        done = sum(n for s, n in states.items() if s in FINAL)
        best = self.best()
        return {"trials": self.expected, "done": done, "running": states.get("running", 0),
                "states": states, "metric": self.spec.metric, "mode": self.spec.mode,
                "best": None if best is None else {"trial_id": best[0], "value": best[1], "params": best[2]}}

    def flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.dirty or (not force and now - self.last_flush < FLUSH_INTERVAL_S):
            return
        self.last_flush = now
        updates = [self.trials.get(t) or self.final[t] for t in sorted(self.dirty)]
        write_trials(self.ctx.backends.db, self.ctx.tenant_id, self.ctx.job_id, self.ctx.attempt,
                     self.spec.name, updates)
        self.dirty.clear()
        self.ctx.progress(self.summary(), force=True)


class RecorderCallback(tune.Callback):
    """Forwards Tune's trial events to this process's recorder of the experiment. It holds only the
    experiment's name: Tune pickles it with the experiment state, and a resumed attempt's own recorder
    answers to the same name."""

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment

    def _recorder(self) -> TrialRecorder | None:
        return _RECORDERS.get(self.experiment)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if (r := self._recorder()) is not None:
            r.started(trial.trial_id, trial.config)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if (r := self._recorder()) is not None:
            r.result(trial.trial_id, trial.config, result)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if (r := self._recorder()) is not None:
            r.finished(trial.trial_id, trial.config, error=False)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if (r := self._recorder()) is not None:
            r.finished(trial.trial_id, trial.config, error=True)

    def on_step_end(self, iteration, trials, **info) -> None:
        if (r := self._recorder()) is not None:
            r.flush()


def _load_data(ctx: Any, spec: HpoSpec):
    from mlhub.training.datasets import load_dataset

    data = load_dataset(spec.trainer.dataset, allowed_roots=ctx.settings.allowed_data_roots)
    print(f"dataset: {len(data.x_train)} train / {len(data.x_test)} test rows, {len(data.feature_names)} "
          f"features; search {spec.search}, scheduler {spec.scheduler}, {expected_trials(spec)} trials, "
          f"{spec.max_concurrent_trials} at a time", flush=True)
    return data


def run_search(ctx: Any, spec: HpoSpec) -> SearchOutcome:
    """Run (or resume) the job's Tune experiment to the end; the best trial's params and trainer spec."""
    from mlhub.hpo.trainable import build_trainable

    # Tune reads this when the experiment starts: save the state a resumed attempt needs often
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(EXPERIMENT_CHECKPOINT_S))
    data = _load_data(ctx, spec)
    name = experiment_name(ctx.tenant_id, ctx.job_id)
    storage = ctx.settings.ray_storage_path
    path = f"{storage.rstrip('/')}/{name}"
    from mlhub.jobs.code import trial_code

    code = trial_code(ctx.backends, ctx.principal, spec.trainer)
    if code is not None:
        print(f"code: {spec.trainer.code.sha256[:12]} ({len(code['data']):,} bytes) goes to every trial", flush=True)
    trainable = build_trainable(spec, data, code=code,
                                allowed_roots=tuple(str(r) for r in ctx.settings.allowed_data_roots))
    resumed = tune.Tuner.can_restore(path)
    freed = release_placement_groups(storage, ctx.tenant_id, ctx.job_id)
    if freed:
        print(f"released {freed} placement group(s) of trials a killed attempt left behind", flush=True)
    known = list_trials(ctx.backends.db, ctx.tenant_id, ctx.job_id) if resumed else []
    recorder = TrialRecorder(ctx, spec, known=known)
    carried = sum(1 for u in recorder.final.values() if u.status != "error")
    _RECORDERS[name] = recorder
    try:
        if resumed:
            print(f"resuming the Tune experiment at {path}: {carried} trial(s) already finished", flush=True)
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable, param_space=param_space(spec), tune_config=tune.TuneConfig(**tune_config_kwargs(spec)),
                run_config=tune.RunConfig(storage_path=storage, name=name, verbose=0,
                                          callbacks=[RecorderCallback(name)]))
        results = tuner.fit()
        recorder.flush(force=True)
    finally:
        _RECORDERS.pop(name, None)
    return _outcome(spec, results, recorder, resumed, carried)


def _outcome(spec: HpoSpec, results: Any, recorder: TrialRecorder, resumed: bool, carried: int) -> SearchOutcome:
    errors = [f"{type(e).__name__}: {e}" for e in results.errors][:5]
    best = recorder.best()
    trial_dir = None
    try:
        result = results.get_best_result(metric=spec.metric, mode=spec.mode, scope="last")
        best_params = {k: _plain(v) for k, v in (result.config or {}).items()}
        best_value = float(result.metrics[spec.metric])
        best_id = str(result.metrics.get("trial_id") or (best[0] if best else ""))
        trial_dir = result.path
    except (RuntimeError, KeyError, TypeError, ValueError):
        if best is None:
            raise PermanentJobFailure(f"no trial reported {spec.metric!r}; "
                                      f"{len(results.errors)} trial(s) failed: {'; '.join(errors) or 'none'}"
                                      ) from None
        best_id, best_value, best_params = best
    progress = recorder.summary()
    states = progress["states"]
    print(f"best trial {best_id}: {spec.metric}={best_value:.4f} params={best_params}", flush=True)
    best_spec = apply_config(spec.trainer, best_params)
    return SearchOutcome(best_trial_id=best_id, best_params=best_params, best_metric=best_value,
                         best_spec=best_spec, trials=len(results), states=states, resumed=resumed,
                         carried_over=carried, errors=errors, progress=progress,
                         warm_start=_pbt_warm_start(spec, best_spec, trial_dir))


def _pbt_warm_start(spec: HpoSpec, best_spec: TrainingSpec, trial_dir: str | None) -> dict[str, Any] | None:
    """After PBT: the best trial's checkpointed state before its last epoch, if its framework can continue from
    it with the trial's final params (:func:`mlhub.hpo.trainable.plan_resume`); else None."""
    from mlhub.hpo.trainable import last_trial_state, plan_resume
    from mlhub.training.adapters import get_adapter

    if spec.scheduler != "pbt" or not trial_dir or "://" in str(trial_dir) or best_spec.code is not None:
        return None
    saved = last_trial_state(Path(trial_dir), best_spec.epochs)
    return plan_resume(get_adapter(best_spec.framework), saved, best_spec.params, best_spec.epochs, warm=True)[1]

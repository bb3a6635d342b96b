"""Training loops that run the same way in one process and on a Ray Train worker group.

A framework's training loop is a function ``loop(session)``. It asks the :class:`TrainSession` for its data
shard and for the state to resume from, trains, and calls :meth:`TrainSession.report` once per epoch with the
epoch's metrics and a ``state`` (a dict of file name -> bytes: weights, optimizer, anything). The session
decides what to do with it:

- :class:`LocalSession` (in-process: HPO trials, notebooks, tests) forwards the metrics to a callback and
  keeps the last state in memory;
- the Ray Train session (:func:`train_on_ray`, used by training jobs) writes a checkpoint every
  ``checkpoint_every`` epochs to Ray Train's storage, streams progress and per-epoch metrics to the job's run
  from rank 0, and captures every worker's output into the job's logs. A worker group restarted by Ray Train
  after a failure, and a retried attempt of the same job, resume from the last checkpoint: the run name is
  stable per job, and Ray Train restores its checkpoint bookkeeping from storage.

The last report carries the final model (``final_model=(payload, model_format, info)``), which the driver
reads back from the last checkpoint. The same loop therefore serves custom training code too: ``mlhub
scaffold trainer`` writes a module with a ``train_loop(session)`` that a spec names as its ``entrypoint``.

    def train_loop(session):
        data = session.dataset()
        x, y = session.shard(data.x_train, data.y_train)
        start = session.resume["epoch"] if session.resume else 0
        for epoch in range(start, session.spec.epochs):
            ... one epoch ...
            session.report(epoch, {"loss": loss}, state={"weights.pt": weights},
                           final_model=(payload, "pt", info) if epoch == session.spec.epochs - 1 else None)
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlhub.domain.specs import TrainingSpec, parse_spec, worker_resources
from mlhub.errors import PermanentJobFailure, ValidationError
from mlhub.training.adapters import EpochReport

STATE_META = "mlhub-state.json"
MODEL_META = "mlhub-model.json"
ProgressFn = Callable[[EpochReport, float], None]
CONTROLLER_POLL_S = "0.2"  # Ray Train's controller poll interval (see train_on_ray)


@dataclass
class FinalModel:
    """What the last report of a loop hands over: the serialised model and what the registry records."""

    payload: bytes
    model_format: str
    info: dict[str, Any] = field(default_factory=dict)


class TrainSession:
    """What a training loop talks to (see the module docstring). Subclasses decide where reports go."""

    rank: int = 0
    world_size: int = 1

    def __init__(self, spec: TrainingSpec, allowed_roots: list[Path]) -> None:
        self.spec = spec
        self._roots = allowed_roots
        self._data = None
        self.resume: dict[str, Any] | None = None
        self.final: FinalModel | None = None
        self.working_dir: str | None = None

    def prepare_model(self, model):
        """The model ready for this session's workers (wrapped in DDP/FSDP on Ray Train; as is locally)."""
        return model

    def dataset(self):
        """The job's whole dataset (train and test split), loaded once per process."""
        if self._data is None:
            from mlhub.training.datasets import load_dataset

            self._data = load_dataset(self.spec.dataset, allowed_roots=self._roots)
        return self._data

    def shard(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """This worker's rows of each array (every ``world_size``-th row from ``rank``): equal-sized shards
        (the remainder is dropped so that every worker runs the same number of steps)."""
        n = len(arrays[0]) // self.world_size * self.world_size
        out = tuple(a[self.rank:n:self.world_size] for a in arrays)
        return out if len(out) > 1 else out[0]  # type: ignore[return-value]

    @property
    def device(self) -> str:
        return "auto"

    def should_checkpoint(self, epoch: int) -> bool:
        last = epoch == self.spec.epochs - 1
        every = self.spec.checkpoint_every
        return last or (every > 0 and (epoch + 1) % every == 0)

    def report(self, epoch: int, metrics: dict[str, float], *, state: dict[str, bytes] | None = None,
               final_model: tuple[bytes, str, dict[str, Any]] | None = None, samples: int | None = None) -> None:
        raise NotImplementedError

    def log(self, message: str) -> None:
        print(f"[rank {self.rank}] {message}" if self.world_size > 1 else message, flush=True)


class LocalSession(TrainSession):
    """One process, no Ray: reports go to ``on_epoch``; the last checkpoint state stays in memory.

    ``resume`` (``{"epoch": epochs_done, "files": state}``) starts the loop from a saved state (an HPO trial
    that PBT restarts from another trial's checkpoint); ``checkpoint_every`` replaces the spec's, and every
    report that carries a state hands it on (``EpochReport.state``)."""

    def __init__(self, spec: TrainingSpec, allowed_roots: list[Path], on_epoch: Callable[[EpochReport], None],
                 data=None, *, resume: dict[str, Any] | None = None, checkpoint_every: int | None = None) -> None:
        super().__init__(spec, allowed_roots)
        self._on_epoch = on_epoch
        self._data = data
        self._every = checkpoint_every
        self.resume = resume
        self.state: dict[str, bytes] | None = None

    def should_checkpoint(self, epoch: int) -> bool:
        if self._every is None:
            return super().should_checkpoint(epoch)
        return epoch == self.spec.epochs - 1 or (self._every > 0 and (epoch + 1) % self._every == 0)

    def report(self, epoch, metrics, *, state=None, final_model=None, samples=None) -> None:
        kept = None
        if state is not None and self.should_checkpoint(epoch):
            self.state = kept = dict(state)
        if final_model is not None:
            self.final = FinalModel(*final_model)
        self._on_epoch(EpochReport(epoch, {k: float(v) for k, v in metrics.items()},
                                   state=kept if self._every is not None else None))


# --- custom code ---------------------------------------------------------------------------------------

def load_entrypoint(entrypoint: str, working_dir: str | Path | None = None) -> Callable[[TrainSession], None]:
    """``module:function`` imported from ``working_dir`` (put first on ``sys.path``) or the import path."""
    module_name, _, attr = entrypoint.partition(":")
    if working_dir is not None and str(working_dir) not in sys.path:
        sys.path.insert(0, str(working_dir))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValidationError(f"entrypoint {entrypoint!r}: cannot import {module_name!r} ({exc}); it must be a "
                              "module inside the job's working directory") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValidationError(f"entrypoint {entrypoint!r}: {module_name} has no function {attr!r}")
    return fn


def loop_for(spec: TrainingSpec, working_dir: str | Path | None = None) -> Callable[[TrainSession], None]:
    """The training loop a spec runs: its custom ``entrypoint``, else the framework's built-in loop."""
    if spec.entrypoint:
        return load_entrypoint(spec.entrypoint, working_dir)
    if spec.framework == "torch":
        from mlhub.training.torch_adapter import torch_loop

        return torch_loop
    if spec.framework == "tensorflow":
        from mlhub.training.tf_adapter import tf_loop

        return tf_loop
    raise ValidationError(f"framework {spec.framework} has no distributed training loop")


# --- Ray Train -----------------------------------------------------------------------------------------

class RayTrainSession(TrainSession):
    """A Ray Train worker's session: checkpoints through ``ray.train.report``; rank 0 records progress."""

    def __init__(self, config: dict[str, Any]) -> None:
        import ray.train

        from mlhub.jobs.runner import AttemptContext, backends_for

        spec = parse_spec(config["spec"])
        backends = backends_for(config["settings"])
        super().__init__(spec, backends.settings.allowed_data_roots)
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        job = config["job"]
        # one log stream per worker process: a group restarted by Ray Train writes new streams, never
        # colliding with the sequence numbers of the processes it replaced
        self.ctx = AttemptContext(backends, job["id"], job["tenant_id"], job["attempt"], job["name"],
                                  worker=f"rank-{self.rank}.{os.getpid()}")
        self.run_id: int = config["run_id"]
        self._started = time.perf_counter()
        self._first_epoch: int | None = None
        self._use_gpu = spec.use_gpu
        self.working_dir = config.get("working_dir")
        self._run_dir = Path(config["run_dir"]) if config.get("run_dir") else None
        self._initial: dict[str, Any] | None = config.get("initial")
        if spec.code is not None:  # the job's packed code, fetched on this node: no shared disk needed
            from mlhub.jobs.code import fetch_code

            self.working_dir = str(fetch_code(backends, self.ctx.principal, spec.code))

    def restore(self) -> None:
        """Load the last checkpoint, if Ray Train has one for this run (after a restart or a retry)."""
        import ray.train

        if self.rank == 0:  # so that the orchestrator frees the group's reservation whatever happens
            from mlhub.jobs.placement import record_current_placement_group

            record_current_placement_group(self.ctx.settings.ray_storage_path, self.ctx.tenant_id, self.ctx.job_id)

        self.resume = self._restore(ray.train.get_checkpoint())

    def prepare_model(self, model):
        if self.spec.framework != "torch":
            return model
        import ray.train.torch

        if self.spec.strategy == "fsdp" and self.world_size > 1:
            from mlhub.training.torch_adapter import shard_model

            return shard_model(model.to(self.device))
        return ray.train.torch.prepare_model(model, parallel_strategy="ddp" if self.world_size > 1 else None)

    @property
    def device(self) -> str:
        if self._use_gpu:
            import ray.train.torch

            return str(ray.train.torch.get_device())
        return "cpu"

    def _restore(self, checkpoint) -> dict[str, Any] | None:
        found = []
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                found.append(_read_checkpoint(Path(folder)))
        # Ray Train registers reports with its controller every couple of seconds, so after a hard kill its
        # snapshot can trail the checkpoints already written; on a folder we can list, take the newest
        # complete one (every ranks sees the same folder, so they all pick the same)
        if self._run_dir is not None and self._run_dir.is_dir():
            found += [_read_checkpoint(d) for d in sorted(self._run_dir.glob("checkpoint_*"))]
        found = [f for f in found if f is not None]
        if not found:
            if self._initial is None:
                return None
            epoch = int(self._initial["epoch"])
            self.log(f"starting from the given state after epoch {epoch} (of {self.spec.epochs})")
            return {"epoch": epoch, "files": dict(self._initial["files"])}
        epoch, files = max(found, key=lambda f: f[0])
        self.log(f"resuming from the checkpoint after epoch {epoch} (of {self.spec.epochs})")
        if self.rank == 0:
            self.ctx.progress({"resumed_from_epoch": epoch, "epochs": self.spec.epochs}, force=True)
        return {"epoch": epoch, "files": files}

    def report(self, epoch, metrics, *, state=None, final_model=None, samples=None) -> None:
        import ray.train

        metrics = {k: float(v) for k, v in metrics.items()}
        if self.rank == 0:
            self._record(epoch, metrics, samples)
        checkpoint_now = self.rank == 0 and (final_model is not None or
                                             (state is not None and self.should_checkpoint(epoch)))
        if not checkpoint_now:
            ray.train.report({**metrics, "epoch": epoch + 1})
            return
        from ray.train import Checkpoint

        with tempfile.TemporaryDirectory(prefix="mlhub-ckpt-") as folder:
            files = dict(state or {})
            for name, data in files.items():
                (Path(folder) / name).write_bytes(data)
            digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
            (Path(folder) / STATE_META).write_text(json.dumps({"epoch": epoch + 1, "files": sorted(files),
                                                               "sha256": digests}))
            if final_model is not None:
                payload, fmt, info = final_model
                (Path(folder) / f"model.{fmt}").write_bytes(payload)
                (Path(folder) / MODEL_META).write_text(json.dumps({"model_format": fmt, "info": info}))
            ray.train.report({**metrics, "epoch": epoch + 1}, checkpoint=Checkpoint.from_directory(folder))

    def _record(self, epoch: int, metrics: dict[str, float], samples: int | None) -> None:
        from mlhub.store import runs as runs_repo
        from mlhub.store.runs import MetricPoint

        if self._first_epoch is None:
            self._first_epoch = epoch
        done = epoch + 1
        elapsed = time.perf_counter() - self._started
        epochs_here = done - self._first_epoch
        rate = elapsed / epochs_here if epochs_here else 0.0
        eta = rate * (self.spec.epochs - done)
        progress = {"epoch": done, "epochs": self.spec.epochs, "metrics": metrics, "workers": self.world_size,
                    "eta_s": round(eta, 1)}
        if samples and elapsed > 0:
            progress["rows_per_s"] = round(samples * self.world_size * epochs_here / elapsed, 1)
        self.ctx.progress(progress, force=True)
        with self.ctx.backends.db.tenant_scope(self.ctx.tenant_id) as s:
            runs_repo.log_metrics(s, self.ctx.tenant_id, self.run_id,
                                  [MetricPoint(k, v, epoch) for k, v in metrics.items()])
        print(f"epoch {done}/{self.spec.epochs} " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)


def _read_checkpoint(folder: Path) -> tuple[int, dict[str, bytes]] | None:
    """(epoch, state files) of an mlhub checkpoint folder, or None when it is incomplete or not ours."""
    try:
        meta = json.loads((folder / STATE_META).read_text())
        files = {name: (folder / name).read_bytes() for name in meta["files"]}
        digests = meta.get("sha256") or {}
        if any(hashlib.sha256(data).hexdigest() != digests.get(name) for name, data in files.items()):
            return None  # copied only in part when its writer was killed
        return int(meta["epoch"]), files
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ray_worker_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` of every mlhub Ray Train job: a session, the spec's loop, output captured."""
    from mlhub.jobs.capture import OutputCapture
    from mlhub.run_logging import job_run

    session = RayTrainSession(config)
    capture = OutputCapture(session.ctx.store_logs)
    # mlhub.start_run in the user's loop writes as the job's tenant, nested under the job's run
    with capture, job_run(session.ctx.backends, session.ctx.principal, session.run_id):
        session.restore()
        loop_for(session.spec, session.working_dir)(session)
    if pending := capture.take_pending():
        session.ctx.store_logs(pending)


def run_name(tenant_id: str, job_id: int) -> str:
    """Stable across a job's attempts, so that a retried attempt finds the last checkpoint."""
    return f"train-{tenant_id}-{job_id}"


def train_on_ray(ctx, spec: TrainingSpec, run_id: int, *, working_dir: str | None = None,
                 initial: dict[str, Any] | None = None) -> FinalModel:
    """Run the spec's loop on a Ray Train worker group (TorchTrainer or TensorflowTrainer) and return the final
    model from its last checkpoint. ``ctx`` is the job attempt's :class:`~mlhub.jobs.runner.AttemptContext`.
    ``initial`` (``{"epoch", "files"}``: e.g. the best PBT trial's state) is where the loop starts when the run
    has no checkpoint of its own yet."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    res = worker_resources(spec)
    per_worker: dict[str, float] = {"CPU": float(res.get("num_cpus", 1.0))}
    if res.get("num_gpus"):
        per_worker["GPU"] = float(res["num_gpus"])
    if res.get("memory_mb"):
        per_worker["memory"] = float(res["memory_mb"]) * 1024 * 1024
    per_worker.update({k: float(v) for k, v in (res.get("custom") or {}).items()})
    config = {"settings": ctx.settings.to_document(), "spec": spec.model_dump(mode="json", exclude_none=True),
              "job": {"id": ctx.job_id, "tenant_id": ctx.tenant_id, "attempt": ctx.attempt, "name": ctx.name},
              "run_id": run_id, "working_dir": working_dir, "initial": initial}
    # mlhub captures the workers' stdout/stderr itself; Ray Train's print patch would log every line twice
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    if spec.framework == "tensorflow":
        env["TF_USE_LEGACY_KERAS"] = "1"
    # Ray Train's controller takes one report from each worker per poll (every 2 s by default) and a worker's
    # next report blocks until then, so every epoch shorter than that waited for it (2.7x a plain loop's epoch
    # time in benchmarks/train_overhead.py). Ray Train passes this driver setting on to its controller; an
    # operator's own value wins.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", CONTROLLER_POLL_S)
    name = run_name(ctx.tenant_id, ctx.job_id)
    storage = ctx.settings.ray_storage_path
    config["run_dir"] = None if "://" in storage else str(Path(storage) / name)
    run_config = RunConfig(
        name=name, storage_path=ctx.settings.ray_storage_path,
        failure_config=FailureConfig(max_failures=spec.max_worker_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=2),
        worker_runtime_env={"env_vars": env},
    )
    scaling = ScalingConfig(num_workers=spec.num_workers, use_gpu=spec.use_gpu, resources_per_worker=per_worker)
    trainer_cls = _trainer_class(spec.framework)
    strategy = f", strategy {spec.strategy}" if spec.framework == "torch" else ""
    print(f"Ray Train: {trainer_cls.__name__}, {spec.num_workers} worker(s) of {per_worker}{strategy}, "
          f"checkpoints in {ctx.settings.ray_storage_path}/{name}", flush=True)
    trainer = trainer_cls(ray_worker_loop, train_loop_config=config, scaling_config=scaling, run_config=run_config)
    try:
        result = trainer.fit()
    except Exception as exc:  # noqa: BLE001 - Ray Train wraps the workers' error; surface the user's part
        raise _training_error(exc) from None
    final = _final_model_of(result.checkpoint, Path(config["run_dir"]) if config["run_dir"] else None)
    _remove_storage(ctx.settings.ray_storage_path, name)
    return final


def _final_model_of(checkpoint, run_dir: Path | None) -> FinalModel:
    """The final model of a finished run: in its last reported checkpoint, or, when an attempt resumed from the
    last epoch's checkpoint (written just before a preemption or a kill) and so had no epoch left to report,
    in that checkpoint, which Ray Train's own snapshot may not have registered."""
    try:
        return _final_model(checkpoint)
    except PermanentJobFailure:
        if run_dir is None or not run_dir.is_dir():
            raise
        import ray.train

        for folder in sorted(run_dir.glob("checkpoint_*"), reverse=True):
            if (folder / MODEL_META).exists() and _read_checkpoint(folder) is not None:
                return _final_model(ray.train.Checkpoint.from_directory(str(folder)))
        raise


def _trainer_class(framework: str):
    if framework == "torch":
        from ray.train.torch import TorchTrainer

        return TorchTrainer
    if framework == "tensorflow":
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # every process that may touch Keras: tf-keras
        from ray.train.tensorflow import TensorflowTrainer

        return TensorflowTrainer
    raise ValidationError(f"framework {framework} does not run on Ray Train")


def _training_error(exc: Exception) -> Exception:
    """A worker's ValidationError (bad data, bad params) is permanent; anything else stays retryable."""
    text = str(exc)
    for marker in ("ValidationError", "PermanentJobFailure"):
        if marker in text:
            tail = text[text.rfind(marker):].splitlines()[0]
            return PermanentJobFailure(f"training failed: {tail[:500]}")
    return RuntimeError(f"Ray Train failed: {text[-2000:]}")


def _final_model(checkpoint) -> FinalModel:
    if checkpoint is None:
        raise PermanentJobFailure("training finished without a checkpoint holding the final model")
    with checkpoint.as_directory() as folder:
        meta_path = Path(folder) / MODEL_META
        if not meta_path.exists():
            raise PermanentJobFailure("the training loop never passed final_model= to session.report()")
        meta = json.loads(meta_path.read_text())
        payload = (Path(folder) / f"model.{meta['model_format']}").read_bytes()
    return FinalModel(payload, meta["model_format"], meta.get("info", {}))


def _remove_storage(storage_path: str, name: str) -> None:
    """Checkpoints of a finished job are no longer needed (its model is in the artifact store)."""
    if "://" in storage_path:
        return  # object stores keep their own lifecycle rules
    shutil.rmtree(Path(storage_path) / name, ignore_errors=True)

"""One attempt of one job, executed wherever Ray puts it (a task on any node), without Ray-specific code.

:func:`execute` returns an *outcome* document and never raises for a job's own failure:
``{"status": "succeeded", "result": {...}}`` or ``{"status": "failed", "permanent": bool, "error": str}``.
Errors that retrying cannot fix (invalid input found at run time, a model that cannot be loaded safely,
:class:`~mlhub.errors.PermanentJobFailure`) are permanent; anything else is retried by the orchestrator.

Side effects are idempotent on (job id, attempt): the run is unique per attempt, artifacts are
content-addressed, evaluations and batch outputs of a job replace their earlier attempt's. The model
version itself is registered by the orchestrator when it records the outcome, fenced by the attempt.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlhub.audit import Principal
from mlhub.backends import Backends
from mlhub.config import Settings
from mlhub.errors import MlhubError, ModelLoadError, NotFoundError, PermanentJobFailure, ValidationError
from mlhub.jobs import store
from mlhub.jobs.capture import OutputCapture

PERMANENT = (ValidationError, NotFoundError, ModelLoadError, PermanentJobFailure)
PROGRESS_INTERVAL_S = 0.5

_BACKENDS: dict[str, Backends] = {}


def backends_for(settings_doc: dict[str, Any]) -> Backends:
    """One set of backends (and connection pools) per worker process and settings, reused across tasks."""
    key = hashlib.sha256(json.dumps(settings_doc, sort_keys=True, default=str).encode()).hexdigest()
    if key not in _BACKENDS:
        _BACKENDS[key] = Backends(Settings(**settings_doc))
    return _BACKENDS[key]


@dataclass
class AttemptContext:
    backends: Backends
    job_id: int
    tenant_id: str
    attempt: int
    name: str
    worker: str = "driver"
    _last_progress: float = field(default=0.0, repr=False)

    @property
    def settings(self) -> Settings:
        return self.backends.settings

    @property
    def principal(self) -> Principal:
        return Principal(tenant_id=self.tenant_id, actor=f"job:{self.job_id}", source="orchestrator")

    def progress(self, data: dict[str, Any], *, force: bool = False) -> None:
        """Record progress (epoch, metrics, throughput, ETA); throttled to a few writes a second."""
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        from sqlalchemy import update

        from mlhub.store.models import Job

        with self.backends.db.tenant_scope(self.tenant_id) as s:
            s.execute(update(Job).where(Job.id == self.job_id, Job.attempt == self.attempt).values(progress=data))
            store.add_event(s, self.tenant_id, self.job_id, self.attempt, "progress", data=data)

    def store_logs(self, chunks: list[tuple[str, int, str]]) -> None:
        with self.backends.db.tenant_scope(self.tenant_id) as s:
            store.append_logs(s, self.tenant_id, self.job_id, self.attempt, self.worker, chunks)


Handler = Callable[[AttemptContext, Any], dict[str, Any]]


def _handlers() -> dict[str, Handler]:
    from mlhub.jobs import handlers

    return {
        "training": handlers.run_training,
        "evaluation": handlers.run_evaluation,
        "batch_prediction": handlers.run_batch_prediction,
        "diagnostic": handlers.run_diagnostic,
        "hpo": handlers.run_hpo,
        "drift_check": handlers.run_drift_check,
    }


def execute(settings_doc: dict[str, Any], job: dict[str, Any], *, output: Any = None,
            backends: Backends | None = None) -> dict[str, Any]:
    """Run one attempt of ``job`` (a :class:`~mlhub.jobs.store.ClaimedJob` as a dict). The outcome carries
    the attempt's last log chunks under ``logs`` and how long the attempt ran under ``duration_s``.

    ``output``: a process-wide capture (:class:`mlhub.jobs.executor.ProcessCapture`) when the attempt runs in
    an executor among others; by default the attempt captures its own output (:class:`OutputCapture`)."""
    started = time.perf_counter()
    ctx = AttemptContext(backends or backends_for(settings_doc), job["id"], job["tenant_id"], job["attempt"],
                         job["name"])
    capture = OutputCapture(ctx.store_logs) if output is None else output.attempt(ctx.store_logs)
    with capture:
        outcome = _run(ctx, job)
    outcome["logs"] = capture.take_pending()
    outcome["duration_s"] = time.perf_counter() - started
    return outcome


def _run(ctx: AttemptContext, job: dict[str, Any]) -> dict[str, Any]:
    from mlhub.domain.specs import parse_spec

    started = time.perf_counter()
    try:
        spec = parse_spec(job["spec"])
        print(f"[mlhub] job {ctx.job_id} attempt {ctx.attempt}: {spec.kind} {spec.name!r} started "
              f"(pid {os.getpid()})", flush=True)
        res = job.get("resources") or {}
        if res.get("granted"):
            print(f"[mlhub] the cluster has room for {res['granted']} of the {res.get('asked')} "
                  f"{res.get('scales')} asked for (other Ray work, such as Serve replicas, holds the rest): "
                  f"this attempt runs with {res['granted']}", flush=True)
        result = _handlers()[spec.kind](ctx, spec)
        print(f"[mlhub] job {ctx.job_id} attempt {ctx.attempt} succeeded in "
              f"{time.perf_counter() - started:.2f} s", flush=True)
        return {"status": "succeeded", "result": result}
    except PERMANENT as exc:
        traceback.print_exc()
        return {"status": "failed", "permanent": True, "error": exc.message}
    except MlhubError as exc:
        traceback.print_exc()
        return {"status": "failed", "permanent": False, "error": exc.message}
    except Exception as exc:  # noqa: BLE001 - a job's own failure is an outcome, never a crash of the runner
        traceback.print_exc()
        return {"status": "failed", "permanent": False, "error": f"{type(exc).__name__}: {exc}"}

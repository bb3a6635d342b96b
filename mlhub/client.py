"""The Python API (what the CLI uses, and what notebooks use)::

    from mlhub.client import Hub
    hub = Hub()                                  # embedded defaults, or MLHUB_* settings
    job = hub.train({"name": "iris", "framework": "sklearn", "model": "random_forest",
                     "dataset": {"source": "sklearn", "name": "iris"}})
    job.wait(timeout=300)                        # JobInfo; raises JobFailed if it failed
    hub.list_models()

Submitting and reading only touch the database: they work (and answer fast) while Ray is down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlhub.audit import Principal
from mlhub.backends import Backends
from mlhub.config import Settings, load_settings
from mlhub.domain.enums import JobState
from mlhub.domain.specs import load_spec_file, parse_spec
from mlhub.errors import AuthenticationError, JobFailed, ValidationError
from mlhub.jobs.service import JobService, ScheduleInfo
from mlhub.jobs.store import JobInfo
from mlhub.registry.api import Models
from mlhub.registry.service import ModelSummary, RegistryService
from mlhub.tracking import TrackingService


def resolve_principal(backends: Backends, api_key: str | None, *, source: str = "python") -> Principal:
    """The tenant acting: the given key, else MLHUB_API_KEY, else (embedded default) the credentials file,
    creating tenant ``default`` on the very first run."""
    from mlhub.tenancy import TenantService, bootstrap_default_tenant, read_credentials

    settings = backends.settings
    service = TenantService(backends.db)
    key = api_key or (settings.api_key.get_secret_value() if settings.api_key is not None else None)
    if key is None:
        key = read_credentials(settings.credentials_path)
    if key is None:
        if not settings.is_embedded_database:
            raise AuthenticationError(
                "no API key: pass --api-key or set MLHUB_API_KEY (create one with `mlhub tenants create`)")
        key = bootstrap_default_tenant(service, settings.credentials_path)
    return service.authenticate(key, source=source)


class JobHandle:
    def __init__(self, hub: Hub, job_id: int) -> None:
        self.hub = hub
        self.id = job_id

    def __repr__(self) -> str:
        return f"JobHandle({self.id})"

    def status(self) -> JobInfo:
        return self.hub.jobs.get(self.hub.principal, self.id)

    def cancel(self) -> JobInfo:
        return self.hub.jobs.cancel(self.hub.principal, self.id)

    def logs(self, attempt: int | None = None) -> str:
        return "".join(c.text for c in self.hub.jobs.logs(self.hub.principal, self.id, attempt=attempt))

    def wait(self, timeout: float | None = None, *, poll_s: float = 0.2, raise_on_failure: bool = True,
             on_update: Callable[[JobInfo], None] | None = None) -> JobInfo:
        """Block until the job ends (or ``timeout`` seconds pass: TimeoutError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.status()
            if on_update is not None:
                on_update(info)
            if JobState(info.state).is_terminal:
                if raise_on_failure and info.state != JobState.SUCCEEDED:
                    raise JobFailed(f"job {self.id} ended {info.state}: {info.error or 'no error recorded'}",
                                    details={"job_id": self.id, "state": info.state})
                return info
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still {info.state} after {timeout} s")
            time.sleep(poll_s)


class Hub:
    def __init__(self, settings: Settings | None = None, *, api_key: str | None = None,
                 source: str = "python") -> None:
        self.settings = settings or load_settings()
        self.backends = Backends(self.settings)
        self.backends.ensure_schema()
        self.principal = resolve_principal(self.backends, api_key, source=source)
        self.jobs = JobService(self.backends.db, queue_resources=self.settings.queue_resources)
        self.registry = RegistryService(self.backends.db, cache=self.backends.cache,
                                        cache_ttl_s=self.settings.cache_ttl_s)
        self.models = Models(self.registry, self.principal, self.backends.artifacts)
        self.runs = TrackingService(self.backends.db)  # hub.runs.list_runs(hub.principal, filter="metrics.f1 > 0.9")

    def close(self) -> None:
        self.backends.close()

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- jobs ---------------------------------------------------------------------------------------

    def submit(self, spec: Any, *, idempotency_key: str | None = None,
               working_dir: str | Path | None = None) -> JobHandle | ScheduleInfo:
        """Submit a spec: a parsed spec, a dict, or a path to a YAML/JSON file. A training spec naming custom
        code (``entrypoint``, or a torch ``module:factory`` model) gets ``working_dir`` (default: the current
        directory) packed and uploaded with it (:mod:`mlhub.jobs.code`)."""
        from mlhub.jobs.code import attach_code

        parsed = attach_code(self.backends, self.principal, _as_spec(spec), working_dir)
        out = self.jobs.submit(self.principal, parsed, idempotency_key=idempotency_key)
        return out if isinstance(out, ScheduleInfo) else JobHandle(self, out.id)

    def submit_many(self, specs: list[Any]) -> list[JobHandle]:
        from mlhub.jobs.code import attach_code

        packs: dict = {}  # the current directory is packed once for all the specs that need it
        ids = self.jobs.submit_many(self.principal, [attach_code(self.backends, self.principal, _as_spec(s),
                                                                 packs=packs) for s in specs])
        return [JobHandle(self, i) for i in ids]

    def train(self, spec: Any, **kw) -> JobHandle:
        return self._submit_kind(spec, "training", **kw)

    def evaluate(self, spec: Any, **kw) -> JobHandle:
        return self._submit_kind(spec, "evaluation", **kw)

    def predict(self, spec: Any, **kw) -> JobHandle:
        return self._submit_kind(spec, "batch_prediction", **kw)

    def tune(self, spec: Any, **kw) -> JobHandle:
        return self._submit_kind(spec, "hpo", **kw)

    def _submit_kind(self, spec: Any, kind: str, **kw) -> JobHandle:
        if isinstance(spec, dict):
            spec = {"kind": kind, **spec}
        parsed = _as_spec(spec)
        if parsed.kind != kind:
            raise ValidationError(f"expected a {kind} spec, got {parsed.kind}")
        return self.submit(parsed, **kw)

    def trials(self, job_id: int) -> list:
        """The trials of an HPO job (params, last metrics, epochs, status), updated while it runs."""
        from mlhub.hpo.trials import list_trials

        return list_trials(self.backends.db, self.principal.tenant_id, job_id)

    def job(self, job_id: int) -> JobHandle:
        self.jobs.get(self.principal, job_id)  # NotFoundError for another tenant's job
        return JobHandle(self, job_id)

    def list_jobs(self, **filters) -> list[JobInfo]:
        return self.jobs.list(self.principal, **filters)

    # --- models -------------------------------------------------------------------------------------

    def list_models(self) -> list[ModelSummary]:
        return self.registry.list_models(self.principal)

    def load_model(self, ref: str):
        """``name``, ``name@alias`` or ``name/VERSION`` -> (version info, raw model with .predict). Prefer
        ``hub.models.load(ref)``: a :class:`~mlhub.registry.api.ReadyModel` that checks inputs against the schema."""
        return self.registry.load(self.principal, ref, self.backends.artifacts)


def _as_spec(spec: Any):
    if isinstance(spec, str | Path):
        return load_spec_file(spec)
    if isinstance(spec, dict):
        return parse_spec(spec)
    return spec

"""Tracking from any Python process: ``mlhub.start_run`` and the run it returns.

::

    import mlhub

    with mlhub.start_run("digits-mlp", experiment="digits", params={"lr": 0.01}) as run:
        for step in range(1000):
            loss = train_step()
            run.log_metrics({"loss": loss, "lr": sched.lr}, step=step)   # buffered, never waits on the database
        run.set_tag("team", "vision")
        run.log_artifact("confusion.png")

Params, tags and artifacts are written at the call (they are few). Metric points are checked at the call (a bad
key or a NaN raises :class:`~mlhub.errors.ValidationError` right there), then buffered and written in batches by
one background thread per run: when ``BATCH_SIZE`` points are waiting or every ``FLUSH_INTERVAL_S`` seconds,
at :meth:`Run.flush` and when the run ends. The buffer is bounded (``MAX_PENDING``): a loop that logs faster than
the database takes the points waits for room instead of growing without limit.

A run ends ``finished`` when its ``with`` block exits normally, ``failed`` when the block raises (the points
logged until then are still written), ``killed`` on KeyboardInterrupt. A run that is never ended is ended at
interpreter exit (``failed`` if the program died of an uncaught exception, else ``finished``).

Nesting: a run started while another is active (in this thread or task: a context variable) is its child
(``parent_run_id``), unless ``nested=False``. Inside an mlhub job whose runner exposes the attempt's run with
:func:`job_run`, a top-level ``start_run`` is a child of the job's run and writes as the job's tenant, so a
job's runs and a script's runs are the same runs.

The tenant: ``api_key``, else ``MLHUB_API_KEY``, else the embedded default's credentials file
(see :func:`mlhub.client.resolve_principal`). Nested runs write where their parent writes.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import math
import mimetypes
import numbers
import sys
import threading
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlhub.domain.enums import RunStatus
from mlhub.domain.run_filter import KEY_RE
from mlhub.errors import MlhubError, ValidationError

if TYPE_CHECKING:
    from mlhub.artifact_records import ArtifactRecord
    from mlhub.audit import Principal
    from mlhub.backends import Backends
    from mlhub.config import Settings

__all__ = ["Run", "active_run", "job_run", "release_connections", "start_run"]

log = logging.getLogger("mlhub.tracking")

NAME_MAX = 128
PARAM_VALUE_MAX = 8000
_ENDED = frozenset({RunStatus.FINISHED.value, RunStatus.FAILED.value, RunStatus.KILLED.value})


@dataclass(frozen=True)
class _Target:
    """Where runs write: a process's backends and the tenant acting."""

    backends: Backends
    principal: Principal


_ACTIVE: ContextVar[tuple[Run, ...]] = ContextVar("mlhub_active_runs", default=())
_JOB_RUN: ContextVar[tuple[_Target, int] | None] = ContextVar("mlhub_job_run", default=None)
_TARGETS: dict[str, _Target] = {}
_TARGETS_LOCK = threading.Lock()
_OPEN: weakref.WeakSet[Run] = weakref.WeakSet()


# --- public entry points ----------------------------------------------------------------------------------


def start_run(name: str | None = None, *, experiment: str = "default", tags: Mapping[str, Any] | None = None,
              params: Mapping[str, Any] | None = None, nested: bool = True, settings: Settings | None = None,
              api_key: str | None = None) -> Run:
    """Create a run (status ``running``) and return it; use it as a context manager to end it.

    ``name``: at most 128 characters (default: the script's name and the UTC time). ``nested``: when True (the
    default) a run started while another is active, or inside a job (:func:`job_run`), becomes its child
    (when both write to the same tenant and database); False starts a top-level run. ``settings``/``api_key``:
    where to write and as whom; without them a run writes where the active run (else the job's run) writes,
    else as the ``MLHUB_*`` environment says.
    """
    name = _default_name() if name is None else name
    _check_label(name, "run name")
    _check_label(experiment, "experiment")
    clean_params = _stringify(params or {}, "param")
    clean_tags = _stringify(tags or {}, "tag")
    active, job = active_run(), _JOB_RUN.get()
    # the enclosing run: the active one, else the job's (its target, its id)
    enclosing = (active._target, active.id) if active is not None else job
    if settings is not None or api_key is not None:
        target = _target_for(settings, api_key)
    elif enclosing is not None:
        target = enclosing[0]
    else:
        target = _target_for(None, None)
    parent_run_id = None
    if nested and enclosing is not None and _same_place(enclosing[0], target):
        parent_run_id = enclosing[1]  # never across tenants or databases
    run = Run._create(target, name, experiment, parent_run_id, clean_params, clean_tags)
    _ACTIVE.set((*_ACTIVE.get(), run))
    _OPEN.add(run)
    return run


def active_run() -> Run | None:
    """The innermost run started (and not yet ended) in this thread or task, if any."""
    stack = _ACTIVE.get()
    return stack[-1] if stack else None


@contextmanager
def job_run(backends: Backends, principal: Principal, run_id: int) -> Iterator[None]:
    """For the job runner: while inside, ``start_run`` writes as the job's tenant, nested under ``run_id``."""
    token = _JOB_RUN.set((_Target(backends, principal), run_id))
    try:
        yield
    finally:
        _JOB_RUN.reset(token)


def release_connections() -> None:
    """Close the connection pools that ``start_run`` opened in this process (the next run opens them again).
    Runs still open keep theirs."""
    with _TARGETS_LOCK:
        in_use = {id(r._target) for r in list(_OPEN)}
        for key, target in list(_TARGETS.items()):
            if id(target) not in in_use:
                target.backends.close()
                del _TARGETS[key]


# --- the run ----------------------------------------------------------------------------------------------


class Run:
    """A run being tracked. Made by :func:`start_run`; ``with`` ends it, else call :meth:`end`."""

    def __init__(self, target: _Target, run_id: int, name: str, experiment: str, parent_run_id: int | None):
        self._target = target
        self.id = run_id
        self.name = name
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.status = RunStatus.RUNNING.value
        self._next_step: dict[str, int] = {}
        self._checked_keys: set[str] = set()
        self._end_lock = threading.Lock()
        self._metrics = _MetricWriter(target, run_id)

    @classmethod
    def _create(cls, target: _Target, name: str, experiment: str, parent_run_id: int | None,
                params: dict[str, str], tags: dict[str, str]) -> Run:
        from mlhub.store import runs as runs_repo

        tenant = target.principal.tenant_id
        with target.backends.db.tenant_scope(tenant) as s:
            if parent_run_id is not None:
                runs_repo.get_run(s, tenant, parent_run_id)  # exists, and is this tenant's
            row = runs_repo.create_run(s, tenant, name, experiment=experiment, parent_run_id=parent_run_id)
            row.source = (sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c") else "python")[:256]
            runs_repo.add_params(s, tenant, row.id, params)
            runs_repo.set_tags(s, tenant, row.id, tags)
            run_id = row.id
        run = cls(target, run_id, name, experiment, parent_run_id)
        return run

    def __repr__(self) -> str:
        return f"Run(id={self.id}, name={self.name!r}, status={self.status!r})"

    @property
    def tenant_id(self) -> str:
        return self._target.principal.tenant_id

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end(RunStatus.FINISHED)
            return
        status = RunStatus.KILLED if issubclass(exc_type, KeyboardInterrupt) else RunStatus.FAILED
        try:
            self.end(status)
        except Exception:  # noqa: BLE001 - the block's own exception is the one the caller must see
            log.exception("run %s: could not record its end after %s", self.id, exc_type.__name__)

    # --- params and tags: few, written at the call ------------------------------------------------------

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record params. Each is set once: the same value again is fine, a different one a ValidationError."""
        clean = _stringify(params, "param")
        if clean:  # the store refuses a changed value (one rule, checked where the params are)
            self._write(lambda s, runs_repo: runs_repo.add_params(s, self.tenant_id, self.id, clean))

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags; a tag set again takes the new value."""
        clean = _stringify(tags, "tag")
        if clean:
            self._write(lambda s, runs_repo: runs_repo.set_tags(s, self.tenant_id, self.id, clean))

    # --- metrics: the hot path ---------------------------------------------------------------------------

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Add one point to ``key``'s series. ``step`` defaults to the key's next step (0, 1, 2 ...)."""
        self.log_metrics({key: value}, step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Add one point per key, all at ``step`` (default: each key's next step). Checked now, written later."""
        if self.status != RunStatus.RUNNING.value:
            raise ValidationError(f"run {self.id} has ended ({self.status}): start a new run to log metrics")
        if step is not None and (isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0):
            raise ValidationError(f"step must be a non-negative integer, got {step!r}")
        if not isinstance(metrics, Mapping):
            raise ValidationError(f"metrics must be a mapping of key to number, got {type(metrics).__name__}")
        now = datetime.now(UTC)
        rows = []
        nxt = self._next_step
        for key, value in metrics.items():
            if key not in self._checked_keys:
                _check_key(key, "metric")
                self._checked_keys.add(key)
            if (value.__class__ is not float and (isinstance(value, bool) or not isinstance(value, numbers.Real))) \
                    or not math.isfinite(value):
                raise ValidationError(f"metric {key!r}: value must be a finite number, got {value!r}")
            rows.append((self.id, key, nxt.get(key, 0) if step is None else int(step), float(value), now))
        for row in rows:  # only once every point passed
            if row[2] >= nxt.get(row[1], 0):
                nxt[row[1]] = row[2] + 1
        self._metrics.add(rows)

    def flush(self) -> None:
        """Write every buffered metric point now (raises the database's error if it cannot)."""
        self._metrics.flush()

    # --- artifacts --------------------------------------------------------------------------------------

    def log_artifact(self, data: str | Path | bytes, name: str | None = None, *,
                     media_type: str | None = None) -> ArtifactRecord:
        """Store a file (a path) or ``bytes`` in the artifact store, recorded as this run's artifact.

        ``name`` is a label (default: the file's name; required for bytes); the media type is guessed from it.
        """
        from mlhub.artifact_records import ArtifactService

        if isinstance(data, bytes | bytearray | memoryview):
            if not name:
                raise ValidationError("log_artifact(bytes) needs name=")
            payload: Any = bytes(data)
        elif isinstance(data, str | Path):
            path = Path(data).expanduser()
            if not path.is_file():
                raise ValidationError(f"cannot log artifact {str(data)!r}: not a file")
            name = name or path.name
            payload = None
        else:
            raise ValidationError(f"log_artifact takes a file path or bytes, got {type(data).__name__}")
        media_type = media_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        service = ArtifactService(self._target.backends.db, self._target.backends.artifacts)
        if payload is None:
            with path.open("rb") as fh:
                record = service.upload(self._target.principal, fh, media_type=media_type, name=name,
                                        run_id=self.id)
        else:
            record = service.upload(self._target.principal, payload, media_type=media_type, name=name,
                                    run_id=self.id)
        # linked under this run also when the same bytes were stored before (by another run, or none)
        self._write(lambda s, repo: repo.attach_artifact(s, self.tenant_id, record.id, self.id, name))
        return record

    # --- ending -----------------------------------------------------------------------------------------

    def end(self, status: str | RunStatus = RunStatus.FINISHED) -> None:
        """Write the buffered points and mark the run ended (``finished``, ``failed`` or ``killed``).

        Ending twice is a no-op. If the points cannot be written the run is still marked ended, then the
        write's error is raised."""
        status = str(status.value if isinstance(status, RunStatus) else status)
        if status not in _ENDED:
            raise ValidationError(f"a run ends finished, failed or killed, not {status!r}")
        with self._end_lock:
            if self.status != RunStatus.RUNNING.value:
                return
            self.status = status
            error: BaseException | None = None
            try:
                self._metrics.close()
            except MlhubError as exc:
                error = exc
            try:
                self._write(lambda s, repo: repo.end_run(s, self.tenant_id, self.id, status))
            finally:
                _ACTIVE.set(tuple(r for r in _ACTIVE.get() if r is not self))
                _OPEN.discard(self)
            if error is not None:
                raise error

    def _write(self, fn) -> None:
        from mlhub.store import runs as runs_repo

        with self._target.backends.db.tenant_scope(self.tenant_id) as s:
            fn(s, runs_repo)


# --- the buffered metric writer ---------------------------------------------------------------------------


class _MetricWriter:
    """Points waiting to be written, and the daemon thread that writes them in batches."""

    BATCH_SIZE = 5_000        # wake the writer when this many points wait
    MAX_PENDING = 100_000     # the logging thread waits for room beyond this
    FLUSH_INTERVAL_S = 1.0    # and write at least this often
    MAX_WRITE = 50_000        # points per INSERT round

    def __init__(self, target: _Target, run_id: int) -> None:
        self._target = target
        self._run_id = run_id
        self._pending: deque[tuple] = deque()
        self._write_lock = threading.Lock()   # one writer at a time keeps the points in order
        self._room = threading.Condition()
        self._wake = threading.Event()
        self._closing = False
        self._error: MlhubError | None = None
        self.written = 0
        self._thread: threading.Thread | None = None

    def add(self, rows: list[tuple]) -> None:
        if self._thread is None:
            with self._room:  # two logging threads must not start two writers
                if self._thread is None:
                    thread = threading.Thread(target=self._loop, name=f"mlhub-metrics-run-{self._run_id}",
                                              daemon=True)
                    thread.start()
                    self._thread = thread
        pending = self._pending
        if self._error is not None and len(pending) >= self.MAX_PENDING:
            raise MlhubError(f"run {self._run_id}: metric points cannot be written "
                             f"({len(pending):,} waiting): {self._error.message}")
        pending.extend(rows)
        n = len(pending)
        if n >= self.BATCH_SIZE:
            self._wake.set()
            if n >= self.MAX_PENDING:
                with self._room:
                    while len(pending) >= self.MAX_PENDING and self._error is None and self._thread.is_alive():
                        self._wake.set()
                        self._room.wait(0.1)

    def _loop(self) -> None:
        while not self._closing:
            self._wake.wait(self.FLUSH_INTERVAL_S)
            self._wake.clear()
            try:
                self._drain()
            except MlhubError:
                pass  # kept in self._error and the points kept; retried on the next round
            except Exception:  # noqa: BLE001 - the thread must outlive any one bad round
                log.exception("run %s: writing metric points failed", self._run_id)

    def _drain(self) -> None:
        """Write the points waiting now (not those logged meanwhile: they wait for the next round, so a busy
        loop gets few large batches rather than a stream of small ones)."""
        with self._write_lock:
            pending = self._pending
            left = len(pending)
            while left > 0:
                batch = [pending.popleft() for _ in range(min(left, self.MAX_WRITE))]
                left -= len(batch)
                try:
                    self._insert(batch)
                except Exception as exc:
                    pending.extendleft(reversed(batch))
                    self._error = exc if isinstance(exc, MlhubError) else MlhubError(str(exc))
                    with self._room:
                        self._room.notify_all()
                    raise self._error from exc
                self._error = None
                self.written += len(batch)
                with self._room:
                    self._room.notify_all()

    def _insert(self, batch: list[tuple]) -> None:
        from mlhub.store import runs as runs_repo

        tenant = self._target.principal.tenant_id
        with self._target.backends.db.tenant_scope(tenant) as s:
            runs_repo.insert_metric_rows(s, tenant, batch)

    def flush(self) -> None:
        self._drain()

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        self._drain()


# --- helpers ----------------------------------------------------------------------------------------------


def _target_for(settings: Settings | None, api_key: str | None) -> _Target:
    """One set of backends (and connection pool) per process, settings and key, reused by every run."""
    from mlhub.backends import Backends
    from mlhub.client import resolve_principal
    from mlhub.config import load_settings

    settings = settings or load_settings()
    doc = json.dumps(settings.to_document(), sort_keys=True, default=str) + "\0" + (api_key or "")
    key = hashlib.sha256(doc.encode()).hexdigest()
    with _TARGETS_LOCK:
        target = _TARGETS.get(key)
        if target is None:
            backends = Backends(settings)
            try:
                backends.ensure_schema()
                principal = resolve_principal(backends, api_key, source="python")
            except BaseException:
                backends.close()
                raise
            target = _TARGETS[key] = _Target(backends, principal)
    return target


def _same_place(a: _Target, b: _Target) -> bool:
    return a.principal.tenant_id == b.principal.tenant_id and a.backends.db.url == b.backends.db.url


def _check_key(key: Any, what: str) -> str:

    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise ValidationError(f"invalid {what} key {key!r}: 1-128 of letters, digits, space, '_', '.', '-', '/'")
    return key


def _check_label(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > NAME_MAX or "\x00" in value:
        raise ValidationError(f"invalid {what} {value!r}: 1-{NAME_MAX} characters")


def _stringify(items: Mapping[str, Any], what: str) -> dict[str, str]:
    if not isinstance(items, Mapping):
        raise ValidationError(f"{what}s must be a mapping of key to value, got {type(items).__name__}")
    out = {}
    for k, v in items.items():
        _check_key(k, what)
        text = v if isinstance(v, str) else str(v)
        if len(text) > PARAM_VALUE_MAX or "\x00" in text:
            raise ValidationError(f"{what} {k!r}: value must be at most {PARAM_VALUE_MAX} characters without NUL")
        out[k] = text
    return out


def _default_name() -> str:
    script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] not in ("", "-c") else "python"
    return f"{script or 'python'}-{datetime.now(UTC):%Y%m%d-%H%M%S}"[:NAME_MAX]


@atexit.register
def _end_open_runs() -> None:
    """A run nobody ended: its points are written and it is marked ended as the interpreter exits."""
    died = getattr(sys, "last_value", None) is not None
    for run in sorted(_OPEN, key=lambda r: r.id, reverse=True):  # children first
        try:
            run.end(RunStatus.FAILED if died else RunStatus.FINISHED)
        except Exception:  # noqa: BLE001 - at exit: report and go on to the next run
            log.exception("run %s: could not end it at exit", run.id)

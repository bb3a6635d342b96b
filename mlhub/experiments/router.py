"""What the inference server asks per request: does a running experiment route this model's traffic, and to
which variant?

:meth:`ExperimentRouter.route` costs no database round trip on the request path: experiment definitions (the
running experiment of each ``(tenant, model)``, or "none") are remembered for ``ttl_s`` seconds; the variant is a
pure function of the request key (:func:`mlhub.domain.routing.bucket`), so the same key gets the same variant in
every replica and after restarts. Assignments are appended to a bounded buffer that one background thread writes
every ``flush_s`` seconds: one multi-row INSERT per tenant, in that tenant's scope (PostgreSQL row-level security
applies), ``ON CONFLICT (experiment_id, request_key) DO NOTHING`` on PostgreSQL and SQLite alike, so the first
assignment of a key wins.

The same thread evaluates every canary the router has routed, at most every ``evaluate_s`` seconds each
(:meth:`ExperimentService.evaluate`: next step, completion or rollback), so a bad canary is rolled back while it
takes traffic even if nobody runs ``mlhub ab status``.

A database outage never reaches the request path: a failed refresh keeps serving the last known definition
(or none), a failed write keeps the assignments buffered (the newest ``max_buffer``; the rest are counted in
``dropped``), and both are logged.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from mlhub.audit import Principal
from mlhub.domain.enums import ExperimentStatus
from mlhub.domain.routing import bucket, choose
from mlhub.errors import ConflictError, MlhubError
from mlhub.experiments.rows import load_info, slices_of
from mlhub.store.database import Database
from mlhub.store.models import Experiment, ExperimentAssignment
from mlhub.store.types import utcnow

log = logging.getLogger(__name__)

__all__ = ["ExperimentRouter", "Route"]

MAX_KEY = 128


@dataclass(frozen=True)
class Route:
    experiment_id: int
    variant: str                              # name of the variant whose answer is returned
    version_id: int                           # model_versions.id to serve
    shadows: tuple[tuple[str, int], ...] = ()  # (variant name, version_id) that get a copy, answer discarded
    request_key: str = ""                     # the key used (generated when the request had none)


@dataclass(frozen=True)
class _Plan:
    """A running experiment as the router needs it."""

    experiment_id: int
    slices: tuple[tuple[str, float], ...]     # live variants and their shares now
    versions: dict[str, int]                  # variant name -> model_versions.id
    variant_ids: dict[str, int]               # variant name -> experiment_variants.id
    shadows: tuple[tuple[str, int], ...]
    canary: bool


class ExperimentRouter:
    def __init__(self, db: Database, *, ttl_s: float = 2.0, flush_s: float = 0.5, evaluate_s: float = 5.0,
                 max_buffer: int = 100_000, batch_rows: int = 5_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.ttl_s, self.flush_s, self.evaluate_s = ttl_s, flush_s, evaluate_s
        self.batch_rows = batch_rows
        self._clock = clock
        self._plans: dict[tuple[str, int], tuple[float, _Plan | None]] = {}
        self._buffer: deque[dict] = deque(maxlen=max_buffer)
        self._canaries: dict[tuple[str, int], float] = {}   # routed canaries -> when last evaluated
        self._refreshing: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self.written = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="mlhub-experiment-router", daemon=True)
        self._thread.start()

    # --- the request path -----------------------------------------------------------------------------

    def route(self, tenant_id: str, model_id: int, request_key: str | None) -> Route | None:
        """None when the model has no running experiment. Cached experiment definitions (``ttl_s``) so a request
        costs no DB round trip; the assignment is buffered and written in batches by the background thread.
        Thread-safe; never raises because of the database."""
        plan = self._plan(tenant_id, model_id)
        if plan is None:
            return None
        key = request_key if request_key else uuid.uuid4().hex
        if len(key) > MAX_KEY:  # assignments store 128 characters: longer keys are hashed down, stably
            key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        variant = choose(plan.slices, bucket(plan.experiment_id, key))
        row = {"tenant_id": tenant_id, "experiment_id": plan.experiment_id,
               "variant_id": plan.variant_ids[variant], "request_key": key, "created_at": utcnow()}
        with self._lock:
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1
            self._buffer.append(row)
            if plan.canary:
                self._canaries.setdefault((tenant_id, plan.experiment_id), 0.0)
        if len(self._buffer) >= self.batch_rows:
            self._wake.set()
        return Route(plan.experiment_id, variant, plan.versions[variant], plan.shadows, key)

    def _plan(self, tenant_id: str, model_id: int) -> _Plan | None:
        now = self._clock()
        key = (tenant_id, model_id)
        hit = self._plans.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self._lock:  # one request refreshes an expired definition; the others keep using the old one
            if hit is not None and key in self._refreshing:
                return hit[1]
            self._refreshing.add(key)
        try:
            plan = self._load(tenant_id, model_id)
        except Exception as exc:  # noqa: BLE001 - a database outage must not fail the request
            log.warning("experiment router: cannot refresh model %s of %s (%s); keeping what it knew",
                        model_id, tenant_id, getattr(exc, "message", exc))
            plan = hit[1] if hit is not None else None
        finally:
            with self._lock:
                self._refreshing.discard(key)
        with self._lock:
            if len(self._plans) > 10_000:
                self._plans.clear()
            self._plans[key] = (now + self.ttl_s, plan)
        return plan

    def _load(self, tenant_id: str, model_id: int) -> _Plan | None:
        with self.db.tenant_scope(tenant_id, readonly=True) as s:
            row = s.scalar(select(Experiment).where(
                Experiment.tenant_id == tenant_id, Experiment.model_id == model_id,
                Experiment.status == ExperimentStatus.RUNNING.value).order_by(Experiment.id.desc()).limit(1))
            if row is None:
                return None
            info = load_info(s, row)
        live = [(v.name, v.weight) for v in info.live]
        if not live:
            return None
        slices = slices_of(live, info.canary, info.step)
        return _Plan(info.id, tuple(slices), {v.name: v.version_id for v in info.variants},
                     {v.name: v.id for v in info.variants}, tuple((v.name, v.version_id) for v in info.shadows),
                     info.canary is not None and info.phase == "ramping")

    def invalidate(self) -> None:
        """Forget every cached definition (the next request of each model reads it again)."""
        with self._lock:
            self._plans.clear()

    # --- the background thread ------------------------------------------------------------------------

    def flush(self) -> int:
        """Write the buffered assignments now; returns how many rows were sent (duplicates are skipped by the
        database). On a database error the rows go back to the buffer (within its bound) and the error is
        logged, never raised."""
        with self._flush_lock:
            with self._lock:
                rows = list(self._buffer)
                self._buffer.clear()
            if not rows:
                return 0
            by_tenant: dict[str, dict[tuple[int, str], dict]] = {}
            for r in rows:  # the first assignment of a key in the batch wins, as in the table
                by_tenant.setdefault(r["tenant_id"], {}).setdefault((r["experiment_id"], r["request_key"]), r)
            sent = 0
            for tenant_id, batch in by_tenant.items():
                values = list(batch.values())
                try:
                    self._insert(tenant_id, values)
                    sent += len(values)
                except ConflictError as exc:  # e.g. the experiment was deleted meanwhile: these rows cannot land
                    log.warning("experiment router: dropped %d assignments of %s: %s", len(values), tenant_id,
                                exc.message)
                    self.dropped += len(values)
                except Exception as exc:  # noqa: BLE001 - database down: keep them for the next flush
                    log.warning("experiment router: cannot write %d assignments (%s); kept for the next try",
                                len(values), getattr(exc, "message", exc))
                    self._requeue(values)
            self.written += sent
            return sent

    def _insert(self, tenant_id: str, values: list[dict]) -> None:
        table = ExperimentAssignment.__table__
        dialect = postgresql if self.db.is_postgres else sqlite
        with self.db.tenant_scope(tenant_id) as s:
            for i in range(0, len(values), self.batch_rows):
                stmt = dialect.insert(table).values(values[i:i + self.batch_rows]).on_conflict_do_nothing(
                    index_elements=["experiment_id", "request_key"])
                s.execute(stmt)

    def _requeue(self, values: list[dict]) -> None:
        with self._lock:
            for row in reversed(values):  # back in front of newer rows, within the bound
                if len(self._buffer) == self._buffer.maxlen:
                    self.dropped += 1
                    continue
                self._buffer.appendleft(row)

    def evaluate_canaries(self) -> None:
        """Evaluate each routed canary whose last evaluation is ``evaluate_s`` old (called by the thread)."""
        from mlhub.experiments.service import ExperimentService

        now = self._clock()
        with self._lock:
            due = [k for k, last in self._canaries.items() if now - last >= self.evaluate_s]
            for k in due:
                self._canaries[k] = now
        for tenant_id, experiment_id in due:
            principal = Principal(tenant_id=tenant_id, actor="experiment-router", source="serve")
            try:
                decision = ExperimentService(self.db).evaluate(principal, experiment_id)
            except MlhubError as exc:
                log.warning("experiment router: canary %s of %s not evaluated: %s", experiment_id, tenant_id,
                            exc.message)
                continue
            if decision is None or decision.action in ("rollback", "complete"):
                with self._lock:
                    self._canaries.pop((tenant_id, experiment_id), None)
            if decision is not None and decision.action != "hold":
                log.info("experiment %s of %s: canary %s (%s)", experiment_id, tenant_id, decision.action,
                         decision.reason)
                self.invalidate()  # the new share (or no experiment) applies from the next request

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            for task in (self.flush, self.evaluate_canaries):
                try:
                    task()
                except Exception:  # noqa: BLE001 - the router's thread must survive anything
                    log.exception("experiment router background task")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def close(self) -> None:
        """Flush and stop the thread."""
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()


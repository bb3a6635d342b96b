"""The orchestrator: a detached, named Ray actor that runs the dispatcher loop.

A thin shell (like Ray Serve's controller): it builds the dispatcher with its storage and launcher, and a
background thread calls ``tick()`` forever. Every start (also after a crash, ``max_restarts=-1``) begins
with ``recover()``, which rebuilds the queues from the database. On PostgreSQL a LISTEN connection wakes
the loop the moment a job is submitted or cancelled; on SQLite it polls.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import ray

NAME = "mlhub-orchestrator"
#: jobs claimed ahead of free slots, so a finished job's slot is refilled without a database round trip
PREFETCH_MAX = 16
NAMESPACE = "mlhub"

log = logging.getLogger("mlhub.orchestrator")


def dispatch_policy(settings) -> Any:
    from mlhub.domain.queueing import DispatchPolicy, QueuePolicy

    cap = settings.max_concurrent_jobs
    defaults = {"training": cap, "evaluation": cap, "batch_prediction": cap, "hpo": cap}
    queues = {q: QueuePolicy(concurrency=settings.queue_concurrency.get(q, n)) for q, n in defaults.items()}
    return DispatchPolicy(global_cap=cap, queues=queues, tenant_cap=settings.tenant_max_running_jobs,
                          preemptible=frozenset(settings.preemptible_queues))


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=8)
class Orchestrator:
    def __init__(self, settings_doc: dict[str, Any]) -> None:
        from mlhub.backends import Backends
        from mlhub.config import Settings
        from mlhub.jobs.dispatcher import Dispatcher
        from mlhub.jobs.ray_launcher import RayLauncher, RayMetrics

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        self.settings = Settings(**settings_doc)
        self.backends = Backends(self.settings)
        self.backends.ensure_schema()
        from mlhub.monitoring.alerts import configure_failure_alerts

        configure_failure_alerts(self.settings)  # job-failure alerts use the deployment's webhook policy
        self.wake = threading.Event()
        owner = f"{socket.gethostname()}:{os.getpid()}"
        self.dispatcher = Dispatcher(self.backends.db, RayLauncher(settings_doc), dispatch_policy(self.settings),
                                     owner=owner, metrics=RayMetrics(), wake=self.wake, background_writes=True,
                                     prefetch=min(self.settings.max_concurrent_jobs, PREFETCH_MAX),
                                     preempt_after_s=self.settings.preempt_after_s)
        self.started_at = time.time()
        self.recovered = self.dispatcher.recover()
        self.errors = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._run, daemon=True, name="mlhub-dispatch")
        self._loop.start()
        if self.backends.db.is_postgres:
            threading.Thread(target=self._listen, daemon=True, name="mlhub-listen").start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.dispatcher.tick()
            except Exception as exc:
                self.errors += 1
                from mlhub.errors import redact

                self.last_error = redact(f"{type(exc).__name__}: {exc}")
                log.exception("dispatch tick failed; retrying")
                time.sleep(min(5.0, 0.2 * self.errors))

    def _listen(self) -> None:
        import psycopg

        from mlhub.jobs.store import NOTIFY_CHANNEL

        dsn = self.backends.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    for _ in conn.notifies():
                        self.dispatcher.new_work.set()
                        self.wake.set()
                        if self._stop.is_set():
                            return
            except Exception as exc:  # noqa: BLE001 - reconnect; polling covers the gap
                log.warning("LISTEN connection lost (%s); reconnecting", type(exc).__name__)
                time.sleep(1.0)

    # --- the actor's API: each a few lines ------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        return {"ok": self._loop.is_alive(), "pid": os.getpid(), "uptime_s": round(time.time() - self.started_at, 1),
                "recovered": self.recovered, "errors": self.errors, "last_error": self.last_error}

    def status(self) -> dict[str, Any]:
        return dict(self.dispatcher.snapshot(), **self.ping())

    def notify(self) -> None:
        self.wake.set()

    def shutdown(self) -> None:
        self._stop.set()
        self.wake.set()
        self._loop.join(timeout=10)
        self.dispatcher.stop_all()


def start(settings_doc: dict[str, Any], *, name: str = NAME):
    """Get or create the orchestrator actor in the connected cluster."""
    return Orchestrator.options(name=name, namespace=NAMESPACE, lifetime="detached",
                                get_if_exists=True).remote(settings_doc)


def get(name: str = NAME):
    return ray.get_actor(name, namespace=NAMESPACE)

"""Why a queued job waits, written where its owner looks (``mlhub jobs``, ``mlhub watch``, the console).

A job can wait for resources that never come on their own: a distributed job asks for 2 CPUs of a 2-CPU machine
while the Serve replicas that ``mlhub start`` deploys hold 0.6 of them. Without a word it would stay ``queued``
for ever. So every few seconds the dispatcher looks at the job each tenant would start next in each queue and
writes, into its ``progress`` as ``{"waiting": ...}``, what it needs, what is free, who holds the rest, and, when
the job cannot start until other Ray work goes away, what to do about it. The note is rewritten only when it
changes and is cleared when the job is claimed. :class:`Waiting` is mixed into
:class:`~mlhub.jobs.dispatcher.Dispatcher`.
"""

from __future__ import annotations

import logging
import time

from mlhub.domain.queueing import Candidate, Demand, units_in
from mlhub.jobs import store
from mlhub.store.types import utcnow

log = logging.getLogger("mlhub.orchestrator")

WAIT_NOTE_S = 2.0  # how often the notes are reconsidered


def _amount(d: Demand) -> str:
    return f"{d.cpus:g} CPUs" + (f" and {d.gpus:g} GPUs" if d.gpus > 1e-9 else "")


def wait_reason(c: Candidate, free: Demand, total: Demand, others: Demand, room: Demand | None = None) -> str:
    """Why ``c`` cannot start now (``free``: what is free for mlhub's jobs; ``others``: what Ray work that is
    not an mlhub job holds, such as Serve replicas; ``room``: the most the jobs can have beside it, by default
    ``total - others``). An HPO search comes cut to the trials that fit in ``room`` (``Candidate.capped``)."""
    need = c.demand
    if not need.fits_in(free):
        what = _amount(need)
        if c.unit is not None:
            n = units_in(c.unit, need)
            what += f" ({n} trial{'s' if n != 1 else ''} at once)"
        text = (f"waiting for resources: needs {what}; {_amount(Demand(max(free.cpus, 0.0), max(free.gpus, 0.0)))} "
                f"of the cluster's {_amount(total)} are free (other Ray work, such as Serve replicas, holds "
                f"{_amount(others)}; the rest is mlhub's running jobs)")
        if c.unit is not None and room is None and not need.fits_in(total.minus(others)) \
                and c.unit.fits_in(total.minus(others)):
            text += "; if that other work stays, the search starts in a few seconds with the trials that fit"
        elif not c.start_demand.fits_in(room if room is not None else total.minus(others)):
            text += ("; it cannot start while that other work runs: give each Serve replica fewer CPUs "
                     "(MLHUB_SERVE_REPLICA_CPUS), undeploy endpoints you do not need (`mlhub undeploy`) or ask "
                     "for fewer workers or resources")
        return text
    return ("waiting for a free slot: its queue's concurrency, its tenant's cap or MLHUB_MAX_CONCURRENT_JOBS is "
            "reached; it starts when a running job ends")


class Waiting:
    """The dispatcher's waiting notes (see the module docstring)."""

    _notes: dict[int, str]
    _last_notes_at: float

    def _note_waiting(self, *, force: bool = False) -> int:
        """Write the waiting notes of the jobs next in line; returns how many notes were written."""
        now = time.monotonic()
        if not self.pending or (not force and now - self._last_notes_at < WAIT_NOTE_S):
            return 0
        self._last_notes_at = now
        free = self._free_resources()
        if free is None or self._total is None or self._others is None:
            return 0
        now_utc = utcnow()
        heads: dict[tuple[str, str], Candidate] = {}
        room = self._room()
        for c, not_before in self.pending.values():
            if not_before is not None and not_before > now_utc:
                continue  # a retry waiting out its backoff, not a place in line
            key = (c.queue, c.tenant_id)
            best = heads.get(key)
            if best is None or (-c.priority, c.id) < (-best.priority, best.id):
                heads[key] = c
        notes = {c.id: wait_reason(c.capped(room), free, self._total, self._others, room) for c in heads.values()}
        changed = {job_id: text for job_id, text in notes.items() if self._notes.get(job_id) != text}
        if changed:
            try:
                with self.db.scheduler_scope() as s:
                    store.set_waiting(s, changed)
            except Exception as exc:  # noqa: BLE001 - a note is advice: dispatch goes on without it
                log.warning("could not write why jobs wait: %s", exc)
                return 0
        self._notes = {job_id: text for job_id, text in {**self._notes, **changed}.items() if job_id in self.pending}
        return len(changed)

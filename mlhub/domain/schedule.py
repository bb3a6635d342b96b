"""When a recurring job (:class:`~mlhub.domain.specs.ScheduleSpec`) runs next.

All times are timezone-aware and returned in UTC; cron expressions are evaluated in UTC (there is no
daylight-saving time to skip or repeat). Naive datetimes are refused with ``ValueError``: guessing their
zone is how schedules drift by hours.

Misfire policy (:func:`due_occurrence`): when the orchestrator was down across several occurrences, the
missed ones collapse into ONE run, for the latest missed occurrence, and the schedule continues with the
first occurrence after now. A schedule never floods the queue with catch-up runs, and the occurrence
handed back is a stable value (the same for every orchestrator that looks at the same stored
``next_run_at`` before ``now`` passes the following occurrence), fit to key the enqueued job idempotently.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from croniter import croniter

from mlhub.domain.specs import ScheduleSpec

__all__ = ["due_occurrence", "next_occurrence"]


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _cron_next(expr: str, after: datetime) -> datetime:
    try:
        return croniter(expr, after).get_next(datetime).astimezone(UTC)
    except ValueError as exc:  # CroniterBadDateError: e.g. "0 0 30 2 *" never happens
        raise ValueError(f"cron expression {expr!r} has no occurrence after {after.isoformat()}") from exc


def next_occurrence(schedule: ScheduleSpec, after: datetime) -> datetime:
    """The first occurrence strictly after ``after`` (aware; returned in UTC).

    Cron: the next time the expression matches, in UTC (5 fields, or 6 with seconds last). Interval:
    ``after + interval_s`` (an interval schedule's occurrences are anchored on its previous one).
    """
    after = _utc(after, "after")
    if schedule.interval_s is not None:
        return after + timedelta(seconds=schedule.interval_s)
    assert schedule.cron is not None  # ScheduleSpec guarantees exactly one of the two
    return _cron_next(schedule.cron, after)


def due_occurrence(
    schedule: ScheduleSpec, next_run_at: datetime, now: datetime
) -> tuple[datetime | None, datetime]:
    """Whether a run is due at ``now``, given the stored ``next_run_at``.

    Returns ``(occurrence, following)``:

    - not due (``next_run_at > now``): ``(None, next_run_at)``, nothing changes;
    - due: ``occurrence`` is the one run to enqueue, i.e. the latest occurrence in ``[next_run_at, now]``
      (``next_run_at`` itself when it is the only one, and also when it does not match a cron expression
      that has since changed), and ``following`` is the first occurrence strictly after ``now``, to store
      as the new ``next_run_at``. Missed occurrences collapse into this one run (the misfire policy in
      the module docstring).

    Interval occurrences are ``next_run_at + k * interval_s``; the catch-up is computed, not iterated, so
    a schedule that was down for a year costs no more than one that was down for a minute.
    """
    next_run_at = _utc(next_run_at, "next_run_at")
    now = _utc(now, "now")
    if next_run_at > now:
        return None, next_run_at
    if schedule.interval_s is not None:
        step = timedelta(seconds=schedule.interval_s)
        missed = (now - next_run_at) // step  # whole intervals between next_run_at and now
        occurrence = next_run_at + missed * step
        return occurrence, occurrence + step
    assert schedule.cron is not None
    following = _cron_next(schedule.cron, now)
    # The latest match at or before now is the one just before `following` (nothing matches in between).
    latest = croniter(schedule.cron, following).get_prev(datetime).astimezone(UTC)
    return max(latest, next_run_at), following

"""Recurring jobs: the next occurrence, and what is due after the orchestrator was away."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlhub.domain.schedule import due_occurrence, next_occurrence
from mlhub.domain.specs import ScheduleSpec


def at(hour: int, minute: int = 0, second: int = 0, day: int = 1, month: int = 1) -> datetime:
    return datetime(2024, month, day, hour, minute, second, tzinfo=UTC)


EVERY_5_MIN = ScheduleSpec(cron="*/5 * * * *")
EVERY_10_MIN = ScheduleSpec(interval_s=600)


# --- next_occurrence ----------------------------------------------------------------------------------


def test_cron_next_is_strictly_after():
    assert next_occurrence(EVERY_5_MIN, at(10, 0)) == at(10, 5)
    assert next_occurrence(EVERY_5_MIN, at(10, 2, 30)) == at(10, 5)


def test_cron_is_evaluated_in_utc_whatever_zone_is_given():
    paris_noon = datetime(2024, 7, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))  # 10:00 UTC
    nxt = next_occurrence(ScheduleSpec(cron="0 11 * * *"), paris_noon)
    assert nxt == datetime(2024, 7, 1, 11, 0, tzinfo=UTC)
    assert nxt.utcoffset() == timedelta(0)


def test_cron_macros_and_seconds_field():
    assert next_occurrence(ScheduleSpec(cron="@daily"), at(10)) == at(0, day=2)
    assert next_occurrence(ScheduleSpec(cron="* * * * * */15"), at(10, 0, 1)) == at(10, 0, 15)


def test_cron_across_a_leap_day():
    leap_day = ScheduleSpec(cron="0 0 29 2 *")
    assert next_occurrence(leap_day, at(0, month=3)) == datetime(2028, 2, 29, tzinfo=UTC)


def test_a_cron_that_never_fires_raises_value_error():
    # ScheduleSpec refuses such a cron now; a schedule stored before it did must still fail cleanly
    never = ScheduleSpec.model_construct(cron="0 0 30 2 *", interval_s=None)
    with pytest.raises(ValueError, match="no occurrence"):
        next_occurrence(never, at(0))
    with pytest.raises(ValueError, match="no occurrence"):
        due_occurrence(never, at(0), at(1))


def test_interval_next_is_after_plus_interval_in_utc():
    paris = timezone(timedelta(hours=2))
    nxt = next_occurrence(EVERY_10_MIN, datetime(2024, 7, 1, 12, 0, 30, tzinfo=paris))
    assert nxt == datetime(2024, 7, 1, 10, 10, 30, tzinfo=UTC) and nxt.tzinfo == UTC


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        next_occurrence(EVERY_5_MIN, datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="next_run_at"):
        due_occurrence(EVERY_5_MIN, datetime(2024, 1, 1), at(10))
    with pytest.raises(ValueError, match="now"):
        due_occurrence(EVERY_5_MIN, at(10), datetime(2024, 1, 1))


# --- due_occurrence -----------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", [EVERY_5_MIN, EVERY_10_MIN], ids=["cron", "interval"])
def test_not_due_yet_changes_nothing(schedule):
    assert due_occurrence(schedule, at(10, 10), at(10, 9, 59)) == (None, at(10, 10))


@pytest.mark.parametrize("schedule", [EVERY_5_MIN, EVERY_10_MIN], ids=["cron", "interval"])
def test_due_exactly_on_time_runs_that_occurrence(schedule):
    step = timedelta(minutes=5) if schedule.cron else timedelta(minutes=10)
    assert due_occurrence(schedule, at(10, 10), at(10, 10)) == (at(10, 10), at(10, 10) + step)


def test_missed_cron_occurrences_collapse_into_one_run_for_the_latest():
    # down from 10:05 to 10:33: 10:05 ... 10:30 were missed; one run for 10:30, then 10:35
    assert due_occurrence(EVERY_5_MIN, at(10, 5), at(10, 33)) == (at(10, 30), at(10, 35))


def test_missed_interval_occurrences_collapse_into_one_run_for_the_latest():
    # occurrences 10:00, 10:10, ..., 10:50: one run for 10:50, then 11:00
    assert due_occurrence(EVERY_10_MIN, at(10), at(10, 55)) == (at(10, 50), at(11))


def test_a_year_of_downtime_is_still_one_run():
    occurrence, following = due_occurrence(ScheduleSpec(cron="* * * * *"), at(0), at(0, day=31, month=12))
    assert (occurrence, following) == (at(0, day=31, month=12), at(0, 1, day=31, month=12))


def test_a_stored_next_run_that_no_longer_matches_the_cron_is_itself_the_run():
    # the schedule was edited from :07 to */30; nothing of the new cron falls in [10:07, 10:20]
    assert due_occurrence(ScheduleSpec(cron="*/30 * * * *"), at(10, 7), at(10, 20)) == (at(10, 7), at(10, 30))


def test_results_are_utc_whatever_zone_now_is_in():
    tokyo = timezone(timedelta(hours=9))
    occurrence, following = due_occurrence(EVERY_5_MIN, at(10, 5), datetime(2024, 1, 1, 19, 7, tzinfo=tokyo))
    assert (occurrence, following) == (at(10, 5), at(10, 10))
    assert occurrence.tzinfo == UTC and following.tzinfo == UTC


moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))


@given(
    schedule=st.sampled_from([EVERY_5_MIN, ScheduleSpec(cron="17 3 * * 1-5"), ScheduleSpec(interval_s=7),
                              ScheduleSpec(interval_s=86_400)]),
    start=moments,
    gap=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=20)),
)
def test_property_one_run_then_the_first_occurrence_after_now(schedule, start, gap):
    next_run_at = next_occurrence(schedule, start)  # a genuine occurrence
    now = next_run_at + gap
    occurrence, following = due_occurrence(schedule, next_run_at, now)
    assert occurrence is not None
    assert next_run_at <= occurrence <= now < following
    # nothing of the schedule lies between the run and the following one
    assert next_occurrence(schedule, occurrence) == following
    # and asking again at the same moment is not due: no double run
    assert due_occurrence(schedule, following, now) == (None, following)

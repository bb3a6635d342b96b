"""The job state machine and the retry policy."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlhub.domain.enums import JobState
from mlhub.domain.lifecycle import (
    TRANSITIONS,
    FailureDecision,
    backoff_delay,
    can_transition,
    check_transition,
    decide_on_failure,
)
from mlhub.domain.specs import RetryPolicy
from mlhub.errors import ConflictError

S = JobState
LEGAL = {
    (S.QUEUED, S.RUNNING),
    (S.QUEUED, S.CANCELLED),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.RETRYING),
    (S.RUNNING, S.DEAD),
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.QUEUED),
    (S.RETRYING, S.RUNNING),
    (S.RETRYING, S.CANCELLED),
}


def test_every_state_has_an_entry_and_terminal_states_have_no_way_out():
    assert set(TRANSITIONS) == set(JobState)
    for state, targets in TRANSITIONS.items():
        assert isinstance(targets, frozenset)
        assert (not targets) == state.is_terminal


@pytest.mark.parametrize("current,target", list(itertools.product(JobState, JobState)))
def test_the_transition_table_is_exactly_the_documented_one(current, target):
    if (current, target) in LEGAL:
        assert can_transition(current, target)
        check_transition(current, target)
    else:
        assert not can_transition(current, target)
        with pytest.raises(ConflictError) as info:
            check_transition(current, target)
        assert current.value in info.value.message and target.value in info.value.message
        assert info.value.details == {"from": current.value, "to": target.value}


def test_a_finished_job_cannot_be_cancelled_and_the_message_says_why():
    with pytest.raises(ConflictError, match="succeeded .*terminal.* to cancelled"):
        check_transition(JobState.SUCCEEDED, JobState.CANCELLED)


def test_states_given_as_their_stored_strings_work_too():
    check_transition("queued", "running")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        check_transition("queued", "paused")  # type: ignore[arg-type]


def test_an_interrupted_job_goes_back_to_the_queue():
    assert can_transition(S.RUNNING, S.QUEUED)
    assert not can_transition(S.RETRYING, S.QUEUED)


# --- failure policy -----------------------------------------------------------------------------------


def test_a_permanent_error_fails_the_job_even_with_attempts_left():
    assert decide_on_failure(1, RetryPolicy(max_attempts=5), permanent=True) is FailureDecision.FAIL


@pytest.mark.parametrize(
    "attempt,max_attempts,expected",
    [
        (1, 3, FailureDecision.RETRY),
        (2, 3, FailureDecision.RETRY),
        (3, 3, FailureDecision.DEAD),
        (4, 3, FailureDecision.DEAD),  # a stray extra attempt (e.g. a replay) is dead too
        (1, 1, FailureDecision.DEAD),  # max_attempts=1: no retries at all
    ],
)
def test_retries_until_the_last_allowed_attempt_then_dead(attempt, max_attempts, expected):
    assert decide_on_failure(attempt, RetryPolicy(max_attempts=max_attempts), permanent=False) is expected


def test_attempts_are_one_based():
    with pytest.raises(ValueError, match="1-based"):
        decide_on_failure(0, RetryPolicy(), permanent=False)


@given(attempt=st.integers(1, 40), max_attempts=st.integers(1, 20), permanent=st.booleans())
def test_decision_matches_the_rule(attempt, max_attempts, permanent):
    decision = decide_on_failure(attempt, RetryPolicy(max_attempts=max_attempts), permanent=permanent)
    if permanent:
        assert decision is FailureDecision.FAIL
    else:
        assert (decision is FailureDecision.RETRY) == (attempt < max_attempts)
        assert (decision is FailureDecision.DEAD) == (attempt >= max_attempts)


# --- backoff ------------------------------------------------------------------------------------------


def test_backoff_doubles_then_caps_without_jitter():
    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=10.0, jitter=0.0)
    assert [backoff_delay(a, policy, 0.7) for a in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_jitter_takes_off_a_fraction_of_the_delay():
    policy = RetryPolicy(backoff_s=4.0, max_backoff_s=60.0, jitter=0.5)
    assert backoff_delay(2, policy, 0.0) == 8.0  # rand=0: the full delay
    assert backoff_delay(2, policy, 0.5) == 6.0  # 8 * (1 - 0.5 * 0.5)
    assert backoff_delay(2, policy, 0.999) == pytest.approx(4.004)


def test_zero_backoff_means_immediate_retries():
    assert backoff_delay(30, RetryPolicy(backoff_s=0.0, max_backoff_s=60.0), 0.3) == 0.0


def test_a_very_late_attempt_does_not_overflow():
    policy = RetryPolicy(backoff_s=3600.0, max_backoff_s=86_400.0, jitter=0.0)
    assert backoff_delay(10_000, policy, 0.0) == 86_400.0


@pytest.mark.parametrize("rand", [-0.1, 1.0, 2.0, float("nan")])
def test_rand_must_lie_in_the_unit_interval(rand):
    with pytest.raises(ValueError, match="rand"):
        backoff_delay(1, RetryPolicy(), rand)


def test_backoff_attempts_are_one_based():
    with pytest.raises(ValueError, match="1-based"):
        backoff_delay(0, RetryPolicy(), 0.0)


@given(
    attempt=st.integers(1, 100),
    backoff=st.floats(0, 3600),
    cap=st.floats(0, 86_400),
    jitter=st.floats(0, 1),
    rand=st.floats(0, 1, exclude_max=True),
)
def test_backoff_stays_within_its_bounds(attempt, backoff, cap, jitter, rand):
    policy = RetryPolicy(backoff_s=backoff, max_backoff_s=cap, jitter=jitter)
    base = min(cap, backoff * 2.0 ** (attempt - 1))
    delay = backoff_delay(attempt, policy, rand)
    assert 0.0 <= delay <= base
    assert delay >= base * (1 - jitter) - 1e-9
    # more attempts never wait less (for the same rand)
    assert backoff_delay(attempt + 1, policy, rand) >= delay

"""The job lifecycle: which state changes are legal, and what to do when an attempt fails.

Modelled on Ray Train v2's controller: the states are an explicit table (:data:`TRANSITIONS`), each
terminal state has no way out, and failure handling is one function that returns a decision enum
(:func:`decide_on_failure`) instead of acting itself. The orchestrator applies the decision; this module
never sleeps, stores or schedules anything.

::

    queued    -> running | cancelled
    running   -> succeeded | failed | dead | cancelled
               | retrying          (the attempt failed; run again after a backoff)
               | queued            (interrupted or preempted: back in line, no attempt charged)
    retrying  -> running | cancelled
    succeeded, failed, cancelled, dead: terminal, no way out
"""

from __future__ import annotations

from enum import StrEnum

from mlhub.domain.enums import JobState
from mlhub.domain.specs import RetryPolicy
from mlhub.errors import ConflictError

__all__ = [
    "TRANSITIONS",
    "FailureDecision",
    "backoff_delay",
    "can_transition",
    "check_transition",
    "decide_on_failure",
]

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.RETRYING,
            JobState.DEAD,
            JobState.CANCELLED,
            # Interrupted or preempted (node lost, orchestrator restart): back to the queue without
            # counting as a failed attempt.
            JobState.QUEUED,
        }
    ),
    JobState.RETRYING: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.DEAD: frozenset(),
}


def can_transition(current: JobState, target: JobState) -> bool:
    """Whether a job in ``current`` may move to ``target`` (a state never moves to itself)."""
    return JobState(target) in TRANSITIONS[JobState(current)]


def check_transition(current: JobState, target: JobState) -> None:
    """Raise :class:`~mlhub.errors.ConflictError` unless ``current -> target`` is a legal move.

    ``details`` carries ``{"from": current, "to": target}`` so callers (the REST API, the CLI) can say
    e.g. that a finished job cannot be cancelled.
    """
    if not can_transition(current, target):
        current, target = JobState(current), JobState(target)
        why = " (a terminal state)" if current.is_terminal else ""
        raise ConflictError(
            f"a job cannot go from {current.value}{why} to {target.value}",
            details={"from": current.value, "to": target.value},
        )


class FailureDecision(StrEnum):
    """What to do with a job whose attempt just failed."""

    RETRY = "retry"  # -> retrying, run again after backoff_delay()
    DEAD = "dead"  # -> dead: retries exhausted
    FAIL = "fail"  # -> failed: retrying cannot help (permanent error)


def decide_on_failure(attempt: int, policy: RetryPolicy, *, permanent: bool) -> FailureDecision:
    """The one failure policy: ``attempt`` is the 1-based number of the attempt that just failed.

    A permanent error (invalid input found at run time, a user error marked permanent) fails the job
    whatever attempts are left; otherwise the job is retried while ``attempt < policy.max_attempts`` and
    is dead once the last allowed attempt has failed.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    if permanent:
        return FailureDecision.FAIL
    if attempt < policy.max_attempts:
        return FailureDecision.RETRY
    return FailureDecision.DEAD


# 2.0 ** 1024 overflows; any exponent this large already exceeds every cap a RetryPolicy allows.
_MAX_EXPONENT = 1023


def backoff_delay(attempt: int, policy: RetryPolicy, rand: float) -> float:
    """Seconds to wait before the attempt after ``attempt`` (1-based, the one that just failed).

    Capped exponential backoff with proportional jitter::

        base  = min(policy.max_backoff_s, policy.backoff_s * 2 ** (attempt - 1))
        delay = base * (1 - policy.jitter * rand)

    so attempt 1 waits about ``backoff_s``, each further attempt doubles it up to ``max_backoff_s``, and
    ``jitter`` is the fraction of the delay that is randomised: the result lies in
    ``(base * (1 - jitter), base]``. ``rand`` is a number in ``[0, 1)`` supplied by the caller (e.g.
    ``random.random()``), which keeps this function deterministic and testable. Jitter spreads out the
    retries of many jobs that failed together (a lost node), so they do not all return at once.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must lie in [0, 1), got {rand}")
    growth = 2.0 ** min(attempt - 1, _MAX_EXPONENT)
    base = min(policy.max_backoff_s, policy.backoff_s * growth)  # inf * anything > cap -> cap
    return base * (1.0 - policy.jitter * rand)

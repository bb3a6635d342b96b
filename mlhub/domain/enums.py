"""Enumerations shared by every layer. Their values are stored in the database: never rename one."""

from __future__ import annotations

from enum import StrEnum


class QueueName(StrEnum):
    TRAINING = "training"
    EVALUATION = "evaluation"
    BATCH_PREDICTION = "batch_prediction"
    HPO = "hpo"


class JobKind(StrEnum):
    TRAINING = "training"
    EVALUATION = "evaluation"
    BATCH_PREDICTION = "batch_prediction"
    HPO = "hpo"
    DRIFT_CHECK = "drift_check"
    DIAGNOSTIC = "diagnostic"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.DEAD})


class RunStatus(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    KILLED = "killed"


class ModelStage(StrEnum):
    NONE = "none"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"


class ExperimentStatus(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    STOPPED = "stopped"
    PROMOTED = "promoted"


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AuditOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


def sql_in(enum_cls: type[StrEnum]) -> str:
    """``'a', 'b'`` for a CHECK constraint listing an enum's values."""
    return ", ".join(f"'{m.value}'" for m in enum_cls)

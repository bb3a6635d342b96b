"""Database rows (SQLAlchemy 2). Separate from domain objects; services convert at the boundary."""

from mlhub.store.models.base import Base
from mlhub.store.models.jobs import ClusterCapacity, HpoTrial, Job, JobEvent, JobLog, Schedule
from mlhub.store.models.monitoring import (
    Alert,
    AlertRule,
    DriftReport,
    Experiment,
    ExperimentAssignment,
    ExperimentOutcome,
    ExperimentVariant,
    Monitor,
    PredictionLog,
)
from mlhub.store.models.registry import (
    BatchPrediction,
    Deployment,
    Evaluation,
    ModelAlias,
    ModelVersion,
    Promotion,
    RegisteredModel,
)
from mlhub.store.models.tenancy import ApiKey, AuditEvent, Tenant
from mlhub.store.models.tracking import Artifact, Metric, Run, RunArtifactLink, RunParam, RunTag

__all__ = [
    "Alert", "AlertRule", "ApiKey", "Artifact", "AuditEvent", "Base", "BatchPrediction", "ClusterCapacity",
    "Deployment",
    "DriftReport", "Evaluation", "Experiment", "ExperimentAssignment", "ExperimentOutcome",
    "ExperimentVariant", "HpoTrial", "Job", "JobEvent", "JobLog", "Metric", "ModelAlias", "ModelVersion",
    "Monitor", "PredictionLog", "Promotion", "RegisteredModel", "Run", "RunArtifactLink",
    "RunParam", "RunTag", "Schedule",
    "Tenant",
]

#: Tables without ``tenant_id``, each deliberately so. The RLS catalog test checks this list.
NOT_TENANT_SCOPED = {
    "tenants": "the tenant list itself; RLS keys on id so a tenant sees only its own row",
    "alembic_version": "Alembic's schema version marker",
    "cluster_capacity": "the Ray cluster's size: every tenant reads it at submit, only the scheduler writes it",
}

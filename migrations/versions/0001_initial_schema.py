"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 04:10:22.820898
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations import rls

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('tenants',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('max_running_jobs', sa.Integer(), nullable=True),
    sa.Column('max_queued_jobs', sa.Integer(), nullable=True),
    sa.Column('settings', JSON_DOC, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f('ck_tenants_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenants')),
    sa.UniqueConstraint('name', name=op.f('uq_tenants_name'))
    )
    op.create_table('api_keys',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_api_keys_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    op.create_index('ix_api_keys_tenant_id', 'api_keys', ['tenant_id'], unique=False)

    op.create_table('audit_log',
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target_type', sa.String(length=32), nullable=False),
    sa.Column('target_id', sa.String(length=128), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('details', JSON_DOC, nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("outcome IN ('success', 'failure', 'denied')", name=op.f('ck_audit_log_outcome')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_audit_log_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index('ix_audit_log_tenant_created', 'audit_log', ['tenant_id', 'created_at'], unique=False)
    op.create_index('ix_audit_log_tenant_id', 'audit_log', ['tenant_id'], unique=False)

    op.create_table('registered_models',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('task', sa.String(length=32), nullable=True),
    sa.Column('tags', JSON_DOC, nullable=False),
    sa.Column('gates', JSON_DOC, nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_registered_models_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registered_models')),
    sa.UniqueConstraint('tenant_id', 'name', name='uq_registered_models_tenant_name')
    )
    op.create_index('ix_registered_models_tenant_id', 'registered_models', ['tenant_id'], unique=False)

    op.create_table('schedules',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('queue', sa.String(length=32), nullable=False),
    sa.Column('spec', JSON_DOC, nullable=False),
    sa.Column('cron', sa.String(length=128), nullable=True),
    sa.Column('interval_s', sa.Integer(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('next_run_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_enqueued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(cron IS NULL) <> (interval_s IS NULL)', name=op.f('ck_schedules_cron_xor_interval')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_schedules_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedules')),
    sa.UniqueConstraint('tenant_id', 'name', name='uq_schedules_tenant_name')
    )
    op.create_index('ix_schedules_tenant_id', 'schedules', ['tenant_id'], unique=False)

    op.create_table('experiments',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('model_id', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=True),
    sa.Column('metric_kind', sa.String(length=16), nullable=False),
    sa.Column('config', JSON_DOC, nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('winner', sa.String(length=64), nullable=True),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('ab', 'canary', 'shadow')", name=op.f('ck_experiments_kind')),
    sa.CheckConstraint("metric_kind IN ('rate', 'mean')", name=op.f('ck_experiments_metric_kind')),
    sa.CheckConstraint("status IN ('draft', 'running', 'stopped', 'promoted')", name=op.f('ck_experiments_status')),
    sa.ForeignKeyConstraint(['model_id'], ['registered_models.id'], name=op.f('fk_experiments_model_id_registered_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_experiments_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_experiments')),
    sa.UniqueConstraint('tenant_id', 'name', name='uq_experiments_tenant_name')
    )
    op.create_index('ix_experiments_tenant_id', 'experiments', ['tenant_id'], unique=False)

    op.create_table('jobs',
    sa.Column('queue', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=True),
    sa.Column('spec', JSON_DOC, nullable=False),
    sa.Column('resources', JSON_DOC, nullable=False),
    sa.Column('result', JSON_DOC, nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('progress', JSON_DOC, nullable=True),
    sa.Column('submitted_by', sa.String(length=128), nullable=False),
    sa.Column('idempotency_key', sa.String(length=128), nullable=True),
    sa.Column('schedule_id', sa.BigInteger(), nullable=True),
    sa.Column('scheduled_for', sa.DateTime(timezone=True), nullable=True),
    sa.Column('parent_job_id', sa.BigInteger(), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('training', 'evaluation', 'batch_prediction', 'hpo', 'drift_check')", name=op.f('ck_jobs_kind')),
    sa.CheckConstraint("queue IN ('training', 'evaluation', 'batch_prediction', 'hpo')", name=op.f('ck_jobs_queue')),
    sa.CheckConstraint("state IN ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled', 'dead')", name=op.f('ck_jobs_state')),
    sa.CheckConstraint('attempt >= 0 AND max_attempts >= 1', name=op.f('ck_jobs_attempts')),
    sa.CheckConstraint('priority BETWEEN -1000 AND 1000', name=op.f('ck_jobs_priority')),
    sa.ForeignKeyConstraint(['parent_job_id'], ['jobs.id'], name=op.f('fk_jobs_parent_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['schedule_id'], ['schedules.id'], name=op.f('fk_jobs_schedule_id_schedules'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_jobs_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('schedule_id', 'scheduled_for', name='uq_jobs_schedule_occurrence'),
    sa.UniqueConstraint('tenant_id', 'idempotency_key', name='uq_jobs_tenant_idempotency')
    )
    op.create_index('ix_jobs_dispatch', 'jobs', ['queue', 'state', 'priority', 'id'], unique=False)
    op.create_index('ix_jobs_tenant_id', 'jobs', ['tenant_id'], unique=False)
    op.create_index('ix_jobs_tenant_state', 'jobs', ['tenant_id', 'state'], unique=False)

    op.create_table('monitors',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('model_id', sa.BigInteger(), nullable=False),
    sa.Column('alias', sa.String(length=64), nullable=True),
    sa.Column('schedule_id', sa.BigInteger(), nullable=True),
    sa.Column('thresholds', JSON_DOC, nullable=False),
    sa.Column('window_s', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['registered_models.id'], name=op.f('fk_monitors_model_id_registered_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['schedule_id'], ['schedules.id'], name=op.f('fk_monitors_schedule_id_schedules'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_monitors_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_monitors')),
    sa.UniqueConstraint('tenant_id', 'name', name='uq_monitors_tenant_name')
    )
    op.create_index('ix_monitors_tenant_id', 'monitors', ['tenant_id'], unique=False)

    op.create_table('alert_rules',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('monitor_id', sa.BigInteger(), nullable=True),
    sa.Column('condition', JSON_DOC, nullable=False),
    sa.Column('webhook_url', sa.Text(), nullable=True),
    sa.Column('dedup_window_s', sa.Integer(), nullable=False),
    sa.Column('action', JSON_DOC, nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('drift', 'error_rate', 'latency_p99', 'job_failures')", name=op.f('ck_alert_rules_kind')),
    sa.ForeignKeyConstraint(['monitor_id'], ['monitors.id'], name=op.f('fk_alert_rules_monitor_id_monitors'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_alert_rules_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_rules')),
    sa.UniqueConstraint('tenant_id', 'name', name='uq_alert_rules_tenant_name')
    )
    op.create_index('ix_alert_rules_tenant_id', 'alert_rules', ['tenant_id'], unique=False)

    op.create_table('job_events',
    sa.Column('job_id', sa.BigInteger(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('data', JSON_DOC, nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("type IN ('state', 'progress', 'metric', 'warning')", name=op.f('ck_job_events_type')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_events_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_job_events_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_events'))
    )
    op.create_index('ix_job_events_job', 'job_events', ['job_id', 'id'], unique=False)
    op.create_index('ix_job_events_tenant_id', 'job_events', ['tenant_id'], unique=False)

    op.create_table('job_logs',
    sa.Column('job_id', sa.BigInteger(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=64), nullable=False),
    sa.Column('stream', sa.String(length=8), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("stream IN ('stdout', 'stderr')", name=op.f('ck_job_logs_stream')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_logs_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_job_logs_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_logs')),
    sa.UniqueConstraint('job_id', 'attempt', 'worker', 'stream', 'seq', name='uq_job_logs_chunk')
    )
    op.create_index('ix_job_logs_tenant_id', 'job_logs', ['tenant_id'], unique=False)

    op.create_table('runs',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('experiment', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=True),
    sa.Column('parent_run_id', sa.BigInteger(), nullable=True),
    sa.Column('source', sa.String(length=256), nullable=True),
    sa.Column('code_version', sa.String(length=64), nullable=True),
    sa.Column('dataset_fingerprint', sa.String(length=64), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('summary', JSON_DOC, nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('running', 'finished', 'failed', 'killed')", name=op.f('ck_runs_status')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_runs_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['parent_run_id'], ['runs.id'], name=op.f('fk_runs_parent_run_id_runs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_runs_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs')),
    sa.UniqueConstraint('job_id', 'attempt', 'name', name='uq_runs_job_attempt_name')
    )
    op.create_index('ix_runs_tenant_id', 'runs', ['tenant_id'], unique=False)

    op.create_table('alerts',
    sa.Column('rule_id', sa.BigInteger(), nullable=False),
    sa.Column('dedup_key', sa.String(length=256), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', JSON_DOC, nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivery_error', sa.Text(), nullable=True),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("severity IN ('info', 'warning', 'critical')", name=op.f('ck_alerts_severity')),
    sa.CheckConstraint("status IN ('open', 'acknowledged', 'resolved')", name=op.f('ck_alerts_status')),
    sa.ForeignKeyConstraint(['rule_id'], ['alert_rules.id'], name=op.f('fk_alerts_rule_id_alert_rules'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_alerts_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts'))
    )
    op.create_index('ix_alerts_rule_dedup', 'alerts', ['rule_id', 'dedup_key', 'status'], unique=False)
    op.create_index('ix_alerts_tenant_id', 'alerts', ['tenant_id'], unique=False)

    op.create_table('artifacts',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('media_type', sa.String(length=128), nullable=False),
    sa.Column('backend', sa.String(length=16), nullable=False),
    sa.Column('backend_key', sa.String(length=256), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=True),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("backend IN ('filesystem', 'gridfs')", name=op.f('ck_artifacts_backend')),
    sa.CheckConstraint('size_bytes >= 0', name=op.f('ck_artifacts_size')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_artifacts_run_id_runs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_artifacts_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_artifacts')),
    sa.UniqueConstraint('tenant_id', 'backend', 'sha256', name='uq_artifacts_tenant_backend_sha')
    )
    op.create_index('ix_artifacts_tenant_id', 'artifacts', ['tenant_id'], unique=False)

    op.create_table('hpo_trials',
    sa.Column('job_id', sa.BigInteger(), nullable=False),
    sa.Column('trial_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('params', JSON_DOC, nullable=False),
    sa.Column('metrics', JSON_DOC, nullable=False),
    sa.Column('iterations', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_hpo_trials_job_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_hpo_trials_run_id_runs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_hpo_trials_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hpo_trials')),
    sa.UniqueConstraint('job_id', 'trial_id', name='uq_hpo_trials_job_trial')
    )
    op.create_index('ix_hpo_trials_tenant_id', 'hpo_trials', ['tenant_id'], unique=False)

    op.create_table('metrics',
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_metrics_run_id_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_metrics_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metrics'))
    )
    op.create_index('ix_metrics_run_key_step', 'metrics', ['run_id', 'key', 'step'], unique=False)
    op.create_index('ix_metrics_tenant_id', 'metrics', ['tenant_id'], unique=False)

    op.create_table('run_params',
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_run_params_run_id_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_run_params_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_run_params')),
    sa.UniqueConstraint('run_id', 'key', name='uq_run_params_run_key')
    )
    op.create_index('ix_run_params_tenant_id', 'run_params', ['tenant_id'], unique=False)

    op.create_table('run_tags',
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_run_tags_run_id_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_run_tags_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_run_tags')),
    sa.UniqueConstraint('run_id', 'key', name='uq_run_tags_run_key')
    )
    op.create_index('ix_run_tags_tenant_id', 'run_tags', ['tenant_id'], unique=False)

    op.create_table('model_versions',
    sa.Column('model_id', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=True),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('tags', JSON_DOC, nullable=False),
    sa.Column('framework', sa.String(length=32), nullable=False),
    sa.Column('model_format', sa.String(length=32), nullable=False),
    sa.Column('artifact_id', sa.BigInteger(), nullable=True),
    sa.Column('artifact_sha256', sa.String(length=64), nullable=True),
    sa.Column('input_schema', JSON_DOC, nullable=True),
    sa.Column('output_schema', JSON_DOC, nullable=True),
    sa.Column('reference_stats', JSON_DOC, nullable=True),
    sa.Column('metrics', JSON_DOC, nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('job_id', sa.BigInteger(), nullable=True),
    sa.Column('job_attempt', sa.Integer(), nullable=True),
    sa.Column('dataset_fingerprint', sa.String(length=64), nullable=True),
    sa.Column('code_version', sa.String(length=64), nullable=True),
    sa.Column('parent_version_id', sa.BigInteger(), nullable=True),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("stage IN ('none', 'staging', 'production', 'archived')", name=op.f('ck_model_versions_stage')),
    sa.CheckConstraint('version >= 1', name=op.f('ck_model_versions_version_positive')),
    sa.ForeignKeyConstraint(['artifact_id'], ['artifacts.id'], name=op.f('fk_model_versions_artifact_id_artifacts'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_model_versions_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['model_id'], ['registered_models.id'], name=op.f('fk_model_versions_model_id_registered_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parent_version_id'], ['model_versions.id'], name=op.f('fk_model_versions_parent_version_id_model_versions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_model_versions_run_id_runs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_model_versions_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('model_id', 'job_id', name='uq_model_versions_model_job'),
    sa.UniqueConstraint('model_id', 'version', name='uq_model_versions_model_version')
    )
    op.create_index('ix_model_versions_tenant_id', 'model_versions', ['tenant_id'], unique=False)

    op.create_table('batch_predictions',
    sa.Column('job_id', sa.BigInteger(), nullable=True),
    sa.Column('version_id', sa.BigInteger(), nullable=False),
    sa.Column('input_uri', sa.Text(), nullable=False),
    sa.Column('output_uri', sa.Text(), nullable=True),
    sa.Column('row_count', sa.BigInteger(), nullable=False),
    sa.Column('cached_rows', sa.BigInteger(), nullable=False),
    sa.Column('error_rows', sa.BigInteger(), nullable=False),
    sa.Column('errors', JSON_DOC, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_batch_predictions_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_batch_predictions_tenant_id_tenants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_batch_predictions_version_id_model_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch_predictions'))
    )
    op.create_index('ix_batch_predictions_tenant_id', 'batch_predictions', ['tenant_id'], unique=False)

    op.create_table('deployments',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('model_id', sa.BigInteger(), nullable=False),
    sa.Column('alias', sa.String(length=64), nullable=True),
    sa.Column('version_id', sa.BigInteger(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('config', JSON_DOC, nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['registered_models.id'], name=op.f('fk_deployments_model_id_registered_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_deployments_tenant_id_tenants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_deployments_version_id_model_versions'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deployments')),
    sa.UniqueConstraint('tenant_id', 'name', name='uq_deployments_tenant_name')
    )
    op.create_index('ix_deployments_tenant_id', 'deployments', ['tenant_id'], unique=False)

    op.create_table('drift_reports',
    sa.Column('monitor_id', sa.BigInteger(), nullable=True),
    sa.Column('version_id', sa.BigInteger(), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=True),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('window_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sample_size', sa.Integer(), nullable=False),
    sa.Column('features', JSON_DOC, nullable=False),
    sa.Column('drifted', sa.Boolean(), nullable=False),
    sa.Column('plot_artifact_id', sa.BigInteger(), nullable=True),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_drift_reports_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['monitor_id'], ['monitors.id'], name=op.f('fk_drift_reports_monitor_id_monitors'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['plot_artifact_id'], ['artifacts.id'], name=op.f('fk_drift_reports_plot_artifact_id_artifacts'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_drift_reports_tenant_id_tenants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_drift_reports_version_id_model_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drift_reports'))
    )
    op.create_index('ix_drift_reports_tenant_id', 'drift_reports', ['tenant_id'], unique=False)

    op.create_table('evaluations',
    sa.Column('version_id', sa.BigInteger(), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=True),
    sa.Column('dataset', sa.String(length=256), nullable=False),
    sa.Column('dataset_fingerprint', sa.String(length=64), nullable=True),
    sa.Column('task', sa.String(length=32), nullable=False),
    sa.Column('metrics', JSON_DOC, nullable=False),
    sa.Column('confusion_matrix', JSON_DOC, nullable=True),
    sa.Column('labels', JSON_DOC, nullable=True),
    sa.Column('plot_artifact_id', sa.BigInteger(), nullable=True),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_evaluations_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['plot_artifact_id'], ['artifacts.id'], name=op.f('fk_evaluations_plot_artifact_id_artifacts'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_evaluations_tenant_id_tenants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_evaluations_version_id_model_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluations'))
    )
    op.create_index('ix_evaluations_tenant_id', 'evaluations', ['tenant_id'], unique=False)

    op.create_table('experiment_variants',
    sa.Column('experiment_id', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.BigInteger(), nullable=False),
    sa.Column('weight', sa.Float(), nullable=False),
    sa.Column('shadow', sa.Boolean(), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.CheckConstraint('weight >= 0 AND weight <= 1', name=op.f('ck_experiment_variants_weight')),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_experiment_variants_experiment_id_experiments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_experiment_variants_tenant_id_tenants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_experiment_variants_version_id_model_versions'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_experiment_variants')),
    sa.UniqueConstraint('experiment_id', 'name', name='uq_experiment_variants_experiment_name')
    )
    op.create_index('ix_experiment_variants_tenant_id', 'experiment_variants', ['tenant_id'], unique=False)

    op.create_table('model_aliases',
    sa.Column('model_id', sa.BigInteger(), nullable=False),
    sa.Column('alias', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['registered_models.id'], name=op.f('fk_model_aliases_model_id_registered_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_model_aliases_tenant_id_tenants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_model_aliases_version_id_model_versions'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_aliases')),
    sa.UniqueConstraint('model_id', 'alias', name='uq_model_aliases_model_alias')
    )
    op.create_index('ix_model_aliases_tenant_id', 'model_aliases', ['tenant_id'], unique=False)

    op.create_table('prediction_logs',
    sa.Column('version_id', sa.BigInteger(), nullable=True),
    sa.Column('endpoint', sa.String(length=128), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('inputs', JSON_DOC, nullable=False),
    sa.Column('outputs', JSON_DOC, nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.BigInteger(), nullable=True),
    sa.Column('variant', sa.String(length=64), nullable=True),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_prediction_logs_experiment_id_experiments'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_prediction_logs_tenant_id_tenants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_prediction_logs_version_id_model_versions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prediction_logs'))
    )
    op.create_index('ix_prediction_logs_tenant_id', 'prediction_logs', ['tenant_id'], unique=False)
    op.create_index('ix_prediction_logs_version_created', 'prediction_logs', ['version_id', 'created_at'], unique=False)

    op.create_table('promotions',
    sa.Column('model_id', sa.BigInteger(), nullable=False),
    sa.Column('target_kind', sa.String(length=8), nullable=False),
    sa.Column('target', sa.String(length=64), nullable=False),
    sa.Column('from_version_id', sa.BigInteger(), nullable=True),
    sa.Column('to_version_id', sa.BigInteger(), nullable=True),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('forced', sa.Boolean(), nullable=False),
    sa.Column('gate_results', JSON_DOC, nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("target_kind IN ('alias', 'stage')", name=op.f('ck_promotions_target_kind')),
    sa.ForeignKeyConstraint(['from_version_id'], ['model_versions.id'], name=op.f('fk_promotions_from_version_id_model_versions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['model_id'], ['registered_models.id'], name=op.f('fk_promotions_model_id_registered_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_promotions_tenant_id_tenants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['to_version_id'], ['model_versions.id'], name=op.f('fk_promotions_to_version_id_model_versions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_promotions'))
    )
    op.create_index('ix_promotions_tenant_id', 'promotions', ['tenant_id'], unique=False)

    op.create_table('experiment_assignments',
    sa.Column('experiment_id', sa.BigInteger(), nullable=False),
    sa.Column('variant_id', sa.BigInteger(), nullable=False),
    sa.Column('request_key', sa.String(length=128), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_experiment_assignments_experiment_id_experiments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_experiment_assignments_tenant_id_tenants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['variant_id'], ['experiment_variants.id'], name=op.f('fk_experiment_assignments_variant_id_experiment_variants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_experiment_assignments')),
    sa.UniqueConstraint('experiment_id', 'request_key', name='uq_experiment_assignments_key')
    )
    op.create_index('ix_experiment_assignments_tenant_id', 'experiment_assignments', ['tenant_id'], unique=False)

    op.create_table('experiment_outcomes',
    sa.Column('experiment_id', sa.BigInteger(), nullable=False),
    sa.Column('assignment_id', sa.BigInteger(), nullable=True),
    sa.Column('request_key', sa.String(length=128), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('id', BIGINT_PK, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['assignment_id'], ['experiment_assignments.id'], name=op.f('fk_experiment_outcomes_assignment_id_experiment_assignments'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_experiment_outcomes_experiment_id_experiments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_experiment_outcomes_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_experiment_outcomes'))
    )
    op.create_index('ix_experiment_outcomes_experiment', 'experiment_outcomes', ['experiment_id', 'assignment_id'], unique=False)
    op.create_index('ix_experiment_outcomes_tenant_id', 'experiment_outcomes', ['tenant_id'], unique=False)

    # PostgreSQL only: roles, grants, forced row-level security on every tenant table
    rls.apply(op.get_bind())


def downgrade() -> None:
    rls.drop_roles_grants_and_policies(op.get_bind())
    op.drop_table('experiment_outcomes')
    op.drop_table('experiment_assignments')
    op.drop_table('promotions')
    op.drop_table('prediction_logs')
    op.drop_table('model_aliases')
    op.drop_table('experiment_variants')
    op.drop_table('evaluations')
    op.drop_table('drift_reports')
    op.drop_table('deployments')
    op.drop_table('batch_predictions')
    op.drop_table('model_versions')
    op.drop_table('run_tags')
    op.drop_table('run_params')
    op.drop_table('metrics')
    op.drop_table('hpo_trials')
    op.drop_table('artifacts')
    op.drop_table('alerts')
    op.drop_table('runs')
    op.drop_table('job_logs')
    op.drop_table('job_events')
    op.drop_table('alert_rules')
    op.drop_table('monitors')
    op.drop_table('jobs')
    op.drop_table('experiments')
    op.drop_table('schedules')
    op.drop_table('registered_models')
    op.drop_table('audit_log')
    op.drop_table('api_keys')
    op.drop_table('tenants')

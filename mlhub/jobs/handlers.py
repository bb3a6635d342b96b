"""What each job kind does inside its attempt. Each handler returns the job's result document."""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from mlhub.artifact_records import ArtifactService
from mlhub.domain.specs import (
    DISTRIBUTED_FRAMEWORKS,
    BatchPredictionSpec,
    DiagnosticSpec,
    DriftCheckSpec,
    EvaluationSpec,
    HpoSpec,
    TrainingSpec,
)
from mlhub.errors import PermanentJobFailure, ValidationError
from mlhub.jobs.runner import AttemptContext
from mlhub.registry.rows import MODEL_MEDIA_TYPES_BY_FORMAT
from mlhub.registry.service import RegistryService
from mlhub.store import runs as runs_repo
from mlhub.store.models import BatchPrediction, Evaluation, Run
from mlhub.store.runs import MetricPoint
from mlhub.store.types import utcnow

MEDIA_TYPES = MODEL_MEDIA_TYPES_BY_FORMAT


def _run_for_attempt(ctx: AttemptContext, name: str, params: dict[str, Any], dataset_fp: str | None) -> int:
    """The attempt's run, created once (unique on job, attempt, name): a retried attempt gets its own run."""
    with ctx.backends.db.tenant_scope(ctx.tenant_id) as s:
        run = s.scalar(select(Run).where(Run.tenant_id == ctx.tenant_id, Run.job_id == ctx.job_id,
                                         Run.attempt == ctx.attempt, Run.name == name))
        if run is None:
            run = runs_repo.create_run(s, ctx.tenant_id, name, experiment=name, job_id=ctx.job_id,
                                       attempt=ctx.attempt)
            run.dataset_fingerprint = dataset_fp
            runs_repo.log_params(s, ctx.tenant_id, run.id, params)
        return run.id


def run_training(ctx: AttemptContext, spec: TrainingSpec, *, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``spec`` and store its model (the completion registers it). ``resume`` (``{"epoch", "files"}``, from a
    framework that can warm-start) starts the loop from that state instead of epoch 0: a PBT search's best trial."""
    from mlhub.jobs.code import code_folder, run_local_loop
    from mlhub.training.adapters import get_adapter
    from mlhub.training.datasets import load_dataset

    working_dir = code_folder(ctx, spec)  # the job's packed code, fetched, verified and extracted (or None)
    adapter = get_adapter(spec.framework)
    data = load_dataset(spec.dataset, allowed_roots=ctx.settings.allowed_data_roots)
    print(f"dataset: {spec.dataset.source} {spec.dataset.name or spec.dataset.path or spec.dataset.task}: "
          f"{len(data.x_train)} train / {len(data.x_test)} test rows, {len(data.feature_names)} features", flush=True)
    params = {"framework": spec.framework, "model": spec.model, "epochs": spec.epochs, **spec.params}
    run_id = _run_for_attempt(ctx, spec.name, params, data.fingerprint)
    started = time.perf_counter()
    epoch_points: list[MetricPoint] = []

    def report(epoch_report) -> None:
        elapsed = time.perf_counter() - started
        done = epoch_report.epoch + 1
        eta = elapsed / done * (spec.epochs - done) if spec.epochs > done else 0.0
        metrics = {k: float(v) for k, v in epoch_report.metrics.items()}
        epoch_points.extend(MetricPoint(k, v, epoch_report.epoch) for k, v in metrics.items())
        ctx.progress({"epoch": done, "epochs": spec.epochs, "metrics": metrics,
                      "rows_per_s": round(len(data.x_train) * done / elapsed, 1) if elapsed > 0 else None,
                      "eta_s": round(eta, 1)}, force=done == spec.epochs)
        print(f"epoch {done}/{spec.epochs} " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)

    if spec.framework in DISTRIBUTED_FRAMEWORKS:
        # Ray Train workers record per-epoch progress and metrics themselves (rank 0)
        from mlhub.training.distributed import train_on_ray
        from mlhub.training.torch_adapter import trained_model

        final = train_on_ray(ctx, spec, run_id, working_dir=working_dir, initial=resume)
        trained = trained_model(final.payload, final.model_format, final.info, data, framework=spec.framework)
    elif spec.entrypoint:  # custom code of a single-process framework: its loop, here in the driver
        from mlhub.run_logging import job_run

        with job_run(ctx.backends, ctx.principal, run_id):  # its own start_run calls nest under the job's run
            trained = run_local_loop(spec, data, report, working_dir, ctx.settings.allowed_data_roots)
    elif resume is not None:
        trained = adapter.train(spec, data, report, resume=resume)
    else:
        trained = adapter.train(spec, data, report)
    artifact = ArtifactService(ctx.backends.db, ctx.backends.artifacts).upload(
        ctx.principal, io.BytesIO(trained.payload), media_type=MEDIA_TYPES.get(trained.model_format,
                                                                              "application/octet-stream"),
        name=f"{spec.model_name}.{trained.model_format}", run_id=run_id)
    with ctx.backends.db.tenant_scope(ctx.tenant_id) as s:
        runs_repo.log_metrics(s, ctx.tenant_id, run_id, epoch_points + [
            MetricPoint(f"final_{k}", float(v), 0) for k, v in trained.metrics.items()])
        s.execute(update(Run).where(Run.id == run_id).values(status="finished", ended_at=utcnow(),
                                                             summary=trained.metrics))
    print(f"model stored: artifact {artifact.id} ({artifact.size_bytes:,} bytes, sha256 {artifact.sha256[:12]})",
          flush=True)
    return {
        "kind": "training", "model_name": spec.model_name, "framework": trained.framework,
        "model_format": trained.model_format, "artifact_id": artifact.id, "artifact_sha256": artifact.sha256,
        "run_id": run_id, "metrics": trained.metrics, "input_schema": trained.input_schema,
        "reference_stats": trained.reference_stats, "dataset_fingerprint": data.fingerprint,
        "task": trained.task, "classes": trained.classes, "label": spec.version_label,
        "code_version": spec.code.sha256 if spec.code is not None else None,
    }


def run_evaluation(ctx: AttemptContext, spec: EvaluationSpec) -> dict[str, Any]:
    from mlhub.training.datasets import load_dataset
    from mlhub.training.evaluation import evaluate, plot_confusion_matrix

    if spec.num_workers > 1:  # the rows split across Ray workers, each loading the model once from its bytes
        from mlhub.training.distributed_eval import evaluate_job_on_ray

        version, data, task, result = evaluate_job_on_ray(ctx, spec)
    else:
        version, model = RegistryService(ctx.backends.db).load(ctx.principal, spec.model, ctx.backends.artifacts)
        data = load_dataset(spec.dataset, allowed_roots=ctx.settings.allowed_data_roots)
        task = (version.input_schema or {}).get("task") or data.task
        result = evaluate(model, (data.x_test, data.y_test), task)
    plot_id = None
    if result.confusion_matrix is not None:
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_confusion_matrix(result, Path(tmp) / "confusion.png")
            plot = ArtifactService(ctx.backends.db, ctx.backends.artifacts).upload(
                ctx.principal, png.read_bytes(), media_type="image/png", name=f"{version.model}-confusion.png")
            plot_id = plot.id
    with ctx.backends.db.tenant_scope(ctx.tenant_id) as s:
        s.execute(delete(Evaluation).where(Evaluation.tenant_id == ctx.tenant_id, Evaluation.job_id == ctx.job_id))
        row = Evaluation(tenant_id=ctx.tenant_id, version_id=version.id, job_id=ctx.job_id,
                         dataset=_dataset_label(spec.dataset), dataset_fingerprint=data.fingerprint, task=task,
                         metrics=result.metrics, confusion_matrix=result.confusion_matrix, labels=result.labels,
                         plot_artifact_id=plot_id)
        s.add(row)
        s.flush()
        evaluation_id = row.id
    print("metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items()
                                  if isinstance(v, int | float)), flush=True)
    return {"kind": "evaluation", "model": version.model, "version": version.version, "metrics": result.metrics,
            "evaluation_id": evaluation_id, "confusion_matrix_artifact_id": plot_id}


def run_batch_prediction(ctx: AttemptContext, spec: BatchPredictionSpec) -> dict[str, Any]:
    """Score a CSV/Parquet file or folder with a model version; write Parquet (id column + ``prediction``).

    The input is read and validated in this process (bad rows get their global row numbers; ``on_error``
    decides whether the job goes on without them). With ``num_workers`` > 1 and at least ``ray_min_rows``
    valid rows (default 50,000: below that, starting an actor pool costs more than it saves) the rows are
    scored by a Ray Data actor pool (:mod:`mlhub.batch.pipeline`), else here. With ``use_cache`` rows this
    version already scored come from the prediction cache (Redis, or SQLite under ``$MLHUB_HOME``); a
    broken cache only costs recomputation. The output, its row count, the cached and bad rows and the
    version used are recorded in ``batch_predictions``.
    """
    from mlhub.batch import ModelBytes, PredictionCacheConfig, predict_table
    from mlhub.training.datasets import load_table

    version = RegistryService(ctx.backends.db).resolve(ctx.principal, spec.model)
    if version.input_schema is None:
        raise PermanentJobFailure(f"model {version.model}/{version.version} has no input schema")
    if version.artifact_sha256 is None:
        raise PermanentJobFailure(f"model {version.model}/{version.version} has no artifact")
    payload = ctx.backends.artifacts.read_bytes(ctx.tenant_id, version.artifact_sha256)  # verified by sha256
    model = ModelBytes(version.framework, version.model_format, payload)  # loaded where it predicts
    frame = load_table(spec.input, allowed_roots=ctx.settings.allowed_data_roots)
    cache = PredictionCacheConfig.from_settings(ctx.settings) if spec.use_cache else None
    print(f"batch prediction with {version.model}/{version.version}: {len(frame):,} rows from {spec.input}; "
          f"cache: {cache.where if cache else 'off'}", flush=True)
    outcome = predict_table(
        frame, version.input_schema, model, tenant_id=ctx.tenant_id, version_id=version.id,
        id_column=spec.id_column, on_error=spec.on_error, batch_size=spec.batch_size,
        num_workers=spec.num_workers, resources=spec.resources.model_dump(exclude_none=True), cache=cache,
        ray_min_rows=spec.ray_min_rows, progress=lambda doc, last: ctx.progress(doc, force=last))
    output_uri, artifact_id = _write_predictions(ctx, spec, outcome.frame)
    errors = [{"row": e.row, "column": e.column, "message": e.message} for e in outcome.errors[:100]]
    with ctx.backends.db.tenant_scope(ctx.tenant_id) as s:
        s.execute(delete(BatchPrediction).where(BatchPrediction.tenant_id == ctx.tenant_id,
                                                BatchPrediction.job_id == ctx.job_id))
        s.add(BatchPrediction(tenant_id=ctx.tenant_id, job_id=ctx.job_id, version_id=version.id,
                              input_uri=spec.input, output_uri=output_uri, row_count=len(outcome.frame),
                              cached_rows=outcome.cached_rows, error_rows=outcome.n_bad, status="succeeded",
                              errors=errors))
    rate = len(outcome.frame) / outcome.seconds if outcome.seconds > 0 else 0.0
    print(f"predicted {len(outcome.frame):,} rows with {version.model}/{version.version} "
          f"({outcome.path}, {outcome.workers} worker(s), {rate:,.0f} rows/s); {outcome.cached_rows:,} from the "
          f"cache; {outcome.n_bad} bad rows; output: {output_uri}", flush=True)
    if outcome.cache.get("errors"):
        print(f"the prediction cache failed {outcome.cache['errors']} time(s); those rows were predicted instead",
              flush=True)
    return {"kind": "batch_prediction", "model": version.model, "version": version.version,
            "version_id": version.id, "rows": len(outcome.frame), "input_rows": outcome.n_rows,
            "cached_rows": outcome.cached_rows, "bad_rows": outcome.n_bad, "errors": errors[:20],
            "workers": outcome.workers, "cache": outcome.cache, "output": output_uri, "artifact_id": artifact_id}


def _write_predictions(ctx: AttemptContext, spec: BatchPredictionSpec, out) -> tuple[str, int | None]:
    buf = io.BytesIO()
    out.to_parquet(buf, index=False)
    if spec.output is None:
        rec = ArtifactService(ctx.backends.db, ctx.backends.artifacts).upload(
            ctx.principal, buf.getvalue(), media_type="application/vnd.apache.parquet",
            name=f"{spec.name}-predictions.parquet")
        return f"artifact:{rec.id}", rec.id
    target = Path(spec.output).expanduser().resolve()
    roots = ctx.settings.allowed_data_roots
    if not any(target.is_relative_to(r) for r in roots):
        raise ValidationError(f"output {spec.output} is outside the allowed data roots "
                              f"({', '.join(map(str, roots))}); set MLHUB_DATA_ROOTS")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{ctx.job_id}-{ctx.attempt}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(target)  # a retried attempt replaces the file whole, never appends to it
    return str(target), None


def run_diagnostic(ctx: AttemptContext, spec: DiagnosticSpec) -> dict[str, Any]:
    for i in range(spec.print_lines):
        print(f"diagnostic line {i + 1} of {spec.print_lines}")
    deadline = time.monotonic() + spec.sleep_s
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.25))
        if spec.sleep_s >= 1:
            ctx.progress({"slept_s": round(spec.sleep_s - max(left - 0.25, 0), 2), "of_s": spec.sleep_s})
    if spec.fail_permanently:
        raise PermanentJobFailure("diagnostic job asked to fail permanently")
    if ctx.attempt <= spec.fail_attempts:
        raise RuntimeError(f"diagnostic job fails attempt {ctx.attempt} of the first {spec.fail_attempts} on purpose")
    return {"kind": "diagnostic", "attempt": ctx.attempt}


def run_hpo(ctx: AttemptContext, spec: HpoSpec) -> dict[str, Any]:
    """A Ray Tune search (resumed if an earlier attempt left one), then the best params trained once more
    as a regular training run whose model the completion registers, with lineage to this job. After PBT, that
    run continues the best trial's own weights from its checkpoint before the last epoch (its schedule of
    params is in them), where the framework can warm-start; else it trains the final params from scratch."""
    from mlhub.hpo.driver import run_search

    search = run_search(ctx, spec)
    if search.warm_start is not None:
        print(f"training the best trial's last epoch again from its checkpoint after epoch "
              f"{search.warm_start['epoch']} (PBT: its weights carry its schedule) to register the model: "
              f"{search.best_params}", flush=True)
    else:
        print(f"training the best params once more to register the model: {search.best_params}", flush=True)
    result = run_training(ctx, search.best_spec, resume=search.warm_start)
    ctx.progress({**search.progress, "phase": "registered best"}, force=True)
    return {**result, "kind": "hpo", "metric": spec.metric, "mode": spec.mode, "best_trial_id": search.best_trial_id,
            "best_params": search.best_params, "best_metric": search.best_metric, "trials": search.trials,
            "trial_states": search.states, "resumed": search.resumed, "trials_carried_over": search.carried_over}


def run_drift_check(ctx: AttemptContext, spec: DriftCheckSpec) -> dict[str, Any]:
    """A drift check (a monitor's schedule, or `mlhub drift check --async`): report stored, alert rules evaluated."""
    from mlhub.monitoring.service import MonitoringService

    return MonitoringService.for_backends(ctx.backends).run_job(ctx.principal, spec.target, window_s=spec.window_s,
                                                                job_id=ctx.job_id)


def _dataset_label(ds) -> str:
    return ds.name or ds.path or f"synthetic-{ds.task}-{ds.seed}"

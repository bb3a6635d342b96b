"""Job specs: what a user submits, validated before anything is queued.

One discriminated union (``kind``) of four job kinds. Names follow a safe pattern, sizes are bounded,
unknown fields are rejected, and a bad spec reports every bad field at once
(:func:`parse_spec` raises :class:`mlhub.errors.ValidationError` with ``details["errors"]``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from mlhub.domain.enums import QueueName
from mlhub.errors import ValidationError

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_RE, description="1-64 of letters, digits, '_', '.', '-'")]
PRIORITY_LEVELS = {"low": -50, "normal": 0, "high": 50, "critical": 100}
PRIORITY_RANGE = (-1000, 1000)
SKLEARN_DATASETS = ("iris", "digits", "wine", "breast_cancer", "diabetes")
MAX_SPEC_BYTES = 1 << 20
MAX_PARAMS = 64
MAX_TAGS = 32
ENTRYPOINT_RE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class DatasetSpec(_Strict):
    """Where training/evaluation data comes from. Nothing is downloaded: bundled, generated or local files."""

    source: Literal["sklearn", "synthetic", "csv", "parquet"]
    # validate_default: the per-source rules below run even when the field is left out, and alongside
    # every other field's errors (a model validator would only run once all fields are valid)
    name: str | None = Field(None, validate_default=True,
                             description=f"sklearn: one of {', '.join(SKLEARN_DATASETS)}")
    path: str | None = Field(None, max_length=4096, validate_default=True,
                             description="csv/parquet: a file or a folder")
    target: str | None = Field(None, max_length=256, validate_default=True,
                               description="csv/parquet: the label column")
    task: Literal["classification", "regression"] | None = Field(None, validate_default=True,
                                                                 description="synthetic: the task")
    n_samples: int = Field(1000, ge=10, le=10_000_000, description="synthetic: rows to generate")
    n_features: int = Field(10, ge=1, le=10_000, description="synthetic: feature columns")
    n_classes: int = Field(2, ge=2, le=1000, description="synthetic classification: classes")
    noise: float = Field(0.1, ge=0, le=100, description="synthetic: label noise")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the generator and of the train/test split")
    test_size: float = Field(0.2, gt=0, lt=1, description="share of the rows held out for validation")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None, info) -> str | None:
        if info.data.get("source") == "sklearn" and v not in SKLEARN_DATASETS:
            raise ValueError(f"sklearn dataset name must be one of {', '.join(SKLEARN_DATASETS)}")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None, info) -> str | None:
        source = info.data.get("source")
        if source in ("csv", "parquet") and not v:
            raise ValueError(f"{source} datasets need a path")
        if v is not None and "\x00" in v:
            raise ValueError("path must not contain NUL")
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | None, info) -> str | None:
        source = info.data.get("source")
        if source in ("csv", "parquet") and not v:
            raise ValueError(f"{source} datasets need a target column")
        return v

    @field_validator("task")
    @classmethod
    def _task(cls, v: str | None, info) -> str | None:
        if info.data.get("source") == "synthetic" and v is None:
            raise ValueError("synthetic datasets need task: classification or regression")
        return v


class Resources(_Strict):
    num_cpus: float = Field(1.0, ge=0, le=1024, description="CPUs (fractions allowed)")
    num_gpus: float = Field(0.0, ge=0, le=64, description="GPUs (fractions allowed)")
    memory_mb: int | None = Field(None, ge=1, le=4_000_000, description="memory reserved with Ray, in MiB")
    custom: dict[str, Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]] = Field(
        default_factory=dict, max_length=16, description="custom Ray resources by name")


class RetryPolicy(_Strict):
    max_attempts: int = Field(3, ge=1, le=20, description="attempts before the job is dead")
    backoff_s: float = Field(1.0, ge=0, le=3600, description="wait before the second attempt; doubles each time")
    max_backoff_s: float = Field(60.0, ge=0, le=86_400, description="the longest wait between attempts")
    jitter: float = Field(0.5, ge=0, le=1, description="fraction of each delay that is randomised")


class ScheduleSpec(_Strict):
    """A recurring job: exactly one of a cron expression (UTC) or an interval."""

    cron: str | None = Field(None, max_length=128, description="a cron expression, in UTC")
    interval_s: int | None = Field(None, ge=1, le=366 * 86_400, description="seconds between runs")

    @model_validator(mode="after")
    def _one_of(self) -> ScheduleSpec:
        if (self.cron is None) == (self.interval_s is None):
            raise ValueError("give exactly one of cron or interval_s")
        if self.cron is not None:
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ValueError(f"invalid cron expression {self.cron!r}")
            from datetime import UTC, datetime

            try:
                croniter(self.cron, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
            except Exception:  # noqa: BLE001 - croniter raises several types for dates that never come
                raise ValueError(f"cron expression {self.cron!r} never fires") from None
        return self


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
MAX_DOC_CHARS = 64_000
MAX_DOC_NODES = 10_000


def _doc_size(value: Any, budget: list[int]) -> None:
    """Walk a JSON-like value, spending ``budget`` = [nodes, chars]; stop as soon as either runs out, so a
    document made huge by shared references (YAML aliases) is refused without ever being expanded."""
    stack = [value]
    while stack:
        item = stack.pop()
        budget[0] -= 1
        if isinstance(item, dict):
            budget[1] -= sum(len(str(k)) for k in item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        else:
            budget[1] -= len(str(item))
        if budget[0] < 0 or budget[1] < 0:
            raise ValueError(f"too large: at most {MAX_DOC_NODES} values and {MAX_DOC_CHARS // 1000} kB")


def _bounded_json(value: dict[str, Any], what: str, max_items: int) -> dict[str, Any]:
    if len(value) > max_items:
        raise ValueError(f"at most {max_items} {what}")
    try:
        _doc_size(value, [MAX_DOC_NODES, MAX_DOC_CHARS])
    except ValueError as exc:
        raise ValueError(f"{what} {exc}") from None
    for k in value:
        if not isinstance(k, str) or not _KEY.fullmatch(k):
            raise ValueError(f"invalid {what} key {k!r}")
    return value


class _JobBase(_Strict):
    name: Name
    priority: int | Literal["low", "normal", "high", "critical"] = Field(
        "normal", description="-1000..1000, or low (-50), normal (0), high (50), critical (100); higher runs first")
    resources: Resources = Field(default_factory=Resources, description="what one attempt holds while it runs")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="attempts and backoff")
    schedule: ScheduleSpec | None = Field(None, description="run again on a schedule")
    timeout_s: float | None = Field(None, gt=0, le=7 * 86_400, description="an attempt running longer is stopped")
    tags: dict[str, str] = Field(default_factory=dict, description="free-form labels (at most 32, values up to "
                                 "256 characters)")

    @field_validator("priority")
    @classmethod
    def _priority(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not PRIORITY_RANGE[0] <= v <= PRIORITY_RANGE[1]:
            raise ValueError(f"priority must be between {PRIORITY_RANGE[0]} and {PRIORITY_RANGE[1]}")
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        if any(len(x) > 256 for x in v.values()):
            raise ValueError("tag values are at most 256 characters")
        return _bounded_json(v, "tags", MAX_TAGS)

    @property
    def priority_value(self) -> int:
        return PRIORITY_LEVELS[self.priority] if isinstance(self.priority, str) else self.priority

    @property
    def queue(self) -> QueueName:
        return QueueName(KIND_QUEUE[self.kind])  # type: ignore[attr-defined]


class CodeRef(_Strict):
    """Custom training code sent with a job: the zip of its working directory in the artifact store, packed
    and uploaded by the client at submit (:mod:`mlhub.jobs.code`), fetched and verified where the job runs."""

    artifact_id: int = Field(..., ge=1, le=2**63 - 1, description="the zip's artifact")
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="the zip's sha256, checked where the job runs")


class TrainingSpec(_JobBase):
    kind: Literal["training"] = "training"
    framework: Literal["baseline", "sklearn", "torch", "tensorflow"]
    model: str = Field(..., min_length=1, max_length=128, description="baseline: linear|logistic; sklearn: estimator")
    params: dict[str, Any] = Field(default_factory=dict, description="hyperparameters of the model (at most 64)")
    dataset: DatasetSpec
    epochs: int = Field(1, ge=1, le=100_000, description="passes over the training data")
    num_workers: int = Field(1, ge=1, le=1024, description="torch/tensorflow: Ray Train workers")
    use_gpu: bool = Field(False, description="torch/tensorflow: one GPU per Train worker")
    resources_per_worker: Resources | None = Field(
        None, description="torch/tensorflow: each Train worker's share (default 1 CPU, and 1 GPU with use_gpu)")
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="torch: data-parallel (DDP) or sharded (FSDP)")
    checkpoint_every: int = Field(1, ge=0, le=100_000,
                                  description="torch/tensorflow: checkpoint every N epochs (0: only the last)")
    max_worker_failures: int = Field(2, ge=0, le=100, description="torch/tensorflow: worker-group restarts "
                                     "from the last checkpoint within one attempt")
    entrypoint: str | None = Field(None, pattern=ENTRYPOINT_RE, description="custom training code: "
                                   "'module:function' inside the job's working directory")
    code: CodeRef | None = Field(None, description="the job's packed working directory (set at submit when "
                                 "entrypoint or a torch 'module:factory' model names user code)")
    register_as: Name | None = Field(None, description="registered model name (default: the job name)")
    version_label: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,63}$",
                                      description="a label for the registered version, e.g. 1.0.0 (numbers "
                                      "1, 2, 3 are given by the registry)")

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, val in v.items():
            if isinstance(val, float) and not math.isfinite(val):
                raise ValueError(f"param {key!r} must be finite")
        return _bounded_json(v, "params", MAX_PARAMS)

    @property
    def model_name(self) -> str:
        return self.register_as or self.name


DISTRIBUTED_FRAMEWORKS = ("torch", "tensorflow")


def worker_resources(spec: TrainingSpec) -> dict[str, Any]:
    """One training process's resources: a Train worker's (torch/tensorflow) or the job's own."""
    if spec.framework in DISTRIBUTED_FRAMEWORKS:
        if spec.resources_per_worker is not None:
            return spec.resources_per_worker.model_dump(exclude_none=True)
        return {"num_cpus": 1.0, "num_gpus": 1.0 if spec.use_gpu else 0.0}
    return spec.resources.model_dump(exclude_none=True)


def _scaled(res: dict[str, Any], n: int) -> dict[str, Any]:
    out = {k: float(res.get(k, 0.0)) * n for k in ("num_cpus", "num_gpus")}
    if res.get("memory_mb"):
        out["memory_mb"] = int(res["memory_mb"]) * n
    if res.get("custom"):
        out["custom"] = {k: float(v) * n for k, v in res["custom"].items()}
    return out


def job_demand(spec: Any) -> dict[str, Any] | None:
    """What a job that fans out holds while it runs, for the orchestrator's admission; ``None`` when the job
    is one process with ``spec.resources``. The row gets ``driver: true``: its own Ray task then takes 0 CPUs
    and the Train workers, Tune trials, evaluation shard tasks or Ray Data actors it starts claim these resources.
    An HPO job's row also gets ``unit`` (one trial) and ``scales: max_concurrent_trials``: the orchestrator may
    start it with fewer concurrent trials when the whole demand does not fit (Serve replicas hold part of the
    cluster, say), setting that spec field of the attempt to the number that fits."""
    if isinstance(spec, TrainingSpec) and spec.framework in DISTRIBUTED_FRAMEWORKS:
        return {**_scaled(worker_resources(spec), spec.num_workers), "driver": True}
    if isinstance(spec, HpoSpec):  # elastic: it can start with fewer concurrent trials (one unit each)
        trial = worker_resources(spec.trainer)
        return {**_scaled(trial, spec.max_concurrent_trials), "driver": True,
                "unit": {k: float(trial.get(k, 0.0)) for k in ("num_cpus", "num_gpus")},
                "scales": "max_concurrent_trials"}
    if isinstance(spec, EvaluationSpec) and spec.num_workers > 1:  # one shard task per worker, `resources` each
        return {**_scaled(spec.resources.model_dump(exclude_none=True), spec.num_workers), "driver": True}
    if isinstance(spec, BatchPredictionSpec) and spec.num_workers > 1:  # Ray Data actors, `resources` each
        return {**_scaled(spec.resources.model_dump(exclude_none=True), spec.num_workers), "driver": True}
    return None


MODEL_REF_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]{0,63})(?:@(?P<alias>[A-Za-z0-9_\-]{1,64})|/(?P<version>[1-9][0-9]{0,8}))?$")


def parse_model_ref(ref: str) -> tuple[str, str | None, int | None]:
    """``name`` (latest version), ``name@alias`` or ``name/3`` -> (name, alias, version)."""
    m = MODEL_REF_RE.fullmatch(ref or "") if isinstance(ref, str) else None
    if m is None:
        raise ValueError(f"invalid model reference {ref!r}: use name, name@alias or name/VERSION")
    return m["name"], m["alias"], int(m["version"]) if m["version"] else None


class _ModelJob(_JobBase):
    model: str = Field(..., description="name, name@alias or name/VERSION")

    @field_validator("model")
    @classmethod
    def _ref(cls, v: str) -> str:
        parse_model_ref(v)
        return v


class EvaluationSpec(_ModelJob):
    kind: Literal["evaluation"] = "evaluation"
    dataset: DatasetSpec
    num_workers: int = Field(1, ge=1, le=1024, description="torch models: split the evaluation rows across this "
                             "many Ray workers, each with `resources` (1: evaluate in the job's own process)")


class BatchPredictionSpec(_ModelJob):
    kind: Literal["batch_prediction"] = "batch_prediction"
    input: str = Field(..., min_length=1, max_length=4096, description="CSV or Parquet file or folder")
    output: str | None = Field(None, max_length=4096, description="Parquet file to write (default: artifact)")
    id_column: str | None = Field(None, max_length=256, description="input column copied to the output to identify "
                                     "rows")
    on_error: Literal["skip", "fail"] = Field("fail", description="bad rows: skip them, or fail the job")
    batch_size: int = Field(4096, ge=1, le=1_000_000, description="rows per model call")
    num_workers: int = Field(1, ge=1, le=1024, description="Ray Data actors scoring the rows, `resources` each "
                             "(1: score in the job's own process)")
    ray_min_rows: int = Field(50_000, ge=0, le=10**12, description="with num_workers > 1, inputs with fewer valid "
                              "rows are scored in the job's own process (an actor pool's start-up costs more)")
    use_cache: bool = Field(True, description="serve rows this model version already scored from the prediction "
                            "cache, and cache new predictions")


class SearchDimension(_Strict):
    type: Literal["uniform", "loguniform", "randint", "choice", "grid"] = Field(
        ..., description="uniform, loguniform (low > 0), randint (both ends included): a range; choice, grid: values")
    low: float | None = Field(None, description="range types: the lower end")
    high: float | None = Field(None, description="range types: the upper end")
    values: list[Any] | None = Field(None, max_length=1000, description="choice and grid: the values")

    @model_validator(mode="after")
    def _shape(self) -> SearchDimension:
        if self.type in ("uniform", "loguniform", "randint"):
            if self.low is None or self.high is None:
                raise ValueError(f"{self.type} needs low and high")
            if not self.low < self.high:
                raise ValueError(f"empty range: low ({self.low}) must be below high ({self.high})")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError("loguniform needs low > 0")
        elif not self.values:
            raise ValueError(f"{self.type} needs a non-empty values list")
        return self


class HpoSpec(_JobBase):
    kind: Literal["hpo"] = "hpo"
    trainer: TrainingSpec = Field(..., description="the training each trial runs, with the sampled params")
    search_space: dict[str, SearchDimension] = Field(..., min_length=1, max_length=32, description="the trainer's "
                                                     "params to search (the key epochs sets its epochs)")
    metric: str = Field(..., min_length=1, max_length=128, description="the reported metric trials are ranked by")
    mode: Literal["min", "max"] = Field("max", description="whether a lower or a higher metric is better")
    num_samples: int = Field(10, ge=1, le=10_000, description="trials (random, optuna); unused by grid")
    max_concurrent_trials: int = Field(2, ge=1, le=1024, description="trials running at once; a search starts "
                                       "with fewer (at least one) when only fewer fit beside the cluster's other "
                                       "work")
    search: Literal["random", "grid", "optuna"] = Field("random", description="random draws, every grid "
                                                        "combination once, or Optuna's TPE")
    scheduler: Literal["none", "asha", "hyperband", "pbt", "median"] = Field(
        "none", description="early stopping of poor trials, counted in epochs")
    time_budget_s: float | None = Field(None, gt=0, le=7 * 86_400, description="stop the search after this long")
    perturbation_interval: int | None = Field(None, ge=1, le=100_000, description="pbt: epochs between two "
                                              "exploit/explore steps of a trial (default: a quarter of its epochs)")
    pbt_synch: bool = Field(False, description="pbt: trials wait for each other at every step, so each step ranks "
                            "the whole population (Tune's synch=True); else a trial is ranked against the others' "
                            "latest scores as soon as it arrives")


class DiagnosticSpec(_JobBase):
    """A job that trains nothing: it sleeps, prints and fails on purpose. For smoke tests of a deployment,
    the no-op benchmarks and the reliability tests (retries, cancellation, killed workers)."""

    kind: Literal["diagnostic"] = "diagnostic"
    target_queue: Literal["training", "evaluation", "batch_prediction", "hpo"] = Field(
        "evaluation", description="the queue the job waits and runs on")
    sleep_s: float = Field(0.0, ge=0, le=86_400, description="seconds to sleep")
    print_lines: int = Field(0, ge=0, le=100_000, description="lines to print")
    fail_attempts: int = Field(0, ge=0, le=100, description="fail this many attempts first (retryable)")
    fail_permanently: bool = Field(False, description="fail with a permanent error (no retry)")

    @property
    def queue(self) -> QueueName:
        return QueueName(self.target_queue)


class DriftCheckSpec(_JobBase):
    """A drift check (:mod:`mlhub.monitoring`): recent prediction inputs against the training reference, then the
    tenant's alert rules. A monitor's schedule enqueues one; ``mlhub drift check NAME --async`` too."""

    kind: Literal["drift_check"] = "drift_check"
    target: str = Field(..., min_length=1, max_length=200, description="a monitor's name, or a model reference "
                        "(name, name@alias, name/VERSION) checked with the default thresholds")
    window_s: int | None = Field(None, ge=60, le=366 * 86_400, description="how far back the recent inputs go "
                                 "(default: the monitor's window, else one day)")


JobSpec = Annotated[TrainingSpec | EvaluationSpec | BatchPredictionSpec | HpoSpec | DiagnosticSpec | DriftCheckSpec,
                    Field(discriminator="kind")]
KIND_QUEUE = {"training": "training", "evaluation": "evaluation", "batch_prediction": "batch_prediction",
              "hpo": "hpo", "drift_check": "evaluation"}
AnySpec = TrainingSpec | EvaluationSpec | BatchPredictionSpec | HpoSpec | DiagnosticSpec | DriftCheckSpec
_ADAPTER: TypeAdapter[Any] = TypeAdapter(JobSpec)
_KINDS = {*KIND_QUEUE, "diagnostic"}


def error_lines(exc: pydantic.ValidationError) -> list[str]:
    """One readable line per bad field: ``dataset.name: sklearn dataset name must be one of ...``."""
    out = []
    for err in exc.errors(include_url=False):
        parts = list(err["loc"])
        if parts and parts[0] in _KINDS:  # the union's tag, not a field the user wrote
            parts = parts[1:]
        loc = ".".join(str(p) for p in parts) or "spec"
        out.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return out


def parse_spec(data: Any) -> AnySpec:
    """Validate a spec document; raise ValidationError listing every bad field."""
    if not isinstance(data, dict):
        raise ValidationError("a job spec must be a mapping (YAML/JSON object)")
    try:
        return _ADAPTER.validate_python(data)
    except pydantic.ValidationError as exc:
        lines = error_lines(exc)
        raise ValidationError("invalid job spec: " + "; ".join(lines), details={"errors": lines}) from None


def load_spec_file(path: str | Path) -> AnySpec:
    """Load a YAML or JSON spec file (at most 1 MiB)."""
    import yaml

    p = Path(path)
    try:
        if p.stat().st_size > MAX_SPEC_BYTES:
            raise ValidationError(f"{p}: spec files are at most 1 MiB")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationError(f"spec file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read spec file {p}: {exc}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValidationError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {exc}") from None
    return parse_spec(data)


def spec_to_document(spec: BaseModel) -> dict[str, Any]:
    """The JSON document stored with a job (round-trips through :func:`parse_spec`)."""
    return spec.model_dump(mode="json", exclude_none=True)

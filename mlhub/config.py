"""One ``Settings`` object, read from ``MLHUB_*`` environment variables and ``.env``.

Built once at the face (CLI, Serve app, actor) with :func:`load_settings` and passed down; no other module
reads ``os.environ``. Every default is the embedded one: SQLite and artifacts under ``$MLHUB_HOME``, an
in-process cache, a local Ray head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlhub.errors import ConfigError

ENV_PREFIX = "MLHUB_"

_DB_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_MONGO_SCHEMES = ("mongodb://", "mongodb+srv://")


QUEUES = ("training", "evaluation", "batch_prediction", "hpo")


def _check_queue_names(v: dict) -> None:
    unknown = set(v) - set(QUEUES)
    if unknown:
        raise ValueError(f"unknown queue(s) {sorted(unknown)}: use {', '.join(QUEUES)}")


class Settings(BaseSettings):
    """mlhub's configuration. Each field is set by ``MLHUB_<FIELD NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    home: Path = Field(default=Path("~/.mlhub"), description="Where embedded state lives (SQLite, artifacts).")
    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the system of record; default: SQLite file in MLHUB_HOME.",
    )
    database_app_url: SecretStr | None = Field(
        default=None, description="Optional separate login for tenant-scoped work (PostgreSQL)."
    )
    database_scheduler_url: SecretStr | None = Field(
        default=None, description="Optional separate login for the orchestrator's cross-tenant work."
    )
    database_pool_size: int = Field(default=5, ge=1, le=100, description="Connections per process.")
    redis_url: SecretStr | None = Field(default=None, description="Redis URL for the cache; default: in-process.")
    mongodb_uri: SecretStr | None = Field(
        default=None, description="MongoDB URI for GridFS artifacts; default: files in MLHUB_HOME."
    )
    mongodb_database: str = Field(default="mlhub", min_length=1, max_length=63, pattern=r"^[A-Za-z0-9_\-]+$",
                                  description="MongoDB database holding the GridFS bucket.")
    ray_address: str | None = Field(default=None, description="Ray cluster to use; default: a local head.")
    api_key: SecretStr | None = Field(default=None, description="The CLI's tenant API key.")
    max_concurrent_jobs: int = Field(default=4, ge=1, le=10_000, description="Global cap on running jobs.")
    tenant_max_running_jobs: int | None = Field(
        default=None, ge=1, le=10_000, description="Default per-tenant cap on running jobs (unset: no cap)."
    )
    queue_concurrency: dict[str, int] = Field(
        default_factory=dict,
        description='Running jobs per queue (JSON, e.g. {"training": 2}); default: the global cap each.',
    )
    queue_resources: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='Default resource shape per queue for jobs that set none (JSON, e.g. '
        '{"training": {"num_cpus": 2}}).',
    )
    preemptible_queues: list[str] = Field(
        default_factory=list,
        description='Queues whose running jobs a waiting job of higher priority may preempt (JSON, e.g. '
        '["training", "hpo"]): the preempted job goes back on its queue and resumes from its last checkpoint.',
    )
    preempt_after_s: float = Field(default=10.0, ge=0, le=86_400,
                                   description="A job runs at least this long before it can be preempted.")
    data_roots: list[Path] = Field(
        default_factory=list,
        description="Folders jobs may read datasets from and write predictions to (JSON list); "
        "MLHUB_HOME/data is always allowed.",
    )
    ray_storage: str | None = Field(
        default=None, max_length=4096,
        description="Where Ray Train/Tune keep checkpoints and experiment state: a folder every node sees "
        "or a URI such as s3://bucket/prefix; default: MLHUB_HOME/ray_results (one machine).",
    )
    cache_ttl_s: float = Field(default=30.0, gt=0, le=86_400, description="TTL of registry lookups in cache.")
    cache_max_entries: int = Field(default=10_000, ge=1, description="Size of the in-process LRU cache.")
    backend_timeout_s: float = Field(default=2.0, gt=0, le=60, description="Timeout for Redis/MongoDB calls.")
    prediction_cache_ttl_s: float = Field(
        default=30 * 86_400, gt=0, le=3650 * 86_400,
        description="How long Redis keeps a cached batch prediction (the embedded store under MLHUB_HOME/cache "
        "keeps entries until deleted).",
    )
    # --- serving (Ray Serve inference and REST API) -----------------------------------------------------
    serve_ingress: Literal["auto", "haproxy", "proxy"] = Field(
        default="auto",
        description="Serve's HTTP ingress on a head `mlhub start` launches: haproxy (throughput-optimized mode with "
        "HAProxy, about 6x the requests/s on small machines), proxy (Serve's default proxy actor), auto (haproxy "
        "when the binary is installed).")
    haproxy_binary: str | None = Field(default=None, max_length=4096,
                                       description="HAProxy binary for the fast ingress (default: found on PATH).")
    serve_http_host: str = Field(default="127.0.0.1", max_length=255,
                                 description="Address Serve's HTTP ingress listens on (`mlhub start`).")
    serve_http_port: int = Field(default=8000, ge=1, le=65_535, description="Serve's HTTP port (`mlhub start`).")
    api_key_cache_ttl_s: float = Field(
        default=5.0, ge=0, le=300,
        description="Serving and the REST API remember a resolved API key this long (0: resolve every request); "
        "a revoked key stops working within this time.")
    serve_max_batch_size: int = Field(default=32, ge=1, le=4096,
                                      description="Most rows of requests one `@serve.batch` call scores together.")
    serve_batch_wait_timeout_s: float = Field(
        default=0.0, ge=0, le=10,
        description="How long a batch waits to fill up; 0 takes what queued while the previous batch ran (no "
        "added latency at low load, full batches under load).")
    serve_max_ongoing_requests: int = Field(default=64, ge=1, le=100_000,
                                            description="Requests one inference replica works on at once.")
    serve_max_queued_requests: int = Field(
        default=256, ge=-1, le=1_000_000,
        description="Requests waiting for a replica before Serve answers 503 (-1: unbounded, not advised).")
    serve_max_models_per_replica: int = Field(default=8, ge=1, le=1024,
                                              description="Model versions one replica keeps loaded (LRU).")
    serve_max_body_bytes: int = Field(default=1_048_576, ge=1024, le=1 << 30,
                                      description="Largest request body the inference routes accept (413 beyond).")
    serve_max_rows: int = Field(default=10_000, ge=1, le=10_000_000,
                                description="Most rows one predict request may carry (413 beyond).")
    serve_replica_cpus: float = Field(default=0.5, gt=0, le=64, description="CPUs reserved per inference replica.")
    serve_alias_ttl_s: float = Field(
        default=2.0, gt=0, le=3600,
        description="How long a replica trusts `name@alias` -> version; a promotion is served within this time.")
    prediction_log_sample_rate: float = Field(
        default=0.1, ge=0, le=1,
        description="Share of predictions logged with inputs/outputs (requests in a running experiment are always "
        "logged).")
    # --- monitoring: drift checks and alert webhooks ------------------------------------------------------
    webhook_allow_private: bool = Field(
        default=False,
        description="Let alert webhooks call loopback, private and link-local addresses (off: such URLs are "
        "refused, whatever their host name resolves to).")
    webhook_allowed_hosts: list[str] = Field(
        default_factory=list,
        description='Host names, addresses or networks alert webhooks may call even when private (JSON, e.g. '
        '["alerts.internal", "10.0.0.0/8"]).')
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60, description="Timeout of one webhook call.")
    webhook_retries: int = Field(default=2, ge=0, le=10,
                                 description="Webhook calls retried this many times after a network error or 5xx.")
    drift_max_rows: int = Field(
        default=50_000, ge=100, le=10_000_000,
        description="Most logged prediction rows (the newest) one drift check compares with the reference.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("database_url", "database_app_url", "database_scheduler_url", mode="after")
    @classmethod
    def _check_db_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        raw = v.get_secret_value()
        scheme = raw.split("://", 1)[0] if "://" in raw else ""
        if scheme not in _DB_SCHEMES:
            raise ValueError(
                "must be a SQLAlchemy URL starting with sqlite:/// or postgresql+psycopg://"
            )
        if scheme == "postgresql":  # psycopg 3 is the driver we ship
            raw = "postgresql+psycopg://" + raw.split("://", 1)[1]
        return SecretStr(raw)

    @field_validator("queue_concurrency", mode="after")
    @classmethod
    def _check_queue_concurrency(cls, v: dict[str, int]) -> dict[str, int]:
        _check_queue_names(v)
        if any(n < 0 or n > 10_000 for n in v.values()):
            raise ValueError("each queue's concurrency must be between 0 and 10000")
        return v

    @field_validator("preemptible_queues", mode="after")
    @classmethod
    def _check_preemptible(cls, v: list[str]) -> list[str]:
        _check_queue_names(dict.fromkeys(v))
        return v

    @field_validator("queue_resources", mode="after")
    @classmethod
    def _check_queue_resources(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        _check_queue_names(v)
        for shape in v.values():
            unknown = set(shape) - {"num_cpus", "num_gpus", "memory_mb"}
            if unknown:
                raise ValueError(f"unknown resource(s) {sorted(unknown)}: use num_cpus, num_gpus, memory_mb")
            if any(not 0 <= x <= 4_000_000 for x in shape.values()):
                raise ValueError("resource amounts must be between 0 and 4000000")
        return v

    @field_validator("redis_url", mode="after")
    @classmethod
    def _check_redis_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(_REDIS_SCHEMES):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @field_validator("mongodb_uri", mode="after")
    @classmethod
    def _check_mongo_uri(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(_MONGO_SCHEMES):
            raise ValueError("must start with mongodb:// or mongodb+srv://")
        return v

    # --- derived values -------------------------------------------------------------------------------

    @property
    def sqlite_path(self) -> Path:
        return self.home / "mlhub.db"

    @property
    def effective_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.sqlite_path}"

    @property
    def is_embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def credentials_path(self) -> Path:
        return self.home / "credentials"

    def to_document(self) -> dict:
        """Every field with secrets revealed, to hand the same settings to Ray actors and tasks (trusted
        infrastructure); never log it."""
        doc = self.model_dump(mode="json")
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                doc[name] = value.get_secret_value()
        return doc

    @property
    def allowed_data_roots(self) -> list[Path]:
        return [*(p.expanduser().resolve() for p in self.data_roots), self.home / "data"]

    @property
    def ray_storage_path(self) -> str:
        """Ray Train/Tune ``storage_path``: the configured folder or URI, else MLHUB_HOME/ray_results."""
        if self.ray_storage:
            return self.ray_storage if "://" in self.ray_storage else str(Path(self.ray_storage).expanduser().resolve())
        return str(self.home / "ray_results")


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (and ``.env``), with ``overrides`` taking precedence.

    Raises :class:`ConfigError` naming every invalid variable, e.g. ``MLHUB_REDIS_URL: must start with ...``.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{env_name(field)}: {msg}")
        raise ConfigError("invalid settings: " + "; ".join(problems), details={"errors": problems}) from None

"""mlhub's exceptions: one root with a stable code and an HTTP status, typed subclasses that carry data.

Errors are translated once at each boundary: the store turns database errors into these, the CLI turns
these into one line and an exit status, the REST API into a JSON body and ``http_status``.
Every message passes through :func:`redact` before it is shown or logged.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "ArtifactIntegrityError",
    "AuthenticationError",
    "BackendUnavailable",
    "ConfigError",
    "ConflictError",
    "ExperimentStateError",
    "JobFailed",
    "MlhubError",
    "ModelLoadError",
    "NotFoundError",
    "PermanentJobFailure",
    "QuotaExceeded",
    "SchemaOutdated",
    "TenantAccessDenied",
    "ValidationError",
    "WebhookRefused",
    "redact",
]


class MlhubError(Exception):
    """Root of every error mlhub raises on purpose.

    ``code`` is stable and machine-readable, ``http_status`` what the REST API answers, ``details``
    structured data a caller may show (field errors, numbers that failed a gate, ...).
    """

    code: str = "mlhub_error"
    http_status: int = 500
    exit_code: int = 1

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        self.message = redact(message)
        self.details = details or {}
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class ConfigError(MlhubError):
    """A setting is missing or invalid; the message names the environment variable."""

    code = "config_invalid"
    http_status = 500
    exit_code = 2


class ValidationError(MlhubError):
    """User input is invalid. ``details["errors"]`` lists every bad field at once."""

    code = "validation_failed"
    http_status = 422
    exit_code = 2


class WebhookRefused(ValidationError):
    """A webhook URL mlhub will not call: a scheme other than http/https, or a host that is (or resolves to) a
    loopback, private, link-local or otherwise non-public address while such addresses are not allowed."""

    code = "webhook_refused"


class AuthenticationError(MlhubError):
    """No API key, or one that is unknown or revoked."""

    code = "unauthenticated"
    http_status = 401
    exit_code = 3


class NotFoundError(MlhubError):
    code = "not_found"
    http_status = 404
    exit_code = 4


class ConflictError(MlhubError):
    """The operation clashes with existing state (a duplicate name, a version still in use, ...)."""

    code = "conflict"
    http_status = 409
    exit_code = 5


class PromotionRefused(ConflictError):
    """A promotion failed one of the model's gates; ``details["gates"]`` holds every verdict with its numbers."""

    code = "promotion_refused"


class ExperimentStateError(ConflictError):
    """An experiment is not in a state that allows the operation (starting a stopped one, an outcome for a draft,
    promoting without a clear winner); ``details["status"]`` holds its status."""

    code = "experiment_state"


class TenantAccessDenied(MlhubError):
    """The caller's tenant may not touch this resource. The REST API answers 404 for reads so that other
    tenants' resources are indistinguishable from missing ones; this error is for writes and policies."""

    code = "tenant_access_denied"
    http_status = 403
    exit_code = 3


class QuotaExceeded(MlhubError):
    code = "quota_exceeded"
    http_status = 429
    exit_code = 6


class BackendUnavailable(MlhubError):
    """A backend (database, Redis, MongoDB, Ray) cannot be reached or timed out."""

    code = "backend_unavailable"
    http_status = 503
    exit_code = 7


class SchemaOutdated(BackendUnavailable):
    """The database schema is older (or newer) than this mlhub; the message says to run `mlhub db upgrade`."""

    code = "schema_outdated"


class JobFailed(MlhubError):
    code = "job_failed"
    http_status = 500
    exit_code = 8


class PermanentJobFailure(JobFailed):
    """Raised inside a job for an error that retrying cannot fix: the job ends ``failed``, not retried."""

    code = "job_failed_permanently"


class ModelLoadError(MlhubError):
    """A model artifact could not be loaded safely (unknown format, untrusted types, corrupt file)."""

    code = "model_load_failed"
    http_status = 422
    exit_code = 9


class ArtifactIntegrityError(MlhubError):
    """Stored bytes do not match their recorded sha256."""

    code = "artifact_integrity"
    http_status = 500
    exit_code = 10


# --- redaction ---------------------------------------------------------------------------------------

_MASK = "***"
# scheme://user:password@host  ->  scheme://user:***@host  (any scheme: postgresql+psycopg, redis, mongodb+srv)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
# key=value pairs in libpq DSNs, query strings and log lines: password=..., token: ..., api_key="..."
# key=value pairs in libpq DSNs, query strings, JSON and log lines: password=..., "token": "...",
# api_key='a quoted value with spaces'
_KEY_VALUE = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|auth[_-]?token|"
    r"client[_-]?secret|sslpassword)\b)(?P<kq>['\"]?)(?P<sep>\s*[=:]\s*)"
    r"(?P<val>'[^']*'|\"[^\"]*\"|[^'\"\s&;,}]+)",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(r"(?P<prefix>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=\-]+", re.IGNORECASE)
_MLHUB_KEY = re.compile(r"\b(?P<prefix>mlh_[A-Za-z0-9]{8})_[A-Za-z0-9]{16,}\b")


def _quote_like(value: str) -> str:
    q = value[0] if value[:1] in ("'", '"') else ""
    return f"{q}{_MASK}{q}"


def redact(text: object) -> str:
    """Return ``text`` with passwords, tokens, bearer credentials and DSN passwords masked.

    Safe on any string (log lines, exception messages, URLs). Usernames and hosts are kept, since they
    help to diagnose and are not secret.
    """
    s = str(text)
    s = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{_MASK}@", s)
    s = _KEY_VALUE.sub(lambda m: f"{m['key']}{m['kq']}{m['sep']}{_quote_like(m['val'])}", s)
    s = _AUTH_HEADER.sub(lambda m: f"{m['prefix']}{_MASK}", s)
    s = _MLHUB_KEY.sub(lambda m: f"{m['prefix']}_{_MASK}", s)
    return s

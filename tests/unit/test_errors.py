"""mlhub's error types, and ``redact`` on the strings that really end up in messages and logs."""

from __future__ import annotations

import pytest

from mlhub import errors
from mlhub.errors import (
    ArtifactIntegrityError,
    AuthenticationError,
    BackendUnavailable,
    ConfigError,
    ConflictError,
    JobFailed,
    MlhubError,
    ModelLoadError,
    NotFoundError,
    QuotaExceeded,
    SchemaOutdated,
    TenantAccessDenied,
    ValidationError,
    redact,
)


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


# --- the error types ---------------------------------------------------------------------------------


def test_every_error_type_has_its_own_stable_code():
    kinds = [MlhubError, *_all_subclasses(MlhubError)]
    codes = [k.code for k in kinds]

    assert len(codes) == len(set(codes)), codes
    assert all(code and code == code.lower() and " " not in code for code in codes)


def test_every_exported_error_is_an_mlhub_error():
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, MlhubError), name


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (ValidationError, 422),
        (NotFoundError, 404),
        (ConflictError, 409),
        (TenantAccessDenied, 403),
        (QuotaExceeded, 429),
        (BackendUnavailable, 503),
        (SchemaOutdated, 503),
        (AuthenticationError, 401),
        (ModelLoadError, 422),
        (ConfigError, 500),
        (JobFailed, 500),
        (ArtifactIntegrityError, 500),
        (MlhubError, 500),
    ],
)
def test_each_error_answers_the_right_http_status(cls, status):
    assert cls("x").http_status == status


def test_cli_exit_codes_are_non_zero_and_usage_errors_exit_2():
    for cls in [MlhubError, *_all_subclasses(MlhubError)]:
        assert cls.exit_code != 0, cls
    assert ValidationError.exit_code == 2
    assert ConfigError.exit_code == 2


def test_schema_outdated_is_a_backend_unavailable_with_its_own_code():
    err = SchemaOutdated("run `mlhub db upgrade`")
    assert isinstance(err, BackendUnavailable)
    assert err.code == "schema_outdated"
    assert err.code != BackendUnavailable.code


def test_to_dict_carries_code_and_message_and_details_only_when_given():
    assert NotFoundError("no model 'm'").to_dict() == {"code": "not_found", "message": "no model 'm'"}

    err = ValidationError("bad spec", details={"errors": ["epochs: must be > 0", "lr: required"]})
    assert err.to_dict() == {
        "code": "validation_failed",
        "message": "bad spec",
        "details": {"errors": ["epochs: must be > 0", "lr: required"]},
    }
    assert err.details["errors"][1] == "lr: required"


def test_message_and_str_are_the_same_text():
    err = ConflictError("tenant 'acme' already exists")
    assert str(err) == err.message == "tenant 'acme' already exists"


def test_an_error_message_is_redacted_when_the_error_is_made():
    dsn = "postgresql+psycopg://app:S3cr3t!@db.internal:5432/mlhub"
    err = BackendUnavailable(f"database unavailable: could not connect with {dsn}")

    for shown in (err.message, str(err), repr(err), repr(err.args), str(err.to_dict())):
        assert "S3cr3t!" not in shown
    assert "app:***@db.internal:5432/mlhub" in err.message
    assert MlhubError("token=abc123 expired").message == "token=*** expired"


# --- redact on real DSNs and log lines ---------------------------------------------------------------

KEY_SECRET = "Zq7Rk2Lm9Xw4Vb8Nc3Td6Yf1Hg5Js0Pa"  # 32 alphanumerics, like a real mlhub key's secret


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        pytest.param(
            "postgresql+psycopg://app:S3cr3t!@db.internal:5432/mlhub", "S3cr3t!",
            ["postgresql+psycopg://app:", "@db.internal:5432/mlhub"], id="sqlalchemy-url",
        ),
        pytest.param(
            "postgresql://u:p%40ss@h/db?sslmode=require", "p%40ss",
            ["postgresql://u:", "@h/db?sslmode=require"], id="url-encoded-password",
        ),
        pytest.param(
            "host=h user=u password=hunter2 dbname=d", "hunter2",
            ["host=h", "user=u", "dbname=d", "password="], id="libpq-keywords",
        ),
        pytest.param(
            "redis://:redispw@cache:6379/0", "redispw", ["redis://", "@cache:6379/0"], id="redis-no-user",
        ),
        pytest.param(
            "rediss://default:tok@host", "tok", ["rediss://default:", "@host"], id="rediss-user",
        ),
        pytest.param(
            "mongodb+srv://user:mongo-pw@cluster0.example.net/db?retryWrites=true", "mongo-pw",
            ["mongodb+srv://user:", "@cluster0.example.net/db?retryWrites=true"], id="mongodb-srv",
        ),
        pytest.param(
            "GET /v1/jobs Authorization: Bearer abc.def.ghi 200", "abc.def.ghi",
            ["Authorization: Bearer", "GET /v1/jobs", " 200"], id="bearer-header",
        ),
        pytest.param("POST /hook?api_key=xyz&x=1", "xyz", ["api_key=", "&x=1"], id="api-key-query"),
        pytest.param(
            "retrying with api-key: k-998877 for host h", "k-998877", ["api-key:", "for host h"],
            id="api-key-colon",
        ),
        pytest.param(
            f"auth ok for mlh_ABCDEFGH_{KEY_SECRET} (tenant acme)", KEY_SECRET,
            ["mlh_ABCDEFGH_", "(tenant acme)"], id="mlhub-api-key",
        ),
        pytest.param(
            'connection failed: connection to server at "db.internal" (10.0.0.7), port 5432 failed: FATAL:  '
            'password authentication failed for user "app"\n'
            "(dsn postgresql+psycopg://app:Pg-Pass_9@db.internal:5432/mlhub)",
            "Pg-Pass_9",
            ['user "app"', 'server at "db.internal"', "app:", "@db.internal:5432/mlhub",
             "password authentication failed"],
            id="psycopg-operational-error",
        ),
        pytest.param(
            "(psycopg.OperationalError) connection failed: host=db.internal port=5432 user=app "
            "password=Pg-Pass_9 dbname=mlhub sslmode=require",
            "Pg-Pass_9",
            ["(psycopg.OperationalError)", "host=db.internal", "user=app", "dbname=mlhub"],
            id="psycopg-conninfo",
        ),
    ],
)
def test_redact_removes_the_secret_and_keeps_what_helps_diagnose(text, secret, kept):
    out = redact(text)

    assert secret not in out
    assert "***" in out
    for part in kept:
        assert part in out, (part, out)


def test_redact_keeps_the_public_prefix_of_an_mlhub_key():
    assert redact(f"mlh_ABCDEFGH_{KEY_SECRET}") == "mlh_ABCDEFGH_***"


def test_redact_masks_every_secret_in_one_line():
    line = (
        "db=postgresql://app:pw1@db/x cache=redis://:pw2@cache:6379/0 password=pw3 "
        f"Authorization: Bearer pw4.x key=mlh_ABCDEFGH_{KEY_SECRET}"
    )
    out = redact(line)
    for secret in ("pw1", "pw2", "pw3", "pw4.x", KEY_SECRET):
        assert secret not in out
    assert "app:***@db/x" in out


def test_redact_leaves_text_without_secrets_alone():
    text = 'job 42 failed: epoch 3 loss=nan on host "worker-1" (user alice, sslmode=require)'
    assert redact(text) == text
    assert redact("postgresql+psycopg://postgres@127.0.0.1:5432/test") == (
        "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )


def test_redact_accepts_any_object():
    assert redact(ValueError("password=hunter2")) == "password=***"
    assert redact(42) == "42"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password='quoted secret'", "password='***'"),
        ("host=h user=u password='quoted secret' dbname=d", "host=h user=u password='***' dbname=d"),
        ('password="quoted secret"', 'password="***"'),
    ],
)
def test_redact_masks_a_quoted_libpq_password_that_contains_spaces(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"user": "app", "password": "json-secret"}', '{"user": "app", "password": "***"}'),
        ("{'user': 'app', 'password': 'json-secret'}", "{'user': 'app', 'password': '***'}"),
    ],
)
def test_redact_masks_a_password_in_json_or_a_dict_repr(text, expected):
    assert redact(text) == expected


def test_redact_masks_basic_auth_credentials():
    out = redact("GET /hook Authorization: Basic YXBwOmh1bnRlcjI= 401")  # app:hunter2
    assert out == "GET /hook Authorization: Basic *** 401"

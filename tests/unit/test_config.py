"""Settings as a user meets them: embedded defaults, MLHUB_* variables, a .env file, and clear errors.

The autouse ``_isolated_env`` fixture gives each test its own MLHUB_HOME (also the cwd) and no MLHUB_* vars.
"""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest
from pydantic import SecretStr

from mlhub.config import Settings, load_settings
from mlhub.errors import ConfigError

SECRET = "S3cr3t-Hunter2"


def _home() -> Path:
    return Path(os.environ["MLHUB_HOME"]).resolve()


# --- defaults ----------------------------------------------------------------------------------------


def test_defaults_are_the_embedded_backends_under_mlhub_home():
    s = load_settings()
    home = _home()

    assert s.home == home
    assert s.is_embedded_database
    assert s.database_url is None
    assert s.effective_database_url == f"sqlite:///{home / 'mlhub.db'}"
    assert s.artifacts_dir == home / "artifacts"
    assert s.credentials_path == home / "credentials"
    assert s.redis_url is None  # in-process cache
    assert s.mongodb_uri is None  # filesystem artifacts
    assert s.ray_address is None  # `mlhub start` launches a local head
    assert s.api_key is None


def test_without_mlhub_home_the_default_home_is_dot_mlhub_in_the_users_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MLHUB_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))

    s = load_settings()

    assert s.home == (tmp_path / ".mlhub").resolve()
    assert s.effective_database_url == f"sqlite:///{(tmp_path / '.mlhub' / 'mlhub.db').resolve()}"


# --- where values come from --------------------------------------------------------------------------


def test_every_variable_uses_the_mlhub_prefix(monkeypatch):
    monkeypatch.setenv("MLHUB_REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("MLHUB_RAY_ADDRESS", "ray-head:6380")
    monkeypatch.setenv("MLHUB_MAX_CONCURRENT_JOBS", "12")
    monkeypatch.setenv("REDIS_URL", "redis://unprefixed:6379/0")  # not mlhub's: ignored
    monkeypatch.setenv("MAX_CONCURRENT_JOBS", "99")

    s = load_settings()

    assert s.redis_url.get_secret_value() == "redis://cache:6379/0"
    assert s.ray_address == "ray-head:6380"
    assert s.max_concurrent_jobs == 12
    assert s.is_embedded_database  # no database variable: still the embedded SQLite file


def test_a_dot_env_file_in_the_working_directory_is_read():
    (_home() / ".env").write_text(
        "MLHUB_REDIS_URL=redis://from-dotenv:6379/1\nMLHUB_RAY_ADDRESS=dotenv-head:6380\nUNRELATED=1\n"
    )

    s = load_settings()

    assert s.redis_url.get_secret_value() == "redis://from-dotenv:6379/1"
    assert s.ray_address == "dotenv-head:6380"


def test_an_environment_variable_wins_over_the_dot_env_file(monkeypatch):
    (_home() / ".env").write_text("MLHUB_RAY_ADDRESS=dotenv-head:6380\n")
    monkeypatch.setenv("MLHUB_RAY_ADDRESS", "env-head:6380")

    assert load_settings().ray_address == "env-head:6380"


def test_an_invalid_value_in_dot_env_is_reported_by_its_variable_name():
    (_home() / ".env").write_text("MLHUB_MAX_CONCURRENT_JOBS=lots\n")

    with pytest.raises(ConfigError) as info:
        load_settings()

    assert "MLHUB_MAX_CONCURRENT_JOBS" in info.value.message


def test_plain_postgresql_urls_are_normalised_to_the_psycopg_driver(monkeypatch):
    monkeypatch.setenv("MLHUB_DATABASE_URL", "postgresql://app@db.internal:5432/mlhub")

    s = load_settings()

    assert s.effective_database_url == "postgresql+psycopg://app@db.internal:5432/mlhub"
    assert not s.is_embedded_database


def test_an_explicit_psycopg_or_sqlite_url_is_kept_as_given(monkeypatch, tmp_path):
    monkeypatch.setenv("MLHUB_DATABASE_URL", "postgresql+psycopg://app@db:5432/mlhub")
    assert load_settings().effective_database_url == "postgresql+psycopg://app@db:5432/mlhub"

    monkeypatch.setenv("MLHUB_DATABASE_URL", f"sqlite:///{tmp_path}/other.db")
    s = load_settings()
    assert s.effective_database_url == f"sqlite:///{tmp_path}/other.db"
    assert not s.is_embedded_database  # a user-given SQLite file is not the embedded default


# --- invalid values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("MLHUB_DATABASE_URL", "mysql://u@db/mlhub"),
        ("MLHUB_DATABASE_URL", "db.internal:5432/mlhub"),
        ("MLHUB_DATABASE_APP_URL", "oracle://app@db/x"),
        ("MLHUB_REDIS_URL", "http://cache:6379"),
        ("MLHUB_REDIS_URL", "cache:6379"),
        ("MLHUB_MONGODB_URI", "mysql://mongo:27017"),
        ("MLHUB_MAX_CONCURRENT_JOBS", "0"),
        ("MLHUB_MAX_CONCURRENT_JOBS", "four"),
        ("MLHUB_CACHE_TTL_S", "-1"),
        ("MLHUB_BACKEND_TIMEOUT_S", "soon"),
        ("MLHUB_LOG_LEVEL", "CHATTY"),
    ],
)
def test_an_invalid_value_raises_config_error_naming_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)

    with pytest.raises(ConfigError) as info:
        load_settings()

    err = info.value
    assert var in err.message
    assert var in str(err)
    assert err.code == "config_invalid"
    assert err.exit_code == 2
    assert any(line.startswith(f"{var}: ") for line in err.details["errors"])


def test_every_bad_variable_is_listed_at_once(monkeypatch):
    monkeypatch.setenv("MLHUB_DATABASE_URL", "mysql://u@db/mlhub")
    monkeypatch.setenv("MLHUB_REDIS_URL", "http://cache")
    monkeypatch.setenv("MLHUB_MAX_CONCURRENT_JOBS", "0")
    monkeypatch.setenv("MLHUB_CACHE_TTL_S", "abc")

    with pytest.raises(ConfigError) as info:
        load_settings()

    for var in ("MLHUB_DATABASE_URL", "MLHUB_REDIS_URL", "MLHUB_MAX_CONCURRENT_JOBS", "MLHUB_CACHE_TTL_S"):
        assert var in info.value.message
    assert len(info.value.details["errors"]) == 4


def test_the_message_explains_what_is_expected(monkeypatch):
    monkeypatch.setenv("MLHUB_REDIS_URL", "http://cache:6379")

    with pytest.raises(ConfigError) as info:
        load_settings()

    assert "MLHUB_REDIS_URL: must start with redis://, rediss:// or unix://" in info.value.message


def test_settings_are_frozen_once_built():
    s = load_settings()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        s.max_concurrent_jobs = 99  # type: ignore[misc]
    assert s.max_concurrent_jobs == 4


# --- secrets -----------------------------------------------------------------------------------------


def test_secrets_are_secret_str_and_absent_from_repr_and_str(monkeypatch):
    monkeypatch.setenv("MLHUB_DATABASE_URL", f"postgresql://app:{SECRET}@db.internal:5432/mlhub")
    monkeypatch.setenv("MLHUB_REDIS_URL", f"redis://:{SECRET}@cache:6379/0")
    monkeypatch.setenv("MLHUB_MONGODB_URI", f"mongodb://u:{SECRET}@mongo:27017")
    monkeypatch.setenv("MLHUB_API_KEY", f"mlh_ABCDEFGH_{SECRET}")

    s = load_settings()

    for field in ("database_url", "redis_url", "mongodb_uri", "api_key"):
        assert isinstance(getattr(s, field), SecretStr), field
    assert SECRET not in repr(s)
    assert SECRET not in str(s)
    assert SECRET not in s.model_dump_json()
    # ... while the real value is there for the code that connects
    assert s.effective_database_url == f"postgresql+psycopg://app:{SECRET}@db.internal:5432/mlhub"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("MLHUB_DATABASE_URL", f"mysql://app:{SECRET}@db/mlhub"),
        ("MLHUB_DATABASE_SCHEDULER_URL", f"mssql://sched:{SECRET}@db/mlhub"),
        ("MLHUB_REDIS_URL", f"http://:{SECRET}@cache:6379"),
        ("MLHUB_MONGODB_URI", f"https://u:{SECRET}@mongo"),
    ],
)
def test_an_invalid_secret_is_never_echoed_in_the_config_error(monkeypatch, var, value):
    monkeypatch.setenv(var, value)

    with pytest.raises(ConfigError) as info:
        load_settings()

    err = info.value
    assert var in err.message
    assert SECRET not in err.message
    assert SECRET not in str(err)
    assert SECRET not in repr(err)
    assert SECRET not in repr(err.to_dict())


def test_settings_built_directly_use_the_same_validation(monkeypatch):
    monkeypatch.setenv("MLHUB_DATABASE_URL", "postgresql://u@h/db")
    assert Settings().effective_database_url == "postgresql+psycopg://u@h/db"

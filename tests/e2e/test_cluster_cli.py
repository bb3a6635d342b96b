"""The CLI against a separately started Ray cluster, as an operator runs it:

`ray start --head` (token auth on), `mlhub --address ... start`, jobs from the CLI and from
`ray job submit -- mlhub train ... --wait`, then the orchestrator stopped while read commands still answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from mlhub.cluster import ensure_auth_token
from tests.conftest import free_port

pytestmark = [pytest.mark.ray, pytest.mark.postgres]
BIN = Path(sys.executable).parent


def _run(args, env, timeout=240, cwd=None):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)


@pytest.fixture
def cluster(fresh_pg_url, tmp_path):
    port, dash = free_port(), free_port()
    home = tmp_path / "home"
    env = dict(os.environ, MLHUB_HOME=str(home), MLHUB_DATABASE_URL=fresh_pg_url, RAY_AUTH_MODE="token",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", MLHUB_MAX_CONCURRENT_JOBS="2",
               MLHUB_SERVE_HTTP_PORT=str(free_port()))
    env.pop("MLHUB_API_KEY", None)
    temp = tempfile.mkdtemp(prefix="rc-")
    ensure_auth_token()  # as an operator runs `ray get-auth-token --generate` first: a fresh machine has no token
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if _run([str(BIN / "python"), "-c", f"import socket; socket.create_connection(('127.0.0.1', {dash}), 1)"],
                env, timeout=10).returncode == 0:
            break
        time.sleep(1)
    yield {"env": env, "address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}", "tmp": tmp_path}
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=10)  # `ray start --block` drains through the GCS for ~30 s on SIGTERM
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def test_the_cli_drives_a_separately_started_cluster(cluster):
    env, address = cluster["env"], cluster["address"]
    mlhub = str(BIN / "mlhub")
    assert _run([mlhub, "db", "upgrade"], env).returncode == 0
    created = _run([mlhub, "tenants", "create", "ops", "--json"], env)
    assert created.returncode == 0, created.stderr
    env["MLHUB_API_KEY"] = json.loads(created.stdout)["api_key"]

    # a wrong address is a clear, fast error, not a hang
    wrong = _run([mlhub, "--address", f"127.0.0.1:{free_port()}", "start"], env, timeout=60)
    assert wrong.returncode != 0 and "does not answer" in wrong.stderr

    started = _run([mlhub, "--address", address, "start", "--json"], env)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["orchestrator"]["ok"] is True
    again = _run([mlhub, "--address", address, "start", "--json"], env)  # idempotent
    assert json.loads(again.stdout)["orchestrator"]["pid"] == json.loads(started.stdout)["orchestrator"]["pid"]

    diag = _run([mlhub, "diagnose", "--lines", "2", "--wait"], env)
    assert diag.returncode == 0 and "succeeded" in diag.stdout, diag.stdout + diag.stderr
    trained = _run([mlhub, "train", "--name", "wine", "--framework", "sklearn", "--model", "random_forest",
                    "--dataset", "sklearn:wine", "--param", "n_estimators=10", "--wait"], env)
    assert trained.returncode == 0, trained.stdout + trained.stderr

    project = cluster["tmp"] / "project"
    project.mkdir()
    (project / "iris.yaml").write_text(
        "kind: training\nname: iris-from-ray-job\nframework: baseline\nmodel: logistic\nepochs: 5\n"
        "dataset: {source: sklearn, name: iris}\n")
    # the job's driver gets the tenant's key through the runtime environment (never baked into the cluster)
    runtime_env = json.dumps({"env_vars": {"MLHUB_API_KEY": env["MLHUB_API_KEY"]}})
    submitted = _run([str(BIN / "ray"), "job", "submit", "--address", cluster["dashboard"], "--working-dir",
                      str(project), "--runtime-env-json", runtime_env, "--", "mlhub", "train", "iris.yaml", "--wait"],
                     env, timeout=300)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]

    models = json.loads(_run([mlhub, "list-models", "--json"], env).stdout)
    assert {m["name"] for m in models} == {"wine", "iris-from-ray-job"}

    # `mlhub start` deployed the REST API and the inference application: serve the model, ask it over HTTP
    serving = json.loads(started.stdout)["serve"]
    with urllib.request.urlopen(f"{serving['api']}/health", timeout=30) as answer:
        assert answer.status == 200
    assert serving["inference"].endswith("/v1")
    assert _run([mlhub, "models", "promote", "wine", "1", "--to", "champion"], env).returncode == 0
    deployed = _run([mlhub, "--address", address, "deploy", "wine", "--json"], env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    url = json.loads(deployed.stdout)["url"]
    row = json.dumps({"inputs": [[13.2, 1.78, 2.14, 11.2, 100, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050]]})
    request = urllib.request.Request(url, data=row.encode(), method="POST",
                                     headers={"Authorization": f"Bearer {env['MLHUB_API_KEY']}"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        body = json.loads(answer.read())
    assert body["model"] == "wine" and body["version"] == 1 and len(body["predictions"]) == 1
    listed = json.loads(_run([mlhub, "endpoints", "--json"], env).stdout)
    assert [(e["name"], e["serves"]) for e in listed] == [("wine", "wine@champion")]

    stopped = _run([mlhub, "--address", address, "stop"], env)
    assert stopped.returncode == 0 and "orchestrator: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    # read commands go to the store: they answer with the orchestrator gone
    jobs = _run([mlhub, "jobs", "--json"], env, timeout=30)
    assert jobs.returncode == 0 and {j["state"] for j in json.loads(jobs.stdout)} == {"succeeded"}
    logs = _run([mlhub, "logs", str(min(j["id"] for j in json.loads(jobs.stdout)))], env, timeout=30)
    assert "diagnostic line 2 of 2" in logs.stdout

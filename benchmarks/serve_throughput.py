"""Online serving: the mlhub endpoint against what users would pick instead, batching, overload.

Starts its own local Ray head the way `mlhub start` does (throughput-optimized Serve, HAProxy as the ingress
when installed: ``--ingress proxy`` measures Serve's proxy actor instead), on a throw-away MLHUB_HOME with
SQLite, and serves the same scikit-learn model (mlhub's sklearn adapter, stored with skops) four ways:

- ``fastapi``: one uvicorn process with a FastAPI route doing ``model.predict`` (what users would pick instead);
- ``bare serve``: a Ray Serve deployment of the same model, same replica settings (1 replica, same CPUs,
  same ``@serve.batch`` settings), nothing else;
- ``mlhub``: the mlhub inference application (bearer auth, endpoint + alias resolution, multiplexed model
  LRU, schema validation, sampled prediction logs at the default rate).

Load: ``wrk`` (Debian package), one thread, POST of one row as JSON, ``--clients`` connections (and 1),
``--seconds`` per run, interleaved ``--repeats`` times, medians.

1. Throughput at 32 clients, p50 at 1 client: mlhub / fastapi (aim >= 0.8), mlhub / bare serve (aim >= 0.85,
   p50 within 2 ms), light model (logistic regression over 64 features).
2. Batching: a 300-tree random forest (one row costs several ms), mlhub with ``max_batch_size`` 32 vs 1 at
   32 clients. Aim >= 3x.
3. Overload: an mlhub app with room for 2 running + 2 queued requests on the forest (200 rows a request); how
   fast the refused requests (503) come back, p99 (aim < 50 ms), two ways for ``--seconds`` each:
   *flood*, 64 clients that send again as soon as they are answered (the Python client, in this process,
   then competes for the 2 cores with the server it measures and adds its own scheduling delay); *probe*,
   8 clients keep the replica busy and its queue full while one more client sends a request every 20 ms
   and times each refusal (what a caller sees from a saturated endpoint).

    flock /tmp/mlhub-heavy.lock .venv/bin/python -m benchmarks.serve_throughput [--repeats 3] [--seconds 8]
        [--only light|batch|overload]
"""


import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")

from benchmarks._common import interleaved, median, print_table, rerun_hint, stop_ray_head  # noqa: E402

FEATURES = 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def _train(model: str, params: dict):
    from mlhub.domain.specs import parse_spec
    from mlhub.training import get_adapter, load_dataset

    spec = parse_spec({"kind": "training", "name": "bench", "framework": "sklearn", "model": model,
                       "params": params, "dataset": {"source": "synthetic", "task": "classification",
                                                     "n_samples": 4000, "n_features": FEATURES}})
    return get_adapter("sklearn").train(spec, load_dataset(spec.dataset, allowed_roots=[]), lambda r: None)


def _register(hub, name: str, trained) -> None:
    from mlhub.artifact_records import ArtifactService
    from mlhub.registry.rows import MODEL_MEDIA_TYPES_BY_FORMAT
    from mlhub.registry.service import register_version
    from mlhub.serving.endpoints import EndpointService

    art = ArtifactService(hub.backends.db, hub.backends.artifacts).upload(
        hub.principal, trained.payload, media_type=MODEL_MEDIA_TYPES_BY_FORMAT[trained.model_format], name=name)
    with hub.backends.db.tenant_scope(hub.principal.tenant_id) as s:
        register_version(s, hub.principal.tenant_id, model_name=name, framework="sklearn",
                         model_format=trained.model_format, artifact_id=art.id, artifact_sha256=art.sha256,
                         created_by="bench", metrics=trained.metrics, input_schema=trained.input_schema,
                         reference_stats=trained.reference_stats)
    hub.models.promote(name, 1, to="champion")
    EndpointService(hub.backends.db).deploy(hub.principal, name)


FASTAPI_APP = '''
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from mlhub.training.serialization import load_model
model = load_model("sklearn", "skops", open(MODEL_PATH, "rb").read())
app = FastAPI()
@app.post("/predict")
async def predict(request: Request):
    body = await request.json()
    return JSONResponse({"predictions": np.asarray(model.predict(np.asarray(body["inputs"], dtype=float))).tolist()})
'''


def _bare_app(payload: bytes, max_batch: int, wait_s: float, cpus: float, max_ongoing: int):
    import numpy as np
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from ray import serve

    app = FastAPI()

    @serve.deployment(max_ongoing_requests=max_ongoing, ray_actor_options={"num_cpus": cpus})
    @serve.ingress(app)
    class Bare:
        def __init__(self, payload: bytes) -> None:
            from mlhub.training.serialization import load_model

            self.model = load_model("sklearn", "skops", payload)

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=wait_s)
        async def score(self, xs: list) -> list:
            y = self.model.predict(np.vstack(xs))
            out, start = [], 0
            for x in xs:
                out.append(y[start:start + len(x)].tolist())
                start += len(x)
            return out

        @app.post("/predict")
        async def predict(self, request: Request) -> JSONResponse:
            body = await request.json()
            return JSONResponse({"predictions": await self.score(np.asarray(body["inputs"], dtype=float))})

    return Bare.bind(payload)


def _ready(url: str, body: dict, headers: dict, timeout: float = 120) -> None:
    """Wait until ``url`` answers 200 (the first request loads the model)."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.post(url, json=body, headers=headers, timeout=60).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")
        time.sleep(0.5)


def _wrk(url: str, body: dict, headers: dict, clients: int, seconds: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from one wrk run."""
    script = Path(tempfile.mkdtemp()) / "post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    socket_errors = re.search(r"Socket errors:.*", out)
    if socket_errors:
        print(f"  note: {url} @{clients}: {socket_errors.group(0)}", flush=True)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx answers under load:\n{out}")

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return rps, pct("50"), pct("99")


async def _overload(url: str, body: dict, headers: dict, clients: int, seconds: float, *,
                    probe_every_s: float | None = None) -> dict:
    """Answers by status -> latencies (ms). Without ``probe_every_s``: ``clients`` clients send again as soon as
    they are answered. With it: ``clients`` clients keep the server busy (their answers are not counted) and
    one probe sends a request every ``probe_every_s`` and times it."""
    import aiohttp

    data = json.dumps(body)
    stats: dict[int, list[float]] = {}
    deadline = time.monotonic() + seconds
    hdrs = {**headers, "Content-Type": "application/json"}

    async def call(session, counted: bool) -> None:
        t = time.perf_counter()
        async with session.post(url, data=data, headers=hdrs) as r:
            await r.read()
            if counted:
                stats.setdefault(r.status, []).append((time.perf_counter() - t) * 1000)

    async def client(session, counted: bool) -> None:
        while time.monotonic() < deadline:
            await call(session, counted)

    async def probe(session) -> None:
        await asyncio.sleep(1.0)  # let the load fill the queue first
        while time.monotonic() < deadline:
            await call(session, True)
            await asyncio.sleep(probe_every_s)

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), timeout=timeout) as load, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) as probing:
        tasks = [client(load, probe_every_s is None) for _ in range(clients)]
        if probe_every_s is not None:
            tasks.append(probe(probing))
        await asyncio.gather(*tasks)
    return stats


def _light(args, home: Path, model_file: Path, base: str, row: list, auth: dict) -> subprocess.Popen:
    """Table 1: the light model through FastAPI, bare Serve and mlhub. Returns the FastAPI server process."""
    fport = _free_port()
    script = home / "plain_fastapi.py"
    script.write_text(FASTAPI_APP.replace("MODEL_PATH", repr(str(model_file))))
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--app-dir", str(home), "plain_fastapi:app",
                             "--port", str(fport), "--log-level", "warning", "--no-access-log"],
                            cwd=home, stdin=subprocess.DEVNULL)
    _wait_port(fport)
    targets = {"fastapi": (f"http://127.0.0.1:{fport}/predict", {}),
               "bare serve": (f"{base}/bare/predict", {}),
               "mlhub": (f"{base}/v1/models/light/predict", auth),
               "mlhub, no prediction log": (f"{base}/nolog/models/light/predict", auth)}
    for url, headers in targets.values():  # warm up: model loads, connections
        _ready(url, {"inputs": [row]}, headers)
        _wrk(url, {"inputs": [row]}, headers, 4, 2)

    print(f"light model, {args.repeats} x {args.seconds:.0f} s per side, interleaved...", flush=True)
    runs = interleaved({f"{name}|{c}": (lambda u=u, h=h, c=c: _wrk(u, {"inputs": [row]}, h, c, args.seconds))
                        for name, (u, h) in targets.items() for c in (1, args.clients)}, args.repeats)
    rows = []
    med = {k: (median([r[0] for r in v]), median([r[1] for r in v]), median([r[2] for r in v]))
           for k, v in runs.items()}
    for name in targets:
        one, many = med[f"{name}|1"], med[f"{name}|{args.clients}"]
        rows.append([name, f"{many[0]:,.0f}", f"{many[0] / med[f'fastapi|{args.clients}'][0]:.2f}",
                     f"{many[0] / med[f'bare serve|{args.clients}'][0]:.2f}", f"{one[0]:,.0f}", f"{one[1]:.2f}",
                     f"{many[1]:.1f}", f"{many[2]:.1f}"])
    print()
    print_table(["server", f"req/s @{args.clients}", "vs fastapi", "vs bare serve", "req/s @1", "p50 ms @1",
                 f"p50 ms @{args.clients}", f"p99 ms @{args.clients}"], rows)
    print("aims: mlhub >= 0.8 of fastapi, >= 0.85 of bare serve, p50 @1 within 2 ms of bare serve")
    return proc


def _batching(args, settings, base: str, heavy_row: dict, auth: dict) -> None:
    """Table 2: the forest with @serve.batch vs max_batch_size 1."""
    for url in (f"{base}/v1/models/heavy/predict", f"{base}/nb/models/heavy/predict"):
        _ready(url, heavy_row, auth)
        _wrk(url, heavy_row, auth, 4, 2)
    batch = interleaved({"batched": lambda: _wrk(f"{base}/v1/models/heavy/predict", heavy_row, auth,
                                                 args.clients, args.seconds)[0],
                         "unbatched": lambda: _wrk(f"{base}/nb/models/heavy/predict", heavy_row, auth,
                                                   args.clients, args.seconds)[0]}, args.repeats)
    b, u = median(batch["batched"]), median(batch["unbatched"])
    print()
    print_table(["300-tree forest, 1 row per request", f"req/s @{args.clients}"],
                [[f"mlhub, @serve.batch max {settings.serve_max_batch_size}", f"{b:,.0f}"],
                 ["mlhub, max_batch_size 1", f"{u:,.0f}"], ["ratio (aim >= 3)", f"{b / u:.2f}"]])


def _overloaded(args, url: str, row: list, auth: dict) -> None:
    """Table 3: refusals of the app with room for 2 running + 2 queued, flooded and probed."""
    _ready(url, {"inputs": [row]}, auth)
    body = {"inputs": [row] * 200}
    runs = {"flood: 64 clients": asyncio.run(_overload(url, body, auth, 64, args.seconds)),
            "probe every 20 ms, 8 clients keep it full": asyncio.run(
                _overload(url, body, auth, 8, args.seconds, probe_every_s=0.02))}
    table = []
    for label, stats in runs.items():
        for status, lat in sorted(stats.items()):
            lat.sort()
            table.append([label, status, len(lat), f"{lat[len(lat) // 2]:.1f}",
                          f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.1f}"])
    print()
    print_table(["overload (room for 2 + 2 queued, 200 rows a request)", "status", "answers", "p50 ms", "p99 ms"],
                table)
    print("aim: 503 answers p99 < 50 ms")


def main() -> None:
    import shutil

    if shutil.which("wrk") is None:
        raise SystemExit("benchmarks.serve_throughput needs wrk, the HTTP load generator (Debian: apt-get install wrk)")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--ingress", choices=["auto", "haproxy", "proxy"], default="auto")
    ap.add_argument("--only", choices=["light", "batch", "overload"], help="Run one part only.")
    ap.add_argument("--light-only", action="store_true", help="Same as --only light.")
    args = ap.parse_args()
    if args.light_only:
        args.only = "light"
    parts = {args.only} if args.only else {"light", "batch", "overload"}

    home = Path(tempfile.mkdtemp(prefix="mlhub-serve-bench-"))
    os.environ.update(MLHUB_HOME=str(home), MLHUB_SERVE_INGRESS=args.ingress, OMP_NUM_THREADS="1")
    from mlhub import cluster
    from mlhub.client import Hub
    from mlhub.config import load_settings
    from mlhub.tenancy import TenantService

    settings = load_settings()
    hub = Hub(settings)
    key = TenantService(hub.backends.db).create_key(hub.principal, "bench")[1]
    light, heavy = _train("logistic_regression", {}), _train("random_forest", {"n_estimators": 300, "n_jobs": 1})
    _register(hub, "light", light)
    _register(hub, "heavy", heavy)
    model_file = home / "light.skops"
    model_file.write_bytes(light.payload)
    env = cluster.serve_env(settings)
    ingress = "haproxy" if "RAY_SERVE_ENABLE_HA_PROXY" in env else "proxy"
    print(f"ingress: {ingress}; starting a local Ray head...", flush=True)
    cluster.start_local_head(settings)
    fastapi_proc = None
    try:
        cluster.connect(settings)
        from ray import serve

        from serve_apps.control import ensure_inference, wait_running
        from serve_apps.inference import build_app

        port = settings.serve_http_port
        ensure_inference(settings)
        doc = settings.to_document()
        side = {**doc, "serve_replica_cpus": 0.2}  # the other apps fit beside the measured one on 2 CPUs
        apps = {"mlhub-nolog": ({**side, "prediction_log_sample_rate": 0.0}, "/nolog")}
        if "batch" in parts:
            apps["mlhub-nobatch"] = ({**side, "serve_max_batch_size": 1}, "/nb")
        if "overload" in parts:
            apps["mlhub-overload"] = ({**side, "serve_max_ongoing_requests": 2, "serve_max_queued_requests": 2,
                                       "serve_max_batch_size": 1}, "/ov")
        for name, (app_doc, prefix) in apps.items():
            serve.run(build_app(app_doc), name=name, route_prefix=prefix, blocking=False)
        if "light" in parts:
            serve.run(_bare_app(light.payload, settings.serve_max_batch_size, settings.serve_batch_wait_timeout_s,
                                settings.serve_replica_cpus, settings.serve_max_ongoing_requests),
                      name="bare", route_prefix="/bare", blocking=False)
        for app in (*apps, *(["bare"] if "light" in parts else [])):
            wait_running(app, 180)
        base = f"http://127.0.0.1:{port}"
        row = [0.1] * FEATURES
        auth = {"Authorization": f"Bearer {key}"}
        if "light" in parts:
            fastapi_proc = _light(args, home, model_file, base, row, auth)
        heavy_row = {"inputs": [row]}
        if "batch" in parts:
            _batching(args, settings, base, heavy_row, auth)
        if "overload" in parts:
            _overloaded(args, f"{base}/ov/models/heavy/predict", row, auth)
        print()
        print(rerun_hint())
    finally:
        if fastapi_proc is not None:
            fastapi_proc.terminate()
        stop_ray_head(settings)
        hub.close()


if __name__ == "__main__":
    main()

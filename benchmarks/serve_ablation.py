"""Where the mlhub endpoint's throughput goes: bare Serve with one mlhub step added at a time, same run.

Each variant is its own Serve application on one local Ray head (HAProxy ingress when installed, as
``mlhub start``), one replica of 0.3 CPU each so they all fit on 2 cores, the same light model (logistic
regression over 64 features) and the same ``@serve.batch`` settings. Load: ``wrk``, 32 clients, POST of one row,
variants interleaved ``--repeats`` times, medians, each as a ratio of the bare deployment:

- ``bare``: ``request.json()``, ``np.asarray``, batched predict, ``JSONResponse`` (as in serve_throughput);
- ``+multiplex``: the model fetched through ``@serve.multiplexed`` on every request (Serve's wrapper);
- ``+parse``: mlhub's body parser and fast row check instead of ``request.json()`` + ``np.asarray``;
- ``+auth``: mlhub's bearer-key check (SQLite, remembered keys) on every request;
- ``mlhub, no log`` / ``mlhub``: the inference application itself, prediction log off / at 10%.

The steps do not add up exactly (they share a cache and a loop), but the one that costs the most shows.

    flock /tmp/mlhub-heavy.lock .venv/bin/python -m benchmarks.serve_ablation [--repeats 3] [--seconds 8]
"""


import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")

from benchmarks._common import interleaved, median, print_table, rerun_hint, stop_ray_head  # noqa: E402
from benchmarks.serve_throughput import FEATURES, _ready, _register, _train, _wrk  # noqa: E402

VARIANTS = {"bare": set(), "+multiplex": {"multiplex"}, "+parse": {"parse"}, "+auth": {"auth"}}
CPUS = 0.3


def _variant(payload: bytes, steps: set[str], settings_doc: dict):
    import numpy as np
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from ray import serve

    app = FastAPI()

    @serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": CPUS})
    @serve.ingress(app)
    class Variant:
        def __init__(self, payload: bytes, doc: dict) -> None:
            from mlhub.training.serialization import load_model

            self._model = load_model("sklearn", "skops", payload)
            if "auth" in steps:
                from mlhub.config import load_settings
                from mlhub.serving.core import InferenceCore

                self.core = InferenceCore(load_settings(**doc))

        @serve.multiplexed(max_num_models_per_replica=8)
        async def multiplexed(self, key: str):
            return self._model

        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
        async def score(self, items: list) -> list:
            y = items[0][0].predict(np.vstack([x for _, x in items]))
            out, start = [], 0
            for _, x in items:
                out.append(y[start:start + len(x)].tolist())
                start += len(x)
            return out

        @app.post("/predict")
        async def predict(self, request: Request) -> JSONResponse:
            from mlhub.registry.api import _clean_rows
            from mlhub.serving.payload import parse_predict_body

            if "auth" in steps:
                self.core.authenticate(request.headers.get("authorization"))
            model = await self.multiplexed("m") if "multiplex" in steps else self._model
            if "parse" in steps:
                x = _clean_rows(parse_predict_body(await request.body(), max_bytes=1 << 20, max_rows=10_000).inputs,
                                FEATURES)
            else:
                x = np.asarray((await request.json())["inputs"], dtype=float)
            return JSONResponse({"predictions": await self.score((model, x))})

    return Variant.bind(payload, settings_doc)


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("benchmarks.serve_ablation needs wrk, the HTTP load generator (Debian: apt-get install wrk)")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--clients", type=int, default=32)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="mlhub-serve-ablation-"))
    os.environ.update(MLHUB_HOME=str(home), OMP_NUM_THREADS="1")
    from mlhub import cluster
    from mlhub.client import Hub
    from mlhub.config import load_settings
    from mlhub.tenancy import TenantService

    settings = load_settings()
    hub = Hub(settings)
    key = TenantService(hub.backends.db).create_key(hub.principal, "bench")[1]
    light = _train("logistic_regression", {})
    _register(hub, "light", light)
    print("starting a local Ray head...", flush=True)
    cluster.start_local_head(settings)
    try:
        cluster.connect(settings)
        from ray import serve

        from serve_apps.control import ensure_serve, wait_running
        from serve_apps.inference import build_app

        ensure_serve(settings)
        doc = {**settings.to_document(), "serve_replica_cpus": CPUS}
        base = f"http://127.0.0.1:{settings.serve_http_port}"
        targets: dict[str, str] = {}
        apps = {name: _variant(light.payload, steps, doc) for name, steps in VARIANTS.items()}
        apps["mlhub, no log"] = build_app({**doc, "prediction_log_sample_rate": 0.0})
        apps["mlhub"] = build_app(doc)
        for i, (name, app) in enumerate(apps.items()):
            prefix = f"/ablation{i}"
            serve.run(app, name=f"ablation{i}", route_prefix=prefix, blocking=False)
            wait_running(f"ablation{i}", 180)
            targets[name] = f"{base}{prefix}/predict" if name in VARIANTS else f"{base}{prefix}/models/light/predict"
        body, auth = {"inputs": [[0.1] * FEATURES]}, {"Authorization": f"Bearer {key}"}
        for url in targets.values():
            _ready(url, body, auth)
            _wrk(url, body, auth, 4, 2)
        print(f"{len(targets)} variants, {args.repeats} x {args.seconds:.0f} s each, interleaved...", flush=True)
        runs = interleaved({name: (lambda u=url: _wrk(u, body, auth, args.clients, args.seconds)[0])
                            for name, url in targets.items()}, args.repeats)
        bare = median(runs["bare"])
        print()
        print_table(["variant", f"req/s @{args.clients}", "vs bare", "runs"],
                    [[name, f"{median(r):,.0f}", f"{median(r) / bare:.2f}", ", ".join(f"{x:,.0f}" for x in r)]
                     for name, r in runs.items()])
        print()
        print(rerun_hint())
    finally:
        stop_ray_head(settings)
        hub.close()


if __name__ == "__main__":
    main()

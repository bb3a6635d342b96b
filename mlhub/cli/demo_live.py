"""The live half of ``mlhub demo``: the champion deployed on Ray Serve and answering HTTP, an A/B test between
two versions with outcomes that are real (was the answer right?), and drift: shifted traffic, a drift check
that fires an alert, and its plot. ``--keep`` leaves the endpoint up until Ctrl-C."""

from __future__ import annotations

import signal
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mlhub.cli.output import console

MODEL = "wine-forest"


def http_port(preferred: int) -> int:
    """``preferred`` when nothing listens there, else a free port (a user's own `mlhub start` may hold 8000)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


class LiveTour:
    def __init__(self, tour) -> None:
        from sklearn.datasets import load_wine

        self.tour = tour
        self.url: str | None = None
        self.console_url: str | None = None
        self.key: str | None = None
        self.x, self.y = load_wine(return_X_y=True)
        self.rng = np.random.default_rng(7)

    # --- HTTP ----------------------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        import requests

        started = time.perf_counter()
        r = requests.post(f"{self.base}{path}", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {self.key}"})
        elapsed = (time.perf_counter() - started) * 1000
        if r.status_code != 200:
            raise SystemExit(f"demo: POST {path} answered {r.status_code}: {r.text[:300]}")
        return r.json(), elapsed

    def _predict(self, rows: np.ndarray, key: str | None = None) -> tuple[dict[str, Any], float]:
        body: dict[str, Any] = {"inputs": rows.tolist()}
        if key is not None:
            body["key"] = key
        return self._post(f"/v1/models/{MODEL}/predict", body)

    # --- steps ---------------------------------------------------------------------------------------------

    def serve(self) -> None:
        from mlhub.tenancy import TenantService
        from serve_apps import control

        tour = self.tour
        self.base = control.base_url(tour.settings)
        self.url = f"{self.base}/v1/models/{MODEL}/predict"
        self.key = TenantService(tour.hub.backends.db).create_key(tour.hub.principal, "demo-http")[1]
        tour.cli("deploy", MODEL, "--alias", "champion")
        first, _ = self._predict(self.x[:3])
        latencies = [self._predict(self.x[i:i + 1])[1] for i in range(40)]
        tour.step("8", f"POST {self.url} answers {first['predictions']} for 3 rows (version {first['version']}); "
                  f"40 single-row requests: p50 {statistics.median(latencies):.1f} ms over Serve's default proxy",
                  summary="deployed on Ray Serve; HTTP predictions")
        tour.cli("endpoints")
        control.ensure_api(tour.settings)  # the web console (0.1 CPU): the summary prints its address
        self.console_url = control.console_url(tour.settings)

    def ab_test(self) -> None:
        """Users keyed user-N get a sticky variant; the outcome is whether their answer was right."""
        tour = self.tour
        tour.cli("ab", "create", "wine-ab", "--model", MODEL, "--variant", "control=1", "--variant", "challenger=2",
                 "--metric", "correct", "--start")
        time.sleep(tour.settings.serve_alias_ttl_s + 0.5)  # replicas pick the experiment up within the alias TTL
        users = self.rng.integers(0, len(self.x), size=240)

        def one(u: int) -> dict[str, Any]:
            row = int(users[u])
            answer, _ = self._predict(self.x[row:row + 1], key=f"user-{u}")
            return {**answer, "right": int(answer["predictions"][0] == self.y[row])}

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(len(users))))
        routed = [a for a in answers if a.get("experiment_id") is not None]
        if not routed:
            raise SystemExit("demo: no request was routed by the experiment")
        self._post(f"/v1/experiments/{routed[0]['experiment_id']}/outcomes",
                   {"outcomes": [{"key": a["key"], "value": a["right"]} for a in routed]})
        # the replica writes its assignments in the background (every 0.5 s): outcomes that came first are kept
        # and joined when they arrive; give them a moment, so the status below counts every user
        self._wait_for_assignments(routed[0]["experiment_id"], len({a["key"] for a in routed}))
        shares = {v: sum(1 for a in routed if a.get("variant") == v) for v in ("control", "challenger")}
        tour.step("9", f"A/B test wine-ab: {len(routed)} users over HTTP ({shares['control']} control, "
                  f"{shares['challenger']} challenger); outcome = the answer was right",
                  summary="A/B experiment: routed traffic, outcomes, significance")
        tour.cli("ab", "status", "wine-ab")
        tour.cli("ab", "stop", "wine-ab", "--reason", "demo over")

    def _wait_for_assignments(self, experiment_id: int, n: int, timeout: float = 10.0) -> None:
        from mlhub.store.models import ExperimentAssignment

        self._wait_for_rows(ExperimentAssignment, ExperimentAssignment.experiment_id == experiment_id, n, timeout)

    def _wait_for_rows(self, table, where, n: int, timeout: float = 10.0) -> None:
        """Until ``table`` holds ``n`` rows matching ``where`` (the replica writes assignments and prediction logs
        in the background), or ``timeout`` passes."""
        from sqlalchemy import func, select

        hub, deadline = self.tour.hub, time.monotonic() + timeout
        while time.monotonic() < deadline:
            with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
                if s.scalar(select(func.count()).select_from(table).where(where)) >= n:
                    return
            time.sleep(0.25)

    def drift(self) -> None:
        """Traffic whose alcohol and colour intensity moved; a drift check against the training statistics."""
        tour = self.tour
        tour.cli("drift", "monitor", "create", "wine-drift", "--model", MODEL, "--alias", "champion",
                 "--window", "1h")
        tour.cli("alerts", "rules", "add", "wine-drifted", "--kind", "drift", "--monitor", "wine-drift",
                 "--severity", "critical")
        shifted = self.x[self.rng.integers(0, len(self.x), size=300)].copy()
        shifted[:, 0] += 1.5   # alcohol, % vol
        shifted[:, 9] *= 1.8   # colour intensity
        from mlhub.store.models import PredictionLog
        from mlhub.store.types import utcnow

        since = utcnow()
        for start in range(0, len(shifted), 50):
            self._predict(shifted[start:start + 50])
        # the demo logs every request (sample rate 1); the replica writes its log every 2 s
        self._wait_for_rows(PredictionLog, (PredictionLog.endpoint == MODEL) & (PredictionLog.created_at >= since),
                            len(range(0, len(shifted), 50)))
        tour.cli("drift", "check", "wine-drift")
        tour.cli("drift", "report", "wine-drift", "--out", str(tour.plot("drift", tour.output / "drift.png")))
        tour.cli("alerts", "list")
        tour.step("10", "drift: 300 shifted rows served; the check flagged them and raised a critical alert",
                  summary="drift check on shifted traffic; alert raised")

    def keep(self) -> None:
        """Serve until Ctrl-C."""
        console.print(f"\nthe endpoint stays up (tenant default, a demo key):\n  curl -s -H 'Authorization: Bearer "
                      f"{self.key}' -d '{{\"inputs\": [{self.x[0].tolist()}]}}' {self.url}\n"
                      "press Ctrl-C to stop", highlight=False, markup=False, soft_wrap=True)
        def stop(signum, frame):
            raise KeyboardInterrupt

        # Ctrl-C must work even when a parent started us with SIGINT ignored (a background job of a script
        # inherits SIG_IGN), and a SIGTERM stops the tour as cleanly
        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            console.print("stopping", highlight=False)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

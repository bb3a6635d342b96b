"""Web console pages with 10,000 jobs and 1,000 model versions: each page's median ms beside the REST API's JSON.

A throw-away deployment (SQLite under a temporary MLHUB_HOME, or a database created and dropped on
``--database-url``'s PostgreSQL server with ``--postgres``) holds one tenant with ``--jobs`` jobs spread over the
four queues and seven states, one model with ``--versions`` versions (one artifact shared by all), a champion
alias and ``--runs`` runs. Rows are bulk-inserted in one transaction (``store.insert_jobs``, executemany of ORM
rows): no Ray, no training. A second deployment with a tenth of the rows answers the same pages, to show the cost
follows the page, not the table.

Everything goes through FastAPI's TestClient over the whole ingress (``create_server_app``: REST at ``/api``, the
console at ``/ui``), in-process, logged in once. Each repetition calls every page and its REST counterpart
``--calls`` times, interleaved; the median over ``--repeats`` repetitions of the mean call is reported. Each pair
is checked to show the same rows (the ids in the page's table are the ids in the JSON).

REST counterparts: ``/api/jobs`` pages by ``before_id`` (keyset), not offset, so page 200's rows are asked for as
``before_id=<the id just above them>``; ``/api/models/{name}/versions`` pages by ``limit``/``offset``
(``newest_first=true``, as the console lists them).

    .venv/bin/python -m benchmarks.ui_pages [--jobs 10000 --versions 1000 --runs 200 --repeats 7 --calls 3]
        [--postgres [--database-url URL]]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

from benchmarks._common import add_database_url, median, print_table, temporary_pg_database

PAGE = 25
JOB_IDS = re.compile(r'<tr data-job-id="(\d+)"')
VERSION_IDS = re.compile(r'<tr data-version="(\d+)"')
RUN_IDS = re.compile(r'<tr data-run-id="(\d+)"')


class Deployment:
    """One tenant's data in a fresh database, and a logged-in TestClient over the whole ingress."""

    def __init__(self, database_url: str | None, home: Path, *, jobs: int, versions: int, runs: int) -> None:
        from fastapi.testclient import TestClient

        from mlhub.backends import Backends
        from mlhub.config import load_settings
        from mlhub.tenancy import TenantService
        from serve_apps.api import create_server_app

        settings = load_settings(home=home, database_url=database_url, redis_url=None, mongodb_uri=None,
                                 ray_address=None)
        settings.home.mkdir(parents=True, exist_ok=True)
        self.backends = Backends(settings)
        self.backends.db.upgrade()
        self.app = create_server_app(settings, backends=self.backends)
        self.ctx = self.app.state.mlhub
        self.db = self.backends.db
        tenants = TenantService(self.db)
        self.key = tenants.create_tenant(f"bench-{uuid.uuid4().hex[:8]}")[1]
        self.principal = tenants.authenticate(self.key, source="api")
        self.model = "big"
        t0 = time.perf_counter()
        self._seed(jobs, versions, runs)
        self.seed_s = time.perf_counter() - t0
        if self.db.engine.dialect.name == "postgresql":
            # as autovacuum would within a minute of the inserts: without statistics the planner sorts the
            # whole table for ORDER BY id LIMIT (page 200 then spills 9 MB to disk)
            from sqlalchemy import text

            with self.db.engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
        self.client = TestClient(self.app, follow_redirects=False)
        r = self.client.post("/ui/login", data={"api_key": self.key})
        assert r.status_code == 303, r.text
        self.auth = {"authorization": f"Bearer {self.key}"}
        from sqlalchemy import select

        from mlhub.store.models import Job

        with self.db.tenant_scope(self.principal.tenant_id, readonly=True) as s:  # newest first, as pages list them
            self.job_ids = list(s.scalars(select(Job.id).where(Job.tenant_id == self.principal.tenant_id)
                                          .order_by(Job.id.desc())))

    def _seed(self, jobs: int, versions: int, runs: int) -> None:
        from sqlalchemy import insert

        from mlhub.artifact_records import ArtifactService
        from mlhub.domain.enums import JobState, QueueName, RunStatus
        from mlhub.domain.specs import parse_spec
        from mlhub.jobs import store
        from mlhub.jobs.service import job_row
        from mlhub.registry.rows import MODEL_MEDIA_TYPES_BY_FORMAT
        from mlhub.registry.service import register_version
        from mlhub.store.models import ModelVersion, Run
        from mlhub.store.types import utcnow

        p, t = self.principal, self.principal.tenant_id
        spec = parse_spec({"kind": "training", "name": "bench-job", "framework": "sklearn", "model": "random_forest",
                           "dataset": {"source": "sklearn", "name": "iris"}})
        base = job_row(p, spec)
        queues, states = list(QueueName), list(JobState)
        now = utcnow()
        rows = []
        for i in range(jobs):
            q, st = queues[i % len(queues)], states[(i // len(queues)) % len(states)]
            at = now - timedelta(seconds=jobs - i)
            row = dict(base, queue=q.value, kind=q.value, name=f"bench-{q.value}-{i}", state=st.value,
                       created_at=at, updated_at=at)
            if st is not JobState.QUEUED:
                row.update(started_at=at, attempt=1)
            if st.is_terminal:
                row.update(finished_at=at + timedelta(seconds=30),
                           result={"metrics": {"accuracy": 0.9}} if st is JobState.SUCCEEDED else None,
                           error="boom" if st in (JobState.FAILED, JobState.DEAD) else None)
            if st is JobState.RUNNING:
                row["progress"] = {"epoch": 3, "epochs": 10, "metrics": {"loss": 0.25}}
            rows.append(row)
        art = ArtifactService(self.db, self.backends.artifacts).upload(
            p, uuid.uuid4().bytes * 64, media_type=MODEL_MEDIA_TYPES_BY_FORMAT["npz"], name=f"{self.model}.npz")
        with self.db.tenant_scope(t) as s:
            job_ids = store.insert_jobs(s, rows)
            first = register_version(s, t, model_name=self.model, framework="baseline", model_format="npz",
                                     artifact_id=art.id, artifact_sha256=art.sha256, created_by="bench",
                                     metrics={"accuracy": 0.5})
            if versions > 1:
                s.execute(insert(ModelVersion), [
                    {"tenant_id": t, "model_id": first.model_id, "version": n, "framework": "baseline",
                     "model_format": "npz", "artifact_id": art.id, "artifact_sha256": art.sha256,
                     "created_by": "bench", "metrics": {"accuracy": 0.5 + n / (4 * versions), "f1": 0.4},
                     "tags": {}, "stage": "none", "status": "ready", "created_at": now}
                    for n in range(2, versions + 1)])
            if runs:
                s.execute(insert(Run), [
                    {"tenant_id": t, "name": f"run-{n}", "experiment": "bench", "status": RunStatus.FINISHED.value,
                     "job_id": job_ids[n % len(job_ids)] if job_ids else None, "attempt": 1,
                     "started_at": now, "ended_at": now + timedelta(seconds=12), "created_at": now,
                     "summary": {"accuracy": 0.9, "f1": 0.88, "loss": 0.3, "epochs": 10, "lr": 0.01}}
                    for n in range(runs)])
        self.ctx.registry.promote(p, self.model, versions, "champion", reason="bench")

    def get(self, path: str, *, rest: bool = False):
        r = self.client.get(path, headers=self.auth if rest else None)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        return r

    def close(self) -> None:
        self.client.close()
        self.backends.close()


@contextmanager
def deployment(args, scale: int):
    """A deployment with 1/``scale`` of the rows, on SQLite or a fresh PostgreSQL database (dropped after)."""
    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlhub-ui-bench-")))
        url = stack.enter_context(temporary_pg_database(args.database_url)) if args.postgres else None
        d = Deployment(url, home / "home", jobs=args.jobs // scale, versions=max(args.versions // scale, 1),
                       runs=args.runs)
        stack.callback(d.close)
        yield d


def pairs(d: Deployment, versions: int) -> list[tuple[str, str, object, str]]:
    """(page, console path, REST path, what the REST side returns) for each measured page."""
    m = d.model
    deep_jobs = min(200, -(-len(d.job_ids) // PAGE))
    deep_versions = min(40, -(-versions // PAGE))
    before = d.job_ids[(deep_jobs - 1) * PAGE - 1] if deep_jobs > 1 else None
    return [
        ("jobs p1", "/ui/jobs", f"/api/jobs?limit={PAGE}", "same 25 rows"),
        (f"jobs p{deep_jobs}", f"/ui/jobs?page={deep_jobs}",
         f"/api/jobs?limit={PAGE}" + (f"&before_id={before}" if before else ""), "same 25 rows (before_id)"),
        ("model p1", f"/ui/models/{m}", f"/api/models/{m}/versions?limit={PAGE}&newest_first=true", "same 25 rows"),
        (f"model p{deep_versions}", f"/ui/models/{m}?page={deep_versions}",
         f"/api/models/{m}/versions?limit={PAGE}&newest_first=true&offset={(deep_versions - 1) * PAGE}",
         "same 25 rows"),
        ("runs p1", "/ui/runs", f"/api/runs?limit={PAGE}", "same 25 rows"),
        ("models list", "/ui/models", "/api/models", "same rows"),
    ]


def check_same_rows(d: Deployment, console: str, rest) -> None:
    """The page's table rows are the rows the REST side returned (ids compared), where both are lists of 25."""
    html = d.get(console).text
    if isinstance(rest, str) and rest.startswith("/api/jobs"):
        assert [int(x) for x in JOB_IDS.findall(html)] == [j["id"] for j in d.get(rest, rest=True).json()["jobs"]]
    elif isinstance(rest, str) and rest.startswith("/api/runs"):
        assert [int(x) for x in RUN_IDS.findall(html)] == [r["id"] for r in d.get(rest, rest=True).json()["runs"]]
    elif isinstance(rest, str) and "/versions" in rest:
        assert [int(x) for x in VERSION_IDS.findall(html)] == [
            v["version"] for v in d.get(rest, rest=True).json()["versions"]]


def timed(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def measure(variants: dict[str, object], repeats: int, calls: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm up: templates compiled, connections open, caches filled
        timed(fn, 2)
    for _ in range(repeats):
        for name, fn in variants.items():  # interleaved: drift hits every variant alike
            out[name].append(timed(fn, calls))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--versions", type=int, default=1_000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3, help="calls of each page per repetition")
    ap.add_argument("--postgres", action="store_true", help="use PostgreSQL at --database-url instead of SQLite")
    add_database_url(ap)
    args = ap.parse_args()
    backend = "PostgreSQL" if args.postgres else "SQLite"

    with deployment(args, 1) as big, deployment(args, 10) as small:
        print(f"{backend}: seeded {args.jobs:,} jobs, {args.versions:,} versions, {args.runs} runs in "
              f"{big.seed_s:.1f} s; the small deployment holds {len(small.job_ids):,} jobs")
        plan = pairs(big, args.versions)
        variants: dict[str, object] = {}
        for _page, console, rest, _ in plan:
            check_same_rows(big, console, rest)
            variants[f"ui {console}"] = lambda c=console: big.get(c)
            key = f"rest {rest if isinstance(rest, str) else id(rest)}"
            variants[key] = (lambda r=rest: big.get(r, rest=True)) if isinstance(rest, str) else rest
        # the same pages on a tenth of the rows: cost follows the page, not the table
        small_pages = [("jobs p1", "/ui/jobs"), ("jobs p40", "/ui/jobs?page=40"), ("model p1", f"/ui/models/{big.model}"),
                       ("model p4", f"/ui/models/{big.model}?page=4"), ("runs p1", "/ui/runs")]
        for _, path in small_pages:
            variants[f"small {path}"] = lambda c=path: small.get(c)
            variants.setdefault(f"ui {path}", lambda c=path: big.get(c))
        floor = f"/api/jobs/{big.job_ids[0]}"  # what any REST call costs here: HTTP in-process, auth, one row
        variants["floor"] = lambda: big.get(floor, rest=True)
        samples = measure(variants, args.repeats, args.calls)
        ms = {k: median(v) * 1e3 for k, v in samples.items()}

        rows = []
        for page, console, rest, what in plan:
            ui_ms = ms[f"ui {console}"]
            rest_ms = ms[f"rest {rest if isinstance(rest, str) else id(rest)}"]
            rest_bytes = len(big.get(rest, rest=True).content) if isinstance(rest, str) else len(rest())
            rows.append([page, console, f"{ui_ms:.1f}", f"{rest_ms:.1f}", f"{ui_ms / rest_ms:.2f}x",
                         f"{len(big.get(console).content):,}", f"{rest_bytes:,}", what])
        print(f"\nconsole page vs REST JSON, median of {args.repeats} repetitions x {args.calls} calls, "
              f"{args.jobs:,} jobs / {args.versions:,} versions ({backend}, TestClient in-process)")
        print_table(["page", "console path", "console ms", "REST ms", "console/REST", "page bytes", "REST bytes",
                     "REST side"], rows)
        deep_j, deep_v = plan[1], plan[3]
        print(f"deep page / page 1: {deep_j[0]} {ms['ui ' + deep_j[1]] / ms['ui /ui/jobs']:.2f}x, "
              f"{deep_v[0]} {ms['ui ' + deep_v[1]] / ms['ui ' + plan[2][1]]:.2f}x")
        print(f"floor of a REST call (TestClient, API key, one row: GET {floor}): {ms['floor']:.1f} ms")

        rows = []
        for page, path in small_pages:
            rows.append([page, path, f"{ms['small ' + path]:.1f}", f"{ms['ui ' + path]:.1f}",
                         f"{ms['ui ' + path] / ms['small ' + path]:.2f}x"])
        print(f"\nthe same pages with {len(small.job_ids):,} jobs / {max(args.versions // 10, 1):,} versions vs "
              f"{args.jobs:,} / {args.versions:,} (10x the rows)")
        print_table(["page", "path", "small ms", "big ms", "big/small"], rows)
        print("rerun: .venv/bin/python -m benchmarks.ui_pages " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

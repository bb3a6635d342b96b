"""The job queue on PostgreSQL: durable enqueue, end-to-end no-op jobs, and enqueue-to-start latency.

1. Durable enqueue: 10,000 jobs through the client's batch submit vs one raw ``executemany`` INSERT of the
   same rows (same transaction shape), interleaved, median of N.
2. End to end: no-op (diagnostic) jobs from submit to ``succeeded`` recorded, vs bare Ray tasks
   (``ray.get`` over ``@ray.remote`` no-ops with the same 1-CPU shape) on the same local cluster.
3. Latency: jobs submitted one by one at a moderate rate; enqueue-to-start (``started_at - created_at``)
   p50 and p99 from the database's own timestamps.

Short jobs run in the orchestrator's executor lane (batches in long-lived executor actors, released after a
short idle period). Before each timed run of either side the benchmark waits, untimed, until the cluster's
CPUs are all free again: bare Ray never waits for an idle executor, and every mlhub run starts its executors.

    .venv/bin/python -m benchmarks.queue_throughput [--jobs 10000] [--e2e-jobs 2000] [--repeats 5]

RQ (the Redis queue many teams use) measured on this machine before mlhub existed: about 324 no-op jobs/s
end to end with 2 workers (../shared/RAY_NOTES.md); it is named here rather than installed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid

import psycopg
from psycopg.types.json import Jsonb

from benchmarks._common import (
    add_database_url,
    interleaved,
    median,
    print_table,
    rerun_hint,
    temporary_pg_database,
)


def _spec(i: int, **kw):
    from mlhub.domain.specs import parse_spec

    return parse_spec({"kind": "diagnostic", "name": f"noop-{i}", "retry": {"max_attempts": 1}, **kw})


def bench_enqueue(url: str, n: int, repeats: int) -> list[list[object]]:
    from mlhub.client import Hub
    from mlhub.config import load_settings
    from mlhub.jobs.service import job_row

    home = tempfile.mkdtemp(prefix="mlhub-bench-")
    tenant_key = _new_tenant(url)
    hub = Hub(load_settings(home=home, database_url=url), api_key=tenant_key)
    specs = [_spec(i) for i in range(n)]
    raw_dsn = url.replace("postgresql+psycopg://", "postgresql://")
    cols = ["tenant_id", "queue", "kind", "name", "priority", "state", "attempt", "max_attempts", "spec",
            "resources", "submitted_by", "cancel_requested", "created_at", "updated_at"]
    rows = []
    for s in specs:
        r = job_row(hub.principal, s)
        rows.append(tuple(Jsonb(r[c]) if c in ("spec", "resources") else r[c] for c in cols))
    sql = f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"

    def client() -> float:
        t0 = time.perf_counter()
        hub.submit_many(specs)
        return time.perf_counter() - t0

    def raw() -> float:
        with psycopg.connect(raw_dsn) as conn:
            t0 = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(sql, rows)
            return time.perf_counter() - t0

    client(), raw()  # warm-up
    times = interleaved({"client submit_many": client, "raw executemany INSERT": raw}, repeats)
    _cancel_all(url)
    hub.close()
    base = median(times["raw executemany INSERT"])
    return [[k, f"{n / median(v):,.0f}", f"{base / median(v):.2f}"] for k, v in times.items()]


def _new_tenant(url: str) -> str:
    from mlhub.store.database import Database
    from mlhub.tenancy import TenantService

    db = Database(url)
    _, key = TenantService(db).create_tenant(f"bench-{uuid.uuid4().hex[:8]}")
    db.dispose()
    return key


def _cancel_all(url: str) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute("UPDATE jobs SET state = 'cancelled', cancel_requested = true WHERE state = 'queued'")


def bench_end_to_end(url: str, n: int, repeats: int, rate: float, latency_jobs: int) -> tuple[list, list]:
    import ray

    from actors import orchestrator as orch
    from mlhub.client import Hub
    from mlhub.config import load_settings

    home = tempfile.mkdtemp(prefix="mlhub-bench-")
    settings = load_settings(home=home, database_url=url, max_concurrent_jobs=2)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="mlhub",
             _temp_dir=tempfile.mkdtemp(prefix="rb-"), logging_level="ERROR")
    actor = orch.start(settings.to_document(), name=f"bench-{uuid.uuid4().hex[:6]}")
    ray.get(actor.ping.remote(), timeout=120)
    hub = Hub(settings, api_key=_new_tenant(url))

    @ray.remote(num_cpus=1)
    def noop() -> int:
        return 0

    def wait_done(ids: list[int]) -> None:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            while conn.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s) AND state IN "
                               "('succeeded', 'failed', 'dead')", (ids,)).fetchone()[0] < len(ids):
                time.sleep(0.02)

    def cluster_idle() -> None:
        """Untimed: wait until the orchestrator's executors (idle after a run) gave their CPUs back, so each
        side starts on a free cluster and the mlhub side pays for starting its executors in every run."""
        deadline = time.monotonic() + 60
        while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)

    def mlhub_jobs() -> float:
        cluster_idle()
        t0 = time.perf_counter()
        handles = hub.submit_many([_spec(i) for i in range(n)])
        wait_done([h.id for h in handles])
        return time.perf_counter() - t0

    def bare_ray() -> float:
        cluster_idle()
        t0 = time.perf_counter()
        ray.get([noop.remote() for _ in range(n)])
        return time.perf_counter() - t0

    mlhub_jobs(), bare_ray()  # warm-up: worker processes, connection pools
    times = interleaved({"mlhub no-op jobs (PostgreSQL)": mlhub_jobs, "bare Ray tasks": bare_ray}, repeats)
    base = median(times["bare Ray tasks"])
    throughput = [[k, f"{n / median(v):,.0f}", f"{base / median(v):.2f}"] for k, v in times.items()]
    throughput.append(["RQ 2.x, 2 workers (measured earlier, RAY_NOTES.md)", "324", f"{324 / (n / base):.2f}"])

    # latency at a moderate, steady rate
    ids = []
    for i in range(latency_jobs):
        ids.append(hub.submit(_spec(i)).id)
        time.sleep(1.0 / rate)
    wait_done(ids)
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        lat = [r[0] for r in conn.execute(
            "SELECT EXTRACT(EPOCH FROM started_at - created_at) * 1000 FROM jobs WHERE id = ANY(%s)", (ids,))]
    lat = sorted(float(x) for x in lat)
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
    latency = [[f"{rate:g} jobs/s for {latency_jobs} jobs", f"{p50:.1f}", f"{p99:.1f}", f"{lat[-1]:.1f}"]]
    hub.close()
    ray.kill(actor, no_restart=True)
    ray.shutdown()
    return throughput, latency


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10_000, help="jobs per enqueue batch")
    ap.add_argument("--e2e-jobs", type=int, default=2000, help="no-op jobs per end-to-end run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rate", type=float, default=20.0, help="submissions per second for the latency run")
    ap.add_argument("--latency-jobs", type=int, default=200)
    add_database_url(ap)
    args = ap.parse_args()
    with temporary_pg_database(args.database_url) as url:
        from mlhub.store.database import Database

        db = Database(url)
        db.upgrade()
        db.dispose()
        enqueue = bench_enqueue(url, args.jobs, args.repeats)
        print(f"\n1. Durable enqueue on PostgreSQL: {args.jobs:,} jobs per batch, median of {args.repeats}\n")
        print_table(["path", "jobs/s", "vs raw INSERT"], enqueue)
        print("aim: >= 0.5")
        throughput, latency = bench_end_to_end(url, args.e2e_jobs, args.repeats, args.rate, args.latency_jobs)
    print(f"\n2. End-to-end no-op jobs ({args.e2e_jobs:,} per run, 2 CPUs, median of {args.repeats})\n")
    print_table(["path", "jobs/s", "vs bare Ray"], throughput)
    print("aim: >= 0.5 of bare Ray tasks")
    print("\n3. Enqueue-to-start latency (database timestamps)\n")
    print_table(["load", "p50 ms", "p99 ms", "max ms"], latency)
    print(f"aim: p50 < 20 ms, p99 < 100 ms\n{rerun_hint()}")


if __name__ == "__main__":
    main()

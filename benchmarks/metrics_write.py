"""Metric-point write path on PostgreSQL: mlhub's batch API vs a raw executemany INSERT.

Both sides insert the same 100,000 rows (tenant, run, key, step, value, timestamp) in one transaction,
interleaved, median of N repetitions. mlhub's side goes through the full path a tracking client uses:
a tenant scope (SET LOCAL role + tenant, RLS on), validation of every point, the repository's batch insert.

    .venv/bin/python benchmarks/metrics_write.py [--rows 100000] [--repeats 5] [--database-url URL]
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime

import psycopg

from benchmarks._common import (
    add_database_url,
    interleaved,
    median,
    print_table,
    rerun_hint,
    temporary_pg_database,
)
from mlhub.store import runs as runs_repo
from mlhub.store.database import Database
from mlhub.store.runs import MetricPoint
from mlhub.tenancy import TenantService


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    add_database_url(ap)
    args = ap.parse_args()

    with temporary_pg_database(args.database_url) as url:
        db = Database(url)
        db.upgrade()
        tenant, key = TenantService(db).create_tenant(f"bench-{uuid.uuid4().hex[:6]}")
        with db.tenant_scope(tenant.id) as s:
            run_id = runs_repo.create_run(s, tenant.id, "bench").id
        points = [MetricPoint("loss", 1.0 / (i + 1), i) for i in range(args.rows)]
        now = datetime.now(UTC)
        raw_rows = [(tenant.id, run_id, p.key, p.step, p.value, now) for p in points]
        raw_dsn = url.replace("postgresql+psycopg://", "postgresql://")

        def mlhub_batch() -> float:
            t0 = time.perf_counter()
            with db.tenant_scope(tenant.id) as s:
                runs_repo.log_metrics(s, tenant.id, run_id, points)
            return time.perf_counter() - t0

        def raw_executemany() -> float:
            with psycopg.connect(raw_dsn) as conn:
                t0 = time.perf_counter()
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO metrics (tenant_id, run_id, key, step, value, timestamp) "
                        "VALUES (%s, %s, %s, %s, %s, %s)", raw_rows)
                return time.perf_counter() - t0

        mlhub_batch(), raw_executemany()  # warm-up: connections, plans
        times = interleaved({"mlhub batch API": mlhub_batch, "raw executemany": raw_executemany}, args.repeats)
        db.dispose()

    raw = median(times["raw executemany"])
    rows = []
    for name, ts in times.items():
        m = median(ts)
        rows.append([name, f"{m:.3f}", f"{args.rows / m:,.0f}", f"{raw / m:.2f}"])
    print(f"\nMetric writes on PostgreSQL: {args.rows:,} points per batch, median of {args.repeats}, interleaved\n")
    print_table(["path", "seconds", "points/s", "throughput vs raw"], rows)
    print(f"\naim: mlhub batch API >= 0.5 of raw executemany\n{rerun_hint()}")


if __name__ == "__main__":
    main()

"""Helpers shared by benchmark scripts: temporary PostgreSQL databases, medians, a printed table."""

from __future__ import annotations

import os
import statistics
import sys
import uuid
from collections.abc import Callable
from contextlib import contextmanager

from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url


@contextmanager
def temporary_pg_database(server_url: str):
    """Create an empty database on ``server_url``'s server and drop it afterwards; yields its URL."""
    name = f"mlhub_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def add_database_url(parser) -> None:
    """``--database-url``: a PostgreSQL server the benchmark may create (and drop) a database on."""
    parser.add_argument("--database-url", default=os.environ.get(
        "MLHUB_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))


def interleaved(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each variant ``repeats`` times, alternating (A B A B ...), so drift hits all sides equally."""
    out: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            out[name].append(fn())
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)))
    print(line)
    for r in cells[1:]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def rerun_hint() -> str:
    return "rerun: .venv/bin/python " + " ".join(sys.argv)


def stop_ray_head(settings) -> None:
    """Disconnect and stop the local Ray head a benchmark started with ``cluster.start_local_head``."""
    import ray

    from mlhub import cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster.stop_local_head(settings)

"""Tracking overhead: a CPU-bound training-ish loop with and without ``run.log_metrics(...)`` every step.

Every side runs the same loop: ``--steps`` steps, each a few numpy matmuls on ``--size`` x ``--size`` float64
matrices (about 1-5 ms a step on one core) and the three numbers a training loop would report (loss, accuracy,
learning rate) turned into Python floats. The tracked sides wrap it in ``with mlhub.start_run(...)`` and call
``run.log_metrics({...}, step=step)`` every step; their time includes starting the run and ending it (the last
flush of the buffered points), so it is what the loop's caller waits for. The table also gives each side's
process CPU time (the loop and the writer thread; a PostgreSQL server's own work is not in it):

- **plain loop**: no tracking.
- **tracked, SQLite**: the embedded default (a SQLite file in a temporary MLHUB_HOME).
- **tracked, PostgreSQL**: a temporary database on ``--database-url``'s server (skipped with ``--no-postgres``).

All sides alternate within each repetition in this one process, with one BLAS/OpenMP thread (as Ray sets
``OMP_NUM_THREADS=1`` in its workers); medians of ``--repeats`` repetitions after one warm-up of each.

    .venv/bin/python -m benchmarks.tracking_overhead [--steps 3000] [--size 256] [--repeats 5]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--no-postgres]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads: the loop gets Ray workers' thread count

import argparse  # noqa: E402
import contextlib  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks._common import (  # noqa: E402
    add_database_url,
    interleaved,
    median,
    print_table,
    rerun_hint,
    temporary_pg_database,
)

MIN_REPEATS = 5
AIM = 1.05  # "a training loop slows by at most a few percent"


def training_loop(steps: int, size: int, log: Callable[[dict[str, float], int], None] | None) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((size, size)) / np.sqrt(size)
    x = rng.standard_normal((size, size))
    for step in range(steps):
        h = np.tanh(w @ x)
        x = 0.5 * x + 0.5 * (w.T @ h)
        metrics = {"loss": float(np.abs(h).mean()), "accuracy": float((h > 0).mean()),
                   "lr": 0.01 * 0.999 ** step}
        if log is not None:
            log(metrics, step)


CPU: dict[str, list[float]] = {}  # process CPU seconds of each timed run (this process: loop + writer thread)


def plain(steps: int, size: int) -> Callable[[], float]:
    def run() -> float:
        t0, c0 = time.perf_counter(), time.process_time()
        training_loop(steps, size, None)
        CPU.setdefault("plain loop", []).append(time.process_time() - c0)
        return time.perf_counter() - t0
    return run


def tracked(name: str, steps: int, size: int, settings, api_key: str | None) -> Callable[[], float]:
    import mlhub

    def run() -> float:
        t0, c0 = time.perf_counter(), time.process_time()
        with mlhub.start_run("bench", experiment="tracking-overhead", params={"size": size},
                             settings=settings, api_key=api_key) as r:
            training_loop(steps, size, r.log_metrics)
        CPU.setdefault(name, []).append(time.process_time() - c0)
        return time.perf_counter() - t0
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=MIN_REPEATS)
    ap.add_argument("--no-postgres", action="store_true", help="only the embedded SQLite default")
    add_database_url(ap)
    args = ap.parse_args()
    if args.repeats < MIN_REPEATS:
        ap.error(f"--repeats must be at least {MIN_REPEATS}")

    from mlhub.config import load_settings
    from mlhub.run_logging import release_connections

    with tempfile.TemporaryDirectory(prefix="mlhub-bench-") as home:
        variants = {"plain loop": plain(args.steps, args.size),
                    "tracked, SQLite": tracked("tracked, SQLite", args.steps, args.size,
                                               load_settings(home=Path(home) / "sqlite"), None)}
        with (temporary_pg_database(args.database_url) if not args.no_postgres else contextlib.nullcontext()) as pg_url:
            if pg_url is not None:
                from mlhub.store.database import Database
                from mlhub.tenancy import TenantService

                db = Database(pg_url)
                db.upgrade()
                key = TenantService(db).create_tenant(f"bench-{uuid.uuid4().hex[:6]}")[1]
                db.dispose()
                settings = load_settings(home=Path(home) / "pg", database_url=pg_url)
                variants["tracked, PostgreSQL"] = tracked("tracked, PostgreSQL", args.steps, args.size, settings, key)
            for fn in variants.values():  # warm-up: imports, schema, connections, BLAS
                fn()
            CPU.clear()
            times = interleaved(variants, args.repeats)
            release_connections()  # the temporary database is dropped next

    base = median(times["plain loop"])
    base_cpu = median(CPU["plain loop"])
    rows = []
    for name, ts in times.items():
        m = median(ts)
        per_step_us = (m - base) / args.steps * 1e6
        rows.append([name, f"{m:.3f}", f"{m / args.steps * 1e3:.3f}", f"{m / base:.3f}",
                     "-" if name == "plain loop" else f"{per_step_us:+.1f}", f"{median(CPU[name]) / base_cpu:.3f}",
                     " ".join(f"{t:.2f}" for t in ts)])
    print(f"\nTracking overhead: {args.steps:,} steps of {args.size}x{args.size} float64 matmuls, 3 metrics logged "
          f"per step ({3 * args.steps:,} points per run), OMP_NUM_THREADS=1, median of {args.repeats}, "
          f"interleaved\n")
    print_table(["loop", "seconds", "ms/step", "time vs plain", "us/step added", "process CPU vs plain",
                 "all runs (s)"], rows)
    print(f"\naim: tracked <= {AIM:.2f} x plain. 'process CPU' counts this process only (loop and writer thread), "
          "not the database server's work,\nwhich competes with the loop for the cores when the server runs on "
          f"this machine.\n{rerun_hint()}")


if __name__ == "__main__":
    main()

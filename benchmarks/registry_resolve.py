"""Registry lookups: ``name@alias`` resolution p50 with the cache warm vs cold (every lookup reads PostgreSQL).

One tenant, one model with 20 versions and a ``champion`` alias. Each repetition times ``--lookups`` calls of
``RegistryService.resolve(principal, "m@champion")`` per variant, interleaved: cold (no cache: a tenant-scoped
read transaction each time, RLS on), warm in-process LRU, warm Redis (when ``--redis-url`` is given). The p50 of
all calls of a variant is reported, and its speed-up over cold.

    .venv/bin/python -m benchmarks.registry_resolve [--lookups 2000] [--repeats 5] [--database-url URL]
        [--redis-url redis://127.0.0.1:6379/15]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from benchmarks._common import add_database_url, print_table, rerun_hint, temporary_pg_database
from mlhub.cache.memory import MemoryCache
from mlhub.registry.service import RegistryService, register_version
from mlhub.store.database import Database
from mlhub.tenancy import TenantService


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--redis-url", default=None, help="also measure a warm Redis cache")
    add_database_url(ap)
    args = ap.parse_args()

    with temporary_pg_database(args.database_url) as url:
        db = Database(url)
        db.upgrade()
        tenants = TenantService(db)
        principal = tenants.authenticate(tenants.create_tenant(f"bench-{uuid.uuid4().hex[:6]}")[1])
        with db.tenant_scope(principal.tenant_id) as s:
            for i in range(20):
                register_version(s, principal.tenant_id, model_name="m", framework="baseline", model_format="npz",
                                 artifact_id=None, artifact_sha256=f"{i:064x}", created_by="bench",
                                 metrics={"accuracy": 0.5 + i / 100})
        services = {"cold (database)": RegistryService(db)}
        services["warm in-process LRU"] = RegistryService(db, cache=MemoryCache(10_000, 3600.0), cache_ttl_s=3600.0)
        if args.redis_url:
            from mlhub.cache.redis_cache import RedisCache

            services["warm Redis"] = RegistryService(db, cache=RedisCache(args.redis_url, default_ttl_s=3600.0,
                                                                          timeout_s=2.0), cache_ttl_s=3600.0)
        services["cold (database)"].promote(principal, "m", 20, to="champion")
        samples: dict[str, list[float]] = {k: [] for k in services}
        for svc in services.values():  # warm up connections and fill the caches
            for _ in range(50):
                assert svc.resolve(principal, "m@champion").version == 20
        for _ in range(args.repeats):
            for name, svc in services.items():  # interleaved: drift hits every variant alike
                for _ in range(args.lookups):
                    t0 = time.perf_counter()
                    svc.resolve(principal, "m@champion")
                    samples[name].append(time.perf_counter() - t0)
        cold = statistics.median(samples["cold (database)"])
        rows = []
        for name, xs in samples.items():
            p50 = statistics.median(xs)
            p99 = sorted(xs)[int(len(xs) * 0.99)]
            rows.append([name, f"{p50 * 1e6:,.1f}", f"{p99 * 1e6:,.1f}", f"{cold / p50:.1f}x"])
        print(f"name@alias resolution, {args.lookups} lookups x {args.repeats} repetitions per variant (PostgreSQL)")
        print_table(["variant", "p50 us", "p99 us", "speed-up vs cold"], rows)
        print(rerun_hint())
        for svc in services.values():
            if svc.cache is not None:
                svc.cache.close()
        db.dispose()


if __name__ == "__main__":
    main()

"""The prediction cache: what a model version predicted for a row, keyed by (tenant, version id, row hash).

Rows already scored by the same model version are served from here instead of being predicted again. It
must outlive the job and the process, so its embedded default is a SQLite file under ``$MLHUB_HOME``
(``cache/predictions.sqlite``, WAL, one ``WITHOUT ROWID`` table keyed by tenant, version id and the row's
32-byte sha256, salted with the model artifact's sha256 so that a reused version id, which SQLite can hand
out again after the newest version is deleted, never serves another model's predictions); with ``MLHUB_REDIS_URL`` set it is Redis (keys from :func:`mlhub.cache.keys.prediction`,
``MGET`` and pipelined ``SET``s per batch, never a round trip per row, entries expiring after
``MLHUB_PREDICTION_CACHE_TTL_S``).

Every entry is derivable, so a cache failure must never fail a job: :class:`PredictionCache` catches every
error of its store, logs it (once per outage), counts it in ``stats["errors"]``, answers misses and drops
writes, and skips the store for ``cooldown_s`` before trying again. An entry that does not decode is a miss.

Values are stored compactly: one tag byte (``f`` float64, ``i`` int64, ``s`` UTF-8 text) and the value,
so a float prediction costs 9 bytes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlhub.cache import keys
from mlhub.errors import redact

__all__ = ["PredictionCache", "PredictionCacheConfig", "decode_predictions", "encode_predictions"]

log = logging.getLogger("mlhub.batch.cache")

_CHUNK = 500  # keys per Redis MGET or pipeline
_SQLITE_CHUNK = 4000  # keys per SQLite IN (...), well below its limit of 32,766 parameters
_NUM = np.dtype([("t", "S1"), ("v", "<u8")])


# --- values --------------------------------------------------------------------------------------------


def encode_predictions(predictions: np.ndarray) -> list[bytes]:
    """One compact value per prediction: tag byte + float64/int64 little-endian, or ``s`` + UTF-8."""
    p = np.asarray(predictions)
    if p.dtype.kind in "biuf":
        tag, values = (b"f", p.astype("<f8")) if p.dtype.kind == "f" else (b"i", p.astype("<i8"))
        rec = np.empty(len(p), dtype=_NUM)
        rec["t"] = tag
        rec["v"] = values.view("<u8")
        raw = rec.tobytes()
        return [raw[i:i + 9] for i in range(0, len(raw), 9)]
    return [b"s" + str(v).encode("utf-8") for v in p.tolist()]


def _decode_one(value: bytes) -> Any:
    tag, body = value[:1], value[1:]
    if tag == b"f" and len(body) == 8:
        return float(np.frombuffer(body, "<f8")[0])
    if tag == b"i" and len(body) == 8:
        return int(np.frombuffer(body, "<i8")[0])
    if tag == b"s":
        return body.decode("utf-8")
    raise ValueError(f"undecodable prediction cache entry (tag {tag!r}, {len(value)} bytes)")


def decode_predictions(values: Sequence[bytes]) -> np.ndarray:
    """The inverse of :func:`encode_predictions`; raises :class:`ValueError` for an undecodable value."""
    if not values:
        return np.empty(0, dtype=np.float64)
    if all(len(v) == 9 for v in values):
        rec = np.frombuffer(b"".join(values), dtype=_NUM)
        tags = set(np.unique(rec["t"]).tolist())
        if tags == {b"f"}:
            return rec["v"].copy().view("<f8")
        if tags == {b"i"}:
            return rec["v"].copy().view("<i8")
    return np.asarray([_decode_one(v) for v in values])


# --- stores --------------------------------------------------------------------------------------------


class _SqliteStore:
    """One SQLite file, shared by every process on the machine (WAL; writers wait up to ``timeout_s``). Keys are
    read and written in sorted order."""

    backend = "sqlite"

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._con: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
            try:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
                con.execute("CREATE TABLE IF NOT EXISTS prediction_cache (tenant TEXT NOT NULL, "
                            "version_id INTEGER NOT NULL, row_hash BLOB NOT NULL, value BLOB NOT NULL, "
                            "PRIMARY KEY (tenant, version_id, row_hash)) WITHOUT ROWID")
            except sqlite3.Error:
                con.close()
                raise
            self._con = con
        return self._con

    def holds_any(self, tenant_id: str, version_id: int) -> bool:
        sql = "SELECT 1 FROM prediction_cache WHERE tenant = ? AND version_id = ? LIMIT 1"
        return self._connection().execute(sql, (tenant_id, version_id)).fetchone() is not None

    def get_many(self, tenant_id: str, version_id: int, digests: Sequence[bytes]) -> list[bytes | None]:
        con = self._connection()
        found: dict[bytes, bytes] = {}
        ordered = sorted(digests)  # neighbouring keys share B-tree pages: about 1.7x faster lookups here
        for i in range(0, len(ordered), _SQLITE_CHUNK):
            chunk = ordered[i:i + _SQLITE_CHUNK]
            sql = ("SELECT row_hash, value FROM prediction_cache WHERE tenant = ? AND version_id = ? AND row_hash "
                   f"IN ({','.join('?' * len(chunk))})")
            found.update(con.execute(sql, (tenant_id, version_id, *chunk)).fetchall())
        return [found.get(d) for d in digests]

    def set_many(self, tenant_id: str, version_id: int, items: Sequence[tuple[bytes, bytes]]) -> None:
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany("INSERT OR REPLACE INTO prediction_cache (tenant, version_id, row_hash, value) "
                            "VALUES (?, ?, ?, ?)", [(tenant_id, version_id, d, v) for d, v in sorted(items)])
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


class _RedisStore:
    backend = "redis"

    def __init__(self, url: str, timeout_s: float, ttl_s: float | None, namespace_prefix: str) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                            retry=Retry(NoBackoff(), 0))
        self._px = None if ttl_s is None else max(1, round(ttl_s * 1000))
        self._prefix = namespace_prefix

    def _keys(self, tenant_id: str, version_id: int, digests: Sequence[bytes]) -> list[str]:
        return [self._prefix + keys.prediction(tenant_id, version_id, d.hex()) for d in digests]

    def _marker(self, tenant_id: str, version_id: int) -> str:
        # "-" is never a hex digest, so the marker cannot collide with an entry
        return self._prefix + keys.prediction(tenant_id, version_id, "-")

    def holds_any(self, tenant_id: str, version_id: int) -> bool:
        return bool(self._client.exists(self._marker(tenant_id, version_id)))

    def get_many(self, tenant_id: str, version_id: int, digests: Sequence[bytes]) -> list[bytes | None]:
        names = self._keys(tenant_id, version_id, digests)
        out: list[bytes | None] = []
        for i in range(0, len(names), _CHUNK):
            out.extend(self._client.mget(names[i:i + _CHUNK]))
        return out

    def set_many(self, tenant_id: str, version_id: int, items: Sequence[tuple[bytes, bytes]]) -> None:
        names = self._keys(tenant_id, version_id, [d for d, _ in items])
        for i in range(0, len(items), _CHUNK):
            pipe = self._client.pipeline(transaction=False)
            for name, (_, value) in zip(names[i:i + _CHUNK], items[i:i + _CHUNK], strict=True):
                pipe.set(name, value, px=self._px)
            pipe.set(self._marker(tenant_id, version_id), b"1", px=self._px)  # outlives the entries it vouches for
            pipe.execute()

    def close(self) -> None:
        self._client.close()


# --- the cache -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionCacheConfig:
    """Where the prediction cache lives; small and picklable, so Ray Data actors open their own.

    ``redis_url`` (a secret: Ray is trusted infrastructure, never log it) wins over ``sqlite_path``.
    """

    sqlite_path: Path | None = None
    redis_url: str | None = None
    ttl_s: float | None = None
    timeout_s: float = 2.0
    namespace_prefix: str = ""  # Redis only: lets tests share a database

    @classmethod
    def from_settings(cls, settings) -> PredictionCacheConfig:
        """Redis when ``MLHUB_REDIS_URL`` is set, else ``$MLHUB_HOME/cache/predictions.sqlite``."""
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url is not None else None
        return cls(sqlite_path=None if redis_url else settings.home / "cache" / "predictions.sqlite",
                   redis_url=redis_url, ttl_s=settings.prediction_cache_ttl_s,
                   timeout_s=settings.backend_timeout_s)

    def open(self) -> PredictionCache:
        return PredictionCache(self)

    @property
    def where(self) -> str:
        return f"redis {redact(self.redis_url)}" if self.redis_url else f"sqlite {self.sqlite_path}"


class PredictionCache:
    """Cached predictions of (tenant, model version, row digest); every failure degrades to a miss.

    ``stats``: ``hits``, ``misses``, ``writes`` (entries written), ``errors`` (failed store calls) and
    ``skipped`` (calls not tried during a cool-down after an error). Thread-safe.
    """

    def __init__(self, config: PredictionCacheConfig, *, cooldown_s: float = 10.0) -> None:
        self.config = config
        self.cooldown_s = cooldown_s
        self.stats = {"hits": 0, "misses": 0, "writes": 0, "errors": 0, "skipped": 0}
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._store: _SqliteStore | _RedisStore | None = None

    @property
    def backend(self) -> str:
        return "redis" if self.config.redis_url else "sqlite"

    def _open(self) -> _SqliteStore | _RedisStore:
        if self._store is None:
            c = self.config
            if c.redis_url:
                self._store = _RedisStore(c.redis_url, c.timeout_s, c.ttl_s, c.namespace_prefix)
            elif c.sqlite_path is not None:
                self._store = _SqliteStore(c.sqlite_path, max(c.timeout_s, 10.0))
            else:
                raise ValueError("a prediction cache needs a Redis URL or a SQLite path")
        return self._store

    def _usable(self) -> bool:
        if time.monotonic() < self._down_until:
            self.stats["skipped"] += 1
            return False
        return True

    def _failed(self, op: str, exc: BaseException) -> None:
        self.stats["errors"] += 1
        first = self._down_until == 0.0 or time.monotonic() >= self._down_until
        self._down_until = time.monotonic() + self.cooldown_s
        if first:
            log.warning("prediction cache (%s) %s failed (%s: %s); predicting without it for %.0f s",
                        self.config.where, op, type(exc).__name__, redact(exc), self.cooldown_s)
        store, self._store = self._store, None  # a fresh connection on the next try
        if store is not None:
            try:
                store.close()
            except Exception:  # noqa: BLE001 - closing a broken store is best effort
                pass

    def holds_any(self, tenant_id: str, version_id: int) -> bool:
        """Whether anything of this model version may be cached: ``False`` lets a first run skip hashing and
        looking up every row. ``False`` too when the store fails (nothing can be read from it then)."""
        with self._lock:
            if not self._usable():
                return False
            try:
                return self._open().holds_any(tenant_id, version_id)
            except Exception as exc:  # noqa: BLE001 - a cache failure never fails the job
                self._failed("read", exc)
                return False

    def get_many(self, tenant_id: str, version_id: int, digests: Sequence[bytes]) -> list[bytes | None]:
        """The cached value of each digest, ``None`` where absent or when the store fails."""
        if not digests:
            return []
        with self._lock:
            if not self._usable():
                self.stats["misses"] += len(digests)
                return [None] * len(digests)
            try:
                found = self._open().get_many(tenant_id, version_id, list(digests))
            except Exception as exc:  # noqa: BLE001 - a cache failure never fails the job
                self._failed("read", exc)
                found = [None] * len(digests)
            hits = sum(v is not None for v in found)
            self.stats["hits"] += hits
            self.stats["misses"] += len(found) - hits
            return found

    def set_many(self, tenant_id: str, version_id: int, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Store ``(digest, value)`` pairs; dropped when the store fails."""
        if not items:
            return
        with self._lock:
            if not self._usable():
                return
            try:
                self._open().set_many(tenant_id, version_id, list(items))
            except Exception as exc:  # noqa: BLE001 - a cache failure never fails the job
                self._failed("write", exc)
                return
            self.stats["writes"] += len(items)

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                try:
                    self._store.close()
                except Exception:  # noqa: BLE001
                    pass
                self._store = None

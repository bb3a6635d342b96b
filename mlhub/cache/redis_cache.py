"""The Redis cache: shared by every process, so ``delete`` invalidates everywhere.

Losing Redis loses no data (every entry is derivable), so an outage must not fail a single call: ``get``
answers a miss, ``set``/``delete`` are dropped, ``get_or_load`` falls through to its loader. Two things keep
a dead or slow Redis cheap:

- short socket timeouts (``timeout_s``) and no client-side retries, so one attempt costs at most
  ``timeout_s``;
- a circuit breaker: after a failure Redis is skipped for ``cooldown_s``, then one call probes it.

One warning is logged per outage (with the URL's password masked), and one info line when it ends.
:meth:`RedisCache.ping` is the only method that raises: health checks need the truth.

A ``delete`` dropped during an outage leaves the old entry in Redis until its TTL ends, which is why
mlhub's entries always carry one (``MLHUB_CACHE_TTL_S``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mlhub.cache.base import Cache
from mlhub.errors import BackendUnavailable, ConfigError, redact

__all__ = ["RedisCache"]

log = logging.getLogger("mlhub.cache")

T = TypeVar("T")

# What a broken or unreachable Redis raises: redis-py's own errors, and socket errors it lets through.
_REDIS_FAILURES = (redis.RedisError, OSError)


class _CircuitBreaker:
    """Closed: every call goes through. Open: calls are skipped until the cool-down has passed; then the
    first caller probes while the others keep skipping, and the probe's outcome closes or re-opens it."""

    def __init__(self, cooldown_s: float, clock: Callable[[], float]) -> None:
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None  # None: closed

    def allow(self) -> bool:
        with self._lock:
            if self._open_until is None:
                return True
            now = self._clock()
            if now < self._open_until:
                return False
            # This caller is the probe; push the deadline so concurrent callers don't all pay the timeout.
            self._open_until = now + self._cooldown_s
            return True

    def record_success(self) -> bool:
        """Close; True when this ended an outage."""
        with self._lock:
            was_open = self._open_until is not None
            self._open_until = None
            return was_open

    def record_failure(self) -> bool:
        """Open for a cool-down; True when this started an outage."""
        with self._lock:
            was_closed = self._open_until is None
            self._open_until = self._clock() + self._cooldown_s
            return was_closed


class RedisCache(Cache):
    """A :class:`Cache` on Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``).

    ``timeout_s`` bounds connecting and each command; ``cooldown_s`` is how long Redis is skipped after a
    failure; ``namespace_prefix`` is prepended to every key (to share one Redis DB between deployments or
    tests); ``clock`` (monotonic seconds) drives the breaker and is injectable for tests. Nothing connects
    until the first call, so constructing one never fails because Redis is down.

    ``stats`` adds ``skipped``: calls answered without trying Redis because the breaker was open.
    """

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        default_ttl_s: float | None,
        timeout_s: float,
        namespace_prefix: str = "",
        cooldown_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(default_ttl_s)
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        if not cooldown_s >= 0:
            raise ValueError(f"cooldown_s must be non-negative, got {cooldown_s!r}")
        self.url = redact(url)  # the only form of the URL kept where it could be shown
        self.namespace_prefix = namespace_prefix
        self.cooldown_s = cooldown_s
        self._breaker = _CircuitBreaker(cooldown_s, clock)
        self._counters["skipped"] = 0
        try:
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                # redis-py retries 10 times with backoff by default, nested for connect and command: a
                # black-holed Redis would cost many timeouts per call. The breaker is our retry policy.
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ConfigError(f"MLHUB_REDIS_URL is not a valid Redis URL ({self.url}): {exc}") from None

    # --- health and lifecycle ------------------------------------------------------------------------

    def ping(self) -> float:
        """Round-trip seconds of a ``PING``, tried even while the breaker is open.

        Raises :class:`BackendUnavailable` (URL with its password masked) when Redis does not answer.
        """
        start = time.perf_counter()
        try:
            self._client.ping()
        except _REDIS_FAILURES as exc:
            self._failed("ping", exc)
            raise BackendUnavailable(
                f"redis cache at {self.url} is unavailable: {type(exc).__name__}: {exc}",
                details={"backend": "redis", "url": self.url},
            ) from exc
        elapsed = time.perf_counter() - start
        self._succeeded()
        return elapsed

    def close(self) -> None:
        try:
            self._client.close()
        except _REDIS_FAILURES:  # closing a dead connection is not worth an error
            pass

    # --- backend operations --------------------------------------------------------------------------

    def _get(self, key: str) -> bytes | None:
        return self._call("get", lambda: self._client.get(self._k(key)), None)

    def _get_many(self, keys: tuple[str, ...]) -> list[bytes | None]:
        return self._call("mget", lambda: list(self._client.mget([self._k(k) for k in keys])), [None] * len(keys))

    def _set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        # PX (milliseconds) so sub-second TTLs work; at least 1 ms, since PX 0 is an error in Redis.
        px = None if ttl_s is None else max(1, round(ttl_s * 1000))
        self._call("set", lambda: self._client.set(self._k(key), value, px=px), None)

    def _delete(self, keys: tuple[str, ...]) -> None:
        self._call("delete", lambda: self._client.delete(*(self._k(k) for k in keys)), None)

    # --- failure handling ----------------------------------------------------------------------------

    def _k(self, key: str) -> str:
        return self.namespace_prefix + key

    def _call(self, op: str, fn: Callable[[], T], on_failure: T) -> T:
        """Run ``fn`` against Redis unless the breaker is open; any Redis failure becomes ``on_failure``."""
        if not self._breaker.allow():
            self._count("skipped")
            return on_failure
        try:
            result = fn()
        except _REDIS_FAILURES as exc:
            self._failed(op, exc)
            return on_failure
        self._succeeded()
        return result

    def _failed(self, op: str, exc: BaseException) -> None:
        self._count("errors")
        if self._breaker.record_failure():
            log.warning(
                "redis cache at %s is unavailable (%s: %s); serving without it, retrying every %.1fs",
                self.url,
                type(exc).__name__,
                redact(exc),
                self.cooldown_s,
            )
        else:
            log.debug("redis cache %s failed again: %s: %s", op, type(exc).__name__, redact(exc))
        # Idle pooled sockets are likely dead too (e.g. Redis restarted); drop them so that the next probe
        # connects afresh instead of tripping over a stale socket and re-opening the breaker.
        try:
            self._client.connection_pool.disconnect(inuse_connections=False)
        except Exception:  # best effort cleanup on a path that is already failing
            log.debug("could not reset the redis connection pool", exc_info=True)

    def _succeeded(self) -> None:
        if self._breaker.record_success():
            log.info("redis cache at %s is reachable again", self.url)

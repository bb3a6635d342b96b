"""API-key authentication for HTTP faces (the REST API and the inference routes).

``Authorization: Bearer mlh_<prefix>_<secret>`` -> :class:`~mlhub.audit.Principal`. A request path must
not pay a database round trip per request, so resolved keys are remembered for ``ttl_s`` seconds (setting
``MLHUB_API_KEY_CACHE_TTL_S``, default 5 s; 0 resolves every time): a revoked key stops working within that
time. Unknown keys are remembered too (same TTL) so a client hammering with a bad key cannot turn each
request into a database query. Only the key's sha256 is kept in memory, never the key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from mlhub.audit import Principal
from mlhub.errors import AuthenticationError
from mlhub.store.database import Database
from mlhub.tenancy import KEY_PATTERN, hash_api_key

__all__ = ["Authenticator", "bearer_key"]


def bearer_key(authorization: str | None) -> str:
    """The API key of an ``Authorization: Bearer <key>`` header; AuthenticationError otherwise."""
    if not authorization:
        raise AuthenticationError("missing Authorization header: send `Authorization: Bearer <api key>`")
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationError("the Authorization header must be `Bearer <api key>`")
    return key.strip()


class Authenticator:
    """Resolves bearer keys to principals with a short-lived, bounded memory (thread-safe).

    The request path is one sha256 and one dict read: a remembered key skips the pattern check and takes no
    lock (a dict read is atomic in CPython; writes hold the lock). The memory is bounded by dropping what expired
    when it is full, everything if nothing did (lookups simply repeat)."""

    def __init__(self, db: Database, *, ttl_s: float = 5.0, max_entries: int = 10_000, source: str = "api",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.source = source
        self._clock = clock
        self._lock = threading.Lock()
        #: key hash -> (expires at, its Principal, or the key's prefix when it is unknown or revoked)
        self._entries: dict[str, tuple[float, Principal | str]] = {}

    def principal(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header value."""
        return self.principal_for_key(bearer_key(authorization))

    def principal_for_key(self, key: str) -> Principal:
        digest = hash_api_key(key)
        hit = self._entries.get(digest)
        if hit is None or hit[0] <= self._clock():
            hit = self._resolve(key, digest)
        if isinstance(hit[1], Principal):
            return hit[1]
        raise AuthenticationError(f"API key mlh_{hit[1]}_*** is unknown or revoked")

    def _resolve(self, key: str, digest: str) -> tuple[float, Principal | str]:
        m = KEY_PATTERN.match(key)
        if m is None:
            raise AuthenticationError("malformed API key (expected mlh_<prefix>_<secret>)")
        now = self._clock()
        tenant_id = self.db.resolve_api_key_hash(digest)
        who: Principal | str = m["prefix"] if tenant_id is None else Principal(
            tenant_id=tenant_id, actor=f"key:{m['prefix']}", source=self.source)
        entry = (now + self.ttl_s, who)
        if self.ttl_s > 0:
            with self._lock:
                if len(self._entries) >= self.max_entries:
                    live = {d: e for d, e in self._entries.items() if e[0] > now}
                    self._entries = live if len(live) < self.max_entries else {}
                self._entries[digest] = entry
        return entry

    def forget(self) -> None:
        with self._lock:
            self._entries = {}

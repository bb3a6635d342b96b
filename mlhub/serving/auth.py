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
from collections import OrderedDict
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
    """Resolves bearer keys to principals with a short-lived, bounded memory (thread-safe)."""

    def __init__(self, db: Database, *, ttl_s: float = 5.0, max_entries: int = 10_000, source: str = "api",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.source = source
        self._clock = clock
        self._lock = threading.Lock()
        #: key hash -> (expires at, tenant id or None for an unknown key)
        self._entries: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        #: (tenant, key prefix) -> its Principal: immutable, so one object serves every request of that key
        self._principals: dict[tuple[str, str], Principal] = {}

    def principal(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header value."""
        return self.principal_for_key(bearer_key(authorization))

    def principal_for_key(self, key: str) -> Principal:
        m = KEY_PATTERN.match(key)
        if m is None:
            raise AuthenticationError("malformed API key (expected mlh_<prefix>_<secret>)")
        digest = hash_api_key(key)
        tenant_id = self._lookup(digest)
        if tenant_id is None:
            raise AuthenticationError(f"API key mlh_{m['prefix']}_*** is unknown or revoked")
        ident = (tenant_id, m["prefix"])
        principal = self._principals.get(ident)
        if principal is None:
            if len(self._principals) >= self.max_entries:
                self._principals.clear()
            principal = self._principals[ident] = Principal(tenant_id=tenant_id, actor=f"key:{m['prefix']}",
                                                           source=self.source)
        return principal

    def _lookup(self, digest: str) -> str | None:
        now = self._clock()
        if self.ttl_s > 0:
            with self._lock:
                hit = self._entries.get(digest)
                if hit is not None and hit[0] > now:
                    self._entries.move_to_end(digest)
                    return hit[1]
        tenant_id = self.db.resolve_api_key_hash(digest)
        if self.ttl_s > 0:
            with self._lock:
                self._entries[digest] = (now + self.ttl_s, tenant_id)
                self._entries.move_to_end(digest)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return tenant_id

    def forget(self) -> None:
        with self._lock:
            self._entries.clear()
            self._principals.clear()

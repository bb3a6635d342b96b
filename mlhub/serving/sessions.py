"""Browser sessions for the web console: a signed, expiring token that stands for an API key without being it.

A token is ``v1.<payload>.<signature>``: the payload (base64url JSON) names the tenant, the API key's row id and an
expiry; the signature is ``HMAC-SHA256(key_hash, payload)``, keyed by the sha256 of the API key that the database
stores and no browser ever sees. So the cookie never carries the key, a token cannot be made without the key (or
the database), it stops working when it expires or when its key is revoked or expires, and every replica verifies
it alone (no session store). Verified tokens are remembered for ``ttl_s`` like the Authenticator's keys.

The CSRF token of a session is ``HMAC-SHA256(key_hash, "csrf:" + payload)``: bound to that one session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from mlhub.audit import Principal
from mlhub.errors import AuthenticationError, MlhubError
from mlhub.store.database import Database
from mlhub.store.models import ApiKey
from mlhub.store.types import utcnow
from mlhub.tenancy import hash_api_key

__all__ = ["SessionTokens", "WebSession"]

VERSION = "v1"
MAX_TOKEN_CHARS = 1024


@dataclass(frozen=True)
class WebSession:
    principal: Principal
    csrf: str
    expires_at: float  # epoch seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key_hash: str, message: str) -> str:
    return _b64(hmac.new(key_hash.encode(), message.encode(), hashlib.sha256).digest())


class SessionTokens:
    """Issues and verifies console session tokens over the database's API keys (thread-safe)."""

    def __init__(self, db: Database, *, max_age_s: float = 12 * 3600, ttl_s: float = 5.0, max_entries: int = 10_000,
                 source: str = "api", clock=time.time) -> None:
        self.db = db
        self.max_age_s = max_age_s
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.source = source
        self._clock = clock
        self._lock = threading.Lock()
        self._verified: OrderedDict[str, tuple[float, WebSession]] = OrderedDict()

    def issue(self, principal: Principal, api_key: str) -> tuple[str, WebSession]:
        """A token for ``api_key`` (already authenticated as ``principal``)."""
        key_hash = hash_api_key(api_key)
        with self.db.tenant_scope(principal.tenant_id, readonly=True) as s:
            row = s.scalar(select(ApiKey).where(ApiKey.tenant_id == principal.tenant_id, ApiKey.key_hash == key_hash))
            if row is None:
                raise AuthenticationError("API key is unknown or revoked")
            key_id = row.id
        expires = int(self._clock() + self.max_age_s)
        payload = _b64(json.dumps({"t": principal.tenant_id, "k": key_id, "e": expires},
                                  separators=(",", ":")).encode())
        token = f"{VERSION}.{payload}.{_sign(key_hash, payload)}"
        return token, WebSession(principal, _sign(key_hash, "csrf:" + payload), expires)

    def verify(self, token: str) -> WebSession:
        """The session of a token; AuthenticationError for a malformed, forged, expired or revoked one."""
        now = self._clock()
        if self.ttl_s > 0:
            with self._lock:
                hit = self._verified.get(token)
                if hit is not None and hit[0] > now and hit[1].expires_at > now:
                    return hit[1]
        session = self._verify(token, now)
        if self.ttl_s > 0:
            with self._lock:
                self._verified[token] = (now + self.ttl_s, session)
                self._verified.move_to_end(token)
                while len(self._verified) > self.max_entries:
                    self._verified.popitem(last=False)
        return session

    def _verify(self, token: str, now: float) -> WebSession:
        refused = AuthenticationError("session expired or invalid: log in again")
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise refused
        version, payload, signature = token.split(".")
        if version != VERSION:
            raise refused
        try:
            doc = json.loads(_unb64(payload))
            tenant_id, key_id, expires = str(doc["t"]), int(doc["k"]), float(doc["e"])
        except (ValueError, TypeError, KeyError):
            raise refused from None
        if expires <= now or not 1 <= key_id < 2**63:
            raise refused
        try:
            with self.db.tenant_scope(tenant_id, readonly=True) as s:
                row = s.scalar(select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id))
                if row is None or row.revoked_at is not None or _expired(row.expires_at):
                    raise refused
                key_hash, prefix = row.key_hash, row.prefix
        except AuthenticationError:
            raise
        except MlhubError:  # an invalid tenant id in a forged payload, ...
            raise refused from None
        if not hmac.compare_digest(signature.encode(), _sign(key_hash, payload).encode()):
            raise refused
        principal = Principal(tenant_id=tenant_id, actor=f"key:{prefix}", source=self.source)
        return WebSession(principal, _sign(key_hash, "csrf:" + payload), expires)

    def forget(self, token: str) -> None:
        with self._lock:
            self._verified.pop(token, None)


def _expired(expires_at: datetime | None) -> bool:
    if expires_at is None:
        return False
    aware = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
    return aware <= utcnow()

"""Webhook URLs users give for alerts: validated before they are stored and again before every call, and
delivered with a short timeout and a few retries, never raising into the caller.

A URL is refused (:class:`~mlhub.errors.WebhookRefused`) unless its scheme is ``http`` or ``https`` and every
address its host resolves to is a public one: loopback (``127.0.0.0/8``, ``::1``, spellings like ``127.1`` or
``2130706433`` included, since they are resolved like any host), private (RFC 1918, ``fc00::/7``),
link-local (``169.254.0.0/16``, e.g. cloud metadata at ``169.254.169.254``, ``fe80::/10``), shared
(``100.64.0.0/10``), unspecified, multicast and reserved addresses are refused, and so are IPv6 addresses that
embed one (IPv4-mapped, 6to4, NAT64, Teredo). ``MLHUB_WEBHOOK_ALLOW_PRIVATE=true`` lifts the address rule for
every host; ``MLHUB_WEBHOOK_ALLOWED_HOSTS`` lifts it for the listed host names, addresses or networks only.

Between the check and the call a host could be made to resolve elsewhere (DNS rebinding). ``http`` calls
therefore connect to the very address that was checked (with the original ``Host`` header); ``https`` calls
connect by name and verify the certificate for that name, which a rebound private service cannot present.
Redirects are never followed.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mlhub.errors import WebhookRefused, redact

log = logging.getLogger("mlhub.alerts")

__all__ = ["Delivery", "WebhookPolicy", "ValidatedUrl", "deliver", "validate_webhook_url"]

MAX_URL_CHARS = 2048
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
Resolver = Callable[[str, int], Sequence[str]]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class WebhookPolicy:
    """Where webhooks may go and how hard delivery tries (from ``MLHUB_WEBHOOK_*``)."""

    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()
    timeout_s: float = 5.0
    retries: int = 2
    backoff_s: float = 0.5

    @classmethod
    def from_settings(cls, settings) -> WebhookPolicy:
        return cls(allow_private=settings.webhook_allow_private,
                   allowed_hosts=tuple(settings.webhook_allowed_hosts), timeout_s=settings.webhook_timeout_s,
                   retries=settings.webhook_retries)


@dataclass(frozen=True)
class ValidatedUrl:
    url: str
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line
    addresses: tuple[str, ...]


@dataclass
class Delivery:
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None
    address: str | None = None
    history: list[str] = field(default_factory=list)


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookRefused(f"webhook host {host!r} does not resolve: {exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded(ip: IpAddress) -> list[IpAddress]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    out: list[IpAddress] = []
    if ip.ipv4_mapped is not None:
        out.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out.extend(ip.teredo)
    if ip in _NAT64:
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def _non_public(ip: IpAddress) -> str | None:
    """Why an address is not a public unicast one, or None when it is."""
    for inner in _embedded(ip):
        why = _non_public(inner)
        if why:
            return f"embeds {inner} ({why})"
    for attr in ("is_loopback", "is_link_local", "is_private", "is_multicast", "is_unspecified", "is_reserved"):
        if getattr(ip, attr):
            return attr.removeprefix("is_").replace("_", "-")
    if not ip.is_global:
        return "not globally routable"
    return None


def _allowed(host: str, ip: IpAddress, allowed_hosts: Iterable[str]) -> bool:
    for entry in allowed_hosts:
        entry = entry.strip().lower().rstrip(".")
        if not entry:
            continue
        if entry == host:
            return True
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def validate_webhook_url(url: str, policy: WebhookPolicy = WebhookPolicy(), *,
                         resolve: Resolver | None = None) -> ValidatedUrl:
    """Check ``url`` (see the module docstring); return it parsed with the addresses it resolves to."""
    if not isinstance(url, str) or not url.strip():
        raise WebhookRefused("webhook URL is empty")
    if len(url) > MAX_URL_CHARS:
        raise WebhookRefused(f"webhook URL is longer than {MAX_URL_CHARS} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 or ch == "\\" for ch in url):
        raise WebhookRefused("webhook URL contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(f"webhook URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookRefused(f"webhook URL scheme {parts.scheme or '(none)'!r} is not allowed: use https or http")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise WebhookRefused("webhook URL has no host")
    port = port or (443 if scheme == "https" else 80)
    try:  # a literal address is checked as written; a name by everything it resolves to
        addresses = [str(ipaddress.ip_address(host.split("%", 1)[0]))]
    except ValueError:
        addresses = list((resolve or _resolve)(host, port))
    if not addresses:
        raise WebhookRefused(f"webhook host {host!r} does not resolve")
    if not policy.allow_private:
        for addr in addresses:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
            why = _non_public(ip)
            if why and not _allowed(host, ip, policy.allowed_hosts):
                raise WebhookRefused(
                    f"webhook host {host!r} resolves to {ip}, a {why} address: refused (allow it with "
                    "MLHUB_WEBHOOK_ALLOWED_HOSTS or MLHUB_WEBHOOK_ALLOW_PRIVATE=true)",
                    details={"host": host, "address": str(ip)})
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return ValidatedUrl(url=url, scheme=scheme, host=host, port=port, path=path, addresses=tuple(addresses))


def _post_once(target: ValidatedUrl, body: bytes, timeout_s: float) -> tuple[int, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "mlhub-alerts",
               "Host": target.host if target.port in (80, 443) else f"{target.host}:{target.port}"}
    if ":" in target.host:  # an IPv6 literal: bracketed in the Host header
        headers["Host"] = f"[{target.host}]" + ("" if target.port in (80, 443) else f":{target.port}")
    if target.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout_s, context=ssl.create_default_context())
    else:  # pinned to the checked address (no second lookup that DNS rebinding could answer differently)
        conn = http.client.HTTPConnection(target.addresses[0].split("%", 1)[0], target.port, timeout=timeout_s)
    try:
        conn.request("POST", target.path, body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read(2048).decode("utf-8", "replace")
        return resp.status, text
    finally:
        conn.close()


def deliver(url: str, payload: dict[str, Any], policy: WebhookPolicy = WebhookPolicy(), *,
            resolve: Resolver | None = None, sleep: Callable[[float], None] = time.sleep) -> Delivery:
    """POST ``payload`` as JSON to ``url``: validated again first, ``policy.retries`` more tries after a network
    error, a 5xx or a 429 (not after other 4xx), each with ``policy.timeout_s``. Never raises."""
    body = json.dumps(payload, default=str).encode()
    attempts, history = 0, []
    try:
        target = validate_webhook_url(url, policy, resolve=resolve)
    except WebhookRefused as exc:
        return Delivery(ok=False, attempts=0, error=exc.message)
    except Exception as exc:  # noqa: BLE001 - delivery never raises into the caller
        return Delivery(ok=False, attempts=0, error=f"{type(exc).__name__}: {exc}")
    status: int | None = None
    for attempt in range(1 + max(0, policy.retries)):
        attempts += 1
        try:
            status, text = _post_once(target, body, policy.timeout_s)
            if 200 <= status < 300:
                return Delivery(ok=True, attempts=attempts, status=status, address=target.addresses[0],
                                history=history)
            history.append(f"HTTP {status}: {text[:200]}")
            if status < 500 and status != 429:
                break
        except Exception as exc:  # noqa: BLE001 - network errors of every kind are retried, then recorded
            history.append(f"{type(exc).__name__}: {exc}")
        if attempt < policy.retries:
            sleep(policy.backoff_s * (2 ** attempt))
    error = redact(f"webhook delivery failed after {attempts} attempt(s): {history[-1] if history else '?'}")
    log.warning("%s (%s)", error, target.host)
    return Delivery(ok=False, attempts=attempts, status=status, error=error[:2000], address=target.addresses[0],
                    history=history)

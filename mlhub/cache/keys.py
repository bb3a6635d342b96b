"""Every cache key mlhub uses, each made by a pure function in this one module (as ``rq/keys.py`` does).

Layout: ``mlhub:v1:t:{tenant_id}:{kind}:{component}:...``. ``v1`` lets a change of layout or value format
start from an empty keyspace instead of reading old entries. The tenant comes right after the version, so
everything one tenant owns lies under :func:`tenant_prefix`.

Keys must never collide across tenants or across kinds. That holds by construction:

- ``tenant_id`` is validated and cannot contain ``:``;
- each kind has a fixed tag and a fixed number of components;
- every user-supplied string (model names, aliases, hashes) is percent-encoded with nothing left "safe",
  so ``:`` becomes ``%3A`` and ``%`` itself becomes ``%25``. Percent-encoding is injective, so the only
  ``:`` in a key are separators and splitting a key on ``:`` gives back exactly its components.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from mlhub.errors import ValidationError

__all__ = [
    "KEY_ROOT",
    "job_status",
    "prediction",
    "registry_alias",
    "registry_model",
    "registry_version",
    "tenant_prefix",
]

KEY_ROOT = "mlhub:v1:t:"
TENANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def tenant_prefix(tenant_id: str) -> str:
    """``mlhub:v1:t:{tenant_id}:``, the prefix of every key of this tenant.

    Raises :class:`ValidationError` unless ``tenant_id`` matches ``^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$``.
    """
    # fullmatch, not match: ``$`` would also accept a trailing newline.
    if not isinstance(tenant_id, str) or not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise ValidationError(
            f"invalid tenant id {tenant_id!r}: 1-64 characters of A-Z a-z 0-9 _ -, starting alphanumeric",
            details={"errors": ["tenant_id"]},
        )
    return f"{KEY_ROOT}{tenant_id}:"


def registry_model(tenant_id: str, model: str) -> str:
    """Key of a registered model's cache generation: a token that every change of the model replaces; its alias
    and version entries record the token they were made under, so one write makes all of them stale at once."""
    return _key(tenant_id, "reg:model", _component("model", model))


def registry_alias(tenant_id: str, model: str, alias: str) -> str:
    """Key of the version that ``model@alias`` resolves to."""
    return _key(tenant_id, "reg:alias", _component("model", model), _component("alias", alias))


def registry_version(tenant_id: str, model: str, version: int) -> str:
    """Key of one model version's record."""
    return _key(tenant_id, "reg:version", _component("model", model), _number("version", version))


def job_status(tenant_id: str, job_id: int) -> str:
    """Key of a job's last known status."""
    return _key(tenant_id, "job:status", _number("job_id", job_id))


def prediction(tenant_id: str, model_version_id: int, row_hash: str) -> str:
    """Key of a cached prediction of one model version for one input row (``row_hash`` digests the row)."""
    return _key(
        tenant_id, "pred", _number("model_version_id", model_version_id), _component("row_hash", row_hash)
    )


# --- helpers -----------------------------------------------------------------------------------------


def _key(tenant_id: str, kind: str, *components: str) -> str:
    return tenant_prefix(tenant_id) + ":".join((kind, *components))


def _component(name: str, value: str) -> str:
    """Percent-encode a user-supplied string so that it cannot contain a separator."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{name} must be a non-empty string, got {value!r}", details={"errors": [name]})
    try:
        # safe="" encodes "/" and ":" too; "%" is always encoded, so the mapping is injective.
        return quote(value, safe="")
    except UnicodeEncodeError:  # lone surrogates cannot be UTF-8 encoded
        raise ValidationError(f"{name} is not valid text", details={"errors": [name]}) from None


def _number(name: str, value: int) -> str:
    # bool is an int subclass; True as a version is a bug, not version 1.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError(
            f"{name} must be a non-negative integer, got {value!r}", details={"errors": [name]}
        )
    return str(value)

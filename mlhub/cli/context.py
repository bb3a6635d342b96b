"""What every command shares: settings, backends and the authenticated principal, built lazily once."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlhub.audit import Principal
from mlhub.backends import Backends
from mlhub.config import Settings, load_settings


@dataclass
class CliState:
    api_key: str | None = None
    address: str | None = None
    debug: bool = False
    _settings: Settings | None = None
    _backends: Backends | None = None
    _principal: Principal | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def backends(self) -> Backends:
        """Backends with a usable schema (an old schema is refused with a hint to `mlhub db upgrade`)."""
        if self._backends is None:
            self._backends = Backends(self.settings)
            self._backends.ensure_schema()
        return self._backends

    def raw_backends(self) -> Backends:
        """Backends without the schema check, for `mlhub db ...` and `mlhub health`."""
        if self._backends is None:
            self._backends = Backends(self.settings)
        return self._backends

    def principal(self) -> Principal:
        """The tenant acting: --api-key, else MLHUB_API_KEY, else (embedded default) the credentials file."""
        if self._principal is None:
            from mlhub.client import resolve_principal

            self._principal = resolve_principal(self.backends, self.api_key, source="cli")
        return self._principal

    def close(self) -> None:
        if self._backends is not None:
            self._backends.close()

    def reset(self) -> None:
        """Forget everything of a previous invocation (the CLI may run several times in one process)."""
        self.close()
        self.api_key = None
        self.address = None
        self.debug = False
        self._settings = None
        self._backends = None
        self._principal = None


STATE = CliState()

"""The composition of mlhub's ports for one process: the database, the artifact store and the cache.

Built once at a face (CLI, Serve app, orchestrator) from :class:`~mlhub.config.Settings`. The artifact
store and cache are opened lazily so that commands which do not need them never touch them.
"""

from __future__ import annotations

from functools import cached_property

from mlhub.config import Settings
from mlhub.errors import SchemaOutdated
from mlhub.store.database import Database


class Backends:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database.from_settings(settings)

    @cached_property
    def artifacts(self):
        from mlhub.artifacts import open_artifact_store

        return open_artifact_store(self.settings)

    @cached_property
    def cache(self):
        from mlhub.cache import open_cache

        return open_cache(self.settings)

    def ensure_schema(self) -> None:
        """Refuse to run on an old schema. A brand-new embedded SQLite database is created on first use,
        so that the embedded default needs no set-up step; any other database needs `mlhub db upgrade`."""
        try:
            self.db.check_schema()
        except SchemaOutdated:
            if self.settings.is_embedded_database and self.db.current_revision() is None:
                self.db.upgrade()
                return
            raise

    def close(self) -> None:
        self.db.dispose()
        if "cache" in self.__dict__:
            self.cache.close()

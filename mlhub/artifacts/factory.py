"""Build the artifact store that the settings ask for."""

from __future__ import annotations

from mlhub.config import Settings

from .base import ArtifactStore

__all__ = ["open_artifact_store"]


def open_artifact_store(settings: Settings) -> ArtifactStore:
    """GridFS when ``settings.mongodb_uri`` is set, else files under ``settings.artifacts_dir``.

    Nothing is contacted or created here: MongoDB connects on first use (bounded by
    ``settings.backend_timeout_s``) and the directory is made on first write. Call ``ping()`` to check.
    """
    if settings.mongodb_uri is not None:
        # Imported here so that the embedded default does not pay for loading pymongo.
        from .gridfs_store import GridFSArtifactStore

        return GridFSArtifactStore.from_uri(
            settings.mongodb_uri.get_secret_value(),
            database=settings.mongodb_database,
            timeout_s=settings.backend_timeout_s,
        )
    from .filesystem import FilesystemArtifactStore

    return FilesystemArtifactStore(settings.artifacts_dir)

"""Content-addressed, tenant-namespaced artifact storage: files on disk, or MongoDB GridFS.

Every blob is named by its sha256 and verified on read; keys are generated from validated tenant ids and
digests, never from user input. :func:`open_artifact_store` picks the backend from the settings.
"""

from mlhub.artifacts.base import ArtifactStore, BlobInfo
from mlhub.artifacts.factory import open_artifact_store
from mlhub.artifacts.filesystem import FilesystemArtifactStore
from mlhub.artifacts.gridfs_store import GridFSArtifactStore

__all__ = [
    "ArtifactStore",
    "BlobInfo",
    "FilesystemArtifactStore",
    "GridFSArtifactStore",
    "open_artifact_store",
]

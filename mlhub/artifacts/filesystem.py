"""Artifacts as files under one root directory: the embedded default (``$MLHUB_HOME/artifacts``).

Layout::

    root/blobs/<tenant_id>/<sha256[:2]>/<sha256>   complete blobs (0600, directories 0700)
    root/tmp/<uuid>.part                           uploads in progress or interrupted

Every path is built from a validated tenant id and digest (or a generated uuid). An upload is written to
``tmp/``, fsync'd and renamed into place with ``os.replace``, which is atomic on one filesystem, so a
reader sees either nothing or the whole blob, and a killed writer leaves only a ``.part`` file.
"""

from __future__ import annotations

import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mlhub.errors import BackendUnavailable, NotFoundError, ValidationError

from .base import ArtifactStore, BlobInfo, PendingUpload, validate_sha256

__all__ = ["FilesystemArtifactStore"]

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_PART_SUFFIX = ".part"
# O_NOFOLLOW: our paths contain no links; one planted inside the root must not redirect a read or write.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)


class _FileUpload(PendingUpload):
    def __init__(self, store: FilesystemArtifactStore, tenant_id: str) -> None:
        self._store = store
        self._tenant_id = tenant_id
        store._make_dirs(store._tmp)
        self.part = store._tmp / f"{uuid.uuid4().hex}{_PART_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY
        self._fd: int | None = os.open(self.part, flags, _FILE_MODE)

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        # Unbuffered os.write: the bytes leave this process at once, so memory stays at one chunk.
        view = memoryview(chunk)
        while view:
            written = os.write(self._fd, view)  # type: ignore[arg-type]
            view = view[written:]

    def commit(self, sha256: str, size: int) -> BlobInfo:
        fd, self._fd = self._fd, None
        assert fd is not None
        try:
            os.fsync(fd)  # the bytes are on disk before the name points at them
        finally:
            os.close(fd)
        target = self._store._blob_path(self._tenant_id, sha256)
        self._store._make_dirs(target.parent)
        # Same digest, same bytes: replacing an existing copy keeps exactly one, atomically.
        os.replace(self.part, target)
        _fsync_dir(target.parent)
        return self._store._info(self._tenant_id, sha256, size)

    def abort(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        self.part.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory, which is fine.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class FilesystemArtifactStore(ArtifactStore):
    """Blobs stored as files under ``root``. Nothing is created until the first write."""

    backend = "filesystem"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self._blobs = self.root / "blobs"
        self._tmp = self.root / "tmp"

    def __repr__(self) -> str:
        return f"FilesystemArtifactStore({str(self.root)!r})"

    # --- paths -----------------------------------------------------------------------------------------

    def _blob_path(self, tenant_id: str, sha256: str) -> Path:
        return self._blobs / tenant_id / sha256[:2] / sha256

    def _make_dirs(self, path: Path) -> None:
        """Create ``path`` and its missing parents below the root with mode 0700."""
        self.root.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
        missing = []
        for parent in (path, *path.parents):
            if parent == self.root or parent.is_dir():
                break
            missing.append(parent)
        for directory in reversed(missing):
            directory.mkdir(mode=_DIR_MODE, exist_ok=True)

    # --- implementation --------------------------------------------------------------------------------

    def _begin_upload(self, tenant_id: str) -> PendingUpload:
        return _FileUpload(self, tenant_id)

    def _open_chunks(self, tenant_id: str, sha256: str) -> Iterator[bytes]:
        try:
            fd = os.open(self._blob_path(tenant_id, sha256), os.O_RDONLY | _NOFOLLOW | _BINARY)
        except FileNotFoundError:
            raise NotFoundError(
                f"artifact {tenant_id}/{sha256} not found", details={"tenant_id": tenant_id, "sha256": sha256}
            ) from None
        # A file object now, not in the generator: a reader that never iterates must not leak the fd.
        return self._read_chunks(os.fdopen(fd, "rb", buffering=0))

    def _read_chunks(self, f: BinaryIO) -> Iterator[bytes]:
        with f:
            while chunk := f.read(self.CHUNK_SIZE):
                yield chunk

    def _exists(self, tenant_id: str, sha256: str) -> bool:
        return self._blob_path(tenant_id, sha256).is_file()

    def _delete(self, tenant_id: str, sha256: str) -> bool:
        try:
            self._blob_path(tenant_id, sha256).unlink()
        except FileNotFoundError:
            return False
        return True

    def _list_blobs(self, tenant_id: str) -> Iterator[BlobInfo]:
        tenant_dir = self._blobs / tenant_id
        for shard in _sorted_entries(tenant_dir):
            if not shard.is_dir(follow_symlinks=False):
                continue
            for entry in _sorted_entries(Path(shard.path)):
                # Only names that are digests in the right shard: strays are never reported as blobs.
                if entry.name[:2] != shard.name or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    validate_sha256(entry.name)
                    st = entry.stat(follow_symlinks=False)
                except (ValidationError, FileNotFoundError):  # not a digest, or deleted meanwhile
                    continue
                yield self._info(tenant_id, entry.name, st.st_size, st.st_mtime)

    def _collect_garbage(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in _sorted_entries(self._tmp):
            if not entry.name.endswith(_PART_SUFFIX):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                # mtime is the last write: an upload still streaming keeps itself young.
                if stat.S_ISREG(st.st_mode) and st.st_mtime <= cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:  # finished or collected concurrently
                continue
        return removed

    def _ping(self) -> None:
        try:
            self._make_dirs(self._tmp)
        except OSError as exc:
            raise BackendUnavailable(
                f"artifact directory {self.root} is not usable: {exc.strerror}"
            ) from None
        if not os.access(self._tmp, os.W_OK | os.X_OK):
            raise BackendUnavailable(f"artifact directory {self.root} is not writable")


def _sorted_entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []

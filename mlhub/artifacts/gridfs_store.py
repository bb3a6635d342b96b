"""Artifacts in MongoDB GridFS: the production backend (``MLHUB_MONGODB_URI``).

Data follows the GridFS spec (``<bucket>.files`` and ``<bucket>.chunks``, chunk ``n`` of ``files_id``), so
any GridFS tool can read it, and reads go through pymongo's legacy ``gridfs.GridOut``, which also checks
chunk counts and sizes. Each files document carries ``tenant_id`` and ``sha256``, unique together.

Writes do not use ``GridIn``: in pymongo 4.20 it batches chunk documents in memory up to the maximum
message size (48 MB) before inserting them, which breaks streaming. This store inserts each chunk as it
fills and writes the files document last, so an upload that dies midway leaves only chunks without a files
document: invisible to every reader, and removed by :meth:`GridFSArtifactStore.collect_garbage`.
``GridFSBucket`` is not used either: it fails under mongomock 4.3, which the contract tests run against.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bson import Int64, ObjectId
from gridfs import GridOut
from gridfs.errors import CorruptGridFile
from pymongo import ASCENDING, MongoClient
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, InvalidURI, PyMongoError

from mlhub.errors import (
    ArtifactIntegrityError,
    BackendUnavailable,
    ConfigError,
    NotFoundError,
    ValidationError,
)

from .base import ArtifactStore, BlobInfo, PendingUpload, blob_key

__all__ = ["DEFAULT_BUCKET", "GridFSArtifactStore"]

DEFAULT_BUCKET = "mlhub_artifacts"
_BUCKET_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_GC_BATCH = 1000


@contextmanager
def _mongo_errors(action: str) -> Iterator[None]:
    """Translate pymongo errors once, here; ``from None`` keeps the raw driver text out of tracebacks."""
    try:
        yield
    except CorruptGridFile as exc:
        raise ArtifactIntegrityError(f"artifact is corrupt in GridFS ({action}): {exc}") from None
    except PyMongoError as exc:
        raise BackendUnavailable(f"MongoDB {action} failed: {type(exc).__name__}: {exc}") from None


class _GridFSUpload(PendingUpload):
    def __init__(self, store: GridFSArtifactStore, tenant_id: str) -> None:
        store._ensure_indexes()
        self._store = store
        self._tenant_id = tenant_id
        self.file_id = ObjectId()
        self._chunk_size = int(store.CHUNK_SIZE)
        self._buffer = bytearray()
        self._n = 0

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if not self._buffer and len(chunk) == self._chunk_size:  # already cut to size: skip the buffer
            self._insert_chunk(bytes(chunk))
            return
        # GridFS requires every chunk but the last to be exactly chunkSize, whatever the input's pieces.
        self._buffer += chunk
        while len(self._buffer) >= self._chunk_size:
            self._insert_chunk(bytes(self._buffer[: self._chunk_size]))
            del self._buffer[: self._chunk_size]

    def _insert_chunk(self, data: bytes) -> None:
        # One insert per chunk: memory stays at one chunk, and each chunk's client-made ObjectId records
        # when the upload was last active (collect_garbage leaves active uploads alone).
        with _mongo_errors("upload"):
            self._store._chunks.insert_one({"files_id": self.file_id, "n": self._n, "data": data})
        self._n += 1

    def commit(self, sha256: str, size: int) -> BlobInfo:
        if self._buffer:
            self._insert_chunk(bytes(self._buffer))
            self._buffer.clear()
        store = self._store
        query = {"tenant_id": self._tenant_id, "sha256": sha256}
        with _mongo_errors("commit"):
            if store._files.find_one(query, projection={"_id": 1}) is None:
                doc = {
                    "_id": self.file_id,
                    "length": Int64(size),
                    "chunkSize": self._chunk_size,
                    "uploadDate": dt.datetime.now(dt.UTC),
                    "filename": blob_key(self._tenant_id, sha256),
                    **query,
                }
                try:
                    store._files.insert_one(doc)
                    return store._info(self._tenant_id, sha256, size)
                except DuplicateKeyError:  # a concurrent put of the same bytes won the unique index
                    pass
            # The tenant already has these bytes: keep that copy, drop ours.
            store._chunks.delete_many({"files_id": self.file_id})
        return store._info(self._tenant_id, sha256, size)

    def abort(self) -> None:
        # Files document first: if a commit's insert reached the server before failing, no blob may stay
        # visible without its chunks.
        with _mongo_errors("abort"):
            self._store._files.delete_one({"_id": self.file_id})
            self._store._chunks.delete_many({"files_id": self.file_id})


class GridFSArtifactStore(ArtifactStore):
    """Blobs in the GridFS bucket ``bucket`` of ``db`` (a pymongo ``Database``, or mongomock's in tests).

    Use :meth:`from_uri` to build one with connection timeouts. Indexes are created on the first write.
    """

    backend = "gridfs"

    def __init__(self, db: Database[Any], *, bucket: str = DEFAULT_BUCKET) -> None:
        if not isinstance(bucket, str) or not _BUCKET_NAME.fullmatch(bucket):
            raise ValidationError(f"invalid GridFS bucket name {bucket!r}: expected 1-64 of [A-Za-z0-9_]")
        self._db = db
        self.bucket = bucket
        self._root = db[bucket]
        self._files = db[f"{bucket}.files"]
        self._chunks = db[f"{bucket}.chunks"]
        self._indexes_ready = False
        self._owned_client: MongoClient[Any] | None = None

    @classmethod
    def from_uri(
        cls, uri: str, *, database: str = "mlhub", bucket: str = DEFAULT_BUCKET, timeout_s: float = 2.0
    ) -> GridFSArtifactStore:
        """Connect to MongoDB at ``uri`` with every timeout set to ``timeout_s``; the store owns the client.

        The client connects lazily: an unreachable server shows as :class:`BackendUnavailable` on the first
        call (:meth:`ping` to check early). Error messages never contain the URI's password.
        """
        ms = max(1, int(timeout_s * 1000))
        try:
            client: MongoClient[Any] = MongoClient(
                uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms, appname="mlhub"
            )
        except InvalidURI as exc:
            raise ConfigError(f"MLHUB_MONGODB_URI: {exc}") from None
        except PyMongoError as exc:
            raise BackendUnavailable(f"MongoDB connection failed: {type(exc).__name__}: {exc}") from None
        store = cls(client[database], bucket=bucket)
        store._owned_client = client
        return store

    def __repr__(self) -> str:
        return f"GridFSArtifactStore(database={self._db.name!r}, bucket={self.bucket!r})"

    def close(self) -> None:
        """Close the MongoDB client if :meth:`from_uri` made it; a client passed in stays the caller's."""
        if self._owned_client is not None:
            self._owned_client.close()
            self._owned_client = None

    def _ensure_indexes(self) -> None:
        if self._indexes_ready:
            return
        with _mongo_errors("index creation"):
            # The unique pair is what makes concurrent identical puts store one copy.
            self._files.create_index([("tenant_id", ASCENDING), ("sha256", ASCENDING)], unique=True)
            # The GridFS spec's own chunk index (same name pymongo's GridIn creates).
            self._chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
        self._indexes_ready = True

    # --- implementation --------------------------------------------------------------------------------

    def _begin_upload(self, tenant_id: str) -> PendingUpload:
        return _GridFSUpload(self, tenant_id)

    def _open_chunks(self, tenant_id: str, sha256: str) -> Iterator[bytes]:
        with _mongo_errors("read"):
            doc = self._files.find_one({"tenant_id": tenant_id, "sha256": sha256})
        if doc is None:
            raise NotFoundError(
                f"artifact {tenant_id}/{sha256} not found", details={"tenant_id": tenant_id, "sha256": sha256}
            )
        return self._read_chunks(doc)

    def _read_chunks(self, doc: dict[str, Any]) -> Iterator[bytes]:
        with _mongo_errors("read"):
            grid_out = GridOut(self._root, file_document=doc)
            try:
                while chunk := grid_out.readchunk():
                    yield bytes(chunk)
            finally:
                grid_out.close()

    def _exists(self, tenant_id: str, sha256: str) -> bool:
        with _mongo_errors("lookup"):
            return self._files.find_one({"tenant_id": tenant_id, "sha256": sha256}, {"_id": 1}) is not None

    def _delete(self, tenant_id: str, sha256: str) -> bool:
        with _mongo_errors("delete"):
            # Files document first: the blob disappears at once; chunks left by a crash here are orphans.
            doc = self._files.find_one_and_delete({"tenant_id": tenant_id, "sha256": sha256}, {"_id": 1})
            if doc is None:
                return False
            self._chunks.delete_many({"files_id": doc["_id"]})
        return True

    def _list_blobs(self, tenant_id: str) -> Iterator[BlobInfo]:
        with _mongo_errors("list"):
            cursor = self._files.find({"tenant_id": tenant_id}, {"sha256": 1, "length": 1}).sort("sha256", 1)
            for doc in cursor:
                oid = doc.get("_id")
                stored_at = oid.generation_time.timestamp() if isinstance(oid, ObjectId) else None
                yield self._info(tenant_id, doc["sha256"], doc["length"], stored_at)

    def _collect_garbage(self, older_than_s: float) -> int:
        """Delete chunks whose upload has no files document and wrote nothing for ``older_than_s``.

        This scans the chunks collection once (grouped by ``files_id``): a maintenance operation.
        """
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than_s)
        removed = 0
        with _mongo_errors("garbage collection"):
            groups = self._chunks.aggregate([{"$group": {"_id": "$files_id", "last": {"$max": "$_id"}}}])
            batch: list[Any] = []
            for group in groups:
                last = group["last"]
                # ObjectIds hold whole seconds; "<=" lets older_than_s=0 catch uploads from this second.
                if isinstance(last, ObjectId) and last.generation_time <= cutoff:
                    batch.append(group["_id"])
                if len(batch) >= _GC_BATCH:
                    removed += self._delete_orphans(batch)
                    batch = []
            if batch:
                removed += self._delete_orphans(batch)
        return removed

    def _delete_orphans(self, files_ids: list[Any]) -> int:
        complete = {d["_id"] for d in self._files.find({"_id": {"$in": files_ids}}, {"_id": 1})}
        orphans = [i for i in files_ids if i not in complete]
        if orphans:
            self._chunks.delete_many({"files_id": {"$in": orphans}})
        return len(orphans)

    def _ping(self) -> None:
        with _mongo_errors("ping"):
            self._db.command("ping")

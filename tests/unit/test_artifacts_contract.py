"""One contract for every artifact store: files on disk, GridFS on mongomock, GridFS on a real MongoDB.

``gridfs-real`` runs only when ``MLHUB_TEST_MONGODB_URI`` is set (MongoDB does not run on our machines).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gridfs
import mongomock
import mongomock.gridfs
import pymongo
import pytest

from mlhub.artifacts import (
    ArtifactStore,
    BlobInfo,
    FilesystemArtifactStore,
    GridFSArtifactStore,
    open_artifact_store,
)
from mlhub.config import load_settings
from mlhub.errors import ArtifactIntegrityError, BackendUnavailable, NotFoundError, ValidationError
from tests.conftest import free_port, service_url

SMALL_CHUNK = 64 * 1024
MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Backend:
    """A store plus the few things a test needs to look under it (what a crashed disk or writer does)."""

    store: ArtifactStore
    corrupt: Callable[[str, str, str], None]  # (tenant, sha256, "flip" | "truncate")
    stored_bytes: Callable[[], int]  # bytes held for complete blobs and for leftovers together
    leftover_bytes: Callable[[], int]  # bytes of uploads that are not (yet) blobs
    state: Callable[[], Any]  # anything a bad call might have changed
    data_in_process: bool = False  # mongomock keeps every document in this process's memory
    # What a read may buffer besides our chunk: a MongoDB server sends up to 16 MiB of chunk documents per
    # cursor batch (GridOut sets no batch size), held raw and decoded: bounded, but not one chunk.
    read_window: int = 0


def _filesystem(root: Path) -> Backend:
    store = FilesystemArtifactStore(root)

    def corrupt(tenant: str, digest: str, how: str) -> None:
        path = root / "blobs" / tenant / digest[:2] / digest
        data = path.read_bytes()
        path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:] if how == "flip" else data[:-1])

    def sizes(where: Path) -> int:
        return sum(p.stat().st_size for p in where.rglob("*") if p.is_file()) if where.exists() else 0

    return Backend(store, corrupt, lambda: sizes(root), lambda: sizes(root / "tmp"), lambda: None)


def _gridfs(db: Any) -> Backend:
    store = GridFSArtifactStore(db)
    files, chunks = db["mlhub_artifacts.files"], db["mlhub_artifacts.chunks"]

    def corrupt(tenant: str, digest: str, how: str) -> None:
        doc = files.find_one({"tenant_id": tenant, "sha256": digest})
        data = chunks.find_one({"files_id": doc["_id"], "n": 0})["data"]
        data = bytes([data[0] ^ 0xFF]) + data[1:] if how == "flip" else data[:-1]
        chunks.update_one({"files_id": doc["_id"], "n": 0}, {"$set": {"data": data}})

    def leftover_bytes() -> int:
        complete = {d["_id"] for d in files.find({}, {"_id": 1})}
        return sum(len(c["data"]) for c in chunks.find() if c["files_id"] not in complete)

    def state() -> Any:
        return sorted(db.list_collection_names()), files.count_documents({}), chunks.count_documents({})

    def stored_bytes() -> int:
        return sum(len(c["data"]) for c in chunks.find())

    return Backend(store, corrupt, stored_bytes, leftover_bytes, state)


_mongomock_ready = False


def _enable_mongomock_gridfs() -> None:
    """Let gridfs accept mongomock's Database (real pymongo ones still pass); once per process."""
    global _mongomock_ready
    if not _mongomock_ready:
        mongomock.gridfs.enable_gridfs_integration()
        _mongomock_ready = True


@pytest.fixture(params=["filesystem", "gridfs-mongomock", "gridfs-real"])
def backend(request, tmp_path) -> Iterator[Backend]:
    if request.param == "filesystem":
        b = _filesystem(tmp_path / "artifacts")
    elif request.param == "gridfs-mongomock":
        _enable_mongomock_gridfs()
        b = _gridfs(mongomock.MongoClient()["mlhub_test"])
        b.data_in_process = True
    else:
        url = service_url("mongodb", required=False)
        client: pymongo.MongoClient = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
        name = f"mlhub_test_{uuid.uuid4().hex[:12]}"
        b = _gridfs(client[name])
        b.read_window = 32 * MiB
    b.store.CHUNK_SIZE = SMALL_CHUNK  # many chunks from small data
    yield b
    if request.param == "gridfs-real":
        client.drop_database(name)
        client.close()


@pytest.fixture
def store(backend: Backend) -> ArtifactStore:
    return backend.store


# --- round trips -----------------------------------------------------------------------------------------

PAYLOAD = os.urandom(3 * SMALL_CHUNK + 123)


def _irregular_chunks() -> Iterator[bytes]:
    yield PAYLOAD[:10]
    yield b""
    yield PAYLOAD[10 : 2 * SMALL_CHUNK + 7]  # larger than a chunk
    yield bytearray(PAYLOAD[2 * SMALL_CHUNK + 7 :])


@pytest.mark.parametrize(
    "make_input",
    [lambda: PAYLOAD, lambda: io.BytesIO(PAYLOAD), _irregular_chunks, lambda: memoryview(PAYLOAD)],
    ids=["bytes", "file-object", "iterator", "memoryview"],
)
def test_put_then_read_returns_the_same_bytes(store, make_input):
    info = store.put("acme", make_input())

    assert info == BlobInfo("acme", sha(PAYLOAD), len(PAYLOAD), store.backend, f"acme/{sha(PAYLOAD)}")
    assert store.read_bytes("acme", info.sha256) == PAYLOAD
    assert store.exists("acme", info.sha256)
    assert list(store.list_blobs("acme")) == [info]


def test_a_real_file_and_an_empty_blob_round_trip(store, tmp_path):
    src = tmp_path / "model.bin"
    src.write_bytes(PAYLOAD)
    with src.open("rb") as f:
        from_file = store.put("acme", f)
    empty = store.put("acme", b"")

    assert store.read_bytes("acme", from_file.sha256) == PAYLOAD
    assert (empty.size, store.read_bytes("acme", empty.sha256)) == (0, b"")
    assert [b.sha256 for b in store.list_blobs("acme")] == sorted([from_file.sha256, empty.sha256])


def test_putting_the_same_bytes_twice_stores_them_once(backend, store):
    first = store.put("acme", PAYLOAD)
    second = store.put("acme", io.BytesIO(PAYLOAD))

    assert second == first
    assert list(store.list_blobs("acme")) == [first]
    assert backend.stored_bytes() == len(PAYLOAD)


def test_multi_chunk_blob_is_read_as_a_stream_of_chunks(store):
    data = os.urandom(3 * MiB + 17)
    info = store.put("acme", data)

    chunks = list(store.open("acme", info.sha256))

    assert len(chunks) >= 48 and max(len(c) for c in chunks) <= SMALL_CHUNK
    assert b"".join(chunks) == data


def test_download_to_writes_the_verified_file(store, tmp_path):
    info = store.put("acme", PAYLOAD)
    dest = tmp_path / "out" / "nested" / "model.bin"

    assert store.download_to("acme", info.sha256, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert os.listdir(dest.parent) == ["model.bin"]  # no temporary file left beside it


# --- tenants ---------------------------------------------------------------------------------------------


def test_tenants_have_separate_namespaces(backend, store):
    a = store.put("tenant-a", PAYLOAD)
    b = store.put("tenant_B", PAYLOAD)
    only_a = store.put("tenant-a", b"a's secret")

    assert (a.sha256, a.key, b.key) == (b.sha256, f"tenant-a/{a.sha256}", f"tenant_B/{a.sha256}")
    assert backend.stored_bytes() == 2 * len(PAYLOAD) + len(b"a's secret")
    assert [x.sha256 for x in store.list_blobs("tenant_B")] == [b.sha256]
    assert not store.exists("tenant_B", only_a.sha256)
    with pytest.raises(NotFoundError):
        store.read_bytes("tenant_B", only_a.sha256)


def test_deleting_one_tenants_blob_leaves_the_other_tenants_copy(store):
    a = store.put("tenant-a", PAYLOAD)
    store.put("tenant-b", PAYLOAD)

    assert store.delete("tenant-a", a.sha256) is True
    assert store.delete("tenant-a", a.sha256) is False
    assert not store.exists("tenant-a", a.sha256)
    assert list(store.list_blobs("tenant-a")) == []
    assert store.read_bytes("tenant-b", a.sha256) == PAYLOAD


# --- missing and corrupt blobs ---------------------------------------------------------------------------


def test_missing_blob_is_not_found(store, tmp_path):
    missing = sha(b"never stored")
    dest = tmp_path / "dl" / "x.bin"

    for call in (store.open, store.read_bytes, lambda t, s: store.download_to(t, s, dest)):
        with pytest.raises(NotFoundError):
            call("acme", missing)
    assert not store.exists("acme", missing)
    assert store.delete("acme", missing) is False
    assert not dest.parent.exists()


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_corrupted_blob_raises_integrity_error_and_never_yields_all_its_bytes(backend, store, how):
    info = store.put("acme", PAYLOAD)
    backend.corrupt("acme", info.sha256, how)

    with pytest.raises(ArtifactIntegrityError):
        store.read_bytes("acme", info.sha256)
    received = bytearray()
    with pytest.raises(ArtifactIntegrityError):
        for chunk in store.open("acme", info.sha256):
            received += chunk
    assert len(received) < len(PAYLOAD)


def test_download_of_a_corrupted_blob_leaves_nothing_at_the_path(backend, store, tmp_path):
    info = store.put("acme", PAYLOAD)
    backend.corrupt("acme", info.sha256, "flip")
    fresh, existing = tmp_path / "dl" / "fresh.bin", tmp_path / "dl" / "existing.bin"
    existing.parent.mkdir()
    existing.write_bytes(b"previous version")

    for dest in (fresh, existing):
        with pytest.raises(ArtifactIntegrityError):
            store.download_to("acme", info.sha256, dest)

    assert sorted(os.listdir(fresh.parent)) == ["existing.bin"]
    assert existing.read_bytes() == b"previous version"


# --- validation: no user string becomes a path -----------------------------------------------------------

TRAVERSALS = ["../x", "..\\x", "%2e%2e", "/etc/passwd", "a\x00b", "C:\\x", "a/b", "."]
BAD_NAMES = [*TRAVERSALS, "", "-a", "a" * 65, "acme\n"]
BAD_SHAS = [*BAD_NAMES, "A" * 64, "g" * 64, "a" * 63, "a" * 65, "../" + "a" * 61, "a" * 64 + "\n", None, 64]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_bad_tenant_ids_and_digests_are_refused_before_touching_storage(backend, store, tmp_path_factory):
    store.put("acme", PAYLOAD)  # something to traverse towards
    base = tmp_path_factory.getbasetemp()
    before, state = _tree(base), backend.state()
    good = sha(PAYLOAD)
    dest = base / "dl" / "x.bin"

    for bad in [*BAD_NAMES, None, 7]:
        calls = [(store.put, b"data"), (store.list_blobs,), (store.download_to, good, dest)]
        calls += [(method, good) for method in (store.open, store.read_bytes, store.exists, store.delete)]
        for method, *rest in calls:
            with pytest.raises(ValidationError):
                method(bad, *rest)
    for bad in BAD_SHAS:
        for call in (store.open, store.read_bytes, store.exists, store.delete):
            with pytest.raises(ValidationError):
                call("acme", bad)
        with pytest.raises(ValidationError):
            store.download_to("acme", bad, dest)

    assert _tree(base) == before
    assert backend.state() == state
    assert store.read_bytes("acme", good) == PAYLOAD


@pytest.mark.parametrize(
    "data", ["text", 42, ["text"], io.StringIO("text")], ids=["str", "int", "str-items", "text-file"]
)
def test_put_refuses_data_that_is_not_bytes(backend, store, data):
    with pytest.raises(ValidationError):
        store.put("acme", data)
    assert list(store.list_blobs("acme")) == []
    assert backend.leftover_bytes() == 0


# --- interrupted uploads ---------------------------------------------------------------------------------


def _dies_midway(chunks: int = 3) -> Iterator[bytes]:
    for _ in range(chunks):
        yield os.urandom(SMALL_CHUNK)
    raise ConnectionResetError("client went away")


def test_failed_upload_leaves_no_blob_and_no_pieces(backend, store):
    with pytest.raises(ConnectionResetError):
        store.put("acme", _dies_midway())

    assert list(store.list_blobs("acme")) == []
    assert backend.leftover_bytes() == 0


def test_pieces_of_a_writer_that_died_before_cleanup_are_collected(backend, store, monkeypatch):
    kept = store.put("acme", PAYLOAD)
    monkeypatch.setattr(store, "_abort_upload", lambda upload: None)  # as if the process died mid-put
    with pytest.raises(ConnectionResetError):
        store.put("acme", _dies_midway())

    assert backend.leftover_bytes() == 3 * SMALL_CHUNK
    assert list(store.list_blobs("acme")) == [kept]
    assert store.collect_garbage() == 0  # recent: might still be an upload in flight
    assert store.collect_garbage(older_than_s=0) == 1
    assert backend.leftover_bytes() == 0
    assert store.read_bytes("acme", kept.sha256) == PAYLOAD


def test_collect_garbage_refuses_nonsense_ages(store):
    for bad in (-1, float("nan"), float("inf"), "10", True):
        with pytest.raises(ValidationError):
            store.collect_garbage(bad)


# --- streaming -------------------------------------------------------------------------------------------


def test_put_writes_through_while_the_input_is_still_arriving(backend, store):
    seen_before_last: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield os.urandom(SMALL_CHUNK)
        seen_before_last.append(backend.leftover_bytes())
        yield os.urandom(SMALL_CHUNK)

    info = store.put("acme", chunks())

    assert seen_before_last == [3 * SMALL_CHUNK]
    assert info.size == 4 * SMALL_CHUNK and backend.leftover_bytes() == 0


def test_put_and_open_of_a_large_blob_stay_within_a_few_mib_of_memory(backend, store):
    if backend.data_in_process:
        pytest.skip("mongomock stores every chunk in this process; write-through is checked above")
    store.CHUNK_SIZE = ArtifactStore.CHUNK_SIZE
    block, blocks = os.urandom(MiB), 64 + 2 * backend.read_window // MiB  # well above what a read may hold
    expected = hashlib.sha256()
    for _ in range(blocks):
        expected.update(block)

    tracemalloc.start()
    try:
        info = store.put("acme", (bytearray(block) for _ in range(blocks)))  # fresh memory each time
        put_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        read_back = hashlib.sha256()
        for chunk in store.open("acme", info.sha256):
            read_back.update(chunk)
        open_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert (info.size, info.sha256) == (blocks * MiB, expected.hexdigest())
    assert read_back.hexdigest() == info.sha256
    assert put_peak < 8 * MiB, f"put held {put_peak / MiB:.1f} MiB"
    assert open_peak < 8 * MiB + backend.read_window, f"open held {open_peak / MiB:.1f} MiB"


def test_ping_succeeds_on_a_working_backend(store):
    store.ping()


# --- backend specifics -----------------------------------------------------------------------------------


def test_filesystem_files_are_private_and_ping_reports_an_unusable_root(tmp_path):
    store = FilesystemArtifactStore(tmp_path / "artifacts")
    info = store.put("acme", b"weights")
    blob = tmp_path / "artifacts" / "blobs" / "acme" / info.sha256[:2] / info.sha256

    assert blob.stat().st_mode & 0o777 == 0o600
    assert blob.parent.stat().st_mode & 0o777 == 0o700
    (tmp_path / "not-a-dir").write_text("")
    with pytest.raises(BackendUnavailable):
        FilesystemArtifactStore(tmp_path / "not-a-dir").ping()


def test_gridfs_blobs_are_readable_by_any_gridfs_client():
    _enable_mongomock_gridfs()
    db = mongomock.MongoClient()["mlhub_test"]
    info = GridFSArtifactStore(db).put("acme", PAYLOAD)
    doc = db["mlhub_artifacts.files"].find_one({"tenant_id": "acme", "sha256": info.sha256})

    assert gridfs.GridFS(db, collection="mlhub_artifacts").get(doc["_id"]).read() == PAYLOAD
    assert (doc["filename"], doc["length"]) == (info.key, len(PAYLOAD))


def test_unreachable_mongodb_is_backend_unavailable_without_the_password():
    store = GridFSArtifactStore.from_uri(
        f"mongodb://mlhub:s3cr3t-pw@127.0.0.1:{free_port()}/?directConnection=true", timeout_s=0.3
    )
    started = time.monotonic()
    try:
        with pytest.raises(BackendUnavailable) as caught:
            store.ping()
    finally:
        store.close()

    assert time.monotonic() - started < 5
    assert "s3cr3t-pw" not in str(caught.value) and "s3cr3t-pw" not in repr(caught.value.__cause__)


def test_factory_picks_the_backend_from_settings(mlhub_home):
    embedded = open_artifact_store(load_settings())
    gridfs_store = open_artifact_store(load_settings(mongodb_uri="mongodb://u:pw-123@127.0.0.1:1/"))
    try:
        assert isinstance(embedded, FilesystemArtifactStore)
        assert embedded.root == load_settings().artifacts_dir
        assert not embedded.root.exists()  # nothing is created until the first write
        assert isinstance(gridfs_store, GridFSArtifactStore)
        assert "pw-123" not in repr(gridfs_store)
    finally:
        gridfs_store.close()


def test_concurrent_puts_of_the_same_bytes_store_one_copy(backend, store):
    with ThreadPoolExecutor(max_workers=8) as pool:
        infos = list(pool.map(lambda _: store.put("acme", iter([PAYLOAD[:100], PAYLOAD[100:]])), range(16)))

    assert len(set(infos)) == 1
    assert list(store.list_blobs("acme")) == infos[:1]
    assert backend.stored_bytes() == len(PAYLOAD)
    assert store.read_bytes("acme", infos[0].sha256) == PAYLOAD

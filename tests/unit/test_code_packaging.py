"""Custom code travelling with a job (mlhub.jobs.code): packing, submit-time checks, safe extraction, fetching
through the tenant's artifact records, and running a single-process entrypoint. No Ray: SQLite and files."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import sys
import zipfile
from pathlib import Path

import pytest

from mlhub.errors import ArtifactIntegrityError, PermanentJobFailure, ValidationError
from mlhub.jobs.code import activate, attach_code, fetch_code, materialize, pack_directory, safe_extract

SKLEARN_LOOP = '''
import skops.io as sio
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


def train_loop(session):
    data = session.dataset()
    model = Pipeline([("scale", StandardScaler()), ("model", SGDClassifier(loss="log_loss", random_state=0))])
    model.fit(data.x_train, data.y_train)
    acc = float((model.predict(data.x_test) == data.y_test).mean())
    session.report(0, {"val_accuracy": acc}, final_model=(sio.dumps(model), "skops",
                                                             {"metrics": {"accuracy": acc}, "params": {}}))
'''


def _write(root: Path, rel: str, body: bytes | str = b"x") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body.encode() if isinstance(body, str) else body)
    return path


def _zip(entries: list[tuple[str, bytes, int]]) -> bytes:
    """A zip of (name, body, unix mode) entries, written without any of pack_directory's care."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, body, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            z.writestr(info, body)
    return buf.getvalue()


def _spec(name: str, **extra):
    from mlhub.domain.specs import parse_spec

    return parse_spec({"kind": "training", "name": name, "framework": "sklearn", "model": "sgd",
                       "dataset": {"source": "sklearn", "name": "iris"}, **extra})


def _stored_spec(hub, job_id: int) -> dict:
    from sqlalchemy import select

    from mlhub.store.models import Job

    with hub.backends.db.tenant_scope(hub.principal.tenant_id, readonly=True) as s:
        return s.scalar(select(Job.spec).where(Job.id == job_id))


# --- packing -------------------------------------------------------------------------------------------

def test_packing_skips_caches_envs_byte_code_links_and_big_files(tmp_path):
    root = tmp_path / "proj"
    for rel in ("train.py", "pkg/__init__.py", "pkg/model.py", "conf/settings.yaml"):
        _write(root, rel, f"# {rel}\n")
    for rel in (".git/HEAD", ".venv/lib/x.py", "venv/bin/python", "__pycache__/train.cpython-311.pyc",
                "pkg/__pycache__/model.cpython-311.pyc", "stale.pyc", "node_modules/a/index.js",
                ".mypy_cache/x.json", ".pytest_cache/v/cache", "mlhub.egg-info/PKG-INFO"):
        _write(root, rel)
    _write(root, "data/big.bin", b"\0" * 2000)
    _write(root, ".env", "MLHUB_DATABASE_URL=postgresql://u:secret@db/x\n")
    _write(root, "home/credentials", "mlh_secret\n")  # an MLHUB_HOME inside the project
    (root / "link.py").symlink_to(root / "train.py")
    (root / "linked_dir").symlink_to(root / "pkg")

    packed = pack_directory(root, max_file=1000, exclude=(root / "home",))
    assert packed.files == ["conf/settings.yaml", "pkg/__init__.py", "pkg/model.py", "train.py"]
    assert dict(packed.skipped) == {"data/big.bin": "2.0 kB, over the 1.0 kB limit per file",
                                    ".env": "may hold secrets", "home/": "mlhub's own state (MLHUB_HOME)",
                                    "link.py": "a symbolic link", "linked_dir/": "a symbolic link"}
    assert packed.has_module("train") and packed.has_module("pkg") and packed.has_module("pkg.model")
    assert not packed.has_module("conf") and not packed.has_module("missing")
    assert hashlib.sha256(packed.data).hexdigest() == packed.sha256
    with zipfile.ZipFile(io.BytesIO(packed.data)) as z:
        assert sorted(z.namelist()) == packed.files


def test_packing_is_deterministic_so_the_same_code_uploads_once(tmp_path):
    root = tmp_path / "proj"
    _write(root, "a.py", "A = 1\n")
    first = pack_directory(root)
    os.utime(root / "a.py", (1_000_000, 1_000_000))  # a new timestamp, same content
    assert pack_directory(root).sha256 == first.sha256
    _write(root, "a.py", "A = 2\n")
    assert pack_directory(root).sha256 != first.sha256


def test_packing_over_the_total_limit_names_the_biggest_files(tmp_path):
    root = tmp_path / "proj"
    _write(root, "train.py", "x = 1\n")
    _write(root, "weights/huge.bin", b"\1" * 6000)
    _write(root, "notes.txt", b"\1" * 3000)
    with pytest.raises(ValidationError, match=r"over the .* limit; the biggest files: weights/huge.bin .*notes.txt"):
        pack_directory(root, max_total=5000, max_file=10_000)


def test_packing_stops_early_in_a_tree_with_too_many_files(tmp_path):
    for i in range(6):
        _write(tmp_path / "proj", f"m{i}.py")
    with pytest.raises(ValidationError, match="more than 5 files; run from the folder of your code"):
        pack_directory(tmp_path / "proj", max_files=5)


def test_packing_needs_an_existing_directory(tmp_path):
    with pytest.raises(ValidationError, match="does not exist or is not a directory"):
        pack_directory(tmp_path / "nope")
    _write(tmp_path, "f.py")
    with pytest.raises(ValidationError, match="not a directory"):
        pack_directory(tmp_path / "f.py")


# --- safe extraction -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "why"), [
    ("../evil.py", r"'\.\.' and '\.' are refused"),
    ("pkg/../../evil.py", r"'\.\.' and '\.' are refused"),
    ("/etc/evil.py", "absolute paths are refused"),
    ("C:/evil.py", "absolute paths are refused"),
    ("pkg\\..\\evil.py", "not a plain relative path"),
])
def test_extraction_refuses_paths_that_leave_the_folder(tmp_path, name, why):
    data = _zip([("ok.py", b"x", stat.S_IFREG | 0o644), (name, b"boom", stat.S_IFREG | 0o644)])
    with pytest.raises(ValidationError, match=why):
        safe_extract(data, tmp_path / "out")
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "out").exists()  # checked before writing


def test_extraction_refuses_links_and_special_files(tmp_path):
    link = _zip([("pwn.py", b"/etc/passwd", stat.S_IFLNK | 0o777)])
    with pytest.raises(ValidationError, match="symbolic links are refused"):
        safe_extract(link, tmp_path / "a")
    fifo = _zip([("pipe", b"", stat.S_IFIFO | 0o644)])
    with pytest.raises(ValidationError, match="not a regular file"):
        safe_extract(fifo, tmp_path / "b")


def test_extraction_is_size_and_count_capped_and_needs_a_zip(tmp_path):
    big = _zip([("a.bin", b"\0" * 5000, stat.S_IFREG | 0o644)])
    with pytest.raises(ValidationError, match="unpacks to more than"):
        safe_extract(big, tmp_path / "a", max_total=4000)
    many = _zip([(f"f{i}.py", b"", stat.S_IFREG | 0o644) for i in range(5)])
    with pytest.raises(ValidationError, match="5 members, over the limit of 4"):
        safe_extract(many, tmp_path / "b", max_files=4)
    with pytest.raises(ValidationError, match="not a zip file"):
        safe_extract(b"not a zip", tmp_path / "c")


def test_extraction_refuses_a_member_whose_bytes_disagree_with_its_header(tmp_path):
    data = bytearray(_zip([("a.py", b"print('hello')\n" * 300, stat.S_IFREG | 0o644)]))
    data[40:44] = b"XXXX"  # damage the stored bytes: the CRC no longer matches
    with pytest.raises(ValidationError, match="'a.py' is corrupt"):
        safe_extract(bytes(data), tmp_path / "a")


def test_materialize_verifies_the_sha256_and_reuses_the_folder(tmp_path):
    root = tmp_path / "proj"
    _write(root, "pkg/mod.py", "VALUE = 7\n")
    packed = pack_directory(root)
    cache = tmp_path / "cache"
    with pytest.raises(ArtifactIntegrityError, match="sha256 mismatch"):
        materialize(packed.data, "0" * 64, cache)
    assert not (cache / ("0" * 64)).exists()
    folder = materialize(packed.data, packed.sha256, cache)
    assert folder == cache / packed.sha256 and (folder / "pkg" / "mod.py").read_text() == "VALUE = 7\n"
    (folder / "pkg" / "mod.py").write_text("touched")  # a second materialize reuses the folder as it is
    assert materialize(packed.data, packed.sha256, cache) == folder
    assert (folder / "pkg" / "mod.py").read_text() == "touched"
    assert [p.name for p in cache.iterdir()] == [packed.sha256]  # no temporary folders left behind


# --- submit and fetch through the artifact store -------------------------------------------------------

def test_submit_packs_uploads_and_fetch_reads_it_back_for_the_same_tenant_only(tmp_path):
    from mlhub.audit import Principal
    from mlhub.client import Hub
    from mlhub.domain.specs import CodeRef
    from mlhub.tenancy import TenantService

    root = tmp_path / "proj"
    _write(root, "my_loop_a1.py", SKLEARN_LOOP)
    with Hub() as hub:
        plain = _spec("plain")
        assert attach_code(hub.backends, hub.principal, plain, root) is plain  # no entrypoint: nothing packed
        with pytest.raises(ValidationError, match=r"imports 'other_mod', but other_mod.py is not in the working directory"):
            attach_code(hub.backends, hub.principal, _spec("x", entrypoint="other_mod:train_loop"), root)
        with pytest.raises(ValidationError, match="unknown sklearn estimator"):  # validated before uploading
            attach_code(hub.backends, hub.principal, _spec("x", entrypoint="my_loop_a1:train_loop",
                                                           model="nope"), root)
        seen = []
        spec = attach_code(hub.backends, hub.principal, _spec("a", entrypoint="my_loop_a1:train_loop"), root,
                           on_packed=lambda packed, rec: seen.append((packed.files, rec.id)))
        assert seen == [(["my_loop_a1.py"], spec.code.artifact_id)]
        assert spec.code.sha256 == pack_directory(root).sha256
        again = attach_code(hub.backends, hub.principal, _spec("b", entrypoint="my_loop_a1:train_loop"), root)
        assert again.code == spec.code  # content-addressed: the same code is one artifact

        job = hub.submit(_spec("c", entrypoint="my_loop_a1:train_loop"), working_dir=root)
        assert _stored_spec(hub, job.id)["code"] == spec.code.model_dump()

        folder = fetch_code(hub.backends, hub.principal, spec.code)
        assert folder == hub.settings.home / "code" / hub.principal.tenant_id / spec.code.sha256
        assert (folder / "my_loop_a1.py").read_text() == SKLEARN_LOOP

        with pytest.raises(PermanentJobFailure, match="holds"):
            fetch_code(hub.backends, hub.principal, CodeRef(artifact_id=spec.code.artifact_id, sha256="f" * 64))
        other_tenant, _ = TenantService(hub.backends.db).create_tenant("other")
        other = Principal(tenant_id=other_tenant.id, actor="t", source="python")
        with pytest.raises(PermanentJobFailure, match="not among this tenant's artifacts"):
            fetch_code(hub.backends, other, spec.code)


def test_submit_packs_the_current_directory_by_default(tmp_path, monkeypatch, mlhub_home):
    from mlhub.client import Hub

    _write(mlhub_home, "my_loop_b2.py", SKLEARN_LOOP)
    with Hub() as hub, pytest.raises(ValidationError, match="inside mlhub's own state folder"):
        hub.submit(_spec("d", entrypoint="my_loop_b2:train_loop"))  # the current directory is MLHUB_HOME
    root = tmp_path / "cwd"
    _write(root, "my_loop_b2.py", SKLEARN_LOOP)
    monkeypatch.chdir(root)
    with Hub() as hub:
        job = hub.submit(_spec("d", entrypoint="my_loop_b2:train_loop"))
        assert _stored_spec(hub, job.id)["code"]["sha256"] == pack_directory(root).sha256


def test_a_single_process_entrypoint_runs_in_a_local_session_and_gives_a_loadable_model(tmp_path):
    from mlhub.jobs.code import run_local_loop
    from mlhub.training.datasets import load_dataset
    from mlhub.training.serialization import load_model

    root = tmp_path / "proj"
    _write(root, "my_loop_c3.py", SKLEARN_LOOP)
    _write(root, "no_final_c3.py", "def train_loop(session):\n    session.report(0, {'x': 1.0})\n")
    spec = _spec("e", entrypoint="my_loop_c3:train_loop")
    data = load_dataset(spec.dataset, allowed_roots=[])
    reports = []
    trained = run_local_loop(spec, data, reports.append, str(root), [])
    assert trained.framework == "sklearn" and trained.model_format == "skops" and trained.metrics["accuracy"] > 0.5
    assert trained.input_schema and trained.classes == data.classes and len(reports) == 1
    assert load_model("sklearn", "skops", trained.payload).predict(data.x_test).shape == (len(data.x_test),)
    with pytest.raises(PermanentJobFailure, match="without passing final_model"):
        run_local_loop(_spec("f", entrypoint="no_final_c3:train_loop"), data, reports.append, str(root), [])


def test_activate_never_mixes_two_versions_of_a_users_module(tmp_path):
    a = materialize(_zip([("mix_mod_d4.py", b"VERSION = 'a'\n", stat.S_IFREG | 0o644)]),
                    hashlib.sha256(_zip([("mix_mod_d4.py", b"VERSION = 'a'\n", stat.S_IFREG | 0o644)])).hexdigest(),
                    tmp_path / "code" / "t1")
    b_zip = _zip([("mix_mod_d4.py", b"VERSION = 'b'\n", stat.S_IFREG | 0o644)])
    b = materialize(b_zip, hashlib.sha256(b_zip).hexdigest(), tmp_path / "code" / "t1")
    saved = list(sys.path)
    try:
        activate(a, ["mix_mod_d4"])
        import mix_mod_d4

        assert mix_mod_d4.VERSION == "a"
        activate(b, ["mix_mod_d4"])
        assert str(a) not in sys.path and sys.path[0] == str(b)
        import mix_mod_d4 as again

        assert again.VERSION == "b"
    finally:
        sys.path[:] = saved
        sys.modules.pop("mix_mod_d4", None)

"""Custom training code travels with its job: packed at submit, fetched and extracted wherever it runs.

A training spec that names code (``entrypoint: module:function``, or a torch ``model: module:factory``) needs
that code on the machine that runs it, which on a cluster is rarely the one that submitted it. So:

- at submit (:func:`attach_code`, called by :meth:`mlhub.client.Hub.submit` and ``mlhub train``) the client
  packs the working directory (default: the current one) into a deterministic zip (:func:`pack_directory`:
  caches, virtualenvs, VCS folders and byte code skipped, large files left out, at most
  :data:`MAX_CODE_BYTES` in all), checks that the modules the spec names are in it, uploads it to the
  artifact store (tenant-scoped, content-addressed by sha256: the same code uploads once) and writes a
  :class:`~mlhub.domain.specs.CodeRef` into the spec;
- at run time (:func:`code_folder` in the job's driver, and each Ray Train worker through
  :func:`fetch_code`) the zip is read back through the tenant's artifact records, its sha256 verified, and
  extracted safely (:func:`safe_extract`: no absolute paths, no ``..``, no links, size-capped) into
  ``$MLHUB_HOME/code/<tenant>/<sha256>``, which later attempts and other jobs with the same code reuse. Every
  node fetches on its own, so no shared disk is needed.

``ray job submit --working-dir . -- mlhub train spec.yaml`` runs the CLI inside Ray's copy of the working
directory, so packing the current directory there packs exactly what the user sent.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import sys
import uuid
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mlhub.errors import ArtifactIntegrityError, NotFoundError, PermanentJobFailure, ValidationError

__all__ = [
    "EXCLUDED_DIRS",
    "MAX_CODE_BYTES",
    "MAX_FILE_BYTES",
    "PackedCode",
    "attach_code",
    "code_folder",
    "fetch_code",
    "materialize",
    "modules_needed",
    "needs_code",
    "pack_directory",
    "run_local_loop",
    "safe_extract",
]

MAX_CODE_BYTES = 20 << 20
"""Largest total (uncompressed) size of a job's packed code."""
MAX_FILE_BYTES = 5 << 20
"""Files larger than this are left out of the package (data belongs in a dataset, not in the code)."""
MAX_FILES = 10_000
EXCLUDED_DIRS = frozenset({".git", ".hg", ".svn", ".venv", "venv", "__pycache__", "node_modules", ".mypy_cache",
                           ".pytest_cache", ".ruff_cache", ".tox", ".ipynb_checkpoints", ".eggs"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
MEDIA_TYPE = "application/x-mlhub-code+zip"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same files always give the same bytes and sha256
_DONE = ".mlhub-code-complete"


# --- packing (client side) -----------------------------------------------------------------------------

@dataclass(frozen=True)
class PackedCode:
    """A packed working directory: the zip's bytes, its sha256 and what went in or was left out."""

    data: bytes
    sha256: str
    root: Path
    files: list[str]
    size_bytes: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, why)

    def has_module(self, module: str) -> bool:
        parts = module.split(".")
        names = set(self.files)
        return "/".join(parts) + ".py" in names or "/".join(parts) + "/__init__.py" in names


def _kb(n: int) -> str:
    return f"{n / 1024:,.1f} kB" if n < 1 << 20 else f"{n / (1 << 20):,.1f} MiB"


def pack_directory(root: str | Path, *, max_total: int = MAX_CODE_BYTES, max_file: int = MAX_FILE_BYTES,
                   max_files: int = MAX_FILES, exclude: tuple[str | Path, ...] = ()) -> PackedCode:
    """Zip ``root`` (its files, recursively) for a job. Skips :data:`EXCLUDED_DIRS`, byte code, links, files
    over ``max_file``, ``.env`` files (they hold secrets) and the folders in ``exclude`` (mlhub's own home:
    database, credentials, artifacts); ValidationError when the rest exceeds ``max_total`` (naming the biggest
    files) or ``max_files``. Deterministic: sorted entries, fixed timestamps and modes."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise ValidationError(f"working directory {base} does not exist or is not a directory")
    base = base.resolve()
    excluded = {Path(p).expanduser().resolve() for p in exclude}
    if any(base.is_relative_to(e) for e in excluded):
        raise ValidationError(f"the working directory {base} lies inside mlhub's own state folder (MLHUB_HOME); "
                              "run from the folder of your code or pass --working-dir")
    chosen: list[tuple[str, Path, int]] = []
    skipped: list[tuple[str, str]] = []
    for folder, dirs, files in os.walk(base, followlinks=False):
        here = Path(folder)
        kept = []
        for d in sorted(dirs):
            rel = (here / d).relative_to(base).as_posix()
            if d in EXCLUDED_DIRS or d.endswith(".egg-info"):
                continue  # never interesting, so not worth a line in the report
            if (here / d).resolve() in excluded:
                skipped.append((rel + "/", "mlhub's own state (MLHUB_HOME)"))
                continue
            if (here / d).is_symlink():
                skipped.append((rel + "/", "a symbolic link"))
                continue
            kept.append(d)
        dirs[:] = kept
        for name in sorted(files):
            path = here / name
            rel = path.relative_to(base).as_posix()
            if name.endswith(EXCLUDED_SUFFIXES):
                continue
            if name == ".env" or name.startswith(".env."):
                skipped.append((rel, "may hold secrets"))
                continue
            try:
                st = path.lstat()
            except OSError as exc:
                skipped.append((rel, f"unreadable: {exc.strerror}"))
                continue
            if stat.S_ISLNK(st.st_mode):
                skipped.append((rel, "a symbolic link"))
            elif not stat.S_ISREG(st.st_mode):
                skipped.append((rel, "not a regular file"))
            elif st.st_size > max_file:
                skipped.append((rel, f"{_kb(st.st_size)}, over the {_kb(max_file)} limit per file"))
            else:
                chosen.append((rel, path, st.st_size))
                if len(chosen) > max_files:  # stop walking a huge tree (a home directory) early
                    raise ValidationError(f"the working directory {base} holds more than {max_files:,} files; "
                                          "run from the folder of your code (--working-dir)")
    chosen.sort(key=lambda c: c[0])
    skipped.sort()
    total = sum(size for _, _, size in chosen)
    if total > max_total:
        biggest = sorted(chosen, key=lambda c: -c[2])[:5]
        raise ValidationError(
            f"the working directory {base} holds {_kb(total)} of code to send with the job, over the "
            f"{_kb(max_total)} limit; the biggest files: " + ", ".join(f"{r} ({_kb(s)})" for r, _, s in biggest)
            + ". Move data into a dataset (MLHUB_DATA_ROOTS) or run from a smaller folder (--working-dir)",
            details={"errors": [f"{r}: {s} bytes" for r, _, s in biggest]})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for rel, path, _ in chosen:
            info = zipfile.ZipInfo(rel, date_time=_ZIP_DATE)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, path.read_bytes())
    data = buf.getvalue()
    return PackedCode(data=data, sha256=hashlib.sha256(data).hexdigest(), root=base,
                      files=[r for r, _, _ in chosen], size_bytes=total, skipped=skipped)


def modules_needed(spec: Any) -> list[str]:
    """The user modules a training spec (or an HPO spec's trainer) imports: its entrypoint's, and a torch
    ``module:factory`` model's."""
    from mlhub.domain.specs import HpoSpec, TrainingSpec

    if isinstance(spec, HpoSpec):
        spec = spec.trainer
    if not isinstance(spec, TrainingSpec):
        return []
    out = []
    if spec.entrypoint:
        out.append(spec.entrypoint.partition(":")[0])
    if spec.framework == "torch" and ":" in spec.model:
        out.append(spec.model.partition(":")[0])
    return list(dict.fromkeys(out))


def needs_code(spec: Any) -> bool:
    return bool(modules_needed(spec))


def attach_code(backends: Any, principal: Any, spec: Any, working_dir: str | Path | None = None, *,
                on_packed: Callable[[PackedCode, Any], None] | None = None,
                packs: dict[Path, PackedCode] | None = None) -> Any:
    """``spec`` with its code packed, uploaded and referenced (``spec.code``); unchanged when it names no
    code or already carries a reference. ``working_dir`` defaults to the current directory. ``on_packed``
    hears what was packed (and the artifact record); ``packs`` memoises packing across several specs."""
    from mlhub.artifact_records import ArtifactService
    from mlhub.domain.specs import CodeRef, HpoSpec
    from mlhub.jobs.service import validate_for_submit

    trainer = spec.trainer if isinstance(spec, HpoSpec) else spec  # an HPO job's trials run its trainer's code
    modules = modules_needed(spec)
    if not modules or trainer.code is not None:
        return spec
    validate_for_submit(spec)  # a bad spec fails before anything is uploaded
    root = Path(working_dir if working_dir is not None else os.getcwd()).expanduser()
    key = root.resolve()
    packed = packs.get(key) if packs is not None else None
    if packed is None:
        packed = pack_directory(root, exclude=(backends.settings.home,))
        if packs is not None:
            packs[key] = packed
    missing = [m for m in modules if not packed.has_module(m)]
    if missing:
        expected = " or ".join(f"{m.replace('.', '/')}.py" for m in missing)
        raise ValidationError(
            f"the spec imports {', '.join(map(repr, missing))}, but {expected} is not in the working directory "
            f"{packed.root}; run from the folder that holds it or pass --working-dir",
            details={"errors": [f"module {m!r} not found in {packed.root}" for m in missing]})
    record = ArtifactService(backends.db, backends.artifacts).upload(
        principal, packed.data, media_type=MEDIA_TYPE, name=f"{spec.name}-code.zip")
    if on_packed is not None:
        on_packed(packed, record)
    ref = CodeRef(artifact_id=record.id, sha256=record.sha256)
    if trainer is not spec:
        return spec.model_copy(update={"trainer": trainer.model_copy(update={"code": ref})})
    return spec.model_copy(update={"code": ref})


# --- unpacking (where the job runs) --------------------------------------------------------------------

def _member_path(name: str) -> PurePosixPath:
    """A zip member's path, refused unless it is relative, plain and stays inside the folder."""
    if not name or "\x00" in name or "\\" in name:
        raise ValidationError(f"code package member {name!r}: not a plain relative path")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/") or (path.parts and ":" in path.parts[0]):
        raise ValidationError(f"code package member {name!r}: absolute paths are refused")
    if any(p in ("..", ".") for p in path.parts) or not path.parts:
        raise ValidationError(f"code package member {name!r}: '..' and '.' are refused")
    return path


def safe_extract(data: bytes, dest: str | Path, *, max_total: int = MAX_CODE_BYTES,
                 max_files: int = MAX_FILES) -> list[str]:
    """Extract a code zip into ``dest`` (created). ValidationError, with nothing trusted, for absolute paths,
    ``..``, links or other special files, more than ``max_files`` members or ``max_total`` bytes (counted
    while writing, whatever the headers claim). Returns the extracted files' relative paths."""
    target = Path(dest)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ValidationError(f"code package is not a zip file: {exc}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > max_files:
            raise ValidationError(f"code package has {len(infos):,} members, over the limit of {max_files:,}")
        plan = []
        for info in infos:
            path = _member_path(info.filename.rstrip("/") if info.is_dir() else info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ValidationError(f"code package member {info.filename!r}: symbolic links are refused")
            if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ValidationError(f"code package member {info.filename!r}: not a regular file")
            plan.append((info, path))
        if sum(i.file_size for i, _ in plan) > max_total:
            raise ValidationError(f"code package unpacks to more than {_kb(max_total)}")
        target.mkdir(parents=True, exist_ok=True)
        written = 0
        out = []
        for info, path in plan:
            dest_path = target.joinpath(*path.parts)
            if info.is_dir():
                dest_path.mkdir(parents=True, exist_ok=True)
                continue
            dest_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as src, open(dest_path, "xb") as dst:
                    while chunk := src.read(1 << 16):
                        written += len(chunk)
                        if written > max_total:
                            raise ValidationError(f"code package unpacks to more than {_kb(max_total)}")
                        dst.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise ValidationError(f"code package member {info.filename!r} is corrupt: {exc}") from None
            out.append(path.as_posix())
    return out


def materialize(data: bytes, sha256: str, cache_root: str | Path) -> Path:
    """The folder ``cache_root/<sha256>`` holding the extracted code, made once: ``data`` must hash to
    ``sha256`` (ArtifactIntegrityError otherwise); extraction goes to a private temporary folder renamed into
    place, so concurrent attempts on one node never see a half-extracted tree."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ArtifactIntegrityError(f"code package sha256 mismatch: expected {sha256[:12]}…, got {actual[:12]}…")
    root = Path(cache_root)
    final = root / sha256
    if (final / _DONE).exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{sha256[:16]}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        safe_extract(data, tmp)
        (tmp / _DONE).write_text(sha256)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / _DONE).exists():  # neither ours nor another process's: a real failure
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _cached(cache_root: Path, sha256: str) -> Path | None:
    final = cache_root / sha256
    return final if (final / _DONE).exists() else None


def fetch_code(backends: Any, principal: Any, ref: Any) -> Path:
    """The local folder of a job's code (a :class:`~mlhub.domain.specs.CodeRef`): read through the tenant's
    own artifact record (another tenant's id is not found), checked against the reference's sha256 and
    extracted under ``$MLHUB_HOME/code/<tenant>/``, or the folder an earlier fetch on this node made."""
    from mlhub.artifact_records import ArtifactService

    service = ArtifactService(backends.db, backends.artifacts)
    try:
        record = service.get(principal, ref.artifact_id)
    except NotFoundError:
        raise PermanentJobFailure(f"the job's code package (artifact {ref.artifact_id}) is not among this "
                                  "tenant's artifacts; submit the job again") from None
    if record.sha256 != ref.sha256:
        raise PermanentJobFailure(f"the job's code reference names artifact {ref.artifact_id} with sha256 "
                                  f"{ref.sha256[:12]}…, but that artifact holds {record.sha256[:12]}…")
    cache_root = Path(backends.settings.home) / "code" / principal.tenant_id
    found = _cached(cache_root, ref.sha256)
    if found is not None:
        return found
    return materialize(service.read_bytes(principal, ref.artifact_id), ref.sha256, cache_root)


def code_folder(ctx: Any, spec: Any) -> str | None:
    """The job's code folder (fetched for this attempt, or reused), or None for a spec without code."""
    ref = getattr(spec, "code", None)
    if ref is None:
        return None
    folder = fetch_code(ctx.backends, ctx.principal, ref)
    print(f"code: {ref.sha256[:12]} in {folder}", flush=True)
    return str(folder)


def activate(folder: str | Path | None, modules: list[str] | tuple[str, ...] = ()) -> None:
    """Make ``folder`` the code this process imports from: first on ``sys.path``; other job code folders of the
    cache off it and the modules imported from them evicted, as are earlier imports of ``modules`` (top-level
    names) from anywhere else. A Ray worker process runs many jobs: two versions of a user's
    ``my_trainer.py`` must never mix."""
    if folder is None:
        return
    here = Path(folder).resolve()
    code_root = here.parent.parent if (here / _DONE).exists() else None  # $MLHUB_HOME/code/<tenant>/<sha>

    def elsewhere(p: str | None) -> bool:
        if not p:
            return False
        path = Path(p).resolve()
        return path != here and not path.is_relative_to(here)

    def other_job_code(p: str | None) -> bool:
        return code_root is not None and bool(p) and Path(p).resolve().is_relative_to(code_root) and elsewhere(p)

    sys.path[:] = [str(here)] + [p for p in sys.path if p != str(here) and not other_job_code(p)]
    tops = {m.split(".")[0] for m in modules}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if other_job_code(file) or (name.split(".")[0] in tops and elsewhere(file)):
            del sys.modules[name]


def trial_code(backends: Any, principal: Any, trainer: Any) -> dict[str, Any] | None:
    """What an HPO trial needs to run its trainer's packed code on any node: the verified package bytes (they
    travel in Ray's object store with the trainable) and where to extract them; None without code."""
    if trainer.code is None:
        return None
    from mlhub.artifact_records import ArtifactService

    fetch_code(backends, principal, trainer.code)  # checks the reference belongs to this tenant and matches
    data = ArtifactService(backends.db, backends.artifacts).read_bytes(principal, trainer.code.artifact_id)
    return {"data": data, "sha256": trainer.code.sha256, "tenant_id": principal.tenant_id}


def trial_folder(code: dict[str, Any] | None) -> str | None:
    """Inside a trial: the extracted code folder (made once per node and package, in the node's temporary
    folder: the driver's MLHUB_HOME need not exist where the trial runs), or None."""
    if code is None:
        return None
    import tempfile

    root = Path(tempfile.gettempdir()) / "mlhub-code" / code["tenant_id"]
    return str(materialize(code["data"], code["sha256"], root))


def run_local_loop(spec: Any, data: Any, report: Callable[[Any], None], working_dir: str | None,
                   allowed_roots: list[Path]) -> Any:
    """A custom ``entrypoint`` of a single-process framework (sklearn, baseline) run in this process with a
    :class:`~mlhub.training.distributed.LocalSession`; its final model, checked loadable, as a TrainedModel."""
    from mlhub.errors import ModelLoadError
    from mlhub.training.distributed import LocalSession, loop_for
    from mlhub.training.serialization import SUPPORTED_FORMATS, load_model
    from mlhub.training.torch_adapter import trained_model

    activate(working_dir, modules_needed(spec))
    loop = loop_for(spec, working_dir)
    session = LocalSession(spec, allowed_roots, report, data=data)
    session.working_dir = working_dir
    loop(session)
    final = session.final
    if final is None:
        raise PermanentJobFailure(f"entrypoint {spec.entrypoint} finished without passing final_model= to "
                                  "session.report()")
    if (spec.framework, final.model_format) not in SUPPORTED_FORMATS:
        expected = [f for fw, f in SUPPORTED_FORMATS if fw == spec.framework]
        raise PermanentJobFailure(f"entrypoint {spec.entrypoint} returned a {final.model_format!r} model; "
                                  f"framework {spec.framework} stores {', '.join(expected)}")
    try:
        load_model(spec.framework, final.model_format, final.payload)
    except ModelLoadError as exc:
        raise PermanentJobFailure(f"the model entrypoint {spec.entrypoint} produced cannot be loaded back: "
                                  f"{exc.message}") from None
    return trained_model(final.payload, final.model_format, final.info, data, framework=spec.framework)

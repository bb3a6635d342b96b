"""Placement groups that a job's Ray work reserved, released when the job's attempt ends.

Ray Train reserves a worker group's resources in a placement group (and Tune one per trial). A placement
group created anywhere under the detached orchestrator lives as long as the orchestrator, not as long as the
task that asked for it: when a training job's driver task is force-killed (cancelled, preempted, timed out,
or its process died), its workers die but their reservation stays, and the CPUs would be lost to the cluster.

So the job's processes record their groups here: one empty object per group, named by its id, under
``<storage path>/.mlhub-placement-groups/<tenant>-<job>/`` (no read-modify-write, so no races between
processes), and the orchestrator removes what is recorded once an attempt of the job has ended. The storage
path is Ray Train's own: a local folder on one machine, a shared filesystem, or an object-store URI
(``s3://``, ``gs://``, ``abfs://``...), reached through the same ``pyarrow.fs`` filesystems Ray Train uses, so
it works wherever checkpoints do.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("mlhub.orchestrator")

FOLDER = ".mlhub-placement-groups"


def _location(storage_path: str, tenant_id: str, job_id: int) -> tuple[Any, str] | None:
    """(pyarrow filesystem, folder) of a job's records; None without a storage path."""
    if not storage_path:
        return None
    import pyarrow.fs as pafs

    if "://" in storage_path:
        fs, base = pafs.FileSystem.from_uri(storage_path)
    else:
        fs, base = pafs.LocalFileSystem(), str(Path(storage_path).expanduser().absolute())
    return fs, f"{base.rstrip('/')}/{FOLDER}/{tenant_id}-{job_id}"


def record_placement_groups(storage_path: str, tenant_id: str, job_id: int, group_ids: Iterable[str]) -> int:
    """Record placement groups (hex ids) of a job; returns how many were written."""
    ids = [g for g in group_ids if g]
    where = _location(storage_path, tenant_id, job_id)
    if where is None or not ids:
        return 0
    fs, folder = where
    fs.create_dir(folder, recursive=True)
    for pg_hex in ids:
        bytes.fromhex(pg_hex)  # an id, never a path
        with fs.open_output_stream(f"{folder}/{pg_hex}"):
            pass
    return len(ids)


def record_current_placement_group(storage_path: str, tenant_id: str, job_id: int) -> str | None:
    """Record the placement group this worker runs in (if any); returns its id."""
    import ray.util

    pg = ray.util.get_current_placement_group()
    if pg is None:
        return None
    pg_hex = pg.id.hex()
    return pg_hex if record_placement_groups(storage_path, tenant_id, job_id, [pg_hex]) else None


def _listed(fs: Any, folder: str) -> list[str]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)


def recorded_placement_groups(storage_path: str, tenant_id: str, job_id: int) -> list[str]:
    """The placement groups recorded for a job (sorted hex ids)."""
    where = _location(storage_path, tenant_id, job_id)
    return [] if where is None else _listed(*where)


def release_placement_groups(storage_path: str, tenant_id: str, job_id: int) -> int:
    """Remove the recorded placement groups of a job that still exist, then the records; returns how many
    groups were removed."""
    where = _location(storage_path, tenant_id, job_id)
    recorded = [] if where is None else _listed(*where)
    if not recorded:
        return 0
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, placement_group_table

    table = placement_group_table()
    removed = 0
    for pg_hex in recorded:
        state = (table.get(pg_hex) or {}).get("state")
        if state is not None and state != "REMOVED":
            try:
                ray.util.remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg_hex))))
                removed += 1
            except Exception as exc:  # noqa: BLE001 - best effort: a group may go away on its own meanwhile
                log.warning("could not remove placement group %s of job %s: %s", pg_hex, job_id, exc)
    fs, folder = where
    try:
        fs.delete_dir(folder)
    except OSError as exc:  # FileNotFoundError included
        log.warning("could not delete the placement-group records of job %s: %s", job_id, exc)
    return removed

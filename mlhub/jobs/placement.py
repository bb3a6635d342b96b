"""Placement groups that a job's Ray work reserved, released when the job's attempt ends.

Ray Train reserves a worker group's resources in a placement group (and Tune one per trial). A placement
group created anywhere under the detached orchestrator lives as long as the orchestrator, not as long as the
task that asked for it: when a training job's driver task is force-killed (cancelled, preempted, timed out,
or its process died), its workers die but their reservation stays, and the CPUs would be lost to the cluster.

So the workers record their group here (one empty file per group, named by its id, in a folder of the job
under the Ray storage path: no read-modify-write races between processes), and the orchestrator removes what
is recorded once an attempt of the job has ended. Works where the storage path is a folder the orchestrator's
node sees (one machine, or a shared filesystem); with an object-store URI nothing is recorded.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger("mlhub.orchestrator")

FOLDER = ".mlhub-placement-groups"


def _folder(storage_path: str, tenant_id: str, job_id: int) -> Path | None:
    if not storage_path or "://" in storage_path:
        return None
    return Path(storage_path) / FOLDER / f"{tenant_id}-{job_id}"


def record_current_placement_group(storage_path: str, tenant_id: str, job_id: int) -> str | None:
    """Record the placement group this worker runs in (if any); returns its id."""
    import ray.util

    pg = ray.util.get_current_placement_group()
    folder = _folder(storage_path, tenant_id, job_id)
    if pg is None or folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    pg_hex = pg.id.hex()
    (folder / pg_hex).touch()
    return pg_hex


def release_placement_groups(storage_path: str, tenant_id: str, job_id: int) -> int:
    """Remove the recorded placement groups of a job that still exist; returns how many were removed."""
    folder = _folder(storage_path, tenant_id, job_id)
    if folder is None or not folder.exists():
        return 0
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, placement_group_table

    table = placement_group_table()
    removed = 0
    for entry in folder.iterdir():
        state = (table.get(entry.name) or {}).get("state")
        if state is not None and state != "REMOVED":
            try:
                ray.util.remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(entry.name))))
                removed += 1
            except Exception as exc:  # noqa: BLE001 - best effort: a group may go away on its own meanwhile
                log.warning("could not remove placement group %s of job %s: %s", entry.name, job_id, exc)
    shutil.rmtree(folder, ignore_errors=True)
    return removed

"""Where a job's placement groups are recorded for the orchestrator to free (mlhub.jobs.placement): a local
storage folder and an object-store style URI (``file://`` here: the same pyarrow filesystem route as
``s3://``/``gs://``). Removing real groups is tested on Ray in tests/integration/test_hpo_ray.py."""

from __future__ import annotations

import pytest

from mlhub.jobs import placement

A, B = "0a" * 18, "0b" * 18


@pytest.fixture(params=["path", "uri"])
def storage(request, tmp_path):
    folder = tmp_path / "ray-storage"
    return str(folder) if request.param == "path" else folder.as_uri()


def test_recorded_groups_are_listed_per_job_and_recording_twice_is_harmless(storage):
    assert placement.recorded_placement_groups(storage, "acme", 7) == []
    assert placement.record_placement_groups(storage, "acme", 7, [B, A]) == 2
    assert placement.record_placement_groups(storage, "acme", 7, [A]) == 1
    assert placement.record_placement_groups(storage, "acme", 8, [B]) == 1
    assert placement.recorded_placement_groups(storage, "acme", 7) == [A, B]
    assert placement.recorded_placement_groups(storage, "acme", 8) == [B]
    assert placement.recorded_placement_groups(storage, "other", 7) == []


def test_records_land_under_the_storage_path(storage, tmp_path):
    placement.record_placement_groups(storage, "acme", 7, [A])
    assert (tmp_path / "ray-storage" / placement.FOLDER / "acme-7" / A).is_file()


def test_an_id_is_never_a_path(storage, tmp_path):
    with pytest.raises(ValueError):
        placement.record_placement_groups(storage, "acme", 7, ["../../escape"])
    assert not (tmp_path / "escape").exists()


def test_nothing_is_recorded_without_a_storage_path():
    assert placement.record_placement_groups("", "acme", 7, [A]) == 0
    assert placement.recorded_placement_groups("", "acme", 7) == []
    assert placement.release_placement_groups("", "acme", 7) == 0


def test_release_with_nothing_recorded_needs_no_cluster(storage):
    assert placement.release_placement_groups(storage, "acme", 7) == 0

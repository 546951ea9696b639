"""The local volume driver's store: names, idempotent create, in-use refusal with Docker's
message, atomic metadata that survives a reload, leftovers of a cut-short create removed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.volumes.store import ANONYMOUS_LABEL, VolumeStore, copy_image_content
from common.errdefs import Conflict, InvalidParameter, NotFound


def test_create_makes_the_data_directory_and_metadata(tmp_path: Path):
    store = VolumeStore(tmp_path)
    volume = store.create("data1", labels={"a": "b"})
    assert (tmp_path / "data1" / "_data").is_dir()
    meta = json.loads((tmp_path / "data1" / "volume.json").read_text())
    assert (meta["Name"], meta["Labels"]) == ("data1", {"a": "b"})
    assert volume.to_json()["Mountpoint"] == str(tmp_path / "data1" / "_data")


def test_create_of_an_existing_name_returns_the_existing_volume(tmp_path: Path):
    store = VolumeStore(tmp_path)
    first = store.create("same1", labels={"a": "b"})
    assert store.create("same1", labels={"c": "d"}) is first


def test_empty_labels_and_options_are_null_as_docker_shows_them(tmp_path: Path):
    data = VolumeStore(tmp_path).create("plain1").to_json()
    assert (data["Labels"], data["Options"], data["Driver"], data["Scope"]) == (None, None, "local", "local")


def test_anonymous_volume_gets_a_64_hex_name_and_dockers_label(tmp_path: Path):
    volume = VolumeStore(tmp_path).create()
    assert len(volume.name) == 64 and volume.labels == {ANONYMOUS_LABEL: ""}


def test_invalid_name_is_refused_with_the_local_drivers_message(tmp_path: Path):
    with pytest.raises(InvalidParameter) as info:
        VolumeStore(tmp_path).create("a")
    assert info.value.message == (
        "create a: volume name is too short, names should be at least two alphanumeric characters")
    assert list(tmp_path.iterdir()) == []


def test_unknown_driver_is_plugin_not_found(tmp_path: Path):
    with pytest.raises(NotFound) as info:
        VolumeStore(tmp_path).create("x1", driver="nfs")
    assert info.value.message == 'create x1: error looking up volume plugin nfs: plugin "nfs" not found'


def test_tmpfs_driver_options_are_refused_naming_them(tmp_path: Path):
    with pytest.raises(InvalidParameter) as info:
        VolumeStore(tmp_path).create("t1", options={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    assert info.value.message == ("shoal's local volume driver supports only bind options (type=none, o=bind, "
                                  "device=/path); got device=tmpfs,o=size=1m,type=tmpfs")
    assert list(tmp_path.iterdir()) == []


def test_bind_options_point_the_mountpoint_at_the_device(tmp_path: Path):
    device = tmp_path / "dev"
    device.mkdir()
    store = VolumeStore(tmp_path / "vols")
    volume = store.create("b1", options={"type": "none", "o": "bind", "device": str(device)})
    assert volume.mountpoint == str(device)


def test_volume_in_use_is_refused_with_dockers_message(tmp_path: Path):
    store = VolumeStore(tmp_path)
    store.create("busy1")
    with pytest.raises(Conflict) as info:
        store.remove("busy1", ["c1" * 32, "c2" * 32])
    assert info.value.message == f"remove busy1: volume is in use - [{'c1' * 32}, {'c2' * 32}]"
    assert (tmp_path / "busy1" / "_data").is_dir()


def test_remove_deletes_the_files_and_a_missing_name_is_no_such_volume(tmp_path: Path):
    store = VolumeStore(tmp_path)
    store.create("gone1")
    aside = store.remove("gone1", [])
    assert not (tmp_path / "gone1").exists() and store.list() == []
    store.purge(aside)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NotFound) as info:
        store.remove("gone1", [])
    assert info.value.message == "get gone1: no such volume"


def test_volumes_survive_a_reload_and_leftovers_of_a_crash_are_removed(tmp_path: Path):
    VolumeStore(tmp_path).create("kept1", labels={"k": "v"})
    (tmp_path / ".creating-half1" / "_data").mkdir(parents=True)
    (tmp_path / ".removing-old1-abcd").mkdir()
    store = VolumeStore(tmp_path)
    assert [v.name for v in store.list()] == ["kept1"]
    assert store.get("kept1").labels == {"k": "v"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept1"]


def test_unreadable_metadata_is_a_warning_not_a_failure(tmp_path: Path):
    (tmp_path / "bad1").mkdir()
    (tmp_path / "bad1" / "volume.json").write_text("{not json")
    store = VolumeStore(tmp_path)
    assert store.list() == []
    assert store.warnings and "bad1" in store.warnings[0]


def test_first_mount_copy_fills_an_empty_volume_and_skips_a_used_one(tmp_path: Path):
    image = tmp_path / "image"
    (image / "etc").mkdir(parents=True)
    (image / "etc" / "conf").write_text("image\n")
    empty, used = tmp_path / "v1", tmp_path / "v2"
    empty.mkdir()
    used.mkdir()
    (used / "mine").write_text("mine\n")
    assert copy_image_content(image, "/etc", str(empty)) is True
    assert (empty / "conf").read_text() == "image\n"
    assert copy_image_content(image, "/etc", str(used)) is False
    assert sorted(p.name for p in used.iterdir()) == ["mine"]


def test_first_mount_copy_through_an_image_symlink_stays_in_the_image(tmp_path: Path):
    image = tmp_path / "image"
    (image / "etc").mkdir(parents=True)
    (image / "etc" / "conf").write_text("image\n")
    (image / "data").symlink_to("/etc")  # means the image's /etc, never the host's
    volume = tmp_path / "v"
    volume.mkdir()
    copy_image_content(image, "/data", str(volume))
    assert sorted(p.name for p in volume.iterdir()) == ["conf"]


def test_a_volume_held_by_a_create_in_progress_counts_as_in_use(tmp_path: Path):
    from shoal.engine.container_mounts import users_of

    store = VolumeStore(tmp_path)
    store.create("held1")
    store.held["held1"] = 1
    assert users_of({}, "held1", store) == ["(a container being created)"]
    assert users_of({}, "held1") == []

"""`docker rmi` in the image store: moby's untag/delete rules, its conflicts with containers and
tags (Docker's exact wording), and removal that is atomic with respect to the index."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from agent.images.removal import chain_ids
from agent.images.store import ImageNotFound, ImageStore, ImageUser
from common.errdefs import Conflict
from tests.unit.test_image_store import BASE, TOP, config_for, docker_save, sha, store_leftovers

RUNNING = "c0ffee" * 10 + "0000"
STOPPED = "decade" * 10 + "1111"
ID = "sha256:" + sha(config_for([BASE]))
SHORT = ID[7:19]


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    s = ImageStore(tmp_path / "images")
    s.load(io.BytesIO(docker_save([([BASE], ["busybox:latest"])])))
    return s


def running() -> list[ImageUser]:
    return [ImageUser(RUNNING, ID, True)]


def stopped() -> list[ImageUser]:
    return [ImageUser(STOPPED, ID, False)]


def test_remove_last_tag_deletes_image_and_its_layer(store: ImageStore) -> None:
    rootfs = store.get("busybox").rootfs
    assert store.remove("busybox") == [
        {"Untagged": "busybox:latest"}, {"Deleted": ID}, {"Deleted": "sha256:" + sha(BASE)},
    ]
    store.empty_trash()
    assert store.list() == []
    assert not rootfs.exists()
    assert store_leftovers(store) == []


def test_remove_by_id_untags_its_single_tag_and_deletes(store: ImageStore) -> None:
    assert store.remove(SHORT) == [
        {"Untagged": "busybox:latest"}, {"Deleted": ID}, {"Deleted": "sha256:" + sha(BASE)},
    ]


def test_deleted_layers_are_listed_top_first_as_chain_ids(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    store.load(io.BytesIO(docker_save([([BASE, TOP], ["two:1"])])))
    image_id = store.get("two:1").id
    chain = chain_ids(["sha256:" + sha(BASE), "sha256:" + sha(TOP)])
    assert store.remove("two:1") == [{"Untagged": "two:1"}, {"Deleted": image_id},
                                     {"Deleted": chain[1]}, {"Deleted": chain[0]}]


def test_layer_shared_with_a_remaining_image_is_not_reported_deleted(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    store.load(io.BytesIO(docker_save([([BASE], ["base:1"]), ([BASE, TOP], ["two:1"])])))
    image_id = store.get("two:1").id
    chain = chain_ids(["sha256:" + sha(BASE), "sha256:" + sha(TOP)])
    assert store.remove("two:1") == [{"Untagged": "two:1"}, {"Deleted": image_id}, {"Deleted": chain[1]}]
    assert store.get("base:1").rootfs.is_dir()


def test_missing_image_is_no_such_image(store: ImageStore) -> None:
    with pytest.raises(ImageNotFound) as refused:
        store.remove("nope")
    assert refused.value.message == "No such image: nope:latest"


def test_tag_used_by_a_container_needs_force(store: ImageStore) -> None:
    with pytest.raises(Conflict) as refused:
        store.remove("busybox", users=running())
    assert refused.value.message == (
        f'conflict: unable to remove repository reference "busybox" (must force) - container '
        f"{RUNNING[:12]} is using its referenced image {SHORT}"
    )
    assert store.get("busybox").id == ID


def test_forced_untag_under_a_running_container_keeps_the_image(store: ImageStore) -> None:
    assert store.remove("busybox", force=True, users=running()) == [{"Untagged": "busybox:latest"}]
    assert [(i.id, i.repo_tags) for i in store.list()] == [(ID, [])]
    assert store.get(ID).rootfs.is_dir()


def test_id_used_by_a_running_container_cannot_be_forced(store: ImageStore) -> None:
    for force in (False, True):
        with pytest.raises(Conflict) as refused:
            store.remove(SHORT, force=force, users=running())
        assert refused.value.message == (
            f"conflict: unable to delete {SHORT} (cannot be forced) - image is being used by running "
            f"container {RUNNING[:12]}"
        )
    assert store.get("busybox").id == ID


def test_id_with_several_tags_must_be_forced(store: ImageStore) -> None:
    store.tag(ID, "other:1")
    with pytest.raises(Conflict) as refused:
        store.remove(SHORT)
    assert refused.value.message == (
        f"conflict: unable to delete {SHORT} (must be forced) - image is referenced in multiple repositories"
    )
    assert store.remove(SHORT, force=True) == [
        {"Untagged": "busybox:latest"}, {"Untagged": "other:1"}, {"Deleted": ID}, {"Deleted": "sha256:" + sha(BASE)},
    ]


def test_id_used_by_a_stopped_container_must_be_forced(store: ImageStore) -> None:
    with pytest.raises(Conflict) as refused:
        store.remove(SHORT, users=stopped())
    assert refused.value.message == (
        f"conflict: unable to delete {SHORT} (must be forced) - image is being used by stopped "
        f"container {STOPPED[:12]}"
    )


def test_forced_removal_under_a_stopped_container_untags_and_keeps_its_rootfs(store: ImageStore) -> None:
    assert store.remove(SHORT, force=True, users=stopped()) == [{"Untagged": "busybox:latest"}]
    assert store.get(ID).rootfs.is_dir()  # the container's overlay still has it as lower dir


def test_other_tag_of_a_used_image_is_removed_without_force(store: ImageStore) -> None:
    store.tag(ID, "other:1")
    assert store.remove("other:1", users=running()) == [{"Untagged": "other:1"}]


def test_users_of_other_images_do_not_matter(store: ImageStore) -> None:
    other = [ImageUser(RUNNING, "sha256:" + "f" * 64, True)]
    assert store.remove("busybox", users=other)[1] == {"Deleted": ID}


def test_removal_persists_across_instances(store: ImageStore, tmp_path: Path) -> None:
    store.remove("busybox")
    assert ImageStore(tmp_path / "images").list() == []


def test_kill_between_index_write_and_file_removal_leaves_no_orphan(store: ImageStore, tmp_path: Path) -> None:
    image_dir = store.root / "sha256" / ID[7:]
    store.remove("busybox")  # index written, files moved to tmp/ but not yet deleted (no empty_trash)
    assert not image_dir.exists()
    assert os.listdir(store.root / "tmp") == [f"deleted-{ID[7:]}"]
    again = ImageStore(tmp_path / "images")
    assert again.list() == []
    assert store_leftovers(again) == []


def test_kill_before_the_files_moved_leaves_no_orphan_after_restart(store: ImageStore, tmp_path: Path) -> None:
    # What a SIGKILL right after the index write and before the rename leaves: an image dir
    # the index does not name.
    image_dir = store.root / "sha256" / ID[7:]
    store._write_index({}, {})
    assert image_dir.is_dir()
    again = ImageStore(tmp_path / "images")
    assert again.list() == []
    assert store_leftovers(again) == []

"""`docker rmi` worked out on copies of the store's index: moby's ImageDelete rules (untag,
delete, conflicts with tags and with the containers that use an image), without parent images.

Used by agent.images.store, which writes the outcome; the engine supplies the image users.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from common.errdefs import Conflict

T = TypeVar("T")  # what the store keeps per image; carried over untouched


@dataclass(slots=True, frozen=True)
class ImageUser:
    """A container that uses an image: what `docker rmi` must not pull the rootfs from under."""

    container_id: str
    image_id: str
    running: bool


def is_id_prefix(image_id: str, ref: str) -> bool:
    """moby's isImageIDPrefix: `ref` names the image by (a prefix of) its id, not by a tag."""
    return bool(ref) and (image_id.startswith(ref) or image_id.removeprefix("sha256:").startswith(ref))


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI ChainIDs of a layer stack: what `docker rmi` reports as deleted layers."""
    chain: list[str] = []
    for diff_id in diff_ids:
        if chain:
            diff_id = "sha256:" + hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest()
        chain.append(diff_id)
    return chain


class Removal(Generic[T]):
    """One `docker rmi` worked out on copies of the index (moby's ImageDelete, without parent
    images): what to untag, whether to delete, or which conflict refuses it. The caller writes
    `images` and `tags` back when `changed`, and removes the files when `deleted`."""

    def __init__(self, images: dict[str, T], tags: dict[str, str], layers_of: Callable[[str], list[str]],
                 image_id: str, users: list[ImageUser], force: bool) -> None:
        self.layers_of = layers_of  # diff_ids of an image
        self.image_id = image_id
        self.short = image_id.removeprefix("sha256:")[:12]
        self.users = [u for u in users if u.image_id == image_id]
        self.force = force
        self.images = dict(images)
        self.tags = dict(tags)
        self.records: list[dict[str, str]] = []
        self.changed = False
        self.deleted = False

    def _tags_of_image(self) -> list[str]:
        return sorted(t for t, i in self.tags.items() if i == self.image_id)

    def _untag(self, tag: str) -> None:
        del self.tags[tag]
        self.records.append({"Untagged": tag})
        self.changed = True

    def _conflict(self, *, hard: bool, soft: bool) -> Conflict | None:
        """moby's checkImageDeleteConflict: running users are hard conflicts, other tags and
        stopped users soft ones (`force` overrides those)."""
        running = next((u for u in self.users if u.running), None)
        if hard and running is not None:
            return self._error("cannot be forced", f"image is being used by running container {running.container_id[:12]}")
        if soft and self._tags_of_image():
            return self._error("must be forced", "image is referenced in multiple repositories")
        stopped = next((u for u in self.users if not u.running), None)
        if soft and stopped is not None:
            return self._error("must be forced", f"image is being used by stopped container {stopped.container_id[:12]}")
        return None

    def _error(self, how: str, why: str) -> Conflict:
        return Conflict(f"conflict: unable to delete {self.short} ({how}) - {why}")

    def by_name(self, ref: str, name: str) -> None:
        tags = self._tags_of_image()
        if not self.force and len(tags) == 1 and self.users:
            # Untagging would leave a dangling image under a container: moby wants force.
            raise Conflict(
                f'conflict: unable to remove repository reference "{ref}" (must force) - container '
                f"{self.users[0].container_id[:12]} is using its referenced image {self.short}"
            )
        self._untag(name)
        if not self._tags_of_image():
            self._delete(quiet=True)

    def by_id(self) -> None:
        tags = self._tags_of_image()
        if len(tags) == 1:
            conflict = self._conflict(hard=True, soft=False) or (
                None if self.force else self._stopped_conflict()
            )
            if conflict is not None:
                raise conflict
            self._untag(tags[0])
        self._delete(quiet=False)

    def _stopped_conflict(self) -> Conflict | None:
        stopped = next((u for u in self.users if not u.running), None)
        if stopped is None:
            return None
        return self._error("must be forced", f"image is being used by stopped container {stopped.container_id[:12]}")

    def _delete(self, quiet: bool) -> None:
        conflict = self._conflict(hard=True, soft=not self.force)
        if conflict is not None:
            if quiet and (self._tags_of_image() or self.users):
                return  # an untag by name that stops there, as moby's quiet delete
            raise conflict
        for tag in self._tags_of_image():
            self._untag(tag)
        if self.users:
            # Forced past a stopped container: that container's overlay uses this rootfs as
            # its lower dir, so the image stays (untagged, <none>) until it can really go.
            # moby deletes the image record and keeps the layers by reference count.
            return
        layers = self.layers_of(self.image_id)
        del self.images[self.image_id]
        self.records.append({"Deleted": self.image_id})
        kept = {c for i in self.images for c in chain_ids(self.layers_of(i))}
        self.records.extend({"Deleted": c} for c in reversed(chain_ids(layers)) if c not in kept)
        self.changed = self.deleted = True

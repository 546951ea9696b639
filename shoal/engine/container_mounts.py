"""A container's user mounts through its life: parsed, checked and given volumes at create,
turned into runc mounts at start, anonymous volumes dropped at remove; inspect's Mounts.

shoal.engine.engine calls at_create/at_start/at_remove (one line each); the parsing is
agent.volumes.specs, the volumes agent.volumes.store, the OCI side agent.executor.mounts.
"""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from agent.executor.mounts import MountTargetError, resolve_in_root
from agent.executor.spec import Mount
from agent.volumes.specs import MountPoint, MountSpecError, parse_all
from agent.volumes.store import VolumeStore, copy_image_content
from common.errdefs import InvalidParameter, NotFound, SystemError_

log = logging.getLogger(__name__)


def _get(data: Any, key: str) -> Any:
    if not isinstance(data, dict):
        return None
    return next((v for k, v in data.items() if k.lower() == key.lower()), None)


def points_of(record: Any) -> list[MountPoint]:
    return [MountPoint.from_dict(m) for m in getattr(record, "mounts", None) or []]


def users_of(containers: dict[str, Any], name: str, store: VolumeStore | None = None) -> list[str]:
    """Ids of the containers (any state) whose mounts name the volume; with the store, a
    create still filling it counts too (its record is not kept yet)."""
    users = sorted(c.id for c in containers.values()
                   if any(m.get("type") == "volume" and m.get("name") == name for m in c.mounts or []))
    if store is not None and store.held.get(name):
        users.append("(a container being created)")
    return users


async def at_create(store: VolumeStore, host_config: dict[str, Any], config: dict[str, Any],
                    image: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The create's mounts as record entries, and the names of the volumes this call made
    (for discard() when the create fails after). Refused: InvalidParameter with Docker's text."""
    image_volumes = _get(image.config or {}, "Volumes")
    try:
        points = parse_all(host_config or {}, _get(config, "Volumes"), image_volumes)
    except MountSpecError as exc:
        raise InvalidParameter(exc.message) from None
    for point in points:
        if point.type == "bind" and not point.create_source and not os.path.exists(point.source):
            raise InvalidParameter(
                f'invalid mount config for type "bind": bind source path does not exist: {point.source}'
            )
    made: list[str] = []
    held: list[str] = []
    try:
        for point in points:
            if point.type != "volume":
                continue
            existed = point.name in store.volumes
            volume = store.create(point.name, point.driver if point.driver != "local" else "",
                                  point.volume_labels, point.volume_options, anonymous=point.anonymous)
            if not existed:
                made.append(volume.name)
            # Held until this returns: the engine keeps the record before it awaits again,
            # so a prune or rm meanwhile sees the volume in use.
            store.held[volume.name] = store.held.get(volume.name, 0) + 1
            held.append(volume.name)
            point.name, point.source = volume.name, volume.mountpoint
            if point.copy_data and not volume.options:
                await asyncio.to_thread(copy_image_content, Path(image.rootfs), point.destination, volume.mountpoint)
    except BaseException:
        _release(store, held)
        discard(store, made)
        raise
    _release(store, held)
    return [p.to_dict() for p in points], made


def _release(store: VolumeStore, names: list[str]) -> None:
    for name in names:
        left = store.held.get(name, 1) - 1
        if left > 0:
            store.held[name] = left
        else:
            store.held.pop(name, None)


def discard(store: VolumeStore, names: list[str]) -> None:
    """Removes the volumes a failed create made (new, so small: done in place)."""
    for name in names:
        try:
            store.purge(store.remove(name, [], force=True))
        except Exception:  # noqa: BLE001 - best effort on a failure path
            log.exception("cannot remove volume %s made by a create that failed", name)


def at_start(store: VolumeStore, record: Any, image_rootfs: Path) -> list[Mount]:
    """runc mounts for the record's user mounts (blocking: run in a thread). Each destination
    is resolved inside the image's root (the container's root at start, its upper layer being
    new); a -v host directory that does not exist is created (0755), as Docker does."""
    mounts: list[Mount] = []
    for point in points_of(record):
        if point.type == "volume":
            try:
                source = store.get(point.name).mountpoint
            except NotFound:
                raise InvalidParameter(f"error while mounting volume '{point.source}': volume {point.name} "
                                       "does not exist any more") from None
        else:
            source = point.source
        if point.type == "bind" and point.create_source and not os.path.exists(source):
            try:
                os.makedirs(source, mode=0o755, exist_ok=True)
            except OSError as exc:
                raise SystemError_(f"error while creating mount source path '{source}': "
                                   f"mkdir {source}: {exc.strerror or exc}") from exc
        try:
            destination = resolve_in_root(image_rootfs, point.destination)
        except MountTargetError as exc:
            raise InvalidParameter(exc.message) from None
        if point.type == "tmpfs":
            options = tuple(o for o in point.tmpfs_options.split(",") if o)
            mounts.append(Mount(source="tmpfs", destination=destination, readonly=not point.rw, kind="tmpfs",
                                options=options))
        else:
            options = (point.propagation,) if point.propagation and point.propagation != "rprivate" else ()
            mounts.append(Mount(source=source, destination=destination, readonly=not point.rw, options=options))
    return mounts


async def at_remove(store: VolumeStore, record: Any, containers: dict[str, Any], remove_volumes: bool) -> None:
    """`rm -v` / `--rm`: the container's anonymous volumes go when no other container uses them
    (named volumes always stay, as with Docker)."""
    if not remove_volumes:
        return
    for point in points_of(record):
        if point.type != "volume" or not point.anonymous:
            continue
        users = [cid for cid in users_of(containers, point.name, store) if cid != record.id]
        if users:
            continue
        try:
            aside = store.remove(point.name, [], force=True)
            await asyncio.to_thread(store.purge, aside)
        except Exception:  # noqa: BLE001 - the container is gone already; the volume is logged
            log.exception("container %s: cannot remove its anonymous volume %s", record.id[:12], point.name)


def inspect_json(record: Any) -> list[dict[str, Any]]:
    """inspect's and ps's Mounts, in Docker's shape (HostConfig.Tmpfs entries are not listed)."""
    out: list[dict[str, Any]] = []
    for point in points_of(record):
        if not point.shown:
            continue
        if point.type == "bind":
            out.append({"Type": "bind", "Source": point.source, "Destination": point.destination,
                        "Mode": point.mode, "RW": point.rw, "Propagation": point.propagation})
        elif point.type == "volume":
            out.append({"Type": "volume", "Name": point.name, "Source": point.source,
                        "Destination": point.destination, "Driver": "local",
                        # Docker shows "z" for a named volume given without a mode
                        "Mode": point.mode or ("" if point.anonymous else "z"),
                        "RW": point.rw, "Propagation": ""})
        else:
            out.append({"Type": "tmpfs", "Source": "", "Destination": point.destination, "Mode": "",
                        "RW": point.rw, "Propagation": ""})
    return out

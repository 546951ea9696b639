"""Container verbs around the lifecycle: rename, container/image prune and disk usage (`system df`).

Functions of the Engine (shoal.engine.engine) and its records; called by shoal.api.routes_verbs.
They take the engine's per-container lock and emit its events as its own methods do.
"""
from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.network import netns as namespaces
from common.errdefs import Conflict, InvalidParameter, NotFound
from shoal.engine.helpers import label_filter
from shoal.engine.names import validate_container_name

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


# ---- rename -------------------------------------------------------------------------

async def rename_container(engine: Any, ref: str, new_name: str) -> None:
    """moby's ContainerRename: names checked, DNS names and the /etc/hosts of containers that
    link to it follow, a `rename` event with the old name."""
    if not ref or not new_name:
        raise InvalidParameter("Neither old nor new names may be empty")
    container = engine.get_container(ref)
    async with engine._lock(container.id):
        old_name = container.name
        if new_name.lstrip("/") == old_name:
            raise InvalidParameter("Renaming a container with the same name as its current name")
        try:  # dockerd's wording wraps the name checks
            new_name = validate_container_name("/" + new_name.lstrip("/"))
            engine._check_name_free(new_name)
        except (InvalidParameter, Conflict) as exc:
            raise type(exc)(f"Error when allocating new name: {exc.message}") from None
        container.name = new_name
        try:
            engine._save(container)
        except Exception:
            container.name = old_name
            raise
        if container.state == "running" and container.netns:
            await engine.sandboxes.register_dns(container, str(namespaces.netns_path(container.netns)))
        for other in engine.containers.values():  # /etc/hosts lines of links name the container
            if other.state == "running" and any(cid == container.id for cid, _ in other.links):
                engine.sandboxes.write_etc_files(other)
    engine.emit_container(container, "rename", oldName="/" + old_name)


# ---- prune --------------------------------------------------------------------------

def parse_until(value: str, now: float) -> float:
    """The `until` prune filter as moby's timetypes.GetTimestamp reads it: a Go duration
    before now ("24h", "1h30m"), unix seconds, or an RFC 3339 date/time."""
    if _DURATION.fullmatch(value):
        return now - sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    from shoal.api.convert import parse_time  # pure helper; imported here to keep engine below api

    parsed = parse_time(value if "T" in value else value + "T00:00:00Z")
    if parsed is None:
        raise InvalidParameter(f"failed to parse value as time or duration: \"{value}\"")
    return parsed.timestamp()


def _prune_filters(filters: Mapping[str, list[str]]) -> tuple[float | None, list[str], list[str]]:
    for key in filters:
        if key not in ("until", "label", "label!"):
            raise InvalidParameter(f"invalid filter '{key}'")
    until = None
    if filters.get("until"):
        if len(filters["until"]) > 1:
            raise InvalidParameter("more than one until filter specified")
        until = parse_until(filters["until"][0], time.time())
    return until, list(filters.get("label", [])), list(filters.get("label!", []))


def _passes(labels: Mapping[str, str], created: float, until: float | None, label: list[str],
            not_label: list[str]) -> bool:
    if until is not None and created >= until:
        return False
    if not all(label_filter(dict(labels), v) for v in label):
        return False
    return not any(label_filter(dict(labels), v) for v in not_label)


async def prune_containers(engine: Any, filters: Mapping[str, list[str]]) -> dict[str, Any]:
    """POST /containers/prune: every stopped container (not running, not restarting)."""
    from shoal.api.convert import unix_seconds

    until, label, not_label = _prune_filters(filters)
    deleted: list[str] = []
    reclaimed = 0
    for container in list(engine.containers.values()):
        if container.state == "running" or container.restarting:
            continue
        if not _passes(container.labels, unix_seconds(container.created), until, label, not_label):
            continue
        size = await asyncio.to_thread(_tree_size, engine.runtime.state_root / container.id / "upper")
        try:
            await engine.remove_container(container.id)
        except (NotFound, Conflict):
            continue  # removed or started meanwhile
        deleted.append(container.id)
        reclaimed += size
    engine.events.emit("container", "prune", "", {"reclaimed": str(reclaimed)})
    return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}


async def prune_images(engine: Any, filters: Mapping[str, list[str]]) -> dict[str, Any]:
    """POST /images/prune: dangling images (dangling=false: every image) no container uses."""
    from shoal.api.convert import unix_seconds

    rest = {k: v for k, v in filters.items() if k != "dangling"}
    until, label, not_label = _prune_filters(rest)
    dangling_only = True
    if filters.get("dangling"):
        raw = filters["dangling"][0].lower()
        if raw not in ("true", "false", "1", "0"):
            raise InvalidParameter(f"invalid filter 'dangling={filters['dangling'][0]}'")
        dangling_only = raw in ("true", "1")
    used = {c.image_id for c in engine.containers.values()}
    deleted: list[dict[str, str]] = []
    reclaimed = 0
    for image in engine.images.list():
        if image.id in used or (dangling_only and image.repo_tags):
            continue
        labels = (image.config or {}).get("Labels") or {}
        if not _passes(labels, unix_seconds(image.created), until, label, not_label):
            continue
        try:
            records = await engine.remove_image(image.id, force=True)
        except (NotFound, Conflict):
            continue
        deleted += records
        if any("Deleted" in r for r in records):
            reclaimed += image.size
    engine.events.emit("image", "prune", "", {"reclaimed": str(reclaimed)})
    return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}


# ---- system df ----------------------------------------------------------------------

def _tree_size(root: Path) -> int:
    """Bytes of the regular files under root, not following links or crossing mounts."""
    total = 0
    try:
        device = root.lstat().st_dev
    except OSError:
        return 0
    for directory, dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            total += st.st_size
        kept = []
        for name in dirs:
            try:
                if os.lstat(os.path.join(directory, name)).st_dev == device:
                    kept.append(name)
            except OSError:
                continue
        dirs[:] = kept
    return total


async def disk_usage(engine: Any, summary: Any) -> dict[str, Any]:
    """GET /system/df. `summary(container)` gives the container's /containers/json entry and
    `image_summary(image)` its /images/json entry (shoal.api.convert)."""
    from shoal.api import convert

    per_image: dict[str, int] = {}
    for container in engine.containers.values():
        per_image[container.image_id] = per_image.get(container.image_id, 0) + 1
    images = []
    layers = 0
    for image in engine.images.list():
        entry = convert.image_summary(image)
        entry["Containers"] = per_image.get(image.id, 0)
        entry["SharedSize"] = 0
        images.append(entry)
        layers += image.size
    containers = []
    for container in sorted(engine.containers.values(), key=lambda c: c.created, reverse=True):
        entry = summary(container)
        size_rw = await asyncio.to_thread(_tree_size, engine.runtime.state_root / container.id / "upper")
        image = next((i for i in images if i["Id"] == container.image_id), None)
        entry["SizeRw"] = size_rw
        entry["SizeRootFs"] = size_rw + (image["Size"] if image else 0)
        containers.append(entry)
    return {"LayersSize": layers, "Images": images, "Containers": containers, "Volumes": [], "BuildCache": []}

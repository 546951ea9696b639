"""Volume routes of the Docker API: create, list, inspect, remove, prune (the local driver).

Calls agent.volumes.store through the engine's `volumes`; which containers use a volume comes
from the engine's records (shoal.engine.container_mounts.users_of).
"""
from __future__ import annotations

import asyncio
import os
from typing import Any

from aiohttp import web

from shoal.api import params
from shoal.api.server import ENGINE, add_route, json_response
from shoal.api.versioned import request_version
from shoal.engine.container_mounts import users_of
from shoal.engine.errors import InvalidParameter

_FILTERS = ("name", "driver", "label", "dangling")
_PRUNE_FILTERS = ("label", "label!", "all")
# From API 1.42 (Docker 23) prune removes only anonymous volumes unless all=true.
_PRUNE_ANONYMOUS_FROM = "1.42"


def _label_match(labels: dict[str, str], want: str) -> bool:
    key, sep, value = want.partition("=")
    return key in labels and (not sep or labels[key] == value)


def _string_map(body: dict[str, Any], key: str) -> dict[str, str]:
    value = params.get_ci(body, key) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidParameter(f"invalid JSON: {key} must be an object of strings")
    return dict(value)


async def create_volume(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    body = params.parse_json_body(await request.read())
    name = params.get_ci(body, "Name") or ""
    driver = params.get_ci(body, "Driver") or ""
    if not isinstance(name, str) or not isinstance(driver, str):
        raise InvalidParameter("invalid JSON: Name and Driver must be strings")
    volume = engine.volumes.create(name, driver, _string_map(body, "Labels"), _string_map(body, "DriverOpts"))
    return json_response(volume.to_json(), status=201)


async def list_volumes(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    filters = params.parse_filters(request.query.get("filters"))
    for key in filters:
        if key not in _FILTERS:
            raise InvalidParameter(f"invalid filter '{key}'")
    volumes = []
    for volume in engine.volumes.list():
        if filters.get("name") and not any(n in volume.name for n in filters["name"]):
            continue
        if filters.get("driver") and "local" not in filters["driver"]:
            continue
        if not all(_label_match(volume.labels, want) for want in filters.get("label", [])):
            continue
        if filters.get("dangling"):
            dangling = filters["dangling"][0].lower() in ("true", "1")
            if (not users_of(engine.containers, volume.name, engine.volumes)) != dangling:
                continue
        volumes.append(volume.to_json())
    return json_response({"Volumes": volumes, "Warnings": None})


async def inspect_volume(request: web.Request) -> web.Response:
    return json_response(request.app[ENGINE].volumes.get(request.match_info["name"]).to_json())


async def remove_volume(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    name = request.match_info["name"]
    users = users_of(engine.containers, name, engine.volumes)
    aside = engine.volumes.remove(name, users, params.bool_value(request.query.get("force")))
    await asyncio.to_thread(engine.volumes.purge, aside)
    return web.Response(status=204)


async def prune_volumes(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    filters = params.parse_filters(request.query.get("filters"))
    for key in filters:
        if key not in _PRUNE_FILTERS:
            raise InvalidParameter(f"invalid filter '{key}'")
    # compared as moby's versions.LessThan: a version padded with thousands of zeros is not an int() to parse
    anonymous_only = not params.version_before(request_version(request), _PRUNE_ANONYMOUS_FROM)
    if filters.get("all"):
        anonymous_only = not params.bool_value(filters["all"][0])
    deleted, reclaimed = [], 0
    for volume in engine.volumes.list():
        if users_of(engine.containers, volume.name, engine.volumes) or (anonymous_only and not volume.anonymous):
            continue
        if not all(_label_match(volume.labels, want) for want in filters.get("label", [])):
            continue
        if any(_label_match(volume.labels, want) for want in filters.get("label!", [])):
            continue
        if not volume.options:  # a bind volume's files are the host directory's: not reclaimed
            reclaimed += await asyncio.to_thread(_size, volume.mountpoint)
        if users_of(engine.containers, volume.name, engine.volumes):
            continue  # taken by a create while its size was counted
        await asyncio.to_thread(engine.volumes.purge, engine.volumes.remove(volume.name, []))
        deleted.append(volume.name)
    return json_response({"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed})


def _size(path: str) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def add_routes(app: web.Application) -> None:
    add_route(app, "POST", "/volumes/create", create_volume)
    add_route(app, "GET", "/volumes", list_volumes)
    add_route(app, "POST", "/volumes/prune", prune_volumes)
    add_route(app, "GET", "/volumes/{name}", inspect_volume)
    add_route(app, "DELETE", "/volumes/{name}", remove_volume)

"""Archive routes of the Docker API (`docker cp`): HEAD/GET/PUT /containers/{id}/archive?path=.

Chooses the root a path is resolved in (a running container's own view through
/proc/PID/root; else its root file system, or a user mount's source for paths under one) and
runs agent.volumes.archive in a thread.
"""
from __future__ import annotations

import asyncio
import os
import posixpath
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.volumes import archive
from shoal.api import params
from shoal.api.server import ENGINE, add_route
from shoal.engine.container_mounts import points_of
from shoal.engine.errors import Conflict, InvalidParameter

_SPOOL_BYTES = 8 << 20


def _query_path(request: web.Request) -> str:
    path = request.query.get("path", "")
    if path == "":
        raise InvalidParameter("bad parameter: path cannot be empty")
    return path


def _mount_for(container: Any, path: str) -> tuple[Any, str] | None:
    """The user mount (not tmpfs) holding path, and the path's rest below it, longest first."""
    cleaned = posixpath.normpath("/" + path)
    best = None
    for point in points_of(container):
        dest = point.destination
        if cleaned == dest or cleaned.startswith(dest.rstrip("/") + "/"):
            if best is None or len(dest) > len(best[0].destination):
                best = (point, cleaned[len(dest):] or "/")
    return best


def _root_of(engine: Any, container: Any, path: str) -> tuple[Path, str, bool]:
    """(root, path inside it, writable): a running container's view, else the files on disk."""
    if container.state == "running" and container.pid and os.path.isdir(f"/proc/{container.pid}/root"):
        return Path(f"/proc/{container.pid}/root"), path, True
    found = _mount_for(container, path)
    if found is not None and found[0].type != "tmpfs":
        point, rest = found
        source = engine.volumes.get(point.name).mountpoint if point.type == "volume" else point.source
        return Path(source), rest + ("/." if path.endswith("/.") else ""), True
    rootfs = engine.runtime.rootfs(container.id)
    if os.path.ismount(rootfs):
        return rootfs, path, True
    image = engine.images.get(container.image_id)
    return Path(image.rootfs), path, False  # never started: the image's files, read-only here


def _read_only_reason(container: Any, path: str) -> str:
    found = _mount_for(container, path)
    if found is not None:
        return "" if found[0].rw else "mounted volume is marked read-only"
    readonly = params.get_ci(container.host_config, "ReadonlyRootfs", False)
    return "container rootfs is marked read-only" if readonly else ""


async def head_archive(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    ref = request.match_info["id"]
    container = engine.get_container(ref)
    path = _query_path(request)
    root, inner, _ = _root_of(engine, container, path)
    info = await asyncio.to_thread(archive.stat_path, root, inner, ref)
    info.name = posixpath.basename(posixpath.normpath("/" + path)) or "/"
    return web.Response(status=200, headers={archive.STAT_HEADER: info.header(), "Content-Type": "application/json"})


async def get_archive(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    ref = request.match_info["id"]
    container = engine.get_container(ref)
    path = _query_path(request)
    root, inner, _ = _root_of(engine, container, path)
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)
    try:
        info = await asyncio.to_thread(archive.archive_path, root, inner, ref, spool)
        info.name = posixpath.basename(posixpath.normpath("/" + path)) or "/"
        spool.seek(0)
        response = web.StreamResponse(status=200, headers={
            archive.STAT_HEADER: info.header(), "Content-Type": "application/x-tar"})
        await response.prepare(request)
        while chunk := await asyncio.to_thread(spool.read, 1 << 20):
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        spool.close()


async def put_archive(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    ref = request.match_info["id"]
    container = engine.get_container(ref)
    path = _query_path(request)
    root, inner, writable = _root_of(engine, container, path)
    if not writable:
        raise Conflict(f"container {container.id} has never been started: shoal copies into a container "
                       "once it has a file system (start it first)")
    no_overwrite = params.bool_value(request.query.get("noOverwriteDirNonDir"))
    copy_uid_gid = params.bool_value(request.query.get("copyUIDGID"))
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)
    try:
        async for chunk in request.content.iter_chunked(1 << 20):
            await asyncio.to_thread(spool.write, chunk)
        spool.seek(0)
        await asyncio.to_thread(archive.extract_to_dir, root, inner, ref, spool, no_overwrite, copy_uid_gid,
                                _read_only_reason(container, path))
    finally:
        spool.close()
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    add_route(app, "HEAD", "/containers/{id}/archive", head_archive)
    add_route(app, "GET", "/containers/{id}/archive", get_archive)
    add_route(app, "PUT", "/containers/{id}/archive", put_archive)

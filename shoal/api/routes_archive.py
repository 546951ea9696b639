"""Archive routes of the Docker API (`docker cp`): HEAD/GET/PUT /containers/{id}/archive?path=.

Chooses the root a path is resolved in (a running container's own view through
/proc/PID/root; else its root file system, or a user mount's source for paths under one) and
runs agent.volumes.archive in a thread.
"""
from __future__ import annotations

import asyncio
import logging
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
_QUEUE_CHUNKS = 8  # of tarfile's writes (1 MiB blocks)
log = logging.getLogger(__name__)


def _query_path(request: web.Request) -> str:
    path = request.query.get("path", "")
    if path == "":
        raise InvalidParameter("bad parameter: path cannot be empty")
    return path


def _mount_for(container: Any, path: str) -> tuple[Any, str] | None:
    """The user mount (not tmpfs) holding path, and the path's rest below it, longest first."""
    cleaned = archive.clean_path(path)
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
    # Not running: its files as its last run left them (the overlay stays mounted until the
    # next start, which keeps the writable layer); a copy into it is there at the next start.
    rootfs = engine.runtime.rootfs(container.id)
    if os.path.ismount(rootfs):
        return rootfs, path, True
    image = engine.images.get(container.image_id)
    return Path(image.rootfs), path, False  # never started: the image's files, never written


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
    info.name = posixpath.basename(archive.clean_path(path)) or "/"
    return web.Response(status=200, headers={archive.STAT_HEADER: info.header(), "Content-Type": "application/json"})


class _QueueWriter:
    """The file tarfile writes into from a worker thread: chunks go to the event loop through
    a bounded queue (the client's pace holds the producer back; memory stays bounded)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]) -> None:
        self.loop, self.queue, self.cancelled = loop, queue, False

    def write(self, data: bytes) -> int:
        if self.cancelled:
            raise BrokenPipeError("the client went away")
        if data:
            asyncio.run_coroutine_threadsafe(self.queue.put(bytes(data)), self.loop).result()
        return len(data)

    def finish(self) -> None:
        asyncio.run_coroutine_threadsafe(self.queue.put(None), self.loop).result()


async def get_archive(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    ref = request.match_info["id"]
    container = engine.get_container(ref)
    path = _query_path(request)
    root, inner, _ = _root_of(engine, container, path)
    # Refusals (404, a kernel file system) come before any byte of the response.
    info, _ = await asyncio.to_thread(archive.stat_for_archive, root, inner, ref)
    info.name = posixpath.basename(archive.clean_path(path)) or "/"
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=_QUEUE_CHUNKS)
    writer = _QueueWriter(loop, queue)

    def produce() -> None:
        try:
            archive.archive_path(root, inner, ref, writer)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - the headers are out: the stream just ends short
            if not writer.cancelled:
                log.warning("archive of %s in container %s ended early: %s", path, ref, exc)
        finally:
            if not writer.cancelled:
                writer.finish()

    response = web.StreamResponse(status=200, headers={
        archive.STAT_HEADER: info.header(), "Content-Type": "application/x-tar"})
    await response.prepare(request)
    producer = loop.run_in_executor(None, produce)
    try:
        while (chunk := await queue.get()) is not None:
            await response.write(chunk)
    except BaseException:
        writer.cancelled = True
        while not producer.done():  # let a blocked put finish so the thread sees the flag
            while not queue.empty():
                queue.get_nowait()
            await asyncio.sleep(0.01)
        raise
    await producer
    await response.write_eof()
    return response


async def put_archive(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    ref = request.match_info["id"]
    container = engine.get_container(ref)
    path = _query_path(request)
    root, inner, writable = _root_of(engine, container, path)
    if not writable:
        raise Conflict(f"container {container.id} has never been started: shoal makes its writable layer at "
                       "its first start; start it first (copies into its volumes and bind mounts work before)")
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

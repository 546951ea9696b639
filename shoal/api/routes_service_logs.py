"""`GET /services/{id}/logs` and `GET /tasks/{id}/logs` (docker service logs): the task containers' json-file logs,
each line carrying the details the docker CLI needs (com.docker.swarm.node.id, .service.id, .task.id), with follow.
Resolves services and tasks in the manager's store (shoal/swarm node); reads logs through the engine like
routes_containers.py. Only tasks of THIS node are read: tasks on other nodes are not fetched (no log broker yet)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from aiohttp import web

from agent.executor import logfile
from common.errdefs import InvalidParameter, NotFound, Unavailable
from shoal.api import params, streams
from shoal.api.server import ENGINE, add_route
from shoal.swarm.executor import L_NODE, L_SERVICE_ID, L_TASK_ID

log = logging.getLogger(__name__)
_END = object()


def details_prefix(labels: dict[str, str]) -> bytes:
    """The CLI's details: sorted, query-escaped k=v pairs, comma-joined (moby's logs `details` from the labels)."""
    keys = (L_NODE, L_SERVICE_ID, L_TASK_ID)
    return ",".join(f"{quote(k, safe='')}={quote(labels.get(k, ''), safe='')}" for k in sorted(keys)).encode()


def with_details(line: bytes, details: bytes, timestamps: bool) -> bytes:
    """`[<ts> ]<details> <msg>`: the details go after the timestamp when there is one."""
    if timestamps:
        ts, sep, rest = line.partition(b" ")
        if sep:
            return ts + b" " + details + b" " + rest
    return details + b" " + line


def _store_view(engine: Any) -> Any:
    swarm = getattr(engine, "swarm", None)
    if swarm is None:
        raise Unavailable("This node is not a swarm manager.")
    ops = swarm.ops()  # 503 with Docker's message on a worker or outside a swarm
    return ops.raft.store.view()


def find_service(view: Any, ref: str) -> Any:
    """By id, then name, then unique id prefix (moby's getService)."""
    services = view.list("service")
    for s in services:
        if s.id == ref:
            return s
    named = [s for s in services if s.spec.annotations.name == ref]
    if len(named) == 1:
        return named[0]
    prefixed = [s for s in services if ref and s.id.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(named) + len(prefixed) > 1:
        raise InvalidParameter(f"service {ref} is ambiguous ({len(named) + len(prefixed)} matches found)")
    raise NotFound(f"service {ref} not found")


def find_task(view: Any, ref: str) -> Any:
    tasks = view.list("task")
    exact = [t for t in tasks if t.id == ref]
    if exact:
        return exact[0]
    prefixed = [t for t in tasks if ref and t.id.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        raise InvalidParameter(f"task {ref} is ambiguous ({len(prefixed)} matches found)")
    raise NotFound(f"task {ref} not found")


def local_containers(engine: Any, task_ids: set[str]) -> list[Any]:
    """This node's containers of those tasks, oldest first."""
    found = [c for c in list(engine.containers.values()) if c.labels.get(L_TASK_ID) in task_ids]
    return sorted(found, key=lambda c: c.created)


async def merged(sources: list[AsyncIterator[tuple[int, bytes]]]) -> AsyncIterator[tuple[int, bytes]]:
    """The items of several iterators as they come (follow mode: every task at once)."""
    q: asyncio.Queue[Any] = asyncio.Queue(maxsize=256)

    async def drain(it: AsyncIterator[tuple[int, bytes]]) -> None:
        try:
            async for item in it:
                await q.put(item)
        except Exception as e:  # noqa: BLE001 - a container removed while read: its stream ends
            log.info("service logs: a task's log ended: %s", e)
        finally:
            await q.put(_END)

    tasks = [asyncio.ensure_future(drain(it)) for it in sources]
    left = len(tasks)
    try:
        while left:
            item = await q.get()
            if item is _END:
                left -= 1
                continue
            yield item
    finally:
        for t in tasks:
            t.cancel()


async def _serve(request: web.Request, task_ids: set[str]) -> web.StreamResponse:
    engine = request.app[ENGINE]
    q = request.query
    stdout, stderr = params.bool_value(q.get("stdout")), params.bool_value(q.get("stderr"))
    if not (stdout or stderr):
        raise InvalidParameter("Bad parameters: you must choose at least one stream")
    follow = params.bool_value(q.get("follow"))
    timestamps = params.bool_value(q.get("timestamps"))
    tail = q.get("tail") or "all"
    if tail != "all":
        params.int_value(tail, "tail")
    since = 0
    if q.get("since", "") not in ("", "0"):
        try:
            since = logfile.parse_unix_time(q["since"], "since")
        except ValueError as exc:
            raise InvalidParameter(str(exc)) from None
    containers = local_containers(engine, task_ids)

    async def one(c: Any) -> AsyncIterator[tuple[int, bytes]]:
        details = details_prefix(c.labels)
        async for stream, line in engine.container_logs(c.id, stdout, stderr, tail=tail, follow=follow,
                                                         since_ns=since, timestamps=timestamps):
            yield stream, with_details(line, details, timestamps)

    async def sequential() -> AsyncIterator[tuple[int, bytes]]:
        for c in containers:
            with contextlib.suppress(NotFound):
                async for item in one(c):
                    yield item

    chunks = merged([one(c) for c in containers]) if follow else sequential()
    response = web.StreamResponse(status=200, headers={"Content-Type": streams.MULTIPLEXED})
    await response.prepare(request)  # follow: 200 at once, then the stream (the CLI waits for the headers)
    gone = asyncio.ensure_future(streams.when_disconnected(request))
    try:
        await streams.pump(chunks, response.write, False, gone if follow else None)
    finally:
        gone.cancel()
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def service_logs(request: web.Request) -> web.StreamResponse:
    view = _store_view(request.app[ENGINE])
    svc = find_service(view, request.match_info["id"])
    task_ids = {t.id for t in view.list("task") if t.service_id == svc.id}
    return await _serve(request, task_ids)


async def task_logs(request: web.Request) -> web.StreamResponse:
    view = _store_view(request.app[ENGINE])
    return await _serve(request, {find_task(view, request.match_info["id"]).id})


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/services/{id}/logs", service_logs)
    add_route(app, "GET", "/tasks/{id}/logs", task_logs)

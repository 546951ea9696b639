"""`GET /services/{id}/logs` and `GET /tasks/{id}/logs` (docker service logs): the task containers' json-file logs,
each line carrying the details the docker CLI needs (com.docker.swarm.node.id, .service.id, .task.id), with follow.
Resolves services and tasks in the manager's store; this node's tasks are read here (shoal/swarm/logs_agent.py), the
others through the leader's log broker (manager/logbroker.py), which asks their nodes over the dispatcher session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from aiohttp import web

from agent.executor import logfile
import grpc

from common.errdefs import InvalidParameter, NotFound, Unavailable
from manager.nodes_service import open_secure
from proto import swarm_pb2, swarm_pb2_grpc
from shoal.api import params, streams
from shoal.api.server import ENGINE, add_route
from shoal.api.versioned import request_version
from shoal.swarm.executor import L_NODE, L_SERVICE_ID, L_TASK_ID
from shoal.swarm.logs_agent import local_containers, merged, task_log_lines

log = logging.getLogger(__name__)


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


async def remote_lines(swarm: Any, task_ids: set[str], opts: swarm_pb2.LogOptions,
                       timestamps: bool, details: bool = True) -> AsyncIterator[tuple[int, bytes]]:
    """Lines of tasks on other nodes, through the leader's log broker (manager/logbroker.py)."""
    if not task_ids:
        return
    raft = swarm.manager.raft if swarm.manager is not None else None
    # the leader's own peers table may not list itself: then its advertised address (one gRPC server for all)
    addr = (swarm.state.advertise_addr if raft.is_leader else raft.leader_addr()) if raft is not None else ""
    if not addr:
        log.warning("service logs: no raft leader: logs of %d tasks on other nodes left out", len(task_ids))
        return
    req = swarm_pb2.SubscribeLogsRequest(selector=swarm_pb2.LogSelector(task_ids=sorted(task_ids)), options=opts)
    async with open_secure(addr, swarm.tls()) as ch:
        call = swarm_pb2_grpc.LogBrokerStub(ch).SubscribeLogs(req)
        try:
            async for m in call:
                if m.missing_nodes:
                    log.warning("service logs: nodes %s have no session: their tasks' logs left out", ", ".join(m.missing_nodes))
                for lm in m.messages:
                    if not details:
                        yield lm.stream, lm.data
                        continue
                    prefix = details_prefix({L_NODE: lm.node_id, L_SERVICE_ID: lm.service_id, L_TASK_ID: lm.task_id})
                    yield lm.stream, with_details(lm.data, prefix, timestamps)
        except grpc.aio.AioRpcError as e:
            log.warning("service logs: the log broker failed: %s: %s", e.code().name, e.details())
        finally:
            call.cancel()


async def _serve(request: web.Request, task_ids: set[str], tty: bool) -> web.StreamResponse:
    """tty: the service's (or task's) ContainerSpec.TTY. As moby, its lines go out raw, not in 8-byte frames: the
    docker CLI copies a TTY service's logs as they come and demultiplexes the others."""
    engine = request.app[ENGINE]
    q = request.query
    stdout, stderr = params.bool_value(q.get("stdout")), params.bool_value(q.get("stderr"))
    if not (stdout or stderr):
        raise InvalidParameter("Bad parameters: you must choose at least one stream")
    follow = params.bool_value(q.get("follow"))
    timestamps = params.bool_value(q.get("timestamps"))
    details = params.bool_value(q.get("details"))  # the docker CLI asks for them unless --raw
    tail = q.get("tail") or "all"
    if tail != "all":
        params.int_value(tail, "tail")
    since = 0
    if q.get("since", "") not in ("", "0"):
        try:
            since = logfile.parse_unix_time(q["since"], "since")
        except ValueError as exc:
            raise InvalidParameter(str(exc)) from None
    opts = swarm_pb2.LogOptions(stdout=stdout, stderr=stderr, follow=follow, tail=tail, since_ns=since, timestamps=timestamps)
    here = {c.labels.get(L_TASK_ID) for c in local_containers(engine, task_ids)}

    async def local() -> AsyncIterator[tuple[int, bytes]]:
        async for c, stream, line in task_log_lines(engine, task_ids, opts):
            yield stream, with_details(line, details_prefix(c.labels), timestamps) if details else line

    # tasks without a container here are read where they run (a task's container is on its node only)
    elsewhere = remote_lines(engine.swarm, set(task_ids) - here, opts, timestamps, details)
    chunks = merged([local(), elsewhere]) if follow else _chain(local(), elsewhere)
    content_type = streams.stream_content_type(tty, request_version(request))
    response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
    await response.prepare(request)  # follow: 200 at once, then the stream (the CLI waits for the headers)
    gone = asyncio.ensure_future(streams.when_disconnected(request))
    try:
        await streams.pump(chunks, response.write, tty, gone if follow else None)
    finally:
        gone.cancel()
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def _chain(*its: AsyncIterator[tuple[int, bytes]]) -> AsyncIterator[tuple[int, bytes]]:
    for it in its:
        async for item in it:
            yield item


async def service_logs(request: web.Request) -> web.StreamResponse:
    view = _store_view(request.app[ENGINE])
    svc = find_service(view, request.match_info["id"])
    task_ids = {t.id for t in view.list("task") if t.service_id == svc.id}
    return await _serve(request, task_ids, svc.spec.task.container.tty)


async def task_logs(request: web.Request) -> web.StreamResponse:
    view = _store_view(request.app[ENGINE])
    task = find_task(view, request.match_info["id"])
    return await _serve(request, {task.id}, task.spec.container.tty)


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/services/{id}/logs", service_logs)
    add_route(app, "GET", "/tasks/{id}/logs", task_logs)

"""The node's side of service logs: reads the json-file logs of this node's task containers (for the local API's
/services/{id}/logs, shoal/api/routes_service_logs.py) and publishes them to the leader's log broker when it asks
over the session (manager/logbroker.py). Started beside each session by shoal/swarm/worker_glue.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from common.errdefs import NotFound
from proto import swarm_pb2
from shoal.swarm.executor import L_SERVICE_ID, L_TASK_ID

log = logging.getLogger(__name__)
_END = object()
BATCH_LINES = 64  # lines per published message (fewer when the log pauses)


def local_containers(engine: Any, task_ids: set[str]) -> list[Any]:
    """This node's containers of those tasks, oldest first."""
    found = [c for c in list(engine.containers.values()) if c.labels.get(L_TASK_ID) in task_ids]
    return sorted(found, key=lambda c: c.created)


async def merged(sources: list[AsyncIterator[Any]]) -> AsyncIterator[Any]:
    """The items of several iterators as they come (following: every task at once)."""
    q: asyncio.Queue[Any] = asyncio.Queue(maxsize=256)

    async def drain(it: AsyncIterator[Any]) -> None:
        try:
            async for item in it:
                await q.put(item)
        except Exception as e:  # noqa: BLE001 - a container removed while read: its stream ends
            log.info("logs: a task's log ended: %s", e)
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


async def task_log_lines(engine: Any, task_ids: set[str], opts: swarm_pb2.LogOptions) -> AsyncIterator[tuple[Any, int, bytes]]:
    """(container record, stream, line) of this node's containers of task_ids: one after the other, or all at once
    when following."""
    containers = local_containers(engine, task_ids)

    async def one(c: Any) -> AsyncIterator[tuple[Any, int, bytes]]:
        with contextlib.suppress(NotFound):
            async for stream, line in engine.container_logs(c.id, opts.stdout, opts.stderr, tail=opts.tail or "all",
                                                             follow=opts.follow, since_ns=opts.since_ns,
                                                             timestamps=opts.timestamps):
                yield c, stream, line

    if opts.follow:
        async for item in merged([one(c) for c in containers]):
            yield item
        return
    for c in containers:
        async for item in one(c):
            yield item


async def _publish(stub: Any, engine: Any, node_id: str, sub: swarm_pb2.LogSubscription) -> None:
    async def messages() -> AsyncIterator[swarm_pb2.PublishLogsMessage]:
        batch: list[swarm_pb2.LogMessage] = []
        async for c, stream, line in task_log_lines(engine, set(sub.selector.task_ids), sub.options):
            batch.append(swarm_pb2.LogMessage(node_id=node_id, service_id=c.labels.get(L_SERVICE_ID, ""),
                                              task_id=c.labels.get(L_TASK_ID, ""), stream=stream, data=line))
            if len(batch) >= BATCH_LINES or sub.options.follow:
                yield swarm_pb2.PublishLogsMessage(subscription_id=sub.id, messages=batch)
                batch = []
        yield swarm_pb2.PublishLogsMessage(subscription_id=sub.id, messages=batch, close=True)

    await stub.PublishLogs(messages(), timeout=None)


async def serve_subscriptions(stub: Any, session_id: str, engine: Any, node_id: str) -> None:
    """Answers the broker's subscriptions for this session: one publisher per subscription, cancelled on its close."""
    running: dict[str, asyncio.Task[None]] = {}
    call = stub.ListenSubscriptions(swarm_pb2.ListenSubscriptionsRequest(session_id=session_id))
    try:
        async for sub in call:
            if sub.close:
                t = running.pop(sub.id, None)
                if t is not None:
                    t.cancel()
                continue
            running[sub.id] = asyncio.create_task(_publish(stub, engine, node_id, sub), name=f"logs-{sub.id[:8]}")
            running[sub.id].add_done_callback(lambda t, sid=sub.id: running.pop(sid, None) if running.get(sid) is t else None)
    finally:
        call.cancel()
        for t in running.values():
            t.cancel()

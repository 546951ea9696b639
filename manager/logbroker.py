"""The log broker (swarmkit's manager/logbroker, reduced): a manager subscribes to the logs of some tasks; the leader
pushes the subscription to the agents of the nodes running them (over their dispatcher session) and relays what they
publish until each has closed (or, following, until the subscriber leaves). Leader-side state lives in this process
only. Served beside the dispatcher (manager/nodes_manager.py); agents answer in shoal/swarm/logs_agent.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from common.aiowait import get_or_none
from manager.ca.auth import Authorizer
from proto import swarm_pb2

log = logging.getLogger(__name__)
QUEUE = 1024  # relayed batches a slow subscriber may leave unread before publishers wait


@dataclass(slots=True)
class _Subscription:
    id: str
    request: swarm_pb2.SubscribeLogsRequest
    nodes: set[str]  # nodes asked to publish
    out: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(QUEUE))
    closed_by: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Listener:
    node_id: str
    queue: asyncio.Queue[swarm_pb2.LogSubscription] = field(default_factory=asyncio.Queue)


class LogBroker:
    def __init__(self, store: Any, auth: Authorizer, session_ok: Callable[[str, str], bool],
                 running: Callable[[], bool]) -> None:
        self.store = store
        self.auth = auth
        self.session_ok = session_ok  # (node id, session id) -> the dispatcher knows this session
        self.running = running
        self.listeners: dict[str, _Listener] = {}  # node id -> its agent's subscription stream
        self.subs: dict[str, _Subscription] = {}

    # ------------------------------------------------------------------ managers
    async def SubscribeLogs(self, request: swarm_pb2.SubscribeLogsRequest,
                            context: grpc.aio.ServicerContext) -> AsyncIterator[swarm_pb2.SubscribeLogsMessage]:
        await self.auth.check(context, managers_only=True)
        if not self.running():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "log broker is not running on this manager: it is not the leader")
        view = self.store.view()
        wanted = set(request.selector.task_ids)
        nodes = {t.node_id for t in view.list("task") if t.id in wanted and t.node_id}
        reachable = {n for n in nodes if n in self.listeners}
        sub = _Subscription(uuid.uuid4().hex, request, reachable)
        self.subs[sub.id] = sub
        try:
            missing = sorted(nodes - reachable)
            if missing:
                yield swarm_pb2.SubscribeLogsMessage(missing_nodes=missing)
            msg = swarm_pb2.LogSubscription(id=sub.id, selector=request.selector, options=request.options)
            for n in reachable:
                self.listeners[n].queue.put_nowait(msg)
            # every node puts one None after its last batch (its close, or its stream's end): the queue is read up to
            # the last of them, not until closed_by is full (a fast node's close used to end the stream while other
            # nodes' lines still waited in the queue: `service logs` without -f missed a task's lines at random)
            ended = 0
            while request.options.follow or ended < len(sub.nodes):
                item = await sub.out.get()
                if item is None:
                    ended += 1
                    continue
                yield item
        finally:
            self.subs.pop(sub.id, None)
            bye = swarm_pb2.LogSubscription(id=sub.id, close=True)
            for n in sub.nodes - sub.closed_by:
                lst = self.listeners.get(n)
                if lst is not None:
                    lst.queue.put_nowait(bye)

    # ------------------------------------------------------------------ agents
    async def ListenSubscriptions(self, request: swarm_pb2.ListenSubscriptionsRequest,
                                  context: grpc.aio.ServicerContext) -> AsyncIterator[swarm_pb2.LogSubscription]:
        who = await self.auth.check(context, managers_only=False)
        if not self.running() or not self.session_ok(who.node_id, request.session_id):
            await context.abort(grpc.StatusCode.NOT_FOUND, "node not registered")
        lst = _Listener(who.node_id)
        old = self.listeners.get(who.node_id)
        self.listeners[who.node_id] = lst
        if old is not None:
            old.queue.put_nowait(swarm_pb2.LogSubscription())  # wakes the old stream so it ends
        try:
            while self.running() and self.listeners.get(who.node_id) is lst:
                sub = await get_or_none(lst.queue, 1.0)  # not wait_for: it can swallow a cancel or lose an item
                if sub is not None and sub.id:
                    yield sub
                if not self.session_ok(who.node_id, request.session_id):
                    break
        finally:
            if self.listeners.get(who.node_id) is lst:
                del self.listeners[who.node_id]
                for s in list(self.subs.values()):  # this node will not publish any more
                    if who.node_id in s.nodes and who.node_id not in s.closed_by:
                        s.closed_by.add(who.node_id)
                        s.out.put_nowait(None)

    async def PublishLogs(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> swarm_pb2.PublishLogsResponse:
        who = await self.auth.check(context, managers_only=False)
        async for msg in request_iterator:
            sub = self.subs.get(msg.subscription_id)
            if sub is None or who.node_id not in sub.nodes:
                continue  # the subscriber left, or this node was not asked
            view = self.store.view()
            mine = []
            for m in msg.messages:  # a node speaks for its own tasks only
                t = view.get("task", m.task_id)
                if t is not None and t.node_id == who.node_id:
                    m.node_id = who.node_id
                    mine.append(m)
            if mine:
                await sub.out.put(swarm_pb2.SubscribeLogsMessage(messages=mine))
            if msg.close and who.node_id not in sub.closed_by:
                sub.closed_by.add(who.node_id)
                await sub.out.put(None)
        return swarm_pb2.PublishLogsResponse()

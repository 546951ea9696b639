"""The log broker relays every line the nodes publish for a subscription, then ends (without follow)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from manager.logbroker import LogBroker, _Listener
from proto import objects_pb2 as pb
from proto import swarm_pb2


class _View:
    def __init__(self, tasks: list[pb.Task]) -> None:
        self.tasks = {t.id: t for t in tasks}

    def list(self, kind: str) -> list[pb.Task]:
        return list(self.tasks.values())

    def get(self, kind: str, tid: str) -> pb.Task | None:
        return self.tasks.get(tid)


class _Auth:
    async def check(self, ctx: Any, managers_only: bool) -> Any:
        return SimpleNamespace(node_id=ctx.node_id)


def _broker(tasks: list[pb.Task]) -> LogBroker:
    view = _View(tasks)
    b = LogBroker(SimpleNamespace(view=lambda: view), _Auth(), lambda node, session: True, lambda: True)  # type: ignore[arg-type]
    for t in tasks:
        b.listeners[t.node_id] = _Listener(t.node_id)
    return b


async def _publish(b: LogBroker, node: str, sid: str, task_id: str, lines: list[bytes]) -> None:
    async def messages():  # type: ignore[no-untyped-def]
        for line in lines:
            yield swarm_pb2.PublishLogsMessage(subscription_id=sid, messages=[swarm_pb2.LogMessage(task_id=task_id, data=line)])
        yield swarm_pb2.PublishLogsMessage(subscription_id=sid, close=True)

    await b.PublishLogs(messages(), SimpleNamespace(node_id=node))  # type: ignore[arg-type]


def test_without_follow_every_nodes_lines_arrive_even_when_all_closed_before_the_subscriber_read_them() -> None:
    async def run() -> list[tuple[str, bytes]]:
        tasks = [pb.Task(id="t1", node_id="nA"), pb.Task(id="t2", node_id="nB")]
        b = _broker(tasks)
        req = swarm_pb2.SubscribeLogsRequest()
        req.selector.task_ids.extend(["t1", "t2"])
        got: list[tuple[str, bytes]] = []

        async def consume() -> None:
            async for m in b.SubscribeLogs(req, SimpleNamespace(node_id="mgr")):  # type: ignore[arg-type]
                got.extend((x.task_id, x.data) for x in m.messages)

        reader = asyncio.ensure_future(consume())
        while not b.subs:
            await asyncio.sleep(0)
        (sid,) = b.subs
        await _publish(b, "nA", sid, "t1", [b"a1", b"a2"])
        await _publish(b, "nB", sid, "t2", [b"b1", b"b2"])
        await asyncio.wait_for(reader, 5)
        return got

    assert sorted(asyncio.run(run())) == [("t1", b"a1"), ("t1", b"a2"), ("t2", b"b1"), ("t2", b"b2")]

"""networkdb over the gossip core's real shell (agent/gossip/shell.py) on loopback UDP/TCP: entries converge, a
stopped member's entries are kept suspended, and when it comes back fresh its old entries are gone everywhere."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable

from agent.gossip.core import GossipConfig
from agent.gossip.netdb import NetDBConfig, NetworkDB
from agent.gossip.shell import GossipShell

KEY = os.urandom(16)
FAST = GossipConfig(probe_interval=0.2, probe_timeout=0.1, gossip_interval=0.05, push_pull_interval=2.0,
                    reconnect_interval=1.0)


class Node:
    def __init__(self, name: str) -> None:
        self.name = name
        self.db = NetworkDB(name, random.Random(name), NetDBConfig(gossip_interval_s=0.05, bulk_sync_interval_s=3.0))
        self.shell = GossipShell(name, "127.0.0.1", 0, "127.0.0.1", [KEY], self.db, self.db, FAST)
        self.task: asyncio.Task[None] | None = None

    async def start(self, seed: int | None) -> None:
        await self.shell.start()
        if seed is not None:
            await self.shell.join([f"127.0.0.1:{seed}"])
        self.task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.db.tick(loop.time())
            for to, data in self.db.take_outgoing():
                self.shell.send_to(to, data)
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await self.shell.stop()

    def view(self) -> dict[str, tuple[bytes, bool]]:
        return {e.key: (e.value, e.suspended) for e in self.db.walk("t", "N")}


async def until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.05)


def test_entries_converge_suspend_and_resync_over_the_real_shell() -> None:
    async def run() -> None:
        nodes = [Node(f"n{i}") for i in range(4)]
        await nodes[0].start(None)
        for n in nodes[1:]:
            await n.start(nodes[0].shell.port)
        try:
            for n in nodes:
                n.db.join_network("N")
                n.db.create_entry("t", "N", f"ep-{n.name}", b"1")
            want = {f"ep-n{i}": (b"1", False) for i in range(4)}
            await until(lambda: all(n.view() == want for n in nodes))
            await nodes[3].stop()  # killed: no leave
            await until(lambda: nodes[0].view().get("ep-n3") == (b"1", True))
            fresh = Node("n3")
            await fresh.start(nodes[0].shell.port)
            nodes[3] = fresh
            fresh.db.join_network("N")
            fresh.db.create_entry("t", "N", "ep-n3-new", b"2")
            want2 = {f"ep-n{i}": (b"1", False) for i in range(3)} | {"ep-n3-new": (b"2", False)}
            await until(lambda: all(n.view() == want2 for n in nodes), timeout=20)
        finally:
            for n in nodes:
                if n.task is not None and not n.task.done():
                    await n.stop()
    asyncio.run(run())

"""ManagerNode (manager/node.py): three managers in one process on 127.0.0.x, each with a fake leader-only
component that records start/stop; a leader change must stop it on the old leader and start it on the new one.
Also `shoal daemon`'s manager config file. Needs no root."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from manager.node import LeadershipChange, ManagerNode, config_from_file
from manager.raftnode import ManagerConfig
from proto import objects_pb2
from tests.support.cluster import free_port

pytestmark = pytest.mark.lab
DEADLINE = 30.0


@pytest.fixture(autouse=True)
def _require_root() -> None:
    """Overrides the lab conftest: these managers only need loopback addresses, not root."""


@dataclass
class Recorder:
    """A leader-only component that only records when it runs."""

    node_id: int
    events: list[tuple[int, str]]
    name: str = "recorder"
    running: bool = field(default=False)

    async def start(self) -> None:
        assert not self.running, "started twice"
        self.running = True
        self.events.append((self.node_id, "start"))

    async def stop(self) -> None:
        assert self.running, "stopped while not running"
        self.running = False
        self.events.append((self.node_id, "stop"))


async def wait(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_leader_only_components_follow_leadership_across_a_leader_change(tmp_path: Path) -> None:
    async def scenario() -> None:
        addrs = {i: f"127.0.0.{i}:{free_port(f'127.0.0.{i}')}" for i in (1, 2, 3)}
        events: list[tuple[int, str]] = []
        nodes = {
            i: ManagerNode(ManagerConfig(i, addrs[i], dict(addrs), tmp_path / f"m{i}", tick_s=0.05, storage="memory"),
                           [Recorder(i, events)])
            for i in (1, 2, 3)
        }
        seen: dict[int, list[LeadershipChange]] = {i: [] for i in nodes}

        async def follow(i: int) -> None:
            async for change in nodes[i].leadership():
                seen[i].append(change)

        watchers = [asyncio.create_task(follow(i)) for i in nodes]
        running = dict(nodes)
        try:
            for n in nodes.values():
                await n.start()
            await wait(lambda: len(events) == 1, "the first leader's component to start")
            first = events[0][0]
            assert nodes[first].raft.is_leader
            old_term = nodes[first].raft.node.term
            await nodes[first].raft.propose(lambda tx: tx.create("config", objects_pb2.Config(
                id="c1", spec=objects_pb2.ConfigSpec(annotations=objects_pb2.Annotations(name="before"), data=b"x"))))
            await running.pop(first).stop()
            assert events == [(first, "start"), (first, "stop")]
            await wait(lambda: len(events) == 3, "the new leader's component to start")
            second = events[2][0]
            assert second != first and nodes[second].raft.is_leader
            new_term = nodes[second].raft.node.term
            assert seen[first] == [LeadershipChange(True, old_term)]
            assert seen[second] == [LeadershipChange(True, new_term)]
            assert [r.running for n in running.values() for r in n.components] == [n.raft.is_leader for n in running.values()]
        finally:
            for w in watchers:
                w.cancel()
            for n in running.values():
                await n.stop()
        assert events[3:] == [(second, "stop")]

    asyncio.run(scenario())


def test_manager_config_file_gives_the_manager_config(tmp_path: Path) -> None:
    path = tmp_path / "manager.json"
    path.write_text(json.dumps({"id": 2, "listen": "127.0.0.2:4242", "peers": {"1": "127.0.0.1:4242"}}))
    cfg = config_from_file(path, tmp_path / "data")
    assert (cfg.node_id, cfg.listen, cfg.peers, cfg.data_dir, cfg.join, cfg.tls) == (
        2, "127.0.0.2:4242", {1: "127.0.0.1:4242", 2: "127.0.0.2:4242"}, tmp_path / "data", False, None)


def test_manager_config_file_without_an_id_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "manager.json"
    path.write_text(json.dumps({"listen": "127.0.0.2:4242"}))
    with pytest.raises(ValueError) as err:
        config_from_file(path, tmp_path / "data")
    assert str(err.value) == f"invalid manager config {path}: KeyError: 'id'"

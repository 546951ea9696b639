"""The gossip keys (manager/gossip_keys.py): three kept, Lamport times, the primary the agents encrypt with, rotation
through a real store transaction, and what the dispatcher puts in the session message."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from manager import gossip_keys as gk
from manager.store.store import MemoryStore
from proto import objects_pb2 as pb
from proto import swarm_pb2

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def test_keys_are_added_with_increasing_lamport_times_and_only_the_newest_three_kept() -> None:
    c = pb.Cluster(id="c1")
    c.network_bootstrap_keys.add(subsystem="networking:ipsec", key=b"i" * 16, lamport_time=9)
    for i in range(5):
        gk.add_key(c, T0 + datetime.timedelta(hours=12 * i))
    keys = gk.gossip_keys(c)
    assert [k.lamport_time for k in keys] == [3, 4, 5]
    assert all(len(k.key) == 16 for k in keys) and len({k.key for k in keys}) == 3
    assert [k.subsystem for k in c.network_bootstrap_keys].count("networking:ipsec") == 1
    assert c.encryption_key_lamport_clock == 5


def test_the_primary_is_the_second_newest_key_once_there_are_two() -> None:
    c = pb.Cluster(id="c1")
    primaries = []
    for _ in range(4):
        gk.add_key(c, T0)
        f = gk.session_fields(c)
        primaries.append((len(f["network_keys"]), f["network_key_primary"], f["network_key_lamport"]))
    assert primaries == [(1, 0, 1), (2, 0, 2), (3, 1, 3), (3, 1, 4)]


def test_no_keys_gives_no_session_fields_and_a_rotation_is_due() -> None:
    c = pb.Cluster(id="c1")
    assert gk.session_fields(c) == {} and gk.session_fields(None) == {}
    assert gk.rotation_due(c, T0) is True


def test_a_rotation_is_due_twelve_hours_after_the_last() -> None:
    c = pb.Cluster(id="c1")
    gk.add_key(c, T0)
    assert gk.rotation_due(c, T0 + datetime.timedelta(hours=11, minutes=59)) is False
    assert gk.rotation_due(c, T0 + datetime.timedelta(hours=12)) is True


class StoreOnlyRaft:
    """The store's prepare/apply without consensus (one member): what raft.propose does once committed."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.index = 0

    async def propose(self, fn: Any) -> Any:
        self.index += 1
        data, result = self.store.prepare(fn, f"req-{self.index}")
        self.store.apply(self.index, data)
        return result


def test_rotate_if_due_adds_one_key_through_the_store_and_not_a_second_time() -> None:
    store = MemoryStore()
    raft = StoreOnlyRaft(store)

    async def run() -> list[bool]:
        await raft.propose(lambda t: t.create("cluster", pb.Cluster(id="c1")))
        return [await gk.rotate_if_due(raft, "c1", T0), await gk.rotate_if_due(raft, "c1", T0),
                await gk.rotate_if_due(raft, "c1", T0 + datetime.timedelta(hours=12))]
    assert asyncio.run(run()) == [True, False, True]
    c = store.view().get("cluster", "c1")
    assert [k.lamport_time for k in gk.gossip_keys(c)] == [1, 2]


def test_the_session_message_carries_the_keys_oldest_first() -> None:
    c = pb.Cluster(id="c1")
    gk.add_key(c, T0)
    gk.add_key(c, T0)
    msg = swarm_pb2.SessionMessage(session_id="s", **gk.session_fields(c))
    back = swarm_pb2.SessionMessage.FromString(msg.SerializeToString())
    assert list(back.network_keys) == [k.key for k in gk.gossip_keys(c)]
    assert (back.network_key_lamport, back.network_key_primary) == (2, 0)

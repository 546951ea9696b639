"""The node's gossip glue (shoal/swarm/gossip_agent.py), the diagnostic route's payload (shoal/api/routes_gossip.py)
and `shoal node gossip`'s rendering, with a stand-in for the gossip core's shell (its API as the gossip helper's brief
promises it; the real shell is not in this branch)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.gossip import netdb_wire as w
from agent.gossip.delegate import Member, MemberState
from common.errdefs import Unavailable
from shoal.api.routes_gossip import NOT_STARTED, gossip_status
from shoal.cli.gossip import render
from shoal.swarm.gossip_agent import GossipAgent, KeyRing, key_ring, seed_addrs

K1, K2, K3 = b"1" * 16, b"2" * 16, b"3" * 16


class FakeShell:
    instances: list[FakeShell] = []

    def __init__(self, name: str, bind_addr: str, bind_port: int, advertise_addr: str, keys: list[bytes],
                 delegate: Any, events: Any, config: Any) -> None:
        self.args = (name, bind_addr, bind_port, advertise_addr, list(keys))
        self.delegate, self.events = delegate, events
        self.calls: list[tuple[Any, ...]] = []
        self.others: list[Member] = []
        FakeShell.instances.append(self)

    async def start(self) -> None:
        self.calls.append(("start",))

    async def join(self, seeds: list[str]) -> int:
        self.calls.append(("join", list(seeds)))
        self.others = [Member("mgr1", "192.168.200.11", 7946, incarnation=3)]
        return 1

    def members(self) -> list[Member]:
        return [Member(self.args[0], self.args[3], self.args[2])] + self.others

    def set_keys(self, keys: list[bytes], primary: bytes) -> None:
        self.calls.append(("set_keys", list(keys), primary))

    def send_to(self, name: str, data: bytes) -> None:
        self.calls.append(("send_to", name, data))

    async def leave(self) -> None:
        self.calls.append(("leave",))

    async def stop(self) -> None:
        self.calls.append(("stop",))


def agent() -> GossipAgent:
    FakeShell.instances.clear()
    return GossipAgent("node2", "192.168.200.12", lambda: ["192.168.200.11:2377", "192.168.200.12:2377"],
                       shell_factory=FakeShell)


async def settle(a: GossipAgent) -> None:
    for _ in range(50):
        await asyncio.sleep(0.01)
        if FakeShell.instances and any(c[0] == "join" for c in FakeShell.instances[0].calls):
            return


def test_seeds_are_the_managers_on_the_gossip_port_without_this_node() -> None:
    assert seed_addrs(["192.168.200.11:2377", "192.168.200.12:2377", "192.168.200.11:2377", "[fd00::1]:2377",
                       "192.168.200.14", "192.168.200.12", "fd00::2"],
                      "192.168.200.12") == ["192.168.200.11:7946", "[fd00::1]:7946", "192.168.200.14:7946",
                                           "[fd00::2]:7946"]


@pytest.mark.parametrize(("keys", "primary"), [([], 0), ([K1], 1), ([K1, b"short"], 0)])
def test_unusable_session_keys_give_no_key_ring(keys: list[bytes], primary: int) -> None:
    assert key_ring(keys, 1, primary) is None


def test_the_first_keys_start_the_shell_primary_first_and_it_joins_through_the_managers() -> None:
    async def run() -> FakeShell:
        a = agent()
        a.on_keys(key_ring([K1, K2, K3], 3, 1))
        await settle(a)
        await a.stop()
        return FakeShell.instances[0]
    shell = asyncio.run(run())
    assert shell.args == ("node2", "192.168.200.12", 7946, "192.168.200.12", [K2, K1, K3])
    assert shell.calls[:2] == [("start",), ("join", ["192.168.200.11:7946"])]
    assert shell.calls[-1] == ("stop",) and ("leave",) not in shell.calls
    assert shell.delegate is shell.events


def test_newer_keys_rotate_in_place_and_older_ones_are_ignored() -> None:
    async def run() -> FakeShell:
        a = agent()
        a.on_keys(key_ring([K1], 1, 0))
        await settle(a)
        a.on_keys(key_ring([K1, K2], 2, 0))
        a.on_keys(key_ring([K1], 1, 0))  # a late message from an older leader
        a.on_keys(key_ring([K1, K2], 2, 0))  # the same again
        await a.stop()
        return FakeShell.instances[0]
    shell = asyncio.run(run())
    assert [c for c in shell.calls if c[0] == "set_keys"] == [("set_keys", [K1, K2], K1)]
    assert len(FakeShell.instances) == 1


def test_networkdb_direct_messages_go_out_through_send_to() -> None:
    async def run() -> FakeShell:
        a = agent()
        a.on_keys(key_ring([K1], 1, 0))
        await settle(a)
        a.db.notify_join(Member("mgr1", "192.168.200.11", 7946))
        a.db.notify_msg(w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=5, node_name="mgr1", network_id="n1")))
        a.db.join_network("n1")  # syncs with mgr1, the one other node on n1
        await a.flush()
        await a.stop()
        return FakeShell.instances[0]
    shell = asyncio.run(run())
    sent = [c for c in shell.calls if c[0] == "send_to"]
    assert [c[1] for c in sent] == ["mgr1"]
    assert w.decode_message(sent[0][2]).bulk_sync.network_id == "n1"


def test_swarm_leave_leaves_the_gossip_group_before_stopping() -> None:
    async def run() -> FakeShell:
        a = agent()
        a.on_keys(key_ring([K1], 1, 0))
        await settle(a)
        await a.leave()
        return FakeShell.instances[0]
    shell = asyncio.run(run())
    assert shell.calls[-2:] == [("leave",), ("stop",)]


def test_without_the_gossip_core_the_status_says_so() -> None:
    async def run() -> dict[str, Any]:
        a = GossipAgent("node2", "192.168.200.12", lambda: [], shell_factory=None)
        import shoal.swarm.gossip_agent as ga

        def no_core() -> Any:
            raise ImportError("No module named 'agent.gossip.shell'")
        orig, ga.default_shell_factory = ga.default_shell_factory, no_core
        try:
            a.on_keys(key_ring([K1], 1, 0))
            await asyncio.sleep(0.05)
        finally:
            ga.default_shell_factory = orig
        return a.status()
    st = asyncio.run(run())
    assert (st["Running"], st["Error"]) == (False, "gossip core not available: No module named 'agent.gossip.shell'")


def test_the_status_lists_members_with_state_and_incarnation_and_network_counts() -> None:
    async def run() -> dict[str, Any]:
        a = agent()
        a.on_keys(key_ring([K1, K2], 2, 0))
        await settle(a)
        a.db.notify_join(Member("mgr1", "192.168.200.11", 7946))
        a.db.notify_msg(w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=5, node_name="mgr1", network_id="n1")))
        a.db.join_network("n1")
        a.db.create_entry("overlay_peer_table", "n1", "ep1", b"{}")
        st = a.status()
        await a.stop()
        return st
    st = asyncio.run(run())
    assert st["Members"] == [
        {"Name": "mgr1", "Addr": "192.168.200.11", "Port": 7946, "State": "alive", "Incarnation": 3},
        {"Name": "node2", "Addr": "192.168.200.12", "Port": 7946, "State": "alive", "Incarnation": 0},
    ]
    assert st["Networks"] == [{"ID": "n1", "Peers": 1, "Entries": 1, "EntryOwners": {"node2": {"overlay_peer_table": 1}}}]
    assert (st["Running"], st["Keys"], st["KeyLamport"], st["Addr"]) == (True, 2, 2, "192.168.200.12:7946")


class _State:
    node_id = "node2"


class _Swarm:
    def __init__(self, active: bool, gossip: Any = None) -> None:
        self.active = active
        self.state = _State() if active else None
        self.gossip = gossip


class _Engine:
    def __init__(self, swarm: Any) -> None:
        self.swarm = swarm


def test_the_route_refuses_a_node_in_no_swarm_and_says_when_gossip_has_not_started() -> None:
    with pytest.raises(Unavailable) as e:
        gossip_status(_Engine(_Swarm(False)))
    assert str(e.value) == "This node is not part of a swarm"
    st = gossip_status(_Engine(_Swarm(True)))
    assert (st["Running"], st["Error"], st["Members"]) == (False, NOT_STARTED, [])


def test_shoal_node_gossip_prints_members_and_networks() -> None:
    st = {"NodeID": "node2", "Addr": "192.168.200.12:7946", "Running": True, "Error": "", "Keys": 2, "KeyLamport": 2,
          "Members": [{"Name": "mgr1", "Addr": "192.168.200.11", "Port": 7946, "State": "suspect", "Incarnation": 3},
                      {"Name": "node2", "Addr": "192.168.200.12", "Port": 7946, "State": "alive", "Incarnation": 0}],
          "Networks": [{"ID": "n1", "Peers": 1, "Entries": 4}]}
    assert render(st) == (
        "Gossip: running on 192.168.200.12:7946, 2 keys (lamport 2)\n"
        "NODE      ADDRESS               STATE     INCARNATION\n"
        "mgr1      192.168.200.11:7946   suspect   3\n"
        "node2 *   192.168.200.12:7946   alive     0\n"
        "\n"
        "NETWORK   PEERS     ENTRIES\n"
        "n1        1         4\n")
    assert render({"Running": False, "Error": NOT_STARTED}).startswith(f"Gossip: not running: {NOT_STARTED}\nNODE")


def test_a_key_ring_puts_the_primary_first() -> None:
    assert KeyRing((K1, K2, K3), 3, 1).primary_first() == [K2, K1, K3]
    assert MemberState.ALIVE.value == "alive"


def test_local_endpoints_join_the_network_announce_themselves_and_the_last_one_leaves() -> None:
    import ipaddress

    from agent.network.overlay_peers import TABLE, decode_peer
    from vxlan.types import OverlayPeer

    a = GossipAgent("node2", "192.168.200.12", lambda: [], shell_factory=FakeShell)
    p1 = OverlayPeer(ipaddress.IPv4Address("10.0.9.3"), "02:42:0a:00:09:03", ipaddress.IPv4Address("192.168.200.12"))
    p2 = OverlayPeer(ipaddress.IPv4Address("10.0.9.4"), "02:42:0a:00:09:04", ipaddress.IPv4Address("192.168.200.12"))
    a.endpoint_up("n1", "ep1", p1)
    a.endpoint_up("n1", "ep2", p2)
    a.endpoint_up("n1", "ep2", p2)  # again (a restart's re-announce): no error
    assert a.db.networks() == ["n1"]
    assert [decode_peer(e.value) for e in a.db.walk(TABLE, "n1")] == [p1, p2]
    a.endpoint_down("n1", "ep1")
    assert a.db.networks() == ["n1"]
    a.endpoint_down("n1", "ep2")
    a.endpoint_down("n1", "ep2")  # again: no error
    assert a.db.networks() == []


def test_the_overlay_sink_gets_remote_peers_but_not_this_nodes_own() -> None:
    import ipaddress

    from agent.network.overlay_peers import TABLE, encode_peer
    from vxlan.types import OverlayPeer

    calls: list[tuple[str, str, list[OverlayPeer]]] = []

    class Sink:
        def add_peers(self, nid: str, peers: list[OverlayPeer]) -> None:
            calls.append(("add", nid, peers))

        def remove_peers(self, nid: str, peers: list[OverlayPeer]) -> None:
            calls.append(("remove", nid, peers))

    a = GossipAgent("node2", "192.168.200.12", lambda: [], shell_factory=FakeShell)
    mine = OverlayPeer(ipaddress.IPv4Address("10.0.9.3"), "02:42:0a:00:09:03", ipaddress.IPv4Address("192.168.200.12"))
    theirs = OverlayPeer(ipaddress.IPv4Address("10.0.9.5"), "02:42:0a:00:09:05", ipaddress.IPv4Address("192.168.200.11"))
    a.overlay(Sink())
    a.endpoint_up("n1", "ep1", mine)
    a.db.notify_join(Member("mgr1", "192.168.200.11", 7946))
    a.db.notify_msg(w.encode(w.TableEvents(from_node="mgr1", events=[w.TableEvent(
        type=w.TableEvent.CREATE, ltime=9, node_name="mgr1", network_id="n1", table_name=TABLE, key="ep5",
        value=encode_peer(theirs))])))
    assert calls == [("add", "n1", [theirs])]


def test_network_peers_lists_this_node_and_the_alive_nodes_on_the_network() -> None:
    a = GossipAgent("node2", "192.168.200.12", lambda: [], shell_factory=FakeShell)
    assert a.network_peers("n1") == []
    a.db.join_network("n1")
    for name, ip in (("mgr1", "192.168.200.11"), ("node5", "192.168.200.15")):
        a.db.notify_join(Member(name, ip, 7946))
        a.db.notify_msg(w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=7, node_name=name, network_id="n1")))
    a.db.notify_leave(Member("node5", "192.168.200.15", 7946, state=MemberState.DEAD))
    assert a.network_peers("n1") == [{"Name": "node2", "IP": "192.168.200.12"}, {"Name": "mgr1", "IP": "192.168.200.11"}]


def test_service_endpoints_are_announced_folded_and_watched() -> None:
    import ipaddress

    from agent.gossip.netdb_services import EndpointRecord

    a = GossipAgent("node2", "192.168.200.12", lambda: [], shell_factory=FakeShell)
    changed: list[str] = []
    a.watch_services(changed.append)
    rec = EndpointRecord("sid", "web", ipaddress.IPv4Address("10.0.9.2"), ipaddress.IPv4Address("10.0.9.5"), "web.1.t1", "t1")
    a.service_endpoint_up("n1", "ep1", rec)
    a.service_endpoint_up("n1", "ep1", rec)  # again: no error
    [web] = a.service_bindings("n1")
    assert (web.service_name, web.vip, [b.ip for b in web.backends]) == ("web", rec.vip, [rec.task_ip])
    a.service_endpoint_down("n1", "ep1")
    assert a.service_bindings("n1") == [] and a.db.networks() == []
    assert changed == ["n1", "n1", "n1"]


def test_nodes_held_down_leave_the_service_bindings_and_wake_the_watchers_once_per_change() -> None:
    import ipaddress

    from agent.gossip.netdb_services import TABLE, EndpointRecord, encode_record

    a = GossipAgent("node2", "192.168.200.12", lambda: [], shell_factory=FakeShell)
    changed: list[str] = []
    a.watch_services(changed.append)
    ip = ipaddress.IPv4Address
    a.service_endpoint_up("n1", "ep1", EndpointRecord("sid", "web", ip("10.0.9.2"), ip("10.0.9.5"), "web.1.t1", "t1"))
    a.db.notify_join(Member("node5", "192.168.200.15", 7946))
    remote = EndpointRecord("sid", "web", ip("10.0.9.2"), ip("10.0.9.4"), "web.2.t2", "t2")
    a.db.notify_msg(w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=7, node_name="node5", network_id="n1")))
    a.db.notify_msg(w.encode(w.TableEvents(from_node="node5", events=[w.TableEvent(
        type=w.TableEvent.CREATE, ltime=9, node_name="node5", network_id="n1", table_name=TABLE, key="ep2",
        value=encode_record(remote))])))
    changed.clear()
    backends = lambda: [b.task_id for web in a.service_bindings("n1") for b in web.backends]  # noqa: E731
    assert backends() == ["t2", "t1"]
    a.set_down_nodes(["node5", "node2"])  # this node itself never: its session says it is not down
    assert (backends(), changed, a.db.held()) == (["t1"], ["n1"], frozenset({"node5"}))
    a.set_down_nodes(["node5"])
    assert changed == ["n1"]  # the same set again: nobody woken


def test_a_duplicate_event_does_not_wake_the_loop_and_one_with_a_message_to_send_does() -> None:
    """A burst's copies of entries already held cost no pass of the agent's loop; a message that makes networkdb
    answer (a bulk sync wanting a reply) still goes out at once."""
    def table_event(ltime: int) -> bytes:
        return w.encode(w.TableEvents(from_node="mgr1", events=[w.TableEvent(
            type=w.TableEvent.CREATE, ltime=ltime, node_name="mgr1", network_id="n1", table_name="t", key="k",
            value=b"v")]))

    async def run() -> tuple[int, int, int]:
        a = agent()
        a.db.join_network("n1")
        a.on_keys(key_ring([K1], 1, 0))
        await settle(a)
        a.db.notify_join(Member("mgr1", "192.168.200.11", 7946))
        a.db.notify_msg(w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=5, node_name="mgr1", network_id="n1")))
        a.db.notify_msg(table_event(9))
        for _ in range(20):  # the loop's passes for those (the sync to mgr1, the event's rebroadcast) are done
            await asyncio.sleep(0.01)
        passes: list[float] = []
        tick = a.db.tick
        a.db.tick = lambda now: (passes.append(now), tick(now))[1]  # type: ignore[method-assign]
        for _ in range(5):
            a.db.notify_msg(table_event(9))  # copies of what it holds
            await asyncio.sleep(0.01)
        after_duplicates = len(passes)
        sent_before = len([c for c in FakeShell.instances[0].calls if c[0] == "send_to"])
        a.db.notify_msg(w.encode(w.BulkSync(node_name="mgr1", network_id="n1", reply_wanted=True, sync_id=1, part=0,
                                            parts=1, table_clock=9)))
        await asyncio.sleep(0.05)
        sent = len([c for c in FakeShell.instances[0].calls if c[0] == "send_to"]) - sent_before
        await a.stop()
        return after_duplicates, len(passes), sent
    after_duplicates, after_sync, sent = asyncio.run(run())
    assert after_duplicates == 0
    assert after_sync >= 1 and sent == 1

"""overlay_peer_table -> PeerSink (agent/network/overlay_peers.py) over networkdb on the in-memory stand-in for the
gossip core; the sink records the batches it is given (the vxlan side is helper overlay's)."""

from __future__ import annotations

import ipaddress

import pytest

from agent.gossip import netdb_wire as w
from agent.network.overlay_peers import TABLE, OverlayPeers, decode_peer, encode_peer
from tests.unit.netdb_fake import FakeCluster
from vxlan.types import OverlayPeer

N = "ovl1"


def peer(i: int, host: int) -> OverlayPeer:
    return OverlayPeer(ip=ipaddress.IPv4Address(f"10.0.9.{i}"), mac=f"02:42:0a:00:09:{i:02x}",
                       vtep=ipaddress.IPv4Address(f"192.168.200.{host}"))


class RecordingSink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[OverlayPeer]]] = []
        self.fail_adds = 0

    def add_peers(self, network_id: str, peers: list[OverlayPeer]) -> None:
        if self.fail_adds:
            self.fail_adds -= 1
            raise OSError("netlink: no buffer space")
        self.calls.append(("add", network_id, list(peers)))

    def remove_peers(self, network_id: str, peers: list[OverlayPeer]) -> None:
        self.calls.append(("remove", network_id, list(peers)))

    def held(self) -> set[OverlayPeer]:
        out: set[OverlayPeer] = set()
        for op, _n, ps in self.calls:
            (out.update if op == "add" else out.difference_update)(ps)
        return out


def setup(names: str = "abc") -> tuple[FakeCluster, dict[str, OverlayPeers], dict[str, RecordingSink]]:
    c = FakeCluster(3)
    ops, sinks = {}, {}
    for i, n in enumerate(names):
        db = c.add(n, watch=())
        db.join_network(N)
        sinks[n] = RecordingSink()
        ops[n] = OverlayPeers(db, sinks[n], ipaddress.IPv4Address(f"192.168.200.{11 + i}"))
        ops[n].start()
    c.run(1.0)
    return c, ops, sinks


def test_a_remote_endpoint_is_added_to_every_other_nodes_sink_and_not_to_its_own() -> None:
    c, ops, sinks = setup()
    ops["a"].publish(N, "ep1", peer(2, 11))
    c.run(1.0)
    assert sinks["b"].calls == [("add", N, [peer(2, 11)])]
    assert sinks["c"].calls == [("add", N, [peer(2, 11)])]
    assert sinks["a"].calls == []


def test_a_withdrawn_endpoint_is_removed_from_the_sinks() -> None:
    c, ops, sinks = setup()
    ops["a"].publish(N, "ep1", peer(2, 11))
    c.run(1.0)
    ops["a"].withdraw(N, "ep1")
    c.run(1.0)
    assert sinks["b"].calls == [("add", N, [peer(2, 11)]), ("remove", N, [peer(2, 11)])]
    assert ops["b"].peers(N) == []


def test_two_records_of_the_same_peer_are_one_add_and_one_remove_after_the_last() -> None:
    c, ops, sinks = setup()
    ops["a"].publish(N, "ep-old", peer(2, 11))
    ops["a"].publish(N, "ep-new", peer(2, 11))
    c.run(1.0)
    assert sinks["b"].calls == [("add", N, [peer(2, 11)])]
    ops["a"].withdraw(N, "ep-old")
    c.run(1.0)
    assert sinks["b"].calls == [("add", N, [peer(2, 11)])]
    ops["a"].withdraw(N, "ep-new")
    c.run(1.0)
    assert sinks["b"].calls[-1] == ("remove", N, [peer(2, 11)])


def test_an_updated_record_moves_the_peer() -> None:
    c, ops, sinks = setup()
    ops["a"].publish(N, "ep1", peer(2, 11))
    c.run(1.0)
    ops["a"].publish(N, "ep1", peer(3, 11))  # the same endpoint id re-published with a new address
    c.run(1.0)
    assert sinks["b"].calls == [("add", N, [peer(2, 11)]), ("remove", N, [peer(2, 11)]), ("add", N, [peer(3, 11)])]


def test_a_sink_failure_is_retried_by_reconcile_and_a_second_reconcile_does_nothing() -> None:
    c, ops, sinks = setup()
    sinks["b"].fail_adds = 1
    ops["a"].publish(N, "ep1", peer(2, 11))
    c.run(1.0)
    assert sinks["b"].calls == []
    ops["b"].reconcile()
    assert sinks["b"].calls == [("add", N, [peer(2, 11)])]
    ops["b"].reconcile()
    assert sinks["b"].calls == [("add", N, [peer(2, 11)])]


def test_after_the_sink_forgets_a_reconcile_adds_every_peer_in_one_batch() -> None:
    c, ops, sinks = setup()
    ops["a"].publish(N, "ep1", peer(2, 11))
    ops["c"].publish(N, "ep3", peer(3, 13))
    c.run(1.0)
    ops["b"].forget(N)
    ops["b"].reconcile()
    assert sinks["b"].calls[-1] == ("add", N, [peer(2, 11), peer(3, 13)])


def test_a_watch_started_late_programs_the_existing_peers() -> None:
    c, ops, sinks = setup()
    ops["a"].publish(N, "ep1", peer(2, 11))
    c.run(1.0)
    late = RecordingSink()
    OverlayPeers(c.dbs["b"], late, ipaddress.IPv4Address("192.168.200.12")).start()
    assert late.calls == [("add", N, [peer(2, 11)])]


def test_a_flapping_node_keeps_its_peers_programmed() -> None:
    c, ops, sinks = setup()
    ops["c"].publish(N, "ep3", peer(3, 13))
    c.run(1.0)
    c.partition(["c"], ["a", "b"])
    c.run(2.0)
    c.heal()
    c.run(2.0)
    assert sinks["a"].calls == [("add", N, [peer(3, 13)])]


def test_a_restarted_node_leaves_no_stale_peer_in_the_sinks() -> None:
    c, ops, sinks = setup()
    ops["c"].publish(N, "ep-old", peer(3, 13))
    c.run(1.0)
    c.kill("c")
    c.run(1.0)
    db = c.add("c", watch=())
    db.join_network(N)
    OverlayPeers(db, RecordingSink(), ipaddress.IPv4Address("192.168.200.13")).publish(N, "ep-new", peer(4, 13))
    c.run(3.0)
    assert sinks["a"].held() == {peer(4, 13)}
    assert ops["a"].peers(N) == [peer(4, 13)]


@pytest.mark.parametrize(("data", "why"), [
    (b"not json", "peer record is not JSON"),
    (b'{"ip":"10.0.9.2","mac":"02:42:0a:00:09:02"}', "peer record needs ip, mac and vtep strings"),
    (b'{"ip":"10.0.9.2","mac":"zz:42:0a:00:09:02","vtep":"192.168.200.11"}', "invalid MAC address 'zz:42:0a:00:09:02'"),
    (b'{"ip":"10.0.9.300","mac":"02:42:0a:00:09:02","vtep":"192.168.200.11"}', "invalid address in peer record"),
    (b"x" * 300, "peer record of 300 bytes exceeds 256"),
])
def test_a_bad_peer_record_is_refused_with_its_reason_and_never_reaches_the_sink(data: bytes, why: str) -> None:
    with pytest.raises(ValueError) as e:
        decode_peer(data)
    assert str(e.value).startswith(why)
    c, ops, sinks = setup("ab")
    ev = w.TableEvents(from_node="a", events=[w.TableEvent(type=w.TableEvent.CREATE, ltime=99, node_name="a",
                                                           network_id=N, table_name=TABLE, key="bad", value=data)])
    c.dbs["b"].notify_msg(w.encode(ev))
    assert sinks["b"].calls == [] and ops["b"].invalid == 1


def test_a_peer_record_round_trips() -> None:
    assert decode_peer(encode_peer(peer(7, 12))) == peer(7, 12)

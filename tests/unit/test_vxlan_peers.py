"""vxlan.peers.PeerTable: which neighbour and FDB entries the kernel gains or loses as remote
endpoints are added, removed and reconciled (pure, no kernel)."""
from __future__ import annotations

from ipaddress import IPv4Address as A

import pytest

from vxlan.peers import Changes, PeerTable, check_peer
from vxlan.types import OverlayPeer

LOCAL = A("192.168.200.11")


def peer(n: int, vtep: str = "192.168.200.12", mac: str | None = None) -> OverlayPeer:
    return OverlayPeer(ip=A(f"10.0.9.{n}"), mac=mac or f"02:42:0a:00:09:{n:02x}", vtep=A(vtep))


def test_a_new_peer_gives_one_neighbour_and_one_fdb_entry():
    changes = PeerTable(LOCAL).add([peer(3)])
    assert changes.neigh == {A("10.0.9.3"): "02:42:0a:00:09:03"}
    assert changes.fdb == {"02:42:0a:00:09:03": A("192.168.200.12")}


def test_adding_a_peer_again_changes_nothing_in_the_kernel():
    table = PeerTable(LOCAL)
    table.add([peer(3)])
    assert not table.add([peer(3)])
    assert table.counts[peer(3)] == 2


def test_a_peer_held_twice_stays_until_its_second_removal():
    table = PeerTable(LOCAL)
    table.add([peer(3)])
    table.add([peer(3)])
    assert not table.remove([peer(3)])
    changes = table.remove([peer(3)])
    assert changes.neigh == {A("10.0.9.3"): None}
    assert changes.fdb == {"02:42:0a:00:09:03": None}
    assert len(table) == 0


def test_removing_a_peer_never_added_is_ignored():
    table = PeerTable(LOCAL)
    assert not table.remove([peer(3)])
    assert len(table) == 0


def test_peers_behind_the_local_vtep_are_never_programmed():
    table = PeerTable(LOCAL)
    assert not table.add([peer(4, vtep="192.168.200.11")])
    assert len(table) == 0


def test_mac_spelled_in_capitals_is_the_same_peer():
    table = PeerTable(LOCAL)
    table.add([peer(3)])
    assert not table.add([peer(3, mac="02:42:0A:00:09:03")])
    assert table.counts[peer(3)] == 2


def test_a_moved_endpoint_keeps_its_neighbour_when_the_old_entry_is_removed_late():
    table = PeerTable(LOCAL)
    old = peer(3, vtep="192.168.200.12")
    new = peer(3, vtep="192.168.200.13")
    table.add([old])
    assert table.add([new]).fdb == {"02:42:0a:00:09:03": A("192.168.200.13")}
    changes = table.remove([old])
    assert changes.neigh == {} and changes.fdb == {}  # the new claim stays in the kernel


def test_removing_the_newest_claim_restores_the_previous_one():
    table = PeerTable(LOCAL)
    old = peer(3, vtep="192.168.200.12")
    new = peer(3, vtep="192.168.200.13")
    table.add([old])
    table.add([new])
    changes = table.remove([new])
    assert changes.fdb == {"02:42:0a:00:09:03": A("192.168.200.12")}
    assert changes.neigh == {A("10.0.9.3"): "02:42:0a:00:09:03"}


def test_sync_touches_only_the_difference():
    table = PeerTable(LOCAL)
    table.add([peer(3), peer(4)])
    changes = table.sync([peer(4), peer(5)])
    assert changes.neigh == {A("10.0.9.3"): None, A("10.0.9.5"): "02:42:0a:00:09:05"}
    assert changes.fdb == {"02:42:0a:00:09:03": None, "02:42:0a:00:09:05": A("192.168.200.12")}
    assert set(table.peers()) == {peer(4), peer(5)}


def test_sync_with_the_same_set_is_a_no_op():
    table = PeerTable(LOCAL)
    table.add([peer(3), peer(4)])
    assert not table.sync([peer(3), peer(4)])


def test_sync_holds_each_peer_once():
    table = PeerTable(LOCAL)
    table.add([peer(3)])
    table.add([peer(3)])
    table.sync([peer(3)])
    assert table.remove([peer(3)]).neigh == {A("10.0.9.3"): None}


def test_entries_lists_everything_the_kernel_must_hold():
    table = PeerTable(LOCAL)
    table.add([peer(3), peer(4)])
    table.remove([peer(3)])
    assert table.entries() == Changes(neigh={A("10.0.9.4"): "02:42:0a:00:09:04"},
                                      fdb={"02:42:0a:00:09:04": A("192.168.200.12")})


def test_one_change_among_ten_thousand_peers_is_one_neighbour_and_one_fdb_entry():
    table = PeerTable(LOCAL)
    many = [OverlayPeer(A(f"10.1.{i // 250}.{i % 250 + 1}"), f"02:42:0a:01:{i // 250:02x}:{i % 250 + 1:02x}",
                        A("192.168.200.12")) for i in range(10_000)]
    assert table.add(many).count() == 20_000
    assert table.remove(many[5000:5001]).count() == 2


def test_a_bad_mac_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"invalid peer MAC address '02:42:zz:00:09:03'"):
        check_peer(peer(3, mac="02:42:zz:00:09:03"))


def test_a_vtep_that_is_no_ipv4_address_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"invalid peer VTEP '192.168.200.12'"):
        check_peer(OverlayPeer(ip=A("10.0.9.3"), mac="02:42:0a:00:09:03", vtep="192.168.200.12"))  # type: ignore[arg-type]


def test_learning_the_local_vtep_drops_peers_behind_it():
    table = PeerTable(None)
    table.add([peer(3), peer(4, vtep="192.168.200.11")])
    changes = table.set_local_vtep(LOCAL)
    assert changes.neigh == {A("10.0.9.4"): None}
    assert table.peers() == [peer(3)]


def test_a_local_endpoint_takes_its_address_and_mac_out_of_the_kernels_remote_entries():
    table = PeerTable(LOCAL)
    table.add([peer(3, vtep="192.168.200.14")])  # a stale claim: the address was on h4 before
    changes = table.add_local(A("10.0.9.3"), "02:42:0A:00:09:03")
    assert (changes.neigh, changes.fdb) == ({A("10.0.9.3"): None}, {"02:42:0a:00:09:03": None})
    assert len(table) == 1  # the claim is kept


def test_a_remote_claim_arriving_while_a_local_endpoint_holds_the_address_is_not_programmed():
    table = PeerTable(LOCAL)
    table.add_local(A("10.0.9.3"), "02:42:0a:00:09:03")
    assert not table.add([peer(3, vtep="192.168.200.14")])
    assert not table.entries()
    assert not table.remove([peer(3, vtep="192.168.200.14")])


def test_the_shadowed_claim_is_programmed_again_when_the_local_endpoint_goes():
    table = PeerTable(LOCAL)
    table.add_local(A("10.0.9.3"), "02:42:0a:00:09:03")
    table.add([peer(3, vtep="192.168.200.14")])
    changes = table.remove_local(A("10.0.9.3"), "02:42:0a:00:09:03")
    assert (changes.neigh, changes.fdb) == ({A("10.0.9.3"): "02:42:0a:00:09:03"},
                                           {"02:42:0a:00:09:03": A("192.168.200.14")})


def test_a_local_endpoint_going_with_no_remote_claim_changes_nothing():
    table = PeerTable(LOCAL)
    table.add_local(A("10.0.9.3"), "02:42:0a:00:09:03")
    assert not table.remove_local(A("10.0.9.3"), "02:42:0a:00:09:03")
    assert not table.remove_local(A("10.0.9.3"), "02:42:0a:00:09:03")  # a second leave of the same: nothing

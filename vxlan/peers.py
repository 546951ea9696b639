"""The pure part of peer programming: which neighbour (IP -> MAC) and FDB (MAC -> VTEP) entries the
kernel must gain or lose when remote endpoints come and go. No I/O; vxlan/dataplane.py applies it.

A peer is reference-counted (two sources may report the same endpoint: two local endpoints' views,
a gossip bulk sync and an update); it reaches the kernel on its first reference and leaves on its
last. Two live peers may claim one IP or one MAC (an endpoint that moved: the new entry arrives
before the old one is deleted): the most recently added claim is the one programmed, and when it
goes the previous claim is programmed again, so the kernel never loses a live entry.

A local endpoint shadows every remote claim of its IP and MAC on its own node: the managers gave it that address, so
a remote claim is a stale one (a node slow to withdraw a removed task, a dead node's suspended entries) and, programmed,
it would take the local container's traffic into the tunnel (the VXLAN device answers ARP for it and the bridge learns
its MAC on the tunnel port). The claim is kept and programmed again if the local endpoint goes first.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from vxlan.types import OverlayPeer


@dataclass(slots=True)
class Changes:
    """The net kernel effect of one batch: a value to write, or None to delete the entry."""

    neigh: dict[IPv4Address, str | None] = field(default_factory=dict)  # overlay IP -> MAC
    fdb: dict[str, IPv4Address | None] = field(default_factory=dict)  # MAC -> VTEP

    def __bool__(self) -> bool:
        return bool(self.neigh or self.fdb)

    def count(self) -> int:
        return len(self.neigh) + len(self.fdb)


class PeerTable:
    """The remote endpoints of one overlay network on this node, with what the kernel holds.

    Every method returns the Changes that bring the kernel from the state before the call to the
    state after it; each costs O(peers named in the call), never O(table size), except sync."""

    def __init__(self, local_vtep: IPv4Address | None = None) -> None:
        # Peers behind our own VTEP are local endpoints: the bridge reaches them, never VXLAN.
        self.local_vtep = local_vtep
        self.counts: dict[OverlayPeer, int] = {}
        self._by_ip: dict[IPv4Address, list[OverlayPeer]] = {}
        self._by_mac: dict[str, list[OverlayPeer]] = {}
        self._local_ips: dict[IPv4Address, int] = {}  # local endpoints' addresses (a count: two may briefly share)
        self._local_macs: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.counts)

    def peers(self) -> list[OverlayPeer]:
        return list(self.counts)

    def add(self, peers: Iterable[OverlayPeer]) -> Changes:
        changes = Changes()
        for peer in peers:
            peer = normalized(peer)
            if peer.vtep == self.local_vtep:
                continue
            held = self.counts.get(peer, 0)
            self.counts[peer] = held + 1
            if held == 0:
                self._claim(peer, changes)
        return changes

    def remove(self, peers: Iterable[OverlayPeer]) -> Changes:
        """Drops one reference per peer named; a peer not held is ignored (a late delete)."""
        changes = Changes()
        for peer in peers:
            peer = normalized(peer)
            held = self.counts.get(peer, 0)
            if held == 0:
                continue
            if held > 1:
                self.counts[peer] = held - 1
                continue
            del self.counts[peer]
            self._release(peer, changes)
        return changes

    def sync(self, wanted: Iterable[OverlayPeer]) -> Changes:
        """Makes the table exactly `wanted` (each held once): the reconciliation after a restart
        or a bulk sync. Peers already held keep their entries untouched."""
        want = {p for p in map(normalized, wanted) if p.vtep != self.local_vtep}
        changes = Changes()
        for peer in [p for p in self.counts if p not in want]:
            del self.counts[peer]
            self._release(peer, changes)
        for peer in want:
            if peer in self.counts:
                self.counts[peer] = 1
            else:
                self.counts[peer] = 1
                self._claim(peer, changes)
        return changes

    def set_local_vtep(self, vtep: IPv4Address) -> Changes:
        """Learns this node's VTEP (reported before the network had a local endpoint): peers behind
        it are this node's own endpoints and leave the table."""
        self.local_vtep = vtep
        changes = Changes()
        for peer in [p for p in self.counts if p.vtep == vtep]:
            del self.counts[peer]
            self._release(peer, changes)
        return changes

    def entries(self) -> Changes:
        """Everything the kernel should hold now (all as writes): programming a fresh namespace."""
        changes = Changes()
        for ip, claims in self._by_ip.items():
            if ip not in self._local_ips:
                changes.neigh[ip] = claims[-1].mac
        for mac, claims in self._by_mac.items():
            if mac not in self._local_macs:
                changes.fdb[mac] = claims[-1].vtep
        return changes

    def add_local(self, ip: IPv4Address, mac: str) -> Changes:
        """A local endpoint takes ip and mac: the remote claims on them leave the kernel (they stay in the table)."""
        mac = mac.lower()
        changes = Changes()
        self._local_ips[ip] = self._local_ips.get(ip, 0) + 1
        self._local_macs[mac] = self._local_macs.get(mac, 0) + 1
        if ip in self._by_ip:
            changes.neigh[ip] = None
        if mac in self._by_mac:
            changes.fdb[mac] = None
        return changes

    def remove_local(self, ip: IPv4Address, mac: str) -> Changes:
        """The local endpoint went: a remote claim on its ip or mac is programmed again."""
        mac = mac.lower()
        changes = Changes()
        if _drop_local(self._local_ips, ip) and ip in self._by_ip:
            changes.neigh[ip] = self._by_ip[ip][-1].mac
        if _drop_local(self._local_macs, mac) and mac in self._by_mac:
            changes.fdb[mac] = self._by_mac[mac][-1].vtep
        return changes

    # ---- claims -----------------------------------------------------------------------
    def _claim(self, peer: OverlayPeer, changes: Changes) -> None:
        self._by_ip.setdefault(peer.ip, []).append(peer)
        self._by_mac.setdefault(peer.mac, []).append(peer)
        if peer.ip not in self._local_ips:
            changes.neigh[peer.ip] = peer.mac
        if peer.mac not in self._local_macs:
            changes.fdb[peer.mac] = peer.vtep

    def _release(self, peer: OverlayPeer, changes: Changes) -> None:
        _drop_claim(self._by_ip, peer.ip, peer, changes.neigh, lambda p: p.mac, peer.ip in self._local_ips)
        _drop_claim(self._by_mac, peer.mac, peer, changes.fdb, lambda p: p.vtep, peer.mac in self._local_macs)


def _drop_claim(index: dict, key, peer: OverlayPeer, out: dict, value, shadowed: bool) -> None:
    claims = index[key]
    was_winner = claims[-1] == peer
    claims.remove(peer)
    if shadowed:  # a local endpoint holds the key: the kernel has no remote entry for it either way
        if not claims:
            del index[key]
        return
    if not claims:
        del index[key]
        out[key] = None
    elif was_winner:
        out[key] = value(claims[-1])


def _drop_local(counts: dict, key) -> bool:
    """One local holder of key fewer; True when it was the last."""
    held = counts.get(key, 0)
    if held <= 1:
        counts.pop(key, None)
        return held == 1
    counts[key] = held - 1
    return False


def normalized(peer: OverlayPeer) -> OverlayPeer:
    """One spelling per peer (MACs lower case), so the same endpoint is never counted twice."""
    mac = peer.mac.lower()
    if mac == peer.mac:
        return peer
    return OverlayPeer(ip=peer.ip, mac=mac, vtep=peer.vtep)


def check_peer(peer: OverlayPeer) -> None:
    """Refuses a peer the kernel cannot take, naming the bad value (before anything is written)."""
    if not isinstance(peer.ip, IPv4Address):
        raise ValueError(f"invalid peer address {peer.ip!r}: expected an IPv4 address")
    if not isinstance(peer.vtep, IPv4Address):
        raise ValueError(f"invalid peer VTEP {peer.vtep!r}: expected an IPv4 address")
    parts = peer.mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
        raise ValueError(f"invalid peer MAC address {peer.mac!r}")

"""Remote overlay endpoints from gossip: networkdb's "overlay_peer_table" (key endpoint id, value ip/mac/vtep) turned
into add/remove calls on a PeerSink (the vxlan side, helper overlay's), reference-counted and reconciled idempotently.
Neighbours: agent/gossip/netdb.py (the table), vxlan/types.py (OverlayPeer), shoal/swarm/gossip_agent.py (wiring)."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Callable
from typing import Protocol

from agent.gossip.netdb import CREATE, DELETE, UPDATE, NetworkDB
from common.errdefs import Conflict
from vxlan.types import OverlayPeer

log = logging.getLogger(__name__)

TABLE = "overlay_peer_table"  # libnetwork's name for the same table
MAX_RECORD = 256
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class PeerSink(Protocol):
    """What programs the kernel (vxlan/): both calls must be idempotent for a peer already added/removed."""

    def add_peers(self, network_id: str, peers: list[OverlayPeer]) -> None: ...

    def remove_peers(self, network_id: str, peers: list[OverlayPeer]) -> None: ...


def encode_peer(peer: OverlayPeer) -> bytes:
    return json.dumps({"ip": str(peer.ip), "mac": peer.mac, "vtep": str(peer.vtep)}, separators=(",", ":")).encode()


def decode_peer(data: bytes) -> OverlayPeer:
    """A peer record from the table; ValueError naming what is wrong (a peer's bytes are never trusted)."""
    if len(data) > MAX_RECORD:
        raise ValueError(f"peer record of {len(data)} bytes exceeds {MAX_RECORD}")
    try:
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"peer record is not JSON: {e}") from None
    if not isinstance(d, dict) or not all(isinstance(d.get(k), str) for k in ("ip", "mac", "vtep")):
        raise ValueError("peer record needs ip, mac and vtep strings")
    mac = d["mac"].lower()
    if not _MAC.match(mac):
        raise ValueError(f"invalid MAC address {d['mac']!r}")
    try:
        ip, vtep = ipaddress.IPv4Address(d["ip"]), ipaddress.IPv4Address(d["vtep"])
    except ValueError as e:
        raise ValueError(f"invalid address in peer record: {e}") from None
    return OverlayPeer(ip=ip, mac=mac, vtep=vtep)


class OverlayPeers:
    """Keeps sink's peers equal to the table's remote entries. Two endpoint ids with the same (ip, mac, vtep) — a
    stale and a fresh record during a restart — are one peer in the kernel, removed when the last one goes."""

    def __init__(self, db: NetworkDB, sink: PeerSink, local_vtep: ipaddress.IPv4Address | None = None) -> None:
        self.db = db
        self.sink = sink
        self.local_vtep = local_vtep  # this node's own endpoints are local, not peers
        self.by_key: dict[tuple[str, str], OverlayPeer] = {}  # (network, endpoint id) -> peer
        self.refs: dict[tuple[str, OverlayPeer], int] = {}
        self.programmed: set[tuple[str, OverlayPeer]] = set()  # what the sink accepted
        self.invalid = 0
        self._cancel: Callable[[], None] | None = None

    def start(self) -> None:
        self._cancel = self.db.watch(TABLE, self._on_event, replay=True)

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel()
            self._cancel = None

    # ------------------------------------------------------------------ this node's endpoints
    def publish(self, network_id: str, endpoint_id: str, peer: OverlayPeer) -> None:
        """Announce a local endpoint to the network's other nodes (the node joined the network first)."""
        self.publish_to(self.db, network_id, endpoint_id, peer)

    @staticmethod
    def publish_to(db: NetworkDB, network_id: str, endpoint_id: str, peer: OverlayPeer) -> None:
        data = encode_peer(peer)
        try:
            db.create_entry(TABLE, network_id, endpoint_id, data)
        except Conflict:  # already there (a re-publish after a restart): make it current
            db.update_entry(TABLE, network_id, endpoint_id, data)

    def withdraw(self, network_id: str, endpoint_id: str) -> None:
        self.db.delete_entry(TABLE, network_id, endpoint_id)

    # ------------------------------------------------------------------ table -> sink
    def _on_event(self, event: str, network_id: str, key: str, value: bytes) -> None:
        k = (network_id, key)
        old = self.by_key.pop(k, None)
        if old is not None:
            self._unref(network_id, old)
        if event in (CREATE, UPDATE):
            try:
                peer = decode_peer(value)
            except ValueError as e:
                self.invalid += 1
                log.warning("overlay peers: endpoint %s on %s: %s", key, network_id[:12], e)
                return
            if self.local_vtep is not None and peer.vtep == self.local_vtep:
                return
            self.by_key[k] = peer
            self._ref(network_id, peer)
        else:
            assert event == DELETE

    def _ref(self, nid: str, peer: OverlayPeer) -> None:
        n = self.refs.get((nid, peer), 0) + 1
        self.refs[(nid, peer)] = n
        if n == 1:
            self._apply(nid, [peer], [])

    def _unref(self, nid: str, peer: OverlayPeer) -> None:
        n = self.refs.get((nid, peer), 0) - 1
        if n > 0:
            self.refs[(nid, peer)] = n
            return
        self.refs.pop((nid, peer), None)
        self._apply(nid, [], [peer])

    def _apply(self, nid: str, add: list[OverlayPeer], remove: list[OverlayPeer]) -> None:
        """One batch to the sink; what it refuses stays unprogrammed (or programmed) for reconcile() to retry."""
        if remove:
            try:
                self.sink.remove_peers(nid, remove)
                self.programmed.difference_update((nid, p) for p in remove)
            except Exception:
                log.exception("overlay peers: removing %d peers on %s failed", len(remove), nid[:12])
        if add:
            log.debug("perf: peers add %s", ",".join(str(p.ip) for p in add))
            try:
                self.sink.add_peers(nid, add)
                self.programmed.update((nid, p) for p in add)
            except Exception:
                log.exception("overlay peers: adding %d peers on %s failed", len(add), nid[:12])

    def reconcile(self) -> None:
        """Make the sink hold exactly the wanted peers again (after a sink failure, or its restart: forget())."""
        want = set(self.refs)
        by_net: dict[str, tuple[list[OverlayPeer], list[OverlayPeer]]] = {}
        for nid, p in sorted(want - self.programmed, key=str):
            by_net.setdefault(nid, ([], []))[0].append(p)
        for nid, p in sorted(self.programmed - want, key=str):
            by_net.setdefault(nid, ([], []))[1].append(p)
        for nid, (add, remove) in sorted(by_net.items()):
            self._apply(nid, add, remove)

    def forget(self, network_id: str | None = None) -> None:
        """The sink lost its state (its namespace was rebuilt): everything wanted is added again at reconcile()."""
        self.programmed = {x for x in self.programmed if network_id is not None and x[0] != network_id}

    def peers(self, network_id: str) -> list[OverlayPeer]:
        return sorted((p for nid, p in self.refs if nid == network_id), key=lambda p: (int(p.ip), p.mac))

"""The overlay data plane's vocabulary: one overlay network on this node and one remote endpoint on it.
Used by vxlan/ (which programs the kernel) and by agent/ code that learns peers from gossip (agent/gossip)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

VXLAN_PORT = 4789  # IANA; swarm's default data path port
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14


@dataclass(slots=True, frozen=True)
class OverlaySpec:
    """What the managers allocated for an overlay network, plus this node's data path address."""

    network_id: str
    name: str
    vni: int
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Interface  # e.g. 10.0.9.1/24, on the network's bridge
    data_addr: ipaddress.IPv4Address  # this node's VTEP address (VXLAN "local" is pinned to it)
    mtu: int | None = None  # None: underlay MTU - VXLAN_OVERHEAD
    port: int = VXLAN_PORT
    internal: bool = False
    encrypted: bool = False


@dataclass(slots=True, frozen=True)
class OverlayPeer:
    """A remote endpoint: its address and MAC on the overlay and the VTEP (node data path address) behind it."""

    ip: ipaddress.IPv4Address
    mac: str  # "02:42:0a:00:09:03"
    vtep: ipaddress.IPv4Address

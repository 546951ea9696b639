"""The overlay data plane of one node: a network exists in the kernel while it has a local endpoint,
and its remote peers follow what gossip reports (this class is the PeerSink netdb calls).

Kernel work in vxlan/kernel.py, decisions in vxlan/plan.py and vxlan/peers.py; the overlay network
driver (agent/network/drivers/overlay.py) and the lab tests drive it. Thread-safe: endpoints come from
the node's kernel threads (several containers' at once), peers from gossip's event loop; one lock orders them (a veth
is made outside it, its network held meanwhile).
"""
from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path

from vxlan import kernel, ns, plan
from vxlan.peers import PeerTable, check_peer
from vxlan.types import OverlayPeer, OverlaySpec

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LocalEndpoint:
    """An endpoint of this node on an overlay: its veth runs from the network's bridge into `sandbox`."""

    endpoint_id: str
    sandbox: Path  # the container's namespace
    ifname: str  # inside the sandbox: "eth0"
    address: IPv4Interface  # 10.0.9.2/24
    mac: str
    host_ifname: str = ""  # the end on the network's bridge (derived from the id when empty)


@dataclass(slots=True)
class _Network:
    spec: OverlaySpec
    names: plan.NetworkNames
    mtu: int = 0
    vx: int = 0  # the VXLAN device's index in the network's namespace
    endpoints: dict[str, LocalEndpoint] = field(default_factory=dict)
    joining: int = 0  # endpoints being plumbed or unplumbed outside the lock: the network stays meanwhile


def _locked(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(self: OverlayDataPlane, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)
    return wrapper


class OverlayDataPlane:
    """prefix: start of every namespace name this instance makes (a daemon's, a lab host's or a
    test's own, so parallel ones never collide); host: the namespace holding the VXLAN sockets."""

    def __init__(self, prefix: str, host: Path | None = None) -> None:
        self.prefix = prefix
        self.host = host
        self.networks: dict[str, _Network] = {}
        self.peers: dict[str, PeerTable] = {}  # network id -> remote endpoints (kept without endpoints too)
        self.lock = threading.RLock()

    # ---- start-up ---------------------------------------------------------------------
    @_locked
    def remove_stale(self) -> list[str]:
        """Deletes a previous run's namespaces and half-made VXLAN devices of this prefix that no
        network of this instance holds; returns their names. Call once at start."""
        live_ns = {n.names.netns for n in self.networks.values()}
        removed = []
        for name in plan.stale_namespaces(ns.listed(f"{self.prefix}ov-"), self.prefix, live_ns):
            kernel.remove_network(_names_of_namespace(name))
            removed.append(name)
        for name in plan.stale_vxlan_links(kernel.vxlan_links(self.host), self.prefix, set(self.networks)):
            kernel.delete_host_link(self.host, name)
            removed.append(name)
        if removed:
            log.info("overlay: removed stale %s", ", ".join(removed))
        return removed

    # ---- endpoints ------------------------------------------------------------------------
    def join(self, spec: OverlaySpec, endpoint: LocalEndpoint) -> None:
        """Plumbs a local endpoint; the network's namespace and devices are made with the first.
        The veth itself is made outside the lock: endpoints of different containers are plumbed side
        by side, and gossip's peers (on the event loop) do not wait for a veth; the network is held
        (`joining`) meanwhile so that a last endpoint leaving does not remove it underneath."""
        with self.lock:
            net = self.networks.get(spec.network_id)
            if net is None:
                net = self._create(spec)
            net.joining += 1
            # before the veth is up: a stale remote claim on this address must not take the new endpoint's traffic
            self._apply(spec.network_id, self._table(spec.network_id).add_local(endpoint.address.ip, endpoint.mac))
        if not endpoint.host_ifname:
            endpoint.host_ifname = host_ifname_for(endpoint.endpoint_id)
        try:
            kernel.attach(net.names, endpoint.host_ifname, endpoint.sandbox, endpoint.ifname, endpoint.address,
                          endpoint.mac, net.mtu)
        except Exception:
            with self.lock:
                self._let_go(net, endpoint)
            raise
        with self.lock:
            net.joining -= 1
            net.endpoints[endpoint.endpoint_id] = endpoint

    def leave(self, network_id: str, endpoint_id: str) -> None:
        """Unplumbs a local endpoint; the network's namespace and devices go with the last one."""
        with self.lock:
            net = self.networks.get(network_id)
            if net is None:
                return
            endpoint = net.endpoints.pop(endpoint_id, None)
            net.joining += 1  # held while its veth goes, outside the lock
        try:
            if endpoint is not None:
                kernel.detach(net.names, endpoint.host_ifname)
        finally:
            with self.lock:
                self._let_go(net, endpoint)

    def _let_go(self, net: _Network, endpoint: LocalEndpoint | None) -> None:
        """Under the lock, after an endpoint's veth went (or never came): the network is released, and goes with its
        last endpoint; otherwise a remote claim the endpoint shadowed is programmed again."""
        network_id = net.spec.network_id
        net.joining -= 1
        back = self._table(network_id).remove_local(endpoint.address.ip, endpoint.mac) if endpoint is not None else None
        if not net.endpoints and not net.joining and self.networks.get(network_id) is net:
            self._destroy(net)
        elif back:
            self._apply(network_id, back)

    @_locked
    def local_endpoints(self) -> list[tuple[str, LocalEndpoint]]:
        """(network id, endpoint) of every local endpoint plumbed now."""
        return [(net_id, ep) for net_id, net in self.networks.items() for ep in net.endpoints.values()]

    def mtu(self, network_id: str) -> int | None:
        net = self.networks.get(network_id)
        return net.mtu if net is not None else None

    def namespace(self, network_id: str) -> str | None:
        net = self.networks.get(network_id)
        return net.names.netns if net is not None else None

    def _create(self, spec: OverlaySpec) -> _Network:
        names = plan.names(self.prefix, spec)
        mtu = plan.overlay_mtu(spec, kernel.underlay_mtu(self.host, spec.data_addr))
        net = _Network(spec=spec, names=names, mtu=mtu)
        kernel.ensure_network(self.host, names, spec, mtu)
        table = self.peers.setdefault(spec.network_id, PeerTable(spec.data_addr))
        table.set_local_vtep(spec.data_addr)  # the namespace is new: its entries are written below
        try:
            net.vx = kernel.vxlan_index(names)
            kernel.apply_peers(names, table.entries(), net.vx)
        except Exception:
            kernel.remove_network(names)
            raise
        self.networks[spec.network_id] = net
        return net

    def _destroy(self, net: _Network) -> None:
        self.networks.pop(net.spec.network_id, None)
        kernel.remove_network(net.names)

    # ---- peers (PeerSink) ---------------------------------------------------------------------
    @_locked
    def add_peers(self, network_id: str, peers: list[OverlayPeer]) -> int:
        """One reference more for each peer; returns the kernel requests made (0: nothing new)."""
        for peer in peers:
            check_peer(peer)
        return self._apply(network_id, self._table(network_id).add(peers))

    @_locked
    def remove_peers(self, network_id: str, peers: list[OverlayPeer]) -> int:
        return self._apply(network_id, self._table(network_id).remove(peers))

    @_locked
    def sync_peers(self, network_id: str, peers: list[OverlayPeer]) -> int:
        """Makes the network's remote peers exactly `peers`, touching only what differs."""
        for peer in peers:
            check_peer(peer)
        return self._apply(network_id, self._table(network_id).sync(peers))

    @_locked
    def forget_network(self, network_id: str) -> None:
        """Gossip left the network: its peer table goes (the kernel's entries went with its namespace)."""
        if network_id not in self.networks:
            self.peers.pop(network_id, None)

    def _table(self, network_id: str) -> PeerTable:
        net = self.networks.get(network_id)
        return self.peers.setdefault(network_id, PeerTable(net.spec.data_addr if net else None))

    def _apply(self, network_id: str, changes) -> int:
        net = self.networks.get(network_id)
        if net is None or not changes:
            return 0  # no local endpoint: nothing in the kernel; programmed when the first one joins
        return kernel.apply_peers(net.names, changes, net.vx)

    # ---- shutdown -------------------------------------------------------------------------
    @_locked
    def close(self) -> None:
        """Removes every network's namespace and devices (a test's or a node's clean stop)."""
        for net in list(self.networks.values()):
            self._destroy(net)


def host_ifname_for(endpoint_id: str) -> str:
    """The bridge-side veth of an endpoint, stable for its id (it lives in the network's namespace)."""
    import hashlib

    return "ve" + hashlib.sha256(endpoint_id.encode()).hexdigest()[:9]


def _names_of_namespace(netns: str) -> plan.NetworkNames:
    """Enough names to delete a stale namespace: its VXLAN device is found by kind inside it."""
    return plan.NetworkNames(netns=netns, vxlan="", mark="")

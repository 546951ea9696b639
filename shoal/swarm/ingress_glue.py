"""The node's routing mesh (Docker's ingress-sbox): a namespace with one leg on the `ingress` overlay (the node's
ingress address from the allocator, pb.Node.attachment) and one on docker_gwbridge, made as engine.mesh.

Both legs are plumbed by the network controller's drivers (overlay: agent/network/drivers/overlay.py, which tells
gossip of the endpoint; bridge: docker_gwbridge), the rules by agent/network/mesh.py (IngressSandbox, and
FirewallIngress for the host's published ports). Called by shoal/swarm/service_glue.py before it applies bindings."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from typing import Any

from agent.network.drivers.base import Join
from agent.network.gwbridge import GWBRIDGE
from agent.network.mesh import FirewallIngress, IngressSandbox, RoutingMesh
from agent.network.netns import create_netns, delete_netns, netns_path
from agent.network.records import EndpointRecord
from shoal.swarm.executor_net import ensure_network
from vxlan.types import OverlayPeer

log = logging.getLogger(__name__)

CONTAINER = "ingress-sbox"  # the endpoints' owner (not a container: no record is saved for them)
_ENDPOINTS: dict[int, list[EndpointRecord]] = {}  # id(engine) -> the sandbox's endpoints, for remove_mesh


def sandbox_name(engine: Any) -> str:
    return f"{engine.options.netns_prefix}ingress_sbox"


def endpoint_id(node_id: str, network_id: str) -> str:
    """Distinct per node: gossip's overlay_peer_table is keyed by endpoint id across the cluster."""
    return hashlib.sha256(f"{CONTAINER}/{node_id}/{network_id}".encode()).hexdigest()


def ingress_address(node_object: Any) -> tuple[str, str] | None:
    """(ingress network id, address) of this node's ingress attachment, or None before the allocator gave one."""
    att = getattr(node_object, "attachment", None)
    if att is None or not att.network.id or not att.addresses:
        return None
    return att.network.id, att.addresses[0].split("/")[0]


async def ensure_mesh(node: Any) -> RoutingMesh | None:
    """engine.mesh, made once the node has its ingress address and the overlay driver; None until then."""
    engine = node.engine
    if engine.mesh is not None:
        return engine.mesh
    found = ingress_address(getattr(node, "node_object", None))
    if found is None or engine.net.drivers.find("overlay") is None:
        return None
    await ensure_network(engine, node.node_object.attachment.network)
    network_id, address = found
    mesh = await engine._kernel(make_mesh, engine, node.state.node_id, network_id, address)
    engine.mesh = mesh
    log.info("routing mesh: ingress sandbox %s at %s", sandbox_name(engine), address)
    return mesh


def make_mesh(engine: Any, node_id: str, ingress_id: str, address: str) -> RoutingMesh:
    """Kernel thread: the namespace, its docker_gwbridge leg (default route) and ingress leg, then the mesh."""
    net = engine.net
    ingress = net.networks[ingress_id]
    gw = net.lookup(GWBRIDGE)
    name = sandbox_name(engine)
    create_netns(name, ipv6=False)  # as Docker's ingress_sbox
    made: list[EndpointRecord] = []
    try:
        gw_ep = EndpointRecord(id=endpoint_id(node_id, gw.id), network_id=gw.id, container_id=CONTAINER)
        net.allocate_endpoint(gw, gw_ep)
        made.append(gw_ep)
        net.plumb(gw_ep, Join(netns=name, ifname="eth1", gateway=gw_ep.gateway or None))
        in_ep = EndpointRecord(id=endpoint_id(node_id, ingress_id), network_id=ingress_id, container_id=CONTAINER,
                               requested_ipv4=address)
        net.allocate_endpoint(ingress, in_ep)
        made.append(in_ep)
        net.plumb(in_ep, Join(netns=name, ifname="eth0", gateway=None))
        sandbox = IngressSandbox(netns_path(name), "eth0")
        _ENDPOINTS[id(engine)] = made
        return RoutingMesh(ingress_id, sandbox, FirewallIngress(net.firewall, gw_ep.ipv4, net.bridge_name(gw)))
    except Exception:
        for ep in reversed(made):
            try:
                net.unplumb(ep)
            except Exception:  # noqa: BLE001 - the namespace's removal takes its links anyway
                log.debug("ingress sandbox: unplumb %s failed", ep.id[:12], exc_info=True)
            net.release_endpoint(ep)
        delete_netns(name)
        raise


def announce(engine: Any, gossip: Any) -> bool:
    """The sandbox's ingress endpoint in gossip's overlay_peer_table, so task nodes can answer it (the driver's
    callback may have run before the overlay and gossip were connected). False when there is nothing to announce."""
    driver = engine.net.drivers.find("overlay")
    mesh = engine.mesh
    eps = [e for e in _ENDPOINTS.get(id(engine), []) if mesh is not None and e.network_id == mesh.ingress_network_id]
    if not eps or not hasattr(driver, "data_addr"):
        return False
    ep = eps[0]
    gossip.endpoint_up(ep.network_id, ep.id, OverlayPeer(ip=ipaddress.IPv4Address(ep.ipv4), mac=ep.mac,
                                                         vtep=driver.data_addr))
    return True


def mesh_network_ids(engine: Any) -> set[str]:
    """The networks the ingress sandbox has endpoints on (its copies must stay while it does)."""
    return {ep.network_id for ep in _ENDPOINTS.get(id(engine), [])}


def remove_mesh(engine: Any) -> None:
    """Kernel thread: the mesh's rules, its two endpoints and the namespace go (swarm leave)."""
    mesh, engine.mesh = engine.mesh, None
    if mesh is None:
        return
    mesh.close()
    net = engine.net
    for ep in reversed(_ENDPOINTS.pop(id(engine), [])):
        try:
            net.unplumb(ep)
        except Exception:  # noqa: BLE001 - the namespace's removal takes its links anyway
            log.debug("ingress sandbox: unplumb %s failed", ep.id[:12], exc_info=True)
        net.release_endpoint(ep)
    delete_netns(sandbox_name(engine))

"""The node's side of the overlay driver: enabled once the node is in a swarm (init, join, or a restart
that resumes one), with the swarm's advertise address as the VXLAN data path address.

Called from shoal/swarm/hooks.on_joined; the driver is agent/network/drivers/overlay.py.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def data_path_address(engine: Any) -> str:
    """The host part of the swarm's advertise address ("" when the node is in no swarm)."""
    state = getattr(getattr(engine, "swarm", None), "state", None)
    advertise = getattr(state, "advertise_addr", "") or ""
    return advertise.rpartition(":")[0] if ":" in advertise else advertise


async def enable_overlay(engine: Any) -> Any:
    """Registers the overlay driver on the engine's network controller (on its kernel thread) and
    plumbs again the overlay endpoints of running containers (a previous run's overlay namespaces
    are removed when the driver starts: a daemon restart rebuilds them from the records). Returns
    the driver (its `plane` is the PeerSink for gossip), or None when the node is in no swarm."""
    from agent.network.drivers.overlay import enable_overlay as enable

    address = data_path_address(engine)
    if not address:
        return None
    before = engine.net.drivers.find("overlay")
    driver = await engine._kernel(enable, engine.net, address, engine.options.netns_prefix)
    if driver is not before:  # a new data plane removed the old one's namespaces: plumb again
        for container in list(engine.containers.values()):
            on_overlay = any(engine.net.networks.get(e.network_id) is not None
                             and engine.net.networks[e.network_id].driver == "overlay"
                             for e in container.endpoints.values())
            if container.state == "running" and on_overlay:
                try:
                    await engine._kernel(engine.sandboxes.reconcile_links, container)
                except Exception:
                    log.exception("container %s: cannot plumb its overlay endpoints again", container.id[:12])
    return driver


def wire_gossip(driver: Any, agent: Any, loop: Any) -> None:
    """Connects the overlay driver and gossip both ways (for the gossip glue to call once both exist):
    remote peers from gossip's tables go to the data plane (`agent.overlay(sink)`; the plane is
    thread-safe), and this node's endpoints are announced (`agent.endpoint_up/endpoint_down`, on
    gossip's event loop: the driver calls from the kernel thread). Endpoints already up are announced now."""
    driver.on_endpoint_up = lambda nid, eid, peer: loop.call_soon_threadsafe(agent.endpoint_up, nid, eid, peer)
    driver.on_endpoint_down = lambda nid, eid: loop.call_soon_threadsafe(agent.endpoint_down, nid, eid)
    agent.overlay(driver.plane)
    for network_id, endpoint_id, peer in driver.local_endpoints():
        loop.call_soon_threadsafe(agent.endpoint_up, network_id, endpoint_id, peer)

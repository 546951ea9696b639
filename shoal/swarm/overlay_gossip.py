"""The node's wiring of the overlay driver to gossip, once both exist (whichever comes first calls ensure_wired):
remote peers from overlay_peer_table to the VXLAN data plane, local endpoints announced, and containers' names.

Names across hosts: each local overlay endpoint's container name, aliases and short id go in networkdb's
"container_table" (libnetwork keeps them in endpoint_table; here that table is the services' one, netdb_services), and
the remote entries are answered by the embedded DNS of this node's containers on the same network (NameTable's
per-owner names). Neighbours: shoal/swarm/overlay.py (wire_gossip), shoal/swarm/gossip_agent.py, agent/network/dns.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from typing import Any

from agent.gossip.netdb import CREATE, UPDATE
from common.errdefs import Conflict, NotFound

log = logging.getLogger(__name__)

TABLE = "container_table"
MAX_NAMES = 34  # name, short id and up to 32 aliases
_OWNER = "overlay-container:"  # NameTable owner of a remote endpoint's names


def ensure_wired(engine: Any) -> bool:
    """Connects engine's overlay driver and its node's gossip agent (idempotent; again when either was replaced).
    Called on the event loop from shoal/swarm/hooks.on_joined and shoal/swarm/node.py's key handling."""
    from agent.network.drivers.overlay import OverlayDriver
    from shoal.swarm.overlay import wire_gossip

    node = getattr(engine, "swarm", None)
    agent = getattr(node, "gossip", None)
    net = getattr(engine, "net", None)
    driver = net.drivers.find("overlay") if net is not None else None
    if agent is None or not isinstance(driver, OverlayDriver):
        return False
    if getattr(driver, "_gossip_agent", None) is agent:
        return True
    loop = asyncio.get_running_loop()
    if agent.overlay_peers is not None and agent.overlay_peers.sink is not driver.plane:
        # a new data plane (the daemon rebuilt it): everything wanted is programmed into it again
        agent.overlay_peers.sink = driver.plane
        agent.overlay_peers.forget()
        agent.overlay_peers.reconcile()
    names = _Names(engine, agent)
    wire_gossip(driver, agent, loop)
    driver.on_endpoint_up = lambda nid, eid, peer: loop.call_soon_threadsafe(names.up, nid, eid, peer)
    driver.on_endpoint_down = lambda nid, eid: loop.call_soon_threadsafe(names.down, nid, eid)
    for network_id, endpoint_id, _peer in driver.local_endpoints():
        loop.call_soon_threadsafe(names.publish, network_id, endpoint_id)
    driver._gossip_agent = agent
    if getattr(agent, "_names_watch", None) is None:
        agent._names_watch = agent.db.watch(TABLE, names.on_event, replay=True)
    log.info("overlay: driver wired to gossip (%s)", agent.node_id[:12])
    return True


def encode(ip: str, names: list[str]) -> bytes:
    return json.dumps({"ip": ip, "names": names}, separators=(",", ":")).encode()


def decode(data: bytes) -> tuple[str, list[str]]:
    """(address, names) of an entry; ValueError naming what is wrong (a peer's bytes are never trusted)."""
    try:
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"container record is not JSON: {e}") from None
    if not isinstance(d, dict) or not isinstance(d.get("ip"), str) or not isinstance(d.get("names"), list):
        raise ValueError("container record needs ip and names")
    ip = str(ipaddress.IPv4Address(d["ip"]))
    names = d["names"]
    if not names or len(names) > MAX_NAMES or not all(isinstance(n, str) and 0 < len(n) <= 255 for n in names):
        raise ValueError(f"container record: invalid names {names!r}")
    return ip, names


class _Names:
    """This node's overlay endpoints' names into the table; the others' into the DNS table."""

    def __init__(self, engine: Any, agent: Any) -> None:
        self.engine = engine
        self.agent = agent
        self.local: set[tuple[str, str]] = set()  # (network id, endpoint id) published by this node

    def up(self, network_id: str, endpoint_id: str, peer: Any) -> None:
        self.agent.endpoint_up(network_id, endpoint_id, peer)
        self.publish(network_id, endpoint_id)

    def down(self, network_id: str, endpoint_id: str) -> None:
        self.local.discard((network_id, endpoint_id))
        with contextlib.suppress(NotFound):
            self.agent.db.delete_entry(TABLE, network_id, endpoint_id)
        self.agent.endpoint_down(network_id, endpoint_id)

    def publish(self, network_id: str, endpoint_id: str) -> None:
        found = self._endpoint(endpoint_id)
        if found is None:
            return
        container, endpoint = found
        names = [container.name, *[a for a in endpoint.aliases if a != container.name], container.id[:12]]
        data = encode(endpoint.ipv4, names[:MAX_NAMES])
        self.local.add((network_id, endpoint_id))
        db = self.agent.db
        try:
            if not db.joined(network_id):
                db.join_network(network_id)
            try:
                db.create_entry(TABLE, network_id, endpoint_id, data)
            except Conflict:
                db.update_entry(TABLE, network_id, endpoint_id, data)
        except Exception:  # noqa: BLE001 - names are best effort; the endpoint works without them
            log.exception("overlay: cannot publish the names of endpoint %s", endpoint_id[:12])

    def _endpoint(self, endpoint_id: str) -> tuple[Any, Any] | None:
        for container in list(self.engine.containers.values()):
            for endpoint in container.endpoints.values():
                if endpoint.id == endpoint_id and endpoint.ipv4:
                    return container, endpoint
        return None

    def on_event(self, event: str, network_id: str, key: str, value: bytes) -> None:
        if (network_id, key) in self.local or self._endpoint(key) is not None:
            return  # this node's own containers are in the DNS table already
        table = self.engine.sandboxes.dns_table
        owner = _OWNER + key
        if event not in (CREATE, UPDATE):
            table.remove_service_names(owner, network_id)
            return
        try:
            ip, names = decode(value)
            table.set_service_names(owner, network_id, {n: [ip] for n in names}, {ip: names[0]})
        except ValueError as e:
            log.warning("overlay: container record %s on %s refused: %s", key[:12], network_id[:12], e)


def with_peers(engine: Any, doc: dict[str, Any], verbose: bool) -> dict[str, Any]:
    """`network inspect` of an overlay: Peers (moby's PeerInfo Name/IP from networkdb) when this node has the network
    here, or when verbose; with verbose also Services (the endpoint table's services and tasks); nothing for other
    drivers or without gossip."""
    agent = getattr(getattr(engine, "swarm", None), "gossip", None)
    if agent is None or doc.get("Driver") != "overlay":
        return doc
    peers = agent.network_peers(doc["Id"])
    if peers or verbose:
        doc["Peers"] = peers
    if verbose:
        doc["Services"] = agent.network_services(doc["Id"])
    return doc

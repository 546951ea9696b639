"""Network drivers behind one interface (base.Driver) and the registry that names them.

The controller and the sandbox ask the registry for a driver; vxlan/ registers overlay later.
"""
from __future__ import annotations

from agent.network.drivers.base import Driver, Join, Registry, UnavailableDriver
from agent.network.drivers.bridge import BridgeDriver
from agent.network.drivers.local import HostDriver, NullDriver
from agent.network.drivers.macvlan import IpvlanDriver, MacvlanDriver

NOT_A_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" '
    "to connect this node to swarm and try again."
)


def default_registry(mark_prefix: str, default_mtu: int) -> Registry:
    """null, host, bridge and macvlan (ipvlan refused with the reason); overlay answers 503 until the node is part of a swarm."""
    registry = Registry()
    registry.register(NullDriver())
    registry.register(HostDriver())
    registry.register(BridgeDriver(mark_prefix, default_mtu))
    registry.register(MacvlanDriver(mark_prefix))
    registry.register(IpvlanDriver())
    registry.register(UnavailableDriver("overlay", NOT_A_MANAGER))
    return registry


__all__ = ["BridgeDriver", "Driver", "HostDriver", "Join", "NullDriver", "Registry", "default_registry"]

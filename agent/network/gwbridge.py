"""docker_gwbridge: the local bridge network that gives swarm containers (overlay endpoints) their
way out of the host, made on a node when it inits or joins a swarm, as Docker makes it.

Calls NetworkController.create (agent/network/controller.py, which exposes ensure_gwbridge);
the swarm code (shoal/swarm/hooks.py) calls ensure_gwbridge(engine) at init and join.
What Docker 20.10 makes (`docker network inspect docker_gwbridge` after `swarm init` in a lab
host): driver bridge, scope local, the first free local-pool subnet (172.18.0.0/16 next to
docker0), not attachable, and exactly the options below. A network of that name made by the user
beforehand is used as it is (Docker's documented way to customise it).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.network.drivers.bridge import OPT_BRIDGE_NAME, OPT_ICC, OPT_MASQ
from agent.network.records import IPAMConfig, NetworkRecord
from common.errdefs import InvalidParameter

GWBRIDGE = "docker_gwbridge"
GWBRIDGE_OPTIONS = {
    OPT_ICC: "false",  # containers on different overlays must not meet through their way out
    OPT_MASQ: "true",
    OPT_BRIDGE_NAME: GWBRIDGE,
}


@dataclass(slots=True)
class GwbridgeCreate:
    """The create request for the controller (the fields NetworkController.create reads)."""

    name: str = GWBRIDGE
    driver: str = "bridge"
    scope: str = ""
    ipam_driver: str = "default"
    ipam_options: dict[str, str] = field(default_factory=dict)
    ipam_config: list[IPAMConfig] = field(default_factory=list)  # empty: the first free local subnet
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    enable_ipv6: bool = False
    config_only: bool = False
    options: dict[str, str] = field(default_factory=lambda: dict(GWBRIDGE_OPTIONS))
    labels: dict[str, str] = field(default_factory=dict)
    id: str = ""  # "": the controller makes one (NetworkCreate.id is set for swarm networks only)


def plan(networks: Iterable[NetworkRecord]) -> GwbridgeCreate | NetworkRecord:
    """The existing docker_gwbridge (kept as it is), or the request to make it.

    A docker_gwbridge of another driver cannot carry the containers' traffic out: refused,
    naming it, rather than swarm containers without a way out later.
    """
    for net in networks:
        if net.name == GWBRIDGE:
            if net.driver != "bridge":
                raise InvalidParameter(f"network {GWBRIDGE} exists with driver {net.driver}: "
                                       f"remove it or make it a bridge network before joining a swarm")
            return net
    return GwbridgeCreate()


def ensure_gwbridge(owner: Any) -> Any:
    """docker_gwbridge on this node: (its record, True when made now). Idempotent.

    `owner` is the NetworkController (call it on the kernel thread: it programs the bridge and the
    firewall like any network create), or the node's engine (anything with `net` and `_kernel`, as
    shoal/swarm/hooks.on_joined passes): then an awaitable that runs it on the engine's kernel thread.
    """
    controller = getattr(owner, "net", None)
    if controller is not None and callable(getattr(owner, "_kernel", None)):
        return owner._kernel(_ensure, controller)
    return _ensure(owner)


def _ensure(controller: Any) -> tuple[NetworkRecord, bool]:
    wanted = plan(controller.networks.values())
    if isinstance(wanted, NetworkRecord):
        return wanted, False
    record, _warning = controller.create(wanted)
    return record, True

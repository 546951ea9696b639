"""Records of the network layer: networks, their IPAM config and container endpoints.

Persisted as JSON by the node's state directory; shoal.engine.records embeds endpoints in
container records and shoal.api.convert shows them. Field names follow what they mean.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class IPAMConfig:
    subnet: str  # "172.17.0.0/16"
    gateway: str = ""  # "172.17.0.1"
    ip_range: str = ""  # "" means the whole subnet


@dataclass(slots=True)
class NetworkRecord:
    id: str  # 64 hex
    name: str
    driver: str  # a name in agent.network.drivers' registry: bridge | host | null
    created: str  # RFC 3339 with nanoseconds, UTC
    scope: str = "local"
    ipam_driver: str = "default"
    ipam_options: dict[str, str] = field(default_factory=dict)
    ipam_config: list[IPAMConfig] = field(default_factory=list)
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    enable_ipv6: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    predefined: bool = False  # bridge, host, none: cannot be removed or configured
    # Kernel objects of this network that shoal did not make and must leave as they are: a
    # bridge the user named (-o com.docker.network.bridge.name=br0) that existed already.
    # gateway_added says shoal put the gateway address on that bridge, so it may take it off.
    adopted_bridge: bool = False
    gateway_added: bool = False

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(slots=True)
class EndpointRecord:
    id: str  # 64 hex
    network_id: str
    container_id: str
    ipv4: str = ""  # "172.17.0.2" ("" on host/none)
    prefixlen: int = 0  # 16
    gateway: str = ""
    mac: str = ""  # "02:42:ac:11:00:02"
    aliases: list[str] = field(default_factory=list)
    requested_ipv4: str = ""  # IPAMConfig.IPv4Address: asked for again at every start
    host_ifname: str = ""  # the veth end on the host side
    ifname: str = ""  # the interface name inside the container ("eth0")


def to_dict(record: Any) -> dict[str, Any]:
    return asdict(record)


def network_from_dict(data: dict[str, Any]) -> NetworkRecord:
    data = dict(data)
    data["ipam_config"] = [IPAMConfig(**c) for c in data.get("ipam_config", [])]
    return NetworkRecord(**known_fields(NetworkRecord, data))


def endpoint_from_dict(data: dict[str, Any]) -> EndpointRecord:
    return EndpointRecord(**known_fields(EndpointRecord, data))


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}

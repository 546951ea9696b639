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
    # Saved True before a create makes kernel objects (a write-ahead record), False once it
    # is committed: a start that finds it True undoes the create (the client got no answer).
    pending: bool = False

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
    requested_mac: str = ""  # --mac-address: used instead of the one derived from the address
    host_ifname: str = ""  # the veth end on the host side
    ifname: str = ""  # the interface name inside the container ("eth0")
    sandbox: str = ""  # the namespace it was joined in (drivers whose interface lives only there: macvlan, overlay)
    # The docker_gwbridge endpoint a container gets when none of its networks gives it a way out
    # (agent.network.plan.needs_gateway_endpoint): not one of its networks for inspect or DNS.
    gateway_only: bool = False


def to_dict(record: Any) -> dict[str, Any]:
    return asdict(record)


def network_from_dict(data: dict[str, Any]) -> NetworkRecord:
    """The record saved by to_dict; TypeError naming the field when it is not one (a
    truncated, emptied or hand-edited file must not become a half-valid network)."""
    data = checked_fields(NetworkRecord, data)
    data["ipam_config"] = [IPAMConfig(**checked_fields(IPAMConfig, c)) for c in data.get("ipam_config", [])]
    return NetworkRecord(**data)


def endpoint_from_dict(data: dict[str, Any]) -> EndpointRecord:
    return EndpointRecord(**checked_fields(EndpointRecord, data))


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


# The JSON type each annotation stands for (annotations are strings: `from __future__`).
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "bool": bool, "list": list, "dict": dict}


def checked_fields(cls: type, data: Any) -> dict[str, Any]:
    """The known fields of data, each of its annotated JSON type (TypeError naming the first
    that is not); required fields must be present (TypeError from the constructor)."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    known = known_fields(cls, data)
    for f in fields(cls):
        if f.name not in known:
            continue
        base = str(f.type).split("[", 1)[0].split(" |", 1)[0]
        want = _JSON_TYPES.get(base)
        value = known[f.name]
        if value is None and str(f.type).endswith("| None"):  # an optional field, null in JSON
            continue
        # bool is an int in Python; a JSON true is no pid.
        if want is not None and (not isinstance(value, want) or (want is int and isinstance(value, bool))):
            raise TypeError(f"{cls.__name__} field {f.name}: expected {f.type}, got {type(value).__name__}")
    return known

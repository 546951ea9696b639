"""Ingress published ports for the allocator: dynamic ports 30000-32767 and swarm's conflict checks and messages.
Pure; core.py allocates with it and the service control API may call the checks at create/update (swarmkit does)."""

from __future__ import annotations

from collections.abc import Iterable

from proto import objects_pb2 as pb

from .pools import AllocationError

DYNAMIC_FIRST = 30000  # swarmkit's dynamic port range
DYNAMIC_LAST = 32767
INGRESS = pb.PortConfig.INGRESS
HOST = pb.PortConfig.HOST
DNSRR = pb.EndpointSpec.DNSRR
Key = tuple[int, int]  # (protocol, published port)


def endpoint_spec_error(spec: pb.EndpointSpec) -> str | None:
    """swarmkit's validateEndpointSpec (same wording); None when valid."""
    seen: set[Key] = set()
    for port in spec.ports:
        if spec.mode == DNSRR and port.publish_mode == INGRESS:
            return "EndpointSpec: port published with ingress mode can't be used with dnsrr mode"
        if port.published_port == 0:
            continue
        key = (port.protocol, port.published_port)
        if key in seen:
            return "EndpointSpec: duplicate published ports provided"
        seen.add(key)
    return None


def port_conflict(spec: pb.ServiceSpec, service_id: str, services: Iterable[pb.Service]) -> str | None:
    """swarmkit's checkPortConflicts: a published port another service holds (in its spec or its endpoint)."""
    ingress = {(p.protocol, p.published_port) for p in spec.endpoint.ports if p.published_port and p.publish_mode == INGRESS}
    host = {(p.protocol, p.published_port) for p in spec.endpoint.ports if p.published_port and p.publish_mode == HOST}
    if not ingress and not host:
        return None
    for other in services:
        if service_id and other.id == service_id:
            continue
        for p in [*other.spec.endpoint.ports, *other.endpoint.ports]:
            if not p.published_port:
                continue
            key = (p.protocol, p.published_port)
            name = other.spec.annotations.name
            if p.publish_mode == HOST and key in ingress:
                return f"port '{p.published_port}' is already in use by service '{name}' ({other.id}) as a host-published port"
            if p.publish_mode == INGRESS and (key in ingress or key in host):
                return f"port '{p.published_port}' is already in use by service '{name}' ({other.id}) as an ingress port"
    return None


class PortAllocator:
    """Ingress ports held by allocated services (rebuilt from the snapshot each pass) and a serial dynamic cursor."""

    def __init__(self) -> None:
        self.held: dict[Key, str] = {}  # (protocol, port) -> service id
        self.cursor = DYNAMIC_FIRST

    def sync(self, services: Iterable[pb.Service]) -> None:
        self.held = {}
        for s in services:
            for p in s.endpoint.ports:
                if p.publish_mode == INGRESS and p.published_port:
                    self.held.setdefault((p.protocol, p.published_port), s.id)

    def allocate(self, service: pb.Service, names: dict[str, str]) -> list[pb.PortConfig]:
        """The endpoint ports for service's spec: given ingress ports checked, missing ones picked; all or none."""
        mine = {k for k, sid in self.held.items() if sid == service.id}
        previous = {(p.protocol, p.target_port): p.published_port for p in service.endpoint.ports
                    if p.publish_mode == INGRESS and p.published_port}
        wanted: dict[Key, str] = {}
        out: list[pb.PortConfig] = []
        for p in service.spec.endpoint.ports:
            port = pb.PortConfig()
            port.CopyFrom(p)
            if p.publish_mode == INGRESS:
                if p.published_port:
                    key = (p.protocol, p.published_port)
                    holder = self.held.get(key)
                    if holder is not None and holder != service.id:
                        raise AllocationError(
                            f"port '{p.published_port}' is already in use by service '{names.get(holder, holder)}' ({holder}) as an ingress port")
                else:
                    again = previous.get((p.protocol, p.target_port))
                    key = (p.protocol, again) if again and (p.protocol, again) in mine else self._dynamic(p.protocol, wanted)
                    port.published_port = key[1]
                if key in wanted:
                    raise AllocationError("EndpointSpec: duplicate published ports provided")
                wanted[key] = service.id
            out.append(port)
        for key in mine - wanted.keys():
            del self.held[key]
        self.held.update(wanted)
        return out

    def _dynamic(self, protocol: int, wanted: dict[Key, str]) -> Key:
        span = DYNAMIC_LAST - DYNAMIC_FIRST + 1
        for i in range(span):
            port = DYNAMIC_FIRST + (self.cursor - DYNAMIC_FIRST + i) % span
            key = (protocol, port)
            if key not in self.held and key not in wanted:
                self.cursor = port + 1 if port < DYNAMIC_LAST else DYNAMIC_FIRST
                return key
        raise AllocationError(f"could not find an available port in the range {DYNAMIC_FIRST}-{DYNAMIC_LAST}")

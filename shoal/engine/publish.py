"""Published ports of containers (S14): host ports reserved per running container, persisted,
and the PublishedPort list the firewall turns into DNAT rules.

Used by shoal.engine.engine on start and exit; agent.network.ports does the parsing and bookkeeping.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from agent.network.firewall import PublishedPort
from agent.network.ports import PortAllocator, PortBinding, PortConflict, host_port_in_use
from shoal.engine.errors import EngineError
from shoal.engine.records import ContainerRecord
from shoal.engine.state import StateDir


def bindings_of(container: ContainerRecord) -> list[PortBinding]:
    return [PortBinding(**b) for b in container.port_bindings]


def store_bindings(bindings: list[PortBinding]) -> list[dict[str, Any]]:
    return [asdict(b) for b in bindings]


class PortPublisher:
    """One per daemon: the allocator of host ports, kept in data_dir/engine/ports/allocator.json."""

    def __init__(self, state: StateDir) -> None:
        self.state = state
        saved = state.load_all("ports").get("allocator")
        self.allocator = PortAllocator.from_dict(saved) if saved else PortAllocator()

    def publish(self, container: ContainerRecord) -> list[dict[str, Any]]:
        """Reserves a host port for every binding; all or nothing. Returns the published list."""
        taken: list[tuple[str, str, int]] = []
        published = []
        try:
            for binding in bindings_of(container):
                wanted: int | tuple[int, int] = binding.host_port
                if binding.host_port_end:
                    wanted = (binding.host_port, binding.host_port_end)
                port = self.allocator.allocate(binding.proto, binding.host_ip, wanted, owner=container.id)
                taken.append((binding.proto, binding.host_ip, port))
                if binding.host_port and host_port_in_use(binding.proto, binding.host_ip, port):
                    # Someone else listens there: DNAT would silently steal its traffic.
                    raise PortConflict(
                        f"Bind for {binding.host_ip or '0.0.0.0'}:{port} failed: port is already allocated"
                    )
                published.append({
                    "container_port": binding.container_port,
                    "proto": binding.proto,
                    "host_ip": binding.host_ip,
                    "host_port": port,
                })
        except PortConflict as exc:
            for proto, host_ip, port in taken:
                self.allocator.release(proto, host_ip, port)
            raise EngineError(exc.message, 500) from None
        self._save()
        return published

    def unpublish(self, container: ContainerRecord) -> None:
        self.allocator.release_owner(container.id)
        self._save()

    def _save(self) -> None:
        self.state.save("ports", "allocator", self.allocator.to_dict())


def firewall_ports(container: ContainerRecord, bridge: str, container_ip: str) -> list[PublishedPort]:
    return [
        PublishedPort(
            bridge=bridge,
            container_ip=container_ip,
            container_port=p["container_port"],
            proto=p["proto"],
            host_ip=p["host_ip"],
            host_port=p["host_port"],
            owner=container.id,
        )
        for p in container.published
    ]

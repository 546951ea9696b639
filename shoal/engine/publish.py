"""Published ports of containers (S14): host ports reserved per running container, persisted
one file per container, and the PublishedPort list the firewall turns into DNAT rules.

Used by shoal.engine.engine on start and exit; agent.network.ports does the parsing and bookkeeping.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from agent.network.firewall import PublishedPort
from agent.network.ports import PortAllocator, PortBinding, PortConflict, PortSpecError, host_port_in_use
from shoal.engine.errors import SystemError_
from shoal.engine.records import ContainerRecord
from shoal.engine.state import StateDir

log = logging.getLogger(__name__)


def bindings_of(container: ContainerRecord) -> list[PortBinding]:
    return [PortBinding(**b) for b in container.port_bindings]


def store_bindings(bindings: list[PortBinding]) -> list[dict[str, Any]]:
    return [asdict(b) for b in bindings]


class PortPublisher:
    """One per daemon: the allocator of host ports. Each container's reservations are kept in
    their own file, data_dir/engine/ports/<container id>.json, written at publish and deleted at
    unpublish, so a publish costs the same with 10 or 1,000 ports reserved; the allocator is
    rebuilt from those files at start (as dockerd rebuilds its own from its containers)."""

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.allocator = PortAllocator()
        saved = state.load_all("ports")
        legacy = saved.pop(_LEGACY, None)
        for owner, record in saved.items():
            self._restore(owner, [(u["proto"], u["host_ip"], u["port"]) for u in _entries(owner, record)])
        if legacy is not None:  # the one allocator file of earlier versions: split per container
            owners: dict[str, list[tuple[str, str, int]]] = {}
            for proto, host_ip, port, owner in PortAllocator.from_dict(legacy).allocated():
                owners.setdefault(owner, []).append((proto, host_ip, port))
            for owner, ports in owners.items():
                if owner not in saved:
                    self._restore(owner, ports)
                    self._save(owner)
            state.delete("ports", _LEGACY)

    def _restore(self, owner: str, ports: list[tuple[str, str, int]]) -> None:
        for proto, host_ip, port in ports:
            try:
                self.allocator.allocate(proto, host_ip, int(port), owner=owner)
            except (PortConflict, PortSpecError, ValueError, TypeError) as exc:
                log.warning("ports of %s: %s/%s:%s not restored: %s", owner, proto, host_ip, port, exc)

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
            raise SystemError_(exc.message) from None
        self._save(container.id)
        return published

    def unpublish(self, container: ContainerRecord) -> None:
        self.allocator.release_owner(container.id)
        self.state.delete("ports", container.id)

    def _save(self, owner: str) -> None:
        ports = [{"proto": p, "host_ip": ip, "port": n} for p, ip, n in self.allocator.owned_by(owner)]
        self.state.save("ports", owner, {"ports": ports})


_LEGACY = "allocator"


def _entries(owner: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    entries = record.get("ports") if isinstance(record, dict) else None
    if not isinstance(entries, list) or not all(
            isinstance(u, dict) and {"proto", "host_ip", "port"} <= u.keys() for u in entries):
        log.warning("ports/%s.json is not a list of reservations; ignored", owner)
        return []
    return entries


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

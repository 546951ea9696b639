"""One service as the node's load balancer and DNS see it on one network: its VIP and its healthy backends.
Produced from the gossip endpoint table (agent/gossip) or the task assignments; consumed by the VIP/mesh code and DNS."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(slots=True, frozen=True)
class Backend:
    task_id: str
    ip: ipaddress.IPv4Address
    task_name: str = ""  # <service>.<slot>.<task id>: DNS answers for it too


@dataclass(slots=True, frozen=True)
class ServiceBinding:
    """service on network_id; vip is None in dnsrr mode; ports are the routing mesh's (published, target, proto)."""

    service_id: str
    service_name: str
    network_id: str
    vip: ipaddress.IPv4Address | None
    backends: tuple[Backend, ...] = ()
    aliases: tuple[str, ...] = ()
    ingress_ports: tuple[tuple[int, int, str], ...] = field(default=())

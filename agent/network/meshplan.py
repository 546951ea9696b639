"""The pure half of the routing mesh: published ingress ports from ServiceBindings, the ingress sandbox's
nftables table and the host's DOCKER-INGRESS rules (iptables-restore text), as Docker lays them out.

agent.network.mesh applies them; agent.network.lbplan does the same job for VIPs in sandboxes.

Path of a connection to PORT on any node (Docker's, with nftables in place of IPVS):
  host nat PREROUTING/OUTPUT -> DOCKER-INGRESS: DNAT to the ingress sandbox's gateway-side
  address, same port; filter FORWARD -> DOCKER-INGRESS accepts it (and its replies);
  ingress sandbox: nat prerouting DNAT to a task's ingress address and target port, picked at
  random among all tasks of the service (on any node, through the ingress network), and
  masquerade out of its ingress interface, so the task answers the sandbox. A task therefore
  sees the ingress sandbox's ingress-network address as the client's address, as with Docker.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from agent.network.service_binding import ServiceBinding

TABLE = "shoal_mesh"
CHAIN = "DOCKER-INGRESS"
_T = f"ip {TABLE}"
PROTOS = ("tcp", "udp")


@dataclass(slots=True, frozen=True)
class IngressPort:
    """One published port of the mesh: where it goes (the target port on every task)."""

    proto: str
    published: int
    target: int
    service_id: str
    backends: tuple[IPv4Address, ...]  # the tasks' addresses on the ingress network, sorted


def ingress_ports(bindings: Iterable[ServiceBinding], ingress_network_id: str) -> list[IngressPort]:
    """The published ports of the services on the ingress network, by (proto, port). Two services
    publishing one port is refused with swarm's wording (the allocator should never let it by)."""
    out: dict[tuple[str, int], IngressPort] = {}
    for b in bindings:
        if b.network_id != ingress_network_id:
            continue
        backends = tuple(sorted({IPv4Address(x.ip) for x in b.backends}))
        for published, target, proto in b.ingress_ports:
            proto = proto.lower()
            if proto not in PROTOS:
                raise ValueError(f"invalid protocol {proto!r} for published port {published}")
            for port in (published, target):
                if not isinstance(port, int) or not 0 < port <= 65535:
                    raise ValueError(f"invalid port {port!r} for service {b.service_id}")
            key = (proto, published)
            if key in out and out[key].service_id != b.service_id:
                raise ValueError(f"port '{published}' is already in use by service "
                                 f"'{out[key].service_id}' as an ingress port")
            out[key] = IngressPort(proto, published, target, b.service_id, backends)
    return [out[k] for k in sorted(out)]


def render_sandbox(ports: list[IngressPort], ingress_ifname: str) -> str:
    """The ingress sandbox's whole table (replaced in one transaction: a handful of ports).

    A port without a task is not translated: the sandbox itself has nothing listening there,
    so the client is refused at once (TCP reset, ICMP port unreachable) instead of waiting."""
    _check_ifname(ingress_ifname)
    lines = [f"table {_T}", f"delete table {_T}", f"table {_T} {{",
             "  chain prerouting {", "    type nat hook prerouting priority -100; policy accept;"]
    for p in ports:
        if p.backends:
            pairs = ", ".join(f"{k} : {ip} . {p.target}" for k, ip in enumerate(p.backends))
            lines.append(f"    {p.proto} dport {p.published} dnat ip to numgen random mod {len(p.backends)} "
                         f"map {{ {pairs} }}")
    lines += ["  }", "  chain postrouting {", "    type nat hook postrouting priority 100; policy accept;",
              f'    oifname "{ingress_ifname}" ct status dnat masquerade', "  }", "}"]
    return "\n".join(lines) + "\n"


def render_host(ports: list[IngressPort], sandbox_ip: IPv4Address, gw_bridge: str) -> dict[str, str]:
    """iptables-restore --noflush text per table for the host's DOCKER-INGRESS chains (declared,
    so flushed and refilled); the jumps to them are kept by mesh.HostIngress."""
    _check_ifname(gw_bridge)
    nat = [f"-A {CHAIN} -p {p.proto} -m {p.proto} --dport {p.published} "
           f"-j DNAT --to-destination {sandbox_ip}:{p.published}" for p in ports]
    filt = []
    for p in ports:
        filt.append(f"-A {CHAIN} -p {p.proto} -m {p.proto} --dport {p.published} -j ACCEPT")
        # libnetwork's own match (-m state), in iptables-save's spelling.
        filt.append(f"-A {CHAIN} -p {p.proto} -m state --state RELATED,ESTABLISHED "
                    f"-m {p.proto} --sport {p.published} -j ACCEPT")
    return {
        "nat": "\n".join(["*nat", f":{CHAIN} - [0:0]", *nat, f"-A {CHAIN} -j RETURN", "COMMIT"]) + "\n",
        "filter": "\n".join(["*filter", f":{CHAIN} - [0:0]", *filt, f"-A {CHAIN} -j RETURN", "COMMIT"]) + "\n",
    }


def host_jumps(gw_bridge: str) -> list[tuple[str, str, list[str]]]:
    """(table, chain, rule spec) of the rules outside DOCKER-INGRESS the mesh needs on a host.
    The masquerade lets the host's own connections (to its own address) reach the sandbox."""
    _check_ifname(gw_bridge)
    return [
        ("nat", "PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", CHAIN]),
        ("nat", "OUTPUT", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", CHAIN]),
        ("nat", "POSTROUTING", ["-o", gw_bridge, "-m", "addrtype", "--src-type", "LOCAL", "-j", "MASQUERADE"]),
        ("filter", "FORWARD", ["-j", CHAIN]),  # placed by forward_position
    ]


def forward_position(forward_rules: list[str]) -> int | None:
    """Where the FORWARD jump to DOCKER-INGRESS belongs, given `iptables -S FORWARD` lines:
    right after DOCKER-USER's jump (the user's rules stay first) and before DOCKER-FORWARD's,
    whose DROP of traffic into a bridge from outside would end the connection first. None when
    it is there exactly once, in place."""
    jumps = [r.split()[2:] for r in forward_rules if r.startswith("-A FORWARD ")]
    ours = [i for i, spec in enumerate(jumps) if spec == ["-j", CHAIN]]
    user = next((i for i, spec in enumerate(jumps) if spec == ["-j", "DOCKER-USER"]), None)
    shoal = next((i for i, spec in enumerate(jumps) if spec == ["-j", "DOCKER-FORWARD"]), None)
    if len(ours) == 1 and (user is None or ours[0] > user) and (shoal is None or ours[0] < shoal):
        return None
    remaining = [spec for spec in jumps if spec != ["-j", CHAIN]]
    user = next((i for i, spec in enumerate(remaining) if spec == ["-j", "DOCKER-USER"]), None)
    return (user + 2) if user is not None else 1


def _check_ifname(name: str) -> None:
    if not name or len(name) > 15 or any(c in name for c in ' "/\\\n\t'):
        raise ValueError(f"invalid interface name {name!r}")

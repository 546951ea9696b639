"""Service endpoints in networkdb's "endpoint_table" (libnetwork's EndpointRecord idea): one record per task endpoint,
folded into ServiceBindings per network (agent/network/service_binding.py) for the VIP load balancer and DNS."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.gossip.netdb import NetworkDB
from agent.network.service_binding import Backend, ServiceBinding

TABLE = "endpoint_table"
MAX_RECORD = 2048
MAX_ALIASES = 32
MAX_PORTS = 64
# Entries folded before, by their key and bytes: every pass of the service glue folds the whole table, and an
# entry's bytes do not change while it lives, so each is parsed (JSON, addresses) and made a Backend once.
# Bounded: emptied when full.
_FOLDED_MAX = 8192
_folded: dict[tuple[str, bytes], tuple[EndpointRecord, Backend, tuple[int, str]]] = {}


@dataclass(slots=True, frozen=True)
class EndpointRecord:
    service_id: str
    service_name: str
    vip: ipaddress.IPv4Address | None  # None in dnsrr mode
    task_ip: ipaddress.IPv4Address
    task_name: str = ""  # <service>.<slot>.<task id>
    task_id: str = ""
    aliases: tuple[str, ...] = ()
    ingress_ports: tuple[tuple[int, int, str], ...] = field(default=())  # (published, target, proto)


def encode_record(r: EndpointRecord) -> bytes:
    return json.dumps({"service_id": r.service_id, "service_name": r.service_name,
                       "vip": str(r.vip) if r.vip is not None else "", "task_ip": str(r.task_ip),
                       "task_name": r.task_name, "task_id": r.task_id, "aliases": list(r.aliases),
                       "ingress_ports": [list(p) for p in r.ingress_ports]}, separators=(",", ":")).encode()


def _str(d: dict[str, object], k: str, required: bool = False) -> str:
    v = d.get(k, "")
    if not isinstance(v, str) or len(v) > 255 or (required and not v):
        raise ValueError(f"endpoint record: invalid {k} {v!r}")
    return v


def decode_record(data: bytes) -> EndpointRecord:
    """A record from the table; ValueError naming the bad field (a peer's bytes are never trusted)."""
    if len(data) > MAX_RECORD:
        raise ValueError(f"endpoint record of {len(data)} bytes exceeds {MAX_RECORD}")
    try:
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"endpoint record is not JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValueError("endpoint record is not an object")
    try:
        vip_s = _str(d, "vip")
        vip = ipaddress.IPv4Address(vip_s) if vip_s else None
        task_ip = ipaddress.IPv4Address(_str(d, "task_ip", required=True))
    except ipaddress.AddressValueError as e:
        raise ValueError(f"endpoint record: {e}") from None
    aliases = d.get("aliases", [])
    if not isinstance(aliases, list) or len(aliases) > MAX_ALIASES or not all(isinstance(a, str) and 0 < len(a) <= 255 for a in aliases):
        raise ValueError(f"endpoint record: invalid aliases {aliases!r}")
    ports_raw = d.get("ingress_ports", [])
    ports: list[tuple[int, int, str]] = []
    if not isinstance(ports_raw, list) or len(ports_raw) > MAX_PORTS:
        raise ValueError(f"endpoint record: invalid ingress_ports {ports_raw!r}")
    for p in ports_raw:
        if (not isinstance(p, list) or len(p) != 3 or not all(isinstance(x, int) and 0 < x < 65536 for x in p[:2])
                or p[2] not in ("tcp", "udp", "sctp")):
            raise ValueError(f"endpoint record: invalid ingress port {p!r}")
        ports.append((p[0], p[1], p[2]))
    return EndpointRecord(_str(d, "service_id", True), _str(d, "service_name", True), vip, task_ip,
                          _str(d, "task_name"), _str(d, "task_id"), tuple(aliases), tuple(ports))


def _fold_entry(key: str, data: bytes) -> tuple[EndpointRecord, Backend, tuple[int, str]]:
    """The entry's record, its backend and that backend's place in the order, remembered (a bad record raises
    every time: nothing is kept of it)."""
    found = _folded.get((key, data))
    if found is None:
        r = decode_record(data)
        backend = Backend(task_id=r.task_id or key, ip=r.task_ip, task_name=r.task_name)
        found = (r, backend, (int(r.task_ip), backend.task_id))
        if len(_folded) >= _FOLDED_MAX:
            _folded.clear()
        _folded[(key, data)] = found
    return found


def _first(pair: tuple[tuple[int, str], Backend]) -> tuple[int, str]:
    return pair[0]


def fold_service_bindings(db: NetworkDB, network_id: str, include_suspended: bool = False) -> list[ServiceBinding]:
    """The services on network_id with their backends, by service name. Entries of a failed node (suspended: gossip
    declared it dead, or the managers hold it DOWN, NetworkDB.hold()) are left out unless asked: a load balancer must
    not send to a node that is not answering. Bad records are skipped (counted in the second return of
    fold_with_errors)."""
    return fold_with_errors(db, network_id, include_suspended)[0]


def fold_with_errors(db: NetworkDB, network_id: str, include_suspended: bool = False) -> tuple[list[ServiceBinding], list[str]]:
    services: dict[str, dict[str, object]] = {}
    errors: list[str] = []
    for e in db.walk(TABLE, network_id):
        if e.suspended and not include_suspended:
            continue
        try:
            r, backend, order = _fold_entry(e.key, e.value)
        except ValueError as err:
            errors.append(f"{e.key}: {err}")
            continue
        s = services.setdefault(r.service_id, {"name": r.service_name, "vip": r.vip, "backends": [],
                                               "aliases": set(), "ports": set()})
        s["backends"].append((order, backend))  # type: ignore[attr-defined]
        s["aliases"].update(r.aliases)  # type: ignore[attr-defined]
        s["ports"].update(r.ingress_ports)  # type: ignore[attr-defined]
        if s["vip"] is None and r.vip is not None:
            s["vip"] = r.vip
    out = [ServiceBinding(service_id=sid, service_name=str(s["name"]), network_id=network_id, vip=s["vip"],  # type: ignore[arg-type]
                          backends=tuple(b for _, b in sorted(s["backends"], key=_first)),  # type: ignore[attr-defined]
                          aliases=tuple(sorted(s["aliases"])), ingress_ports=tuple(sorted(s["ports"])))  # type: ignore[call-overload]
           for sid, s in services.items()]
    return sorted(out, key=lambda b: (b.service_name, b.service_id)), errors


def inspect_services(db: NetworkDB, network_id: str, address_of: Callable[[str], str]) -> dict[str, dict[str, object]]:
    """`network inspect --verbose`'s Services of an overlay, as moby shows them: by service name its VIP ("" with
    dnsrr), its routing-mesh ports ("Target: T, Publish: P") and its tasks (name, endpoint id, address and the
    address of the node that announced it, from address_of(owner)); a failed node's tasks left out, bad records
    skipped. (moby's LocalLBIndex, an IPVS firewall mark, has no counterpart here: not shown.)"""
    out: dict[str, dict[str, object]] = {}
    for e in db.walk(TABLE, network_id):
        if e.suspended:
            continue
        try:
            r, _, _ = _fold_entry(e.key, e.value)
        except ValueError:
            continue
        s = out.setdefault(r.service_name, {"VIP": str(r.vip) if r.vip else "", "Ports": [], "Tasks": []})
        for published, target, _proto in r.ingress_ports:
            port = f"Target: {target}, Publish: {published}"
            if port not in s["Ports"]:  # type: ignore[operator]
                s["Ports"].append(port)  # type: ignore[attr-defined]
        s["Tasks"].append({"Name": r.task_name, "EndpointID": e.key, "EndpointIP": str(r.task_ip),  # type: ignore[attr-defined]
                           "Info": {"Host IP": address_of(e.owner)}})
    for s in out.values():
        s["Tasks"].sort(key=lambda t: t["Name"])  # type: ignore[attr-defined]
    return out

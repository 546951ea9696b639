"""The pure half of VIP load balancing: which VIPs a sandbox serves, their backends in numbered slots,
and the nftables text that makes one sandbox's table so (whole) or changes it (one small batch).

agent.network.lb runs the text in each sandbox through agent.network.lbnft; ServiceBindings
(agent.network.service_binding) are the input. No kernel, no clock: unit-tested on its own.

The table (family ip, name shoal_lb, nothing else touched):
  map vips      VIP -> goto pick_N (N = its number of backends)
  map backends  VIP . k -> backend k (k in 0..N-1)
  set empty     VIPs without a backend: refused at once (TCP reset, ICMP port unreachable)
  chain pick_N  dnat to ip daddr . numgen random mod N map @backends   (one per N, shared)
  chain output  nat hook output: tcp/udp to a VIP -> its pick chain
  chain refuse  filter hook output: tcp/udp to an empty VIP -> reject
A change of one service's backends is a few element updates (no rule is rewritten, nothing is
read back), so it costs the same with 10 services or 10,000. New connections are spread at
random; an established one keeps its conntrack entry (and so its backend) until it ends:
conntrack's established timeout (5 days by default) instead of IPVS's 900 s. Only TCP and UDP
are translated: a VIP does not answer ping, as with Docker.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from agent.network.service_binding import ServiceBinding

TABLE = "shoal_lb"
FAMILY = "ip"
_T = f"{FAMILY} {TABLE}"


@dataclass(slots=True)
class LbTable:
    """What one sandbox's table holds: VIP -> its backends by slot; pick chains 1..picks exist."""

    slots: dict[IPv4Address, tuple[IPv4Address, ...]] = field(default_factory=dict)
    picks: int = 0

    def copy(self) -> LbTable:
        return LbTable(dict(self.slots), self.picks)


def address(value: IPv4Address | str) -> IPv4Address:
    """value as an IPv4Address, returned as it is when it already is one (IPv4Address(an IPv4Address) parses
    its text again: every pass over every binding paid for that)."""
    return value if type(value) is IPv4Address else IPv4Address(value)


def wanted_vips(bindings: Iterable[ServiceBinding], network_ids: Iterable[str]) -> dict[IPv4Address, frozenset[IPv4Address]]:
    """VIP -> backend addresses for the services on the sandbox's networks (dnsrr services,
    without a VIP, are DNS only). A VIP claimed by two services is refused, naming both."""
    networks = set(network_ids)
    out: dict[IPv4Address, frozenset[IPv4Address]] = {}
    owner: dict[IPv4Address, str] = {}
    for b in bindings:
        if b.network_id not in networks or b.vip is None:
            continue
        vip = address(b.vip)
        if vip in owner and owner[vip] != b.service_id:
            raise ValueError(f"VIP {vip} is claimed by services {owner[vip]} and {b.service_id}")
        owner[vip] = b.service_id
        out[vip] = frozenset(address(x.ip) for x in b.backends)
    return out


def assign_slots(old: tuple[IPv4Address, ...], backends: Iterable[IPv4Address]) -> tuple[IPv4Address, ...]:
    """The new slot order: a kept backend keeps its slot where it can, so a change rewrites few
    slots. A slot left by a removed backend takes a new one, else the backend of the last slot."""
    wanted = backends if isinstance(backends, (set, frozenset)) else set(backends)
    kept = {ip: i for i, ip in enumerate(old) if ip in wanted}
    size = len(wanted)
    if len(kept) == size == len(old):
        return old  # the same backends: every slot stays (and a caller sees it by identity)
    # Set operations between sets reuse the hashes they hold (an IPv4Address hashes in Python).
    added = sorted(wanted.difference(kept))
    result: list[IPv4Address | None] = [None] * size
    # Kept backends whose old slot still exists stay there.
    movers = []
    for ip, i in kept.items():
        if i < size:
            result[i] = ip
        else:
            movers.append(ip)
    fill = added + sorted(movers, key=lambda ip: kept[ip])
    holes = [i for i, ip in enumerate(result) if ip is None]
    for i, ip in zip(holes, fill):
        result[i] = ip
    assert all(ip is not None for ip in result) and len(kept) + len(added) == size
    return tuple(result)  # type: ignore[arg-type]


def _pick_chain(n: int) -> str:
    return f"pick_{n}"


def _pick_rule(n: int) -> str:
    return f"dnat to ip daddr . numgen random mod {n} map @backends"


def render_full(table: LbTable) -> str:
    """The whole table, replacing whatever a table of that name holds, in one transaction."""
    lines = [
        f"table {_T}",  # makes the delete below valid when there is no table yet
        f"delete table {_T}",
        f"table {_T} {{",
        "  map vips { type ipv4_addr : verdict; }",
        # typeof: numgen's integer has no named type to declare the key with.
        "  map backends { typeof ip daddr . numgen random mod 2 : ip daddr; }",
        "  set empty { type ipv4_addr; }",
    ]
    for n in range(1, table.picks + 1):
        lines += [f"  chain {_pick_chain(n)} {{", f"    {_pick_rule(n)}", "  }"]
    lines += [
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        "    meta l4proto { tcp, udp } ip daddr vmap @vips",
        "  }",
        "  chain refuse {",
        "    type filter hook output priority 0; policy accept;",
        "    ip daddr @empty meta l4proto tcp reject with tcp reset",
        "    ip daddr @empty meta l4proto udp reject",
        "  }",
        "}",
    ]
    vips = [f"{vip} : goto {_pick_chain(len(b))}" for vip, b in sorted(table.slots.items()) if b]
    backends = [f"{vip} . {k} : {ip}" for vip, b in sorted(table.slots.items()) for k, ip in enumerate(b)]
    empty = [str(vip) for vip, b in sorted(table.slots.items()) if not b]
    lines += _elements("add", "vips", vips) + _elements("add", "backends", backends) + _elements("add", "empty", empty)
    return "\n".join(lines) + "\n"


def needed_picks(table: LbTable) -> int:
    return max((len(b) for b in table.slots.values()), default=0)


def with_picks(table: LbTable) -> LbTable:
    """The table with enough pick chains for its biggest service (pick chains are never removed
    by a change, only by a full rewrite)."""
    return LbTable(table.slots, max(table.picks, needed_picks(table)))


def plan_change(current: LbTable, changes: Mapping[IPv4Address, frozenset[IPv4Address] | None]) -> tuple[LbTable, str]:
    """The table after `changes` (VIP -> its backends now, None: the VIP is gone) and the batch
    that turns `current` into it ("" when nothing changes). All deletions come before the
    additions; the batch is one transaction, so no packet sees half of it."""
    new = current.copy()
    deletes: dict[str, list[str]] = {"vips": [], "backends": [], "empty": []}
    adds: dict[str, list[str]] = {"vips": [], "backends": [], "empty": []}
    for vip in sorted(changes):
        backends = changes[vip]
        old = current.slots.get(vip)
        if backends is None:
            if old is None:
                continue
            del new.slots[vip]
            _drop(vip, old, deletes)
            continue
        slots = assign_slots(old or (), backends)
        if old is not None and slots == old:
            continue
        new.slots[vip] = slots
        if old is None:
            _add(vip, slots, adds)
            continue
        if bool(old) != bool(slots):  # between empty and served: everything moves
            _drop(vip, old, deletes)
            _add(vip, slots, adds)
            continue
        for k in range(max(len(old), len(slots))):
            before = old[k] if k < len(old) else None
            after = slots[k] if k < len(slots) else None
            if before == after:
                continue
            if before is not None:
                deletes["backends"].append(f"{vip} . {k}")
            if after is not None:
                adds["backends"].append(f"{vip} . {k} : {after}")
        if len(old) != len(slots):
            deletes["vips"].append(str(vip))
            adds["vips"].append(f"{vip} : goto {_pick_chain(len(slots))}")
    lines: list[str] = []
    # Only the changed VIPs can need a bigger pick chain: no walk over every service.
    needed = max((len(new.slots[v]) for v in changes if v in new.slots), default=0)
    grown = LbTable(new.slots, max(current.picks, needed))
    for n in range(current.picks + 1, grown.picks + 1):
        lines += [f"add chain {_T} {_pick_chain(n)}", f"add rule {_T} {_pick_chain(n)} {_pick_rule(n)}"]
    for name in ("vips", "backends", "empty"):
        lines += _elements("delete", name, deletes[name])
    for name in ("backends", "empty", "vips"):  # a VIP points at its pick chain once its slots exist
        lines += _elements("add", name, adds[name])
    return grown, ("\n".join(lines) + "\n") if lines else ""


class Plans:
    """plan_change remembered over one pass of the balancer: its sandboxes on the same networks hold equal
    tables and get the same changes, so the batch is worked out once and each sandbox runs it."""

    def __init__(self) -> None:
        self._done: list[tuple[LbTable, Mapping[IPv4Address, frozenset[IPv4Address] | None], LbTable, str]] = []

    def plan(self, current: LbTable,
             changes: Mapping[IPv4Address, frozenset[IPv4Address] | None]) -> tuple[LbTable, str]:
        for table, asked, new, script in self._done:
            if table == current and asked == changes:
                return new.copy(), script
        new, script = plan_change(current, changes)
        self._done.append((current, changes, new, script))
        return new.copy(), script


def _drop(vip: IPv4Address, slots: tuple[IPv4Address, ...], deletes: dict[str, list[str]]) -> None:
    if slots:
        deletes["vips"].append(str(vip))
        deletes["backends"] += [f"{vip} . {k}" for k in range(len(slots))]
    else:
        deletes["empty"].append(str(vip))


def _add(vip: IPv4Address, slots: tuple[IPv4Address, ...], adds: dict[str, list[str]]) -> None:
    if slots:
        adds["vips"].append(f"{vip} : goto {_pick_chain(len(slots))}")
        adds["backends"] += [f"{vip} . {k} : {ip}" for k, ip in enumerate(slots)]
    else:
        adds["empty"].append(str(vip))


def _elements(verb: str, name: str, items: list[str]) -> list[str]:
    if not items:
        return []
    return [f"{verb} element {_T} {name} {{ {', '.join(items)} }}"]


def chains_in_place(listing: str) -> bool:
    """Whether `nft list chains ip` output shows our table with its two hooked chains."""
    head = f"table {_T} {{"
    if head not in listing:
        return False
    block = listing.split(head, 1)[1].split("\n}", 1)[0]
    return ("chain output {\n\t\ttype nat hook output" in block
            and "chain refuse {\n\t\ttype filter hook output" in block)


def table_from_wanted(wanted: Mapping[IPv4Address, frozenset[IPv4Address]]) -> LbTable:
    """A fresh table for these VIPs (slots in address order), with its pick chains."""
    return with_picks(LbTable({vip: tuple(sorted(b)) for vip, b in wanted.items()}))

"""iptables rules for bridge networks, laid out in Docker 28's chains and applied as atomic batches.
Rendering is pure; apply_rules rewrites all. firewall_live.Firewall (the network controller's) edits one container's chains."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from agent.network.sysctl import sysctl_path, write_sysctl

USER_CHAIN = "DOCKER-USER"
# Chains shoal owns: every apply flushes and rewrites them (never DOCKER-USER, never others').
FILTER_CHAINS = ("DOCKER", "DOCKER-BRIDGE", "DOCKER-CT", "DOCKER-FORWARD",
                 "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2")
NAT_CHAINS = ("DOCKER",)
BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
}
# Targets whose jumps from built-in chains shoal re-creates on every apply (old copies are removed).
_OWNED_TARGETS = {"filter": (USER_CHAIN, "DOCKER-FORWARD"), "nat": ("DOCKER",), "raw": ()}
# Per-container chains (slots, see Slots): SHOAL-PORTS-k, SHOAL-HAIRPIN-k, SHOAL-LOOPBACK-k.
SLOT_PREFIX = "SHOAL-"
_CT_ACCEPT = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"


class FirewallError(Exception):
    """iptables refused a batch; the message carries its stderr."""


@dataclass(slots=True)
class BridgeNet:
    """What the rules need to know about one bridge network."""

    bridge: str
    subnet: str
    icc: bool = True
    masquerade: bool = True
    internal: bool = False


@dataclass(slots=True)
class PublishedPort:
    """One host port forwarded to a container on a bridge; host_ip "" means every address."""

    bridge: str
    container_ip: str
    container_port: int
    proto: str
    host_ip: str
    host_port: int
    owner: str = ""  # the container publishing it: Firewall.unpublish(owner) removes its rules


def render_rules(nets: list[BridgeNet], ports: tuple[PublishedPort, ...] | list[PublishedPort] = (),
                 slots: Slots | None = None) -> dict[str, str]:
    """Shoal's complete rule set, table name -> iptables-restore text, as iptables-save prints it.

    Declaring a chain in a --noflush restore flushes it, so applying this rewrites shoal's chains;
    DOCKER-USER is deliberately not declared (its content belongs to the user). Ports on internal
    networks are left out: an internal network never publishes.
    """
    return render_layout(nets, ports, slots).text()


@dataclass(slots=True)
class Slots:
    """Which container's port rules live in which numbered chains (SHOAL-PORTS-k and friends).

    A slot freed by an unpublish keeps its (now empty) chains and the jumps to them, so the next
    publish refills it without touching the big DOCKER chains: only appending or inserting at
    the head of those is cheap with iptables-nft, deleting one rule from them costs a full read
    of the chain. The number of slots is the most containers ever published at once; a restart
    (a new Firewall) compacts them.
    """

    of: dict[str, int]  # owner (container id) -> slot
    count: int = 0  # slots 0..count-1 have filter and nat chains
    raw: set[int] = field(default_factory=set)  # slots that also have a raw chain (loopback guards)

    def assign(self, owners: list[str], need_raw: set[str]) -> Slots:
        """Slots for these owners: kept where they had one, the lowest free one or a new one else."""
        kept = {o: k for o, k in self.of.items() if o in owners}
        free = sorted(set(range(self.count)) - set(kept.values()))
        count = self.count
        for owner in sorted(o for o in owners if o not in kept):
            if free:
                kept[owner] = free.pop(0)
            else:
                kept[owner] = count
                count += 1
        return Slots(kept, count, self.raw | {kept[o] for o in need_raw})


def chain_names(k: int) -> tuple[str, str, str, str]:
    """Slot k's chains: filter ACCEPTs (from DOCKER), nat DNATs (from DOCKER), nat
    MASQUERADEs (from POSTROUTING), raw loopback guards (from PREROUTING)."""
    return f"SHOAL-PORTS-{k}", f"SHOAL-DNAT-{k}", f"SHOAL-HAIRPIN-{k}", f"SHOAL-LOOPBACK-{k}"


@dataclass(slots=True)
class Layout:
    """Shoal's rules as the kernel should hold them: (table, chain) -> rule specs (the text
    after "-A CHAIN "), in kernel order. Owned chains hold exactly these; a built-in chain
    starts with them."""

    chains: dict[tuple[str, str], list[str]]
    owned: list[tuple[str, str]]

    def text(self) -> dict[str, str]:
        """iptables-save-like text per table; slot chains come last, highest slot first."""
        out = {}
        for table in BUILTIN_CHAINS:
            owned = sorted((c for t, c in self.owned if t == table), key=_chain_order)
            chains = sorted((c for t, c in self.chains if t == table), key=_chain_order)
            lines = [f"*{table}"] + [f":{c} - [0:0]" for c in owned]
            lines += [f"-A {c} {spec}" for c in chains for spec in self.chains[(table, c)]]
            out[table] = "\n".join(lines + ["COMMIT"]) + "\n"
        return out

    def same(self, other: Layout) -> bool:
        """The same rules in the same chains (the order chains were made in does not matter)."""
        return self.chains == other.chains and sorted(self.owned) == sorted(other.owned)


_ORDER = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING") + FILTER_CHAINS
_SLOT_KINDS = ("SHOAL-PORTS-", "SHOAL-DNAT-", "SHOAL-HAIRPIN-", "SHOAL-LOOPBACK-")


def _chain_order(chain: str) -> tuple[int, int, int]:
    for kind, prefix in enumerate(_SLOT_KINDS):
        if chain.startswith(prefix) and chain[len(prefix):].isdigit():
            return (1, -int(chain[len(prefix):]), kind)
    return (0, _ORDER.index(chain) if chain in _ORDER else len(_ORDER), 0)


def render_layout(nets: list[BridgeNet], ports: tuple[PublishedPort, ...] | list[PublishedPort] = (),
                  slots: Slots | None = None) -> Layout:
    """The rules for these networks and ports; `slots` (made by Slots.assign) places each owner's ports."""
    _check_nets(nets)
    pub = publishable(nets, ports)
    by_owner = ports_by_owner(pub)
    if slots is None:
        slots = Slots({}).assign(list(by_owner), {o for o, ps in by_owner.items() if needs_raw(ps)})
    owned = [("filter", c) for c in FILTER_CHAINS] + [("nat", c) for c in NAT_CHAINS]
    chains: dict[tuple[str, str], list[str]] = {key: [] for key in (
        ("filter", "FORWARD"), *[("filter", c) for c in FILTER_CHAINS], ("nat", "PREROUTING"),
        ("nat", "OUTPUT"), ("nat", "POSTROUTING"), *[("nat", c) for c in NAT_CHAINS], ("raw", "PREROUTING"))}
    _fill_fixed(chains, nets)
    contents = {slots.of[o]: slot_rules(ps) for o, ps in by_owner.items()}
    # Newest slot first: a new slot's jumps are inserted at the head of each chain.
    for k in reversed(range(slots.count)):
        ports_chain, dnat, hairpin, loopback = chain_names(k)
        rules = contents.get(k, {})
        chains[("filter", "DOCKER")].insert(slots.count - 1 - k, f"-j {ports_chain}")
        chains[("nat", "DOCKER")].append(f"-j {dnat}")
        chains[("nat", "POSTROUTING")].insert(slots.count - 1 - k, f"-j {hairpin}")
        owned += [("filter", ports_chain), ("nat", dnat), ("nat", hairpin)]
        chains[("filter", ports_chain)] = rules.get(("filter", "ports"), [])
        chains[("nat", dnat)] = rules.get(("nat", "dnat"), [])
        chains[("nat", hairpin)] = rules.get(("nat", "hairpin"), [])
        if k in slots.raw:
            chains[("raw", "PREROUTING")].append(f"-j {loopback}")
            owned.append(("raw", loopback))
            chains[("raw", loopback)] = rules.get(("raw", "loopback"), [])
    return Layout(chains, owned)


def ports_by_owner(ports: list[PublishedPort]) -> dict[str, list[PublishedPort]]:
    out: dict[str, list[PublishedPort]] = {}
    for p in ports:
        out.setdefault(p.owner, []).append(p)
    return out


def needs_raw(ports: list[PublishedPort]) -> bool:
    return any(p.host_ip and IPv4Address(p.host_ip).is_loopback for p in ports)


def slot_rules(ports: list[PublishedPort]) -> dict[tuple[str, str], list[str]]:
    """One owner's rules per (table, slot chain kind), each sorted and once, whatever the port order."""
    out: dict[tuple[str, str], set[str]] = {}
    for p in ports:
        for key, spec in port_rules(p):
            out.setdefault(key, set()).add(spec)
    return {key: sorted(specs) for key, specs in out.items()}


def port_rules(p: PublishedPort) -> list[tuple[tuple[str, str], str]]:
    """((table, slot chain kind), spec) of one published port on a non-internal bridge."""
    rules = [
        # What reaches a bridge from outside it is dropped (DOCKER) unless a published port accepts it first.
        (("filter", "ports"), f"-d {p.container_ip}/32 ! -i {p.bridge} -o {p.bridge} "
                              f"{_match(p, p.container_port)} -j ACCEPT"),
        # No `! -i BRIDGE`: other containers on the bridge reach published ports at the host's address.
        (("nat", "dnat"), f"{f'-d {p.host_ip}/32 ' if p.host_ip else ''}{_match(p, p.host_port)} "
                           f"-j DNAT --to-destination {p.container_ip}:{p.container_port}"),
        # Like dockerd --userland-proxy=false (shoal has no proxy): the host's own connections, to
        # loopback too, are DNATed; route_localnet on the bridge lets 127.0.0.1 leave through it and
        # this src-type LOCAL masquerade gives those packets the bridge's address.
        (("nat", "hairpin"), f"-o {p.bridge} -m addrtype --src-type LOCAL -j MASQUERADE"),
        # Hairpin: a container reaching its own published port comes back to itself; without the
        # masquerade its reply would skip the NAT and be dropped.
        (("nat", "hairpin"), f"-s {p.container_ip}/32 -d {p.container_ip}/32 "
                             f"{_match(p, p.container_port)} -j MASQUERADE"),
    ]
    if p.host_ip and IPv4Address(p.host_ip).is_loopback:
        # A port published on a loopback address must not be reachable from other hosts, which
        # route_localnet plus the DNAT would otherwise allow (as Docker 28 does, drop it early).
        rules.append((("raw", "loopback"), f"-d {p.host_ip}/32 ! -i lo {_match(p, p.host_port)} -j DROP"))
    return rules


def publishable(nets: list[BridgeNet], ports: tuple[PublishedPort, ...] | list[PublishedPort]
               ) -> list[PublishedPort]:
    by_bridge = {n.bridge: n for n in nets}
    out = []
    for p in ports:
        net = by_bridge.get(p.bridge)
        if net is None:
            raise ValueError(f"published port {p.host_port}/{p.proto} is on unknown bridge {p.bridge}")
        _check_port(p)
        if not net.internal:
            out.append(p)
    return out


def _check_port(p: PublishedPort) -> None:
    if p.proto not in ("tcp", "udp"):
        raise ValueError(f"invalid proto: {p.proto}")
    for port in (p.container_port, p.host_port):
        if not isinstance(port, int) or not 0 < port <= 65535:
            raise ValueError(f"invalid port {port!r} for {p.container_ip}")
    try:
        IPv4Address(p.container_ip)
        if p.host_ip:
            IPv4Address(p.host_ip)
    except ValueError as exc:
        raise ValueError(f"invalid published port address: {exc}") from None


def _match(p: PublishedPort, port: int) -> str:
    return f"-p {p.proto} -m {p.proto} --dport {port}"


def _fill_fixed(chains: dict[tuple[str, str], list[str]], nets: list[BridgeNet]) -> None:
    """The rules that depend on the networks only (not on published ports)."""
    fwd = [n for n in nets if not n.internal]
    chains[("filter", "FORWARD")] += ["-j DOCKER-USER", "-j DOCKER-FORWARD"]
    chains[("filter", "DOCKER")] += [f"! -i {n.bridge} -o {n.bridge} -j DROP" for n in fwd]
    chains[("filter", "DOCKER-BRIDGE")] += [f"-o {n.bridge} -j DOCKER" for n in fwd]
    chains[("filter", "DOCKER-CT")] += [f"-o {n.bridge} {_CT_ACCEPT}" for n in fwd]
    forward = chains[("filter", "DOCKER-FORWARD")]
    forward += ["-j DOCKER-CT", "-j DOCKER-ISOLATION-STAGE-1", "-j DOCKER-BRIDGE"]
    for n in nets:
        forward += _forward_rules(n)
    stage1 = chains[("filter", "DOCKER-ISOLATION-STAGE-1")]
    # Internal networks' drops come first, as Docker inserts them at the head of stage 1.
    for n in nets:
        if n.internal:
            subnet = _subnet(n)
            stage1 += [f"! -s {subnet} -o {n.bridge} -j DROP", f"! -d {subnet} -i {n.bridge} -j DROP"]
    stage1 += [f"-i {n.bridge} ! -o {n.bridge} -j DOCKER-ISOLATION-STAGE-2" for n in fwd]
    chains[("filter", "DOCKER-ISOLATION-STAGE-2")] += [f"-o {n.bridge} -j DROP" for n in fwd]
    chains[("nat", "PREROUTING")].append("-m addrtype --dst-type LOCAL -j DOCKER")
    chains[("nat", "OUTPUT")].append("-m addrtype --dst-type LOCAL -j DOCKER")
    chains[("nat", "POSTROUTING")] += [_masquerade(n) for n in nets if n.masquerade and not n.internal]


def _forward_rules(n: BridgeNet) -> list[str]:
    within = f"-i {n.bridge} -o {n.bridge} -j {'ACCEPT' if n.icc else 'DROP'}"
    if n.internal:
        return [within]
    if n.icc:
        return [f"-i {n.bridge} -j ACCEPT"]
    return [within, f"-i {n.bridge} ! -o {n.bridge} -j ACCEPT"]


def _masquerade(n: BridgeNet) -> str:
    return f"-s {_subnet(n)} ! -o {n.bridge} -j MASQUERADE"


def build_restore(nets: list[BridgeNet], current: dict[str, str],
                  stale_bridges: tuple[str, ...] | list[str] = (),
                  ports: tuple[PublishedPort, ...] | list[PublishedPort] = (),
                  slots: Slots | None = None) -> dict[str, str]:
    """The --noflush batch that turns `current` (iptables-save text per table) into shoal's rules.

    Shoal's chains are redeclared (flushed) and refilled. In built-in chains, every existing copy
    of a shoal rule (jumps to its chains, its MASQUERADE rules, those of `stale_bridges`) is
    deleted and the wanted rules are inserted at the top, so each exists exactly once and
    DOCKER-USER comes first. DOCKER-USER itself is only declared when it is missing. Slot chains
    (SHOAL-*) that the new rules do not use are emptied and deleted.
    """
    rendered = render_rules(nets, ports, slots)
    bridges = {n.bridge for n in nets} | set(stale_bridges)
    batch: dict[str, str] = {}
    for table, text in rendered.items():
        lines = text.strip().splitlines()
        decls = [ln for ln in lines if ln.startswith(":")]
        rules = [ln for ln in lines if ln.startswith("-A ")]
        existing = _save_rules(current.get(table, ""))
        have_chains = _save_chains(current.get(table, ""))
        if table == "filter" and USER_CHAIN not in have_chains:
            decls.append(f":{USER_CHAIN} - [0:0]")
        declared = {d[1:].split()[0] for d in decls}
        stale = sorted(c for c in have_chains if c.startswith(SLOT_PREFIX) and c not in declared)
        out = [f"*{table}"] + decls + [f":{c} - [0:0]" for c in stale]
        for chain in BUILTIN_CHAINS[table]:
            wanted = [r for r in rules if _chain_of(r) == chain]
            for old in existing:
                if _chain_of(old) == chain and (old in wanted or _is_owned(table, old, bridges)):
                    out.append("-D" + old[2:])
            out += [f"-I {chain} {i} {r.split(' ', 2)[2]}" for i, r in enumerate(wanted, 1)]
        out += [r for r in rules if _chain_of(r) not in BUILTIN_CHAINS[table]]
        out += [f"-X {c}" for c in stale]
        out.append("COMMIT")
        batch[table] = "\n".join(out) + "\n"
    return batch


def _is_owned(table: str, rule: str, bridges: set[str]) -> bool:
    words = rule.split()
    target = words[words.index("-j") + 1] if "-j" in words else None
    if target in _OWNED_TARGETS[table] or (target or "").startswith(SLOT_PREFIX):
        return True
    if table == "raw":
        # The loopback guard's shape: -d 127.x/32 ! -i lo -p P -m P --dport N -j DROP
        return (len(words) == 15 and words[1:3] == ["PREROUTING", "-d"]
                and words[3].startswith("127.") and words[4:7] == ["!", "-i", "lo"]
                and words[13:] == ["-j", "DROP"])
    if table != "nat" or words[1] != "POSTROUTING" or words[-2:] != ["-j", "MASQUERADE"]:
        return False
    # Docker's MASQUERADE shape for a bridge shoal manages: -s SUBNET ! -o BRIDGE -j MASQUERADE
    if len(words) == 9 and words[2] == "-s" and words[4:6] == ["!", "-o"] and words[6] in bridges:
        return True
    # Host-to-bridge (older shoal put it here): -o BRIDGE -m addrtype --src-type LOCAL -j MASQUERADE
    if len(words) == 10 and words[2] == "-o" and words[3] in bridges and words[4:7] == [
            "-m", "addrtype", "--src-type"]:
        return True
    # Hairpin (older shoal put it here): -s CIP/32 -d CIP/32 -p P -m P --dport N -j MASQUERADE
    return (len(words) == 14 and words[2] == "-s" and words[4] == "-d" and words[3] == words[5]
            and words[3].endswith("/32") and words[6] == "-p" and words[10] == "--dport")


def _chain_of(rule: str) -> str:
    return rule.split()[1]


def _save_rules(save: str) -> list[str]:
    return [ln.strip() for ln in save.splitlines() if ln.startswith("-A ")]


def _save_chains(save: str) -> set[str]:
    return {ln[1:].split()[0] for ln in save.splitlines() if ln.startswith(":")}


def apply_rules(nets: list[BridgeNet], stale_bridges: tuple[str, ...] | list[str] = (),
                ports: tuple[PublishedPort, ...] | list[PublishedPort] = (),
                slots: Slots | None = None) -> None:
    """Make the current namespace's iptables match render_rules(nets, ports, slots), one batch.

    `stale_bridges` names bridges of removed networks whose MASQUERADE rules must go too.
    Running it twice leaves the same rules, none duplicated. Bridges that exist and publish
    ports get route_localnet=1, so the host's 127.0.0.1 connections can be DNATed to them.
    This reads and rewrites every shoal chain; Firewall.publish changes one container's chains.
    """
    batch = build_restore(nets, save_tables(), stale_bridges, ports, slots)
    run_tool(["iptables-restore", "-w", "--noflush"], stdin="".join(batch[t] for t in BUILTIN_CHAINS))
    for bridge in sorted({p.bridge for p in publishable(nets, ports)}):
        route_localnet(bridge)


def route_localnet(bridge: str) -> None:
    key = f"net.ipv4.conf.{bridge}.route_localnet"
    if sysctl_path(key).exists():
        write_sysctl(key, "1")


def save_tables() -> dict[str, str]:
    """iptables-save text per table, from one iptables-save run (tables it does not print are "")."""
    lines: dict[str, list[str]] = {t: [] for t in BUILTIN_CHAINS}
    table = ""
    for line in run_tool(["iptables-save"]).splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        if table:
            lines.setdefault(table, []).append(line)
    return {t: "\n".join(ls) + "\n" if ls else "" for t, ls in lines.items()}


def rules_in_place(nets: list[BridgeNet], ports: tuple[PublishedPort, ...] | list[PublishedPort] = (),
                   slots: Slots | None = None) -> bool:
    """Whether the current namespace still holds exactly shoal's rules (one iptables-save).

    False after anything flushed or edited them (`iptables -F`, a firewalld reload): shoal's chains
    must match rule for rule, and each built-in chain must start with shoal's rules, once each.
    """
    return layout_matches(render_layout(nets, ports, slots), parse_save(save_tables()))


def rules_match(rendered: dict[str, str], current: dict[str, str]) -> bool:
    """The pure comparison behind rules_in_place: rendered text vs iptables-save text per table."""
    rules, declared = parse_save(rendered)
    layout = Layout({key: specs for key, specs in rules.items()}, sorted(declared))
    for key in declared:
        layout.chains.setdefault(key, [])
    return layout_matches(layout, parse_save(current))


Saved = tuple[dict[tuple[str, str], list[str]], set[tuple[str, str]]]


def parse_save(tables: dict[str, str]) -> Saved:
    """(table, chain) -> rule specs in order, and the set of (table, chain) declared; one pass."""
    rules: dict[tuple[str, str], list[str]] = {}
    chains: set[tuple[str, str]] = set()
    for table, text in tables.items():
        for line in text.splitlines():
            if line.startswith("-A "):
                chain, _, spec = line[3:].partition(" ")
                rules.setdefault((table, chain), []).append(spec)
            elif line.startswith(":"):
                chains.add((table, line[1:].split(" ", 1)[0]))
    return rules, chains


def layout_matches(layout: Layout, saved: Saved) -> bool:
    """Shoal's chains hold exactly the layout's rules; each built-in chain starts with shoal's
    rules, in order, and holds none of them a second time; DOCKER-USER exists."""
    rules, chains = saved
    if ("filter", USER_CHAIN) not in chains:
        return False
    owned = set(layout.owned)
    for key, want in layout.chains.items():
        have = rules.get(key, [])
        if key in owned:
            if key not in chains or have != want:
                return False
        elif want and (have[:len(want)] != want or not set(want).isdisjoint(have[len(want):])):
            return False
    return True


def ensure_docker_user_chain() -> None:
    """Create an empty DOCKER-USER chain in filter if it is missing; never touch its rules."""
    chains = _save_chains(run_tool(["iptables-save", "-t", "filter"]))
    if USER_CHAIN not in chains:
        # A restore that only declares the chain creates it; no race with a concurrent -N.
        run_tool(["iptables-restore", "-w", "--noflush"], stdin=f"*filter\n:{USER_CHAIN} - [0:0]\nCOMMIT\n")


def enable_ip_forward() -> None:
    """net.ipv4.ip_forward=1 in the current network namespace."""
    write_sysctl("net.ipv4.ip_forward", "1")


def run_tool(argv: list[str], stdin: str | None = None) -> str:
    exe = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/sbin:/sbin")
    if exe is None:
        raise FirewallError(f"{argv[0]} not found")
    proc = subprocess.run([exe, *argv[1:]], input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FirewallError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _subnet(n: BridgeNet) -> str:
    return str(IPv4Network(n.subnet))


def _check_nets(nets: list[BridgeNet]) -> None:
    seen: set[str] = set()
    for n in nets:
        if not n.bridge or len(n.bridge) > 15 or any(c.isspace() or c in "/!" for c in n.bridge):
            raise ValueError(f"invalid bridge name {n.bridge!r}")
        if n.bridge in seen:
            raise ValueError(f"bridge {n.bridge} listed twice")
        seen.add(n.bridge)
        try:
            IPv4Network(n.subnet)
        except ValueError:
            raise ValueError(f"invalid subnet {n.subnet!r} for bridge {n.bridge}") from None

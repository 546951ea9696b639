"""iptables rules for bridge networks, laid out in Docker 28's chains and applied as atomic batches.
Used by the network controller after networks change; rendering is pure, apply_rules does the I/O."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
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


def render_rules(nets: list[BridgeNet], ports: tuple[PublishedPort, ...] | list[PublishedPort] = ()
                 ) -> dict[str, str]:
    """Shoal's complete rule set, table name -> iptables-restore text, as iptables-save prints it.

    Declaring a chain in a --noflush restore flushes it, so applying this rewrites shoal's chains;
    DOCKER-USER is deliberately not declared (its content belongs to the user). Ports on internal
    networks are left out: an internal network never publishes.
    """
    _check_nets(nets)
    pub = _published(nets, ports)
    return {"filter": _render_filter(nets, pub), "nat": _render_nat(nets, pub), "raw": _render_raw(pub)}


def _published(nets: list[BridgeNet], ports: tuple[PublishedPort, ...] | list[PublishedPort]
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


def _render_filter(nets: list[BridgeNet], pub: list[PublishedPort]) -> str:
    fwd = [n for n in nets if not n.internal]
    rules = ["-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-FORWARD"]
    # DOCKER: what reaches a bridge from outside it is dropped unless a published port accepts it first.
    rules += [f"-A DOCKER -d {p.container_ip}/32 ! -i {p.bridge} -o {p.bridge} "
              f"{_match(p, p.container_port)} -j ACCEPT" for p in pub]
    rules += [f"-A DOCKER ! -i {n.bridge} -o {n.bridge} -j DROP" for n in fwd]
    rules += [f"-A DOCKER-BRIDGE -o {n.bridge} -j DOCKER" for n in fwd]
    rules += [f"-A DOCKER-CT -o {n.bridge} {_CT_ACCEPT}" for n in fwd]
    rules += ["-A DOCKER-FORWARD -j DOCKER-CT",
              "-A DOCKER-FORWARD -j DOCKER-ISOLATION-STAGE-1",
              "-A DOCKER-FORWARD -j DOCKER-BRIDGE"]
    for n in nets:
        rules += _forward_rules(n)
    # Internal networks' drops come first, as Docker inserts them at the head of stage 1.
    for n in nets:
        if n.internal:
            subnet = _subnet(n)
            rules += [f"-A DOCKER-ISOLATION-STAGE-1 ! -s {subnet} -o {n.bridge} -j DROP",
                      f"-A DOCKER-ISOLATION-STAGE-1 ! -d {subnet} -i {n.bridge} -j DROP"]
    rules += [f"-A DOCKER-ISOLATION-STAGE-1 -i {n.bridge} ! -o {n.bridge} -j DOCKER-ISOLATION-STAGE-2"
              for n in fwd]
    rules += [f"-A DOCKER-ISOLATION-STAGE-2 -o {n.bridge} -j DROP" for n in fwd]
    return _table("filter", FILTER_CHAINS, rules)


def _forward_rules(n: BridgeNet) -> list[str]:
    within = f"-A DOCKER-FORWARD -i {n.bridge} -o {n.bridge} -j {'ACCEPT' if n.icc else 'DROP'}"
    if n.internal:
        return [within]
    if n.icc:
        return [f"-A DOCKER-FORWARD -i {n.bridge} -j ACCEPT"]
    return [within, f"-A DOCKER-FORWARD -i {n.bridge} ! -o {n.bridge} -j ACCEPT"]


def _render_nat(nets: list[BridgeNet], pub: list[PublishedPort]) -> str:
    # Like dockerd --userland-proxy=false (shoal has no proxy): the host's own connections, to
    # loopback too, are DNATed; route_localnet on the bridge lets 127.0.0.1 leave through it and
    # the src-type LOCAL masquerade gives those packets the bridge's address.
    rules = ["-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
             "-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER"]
    with_ports = {p.bridge for p in pub}
    for n in nets:
        if n.bridge in with_ports:
            rules.append(f"-A POSTROUTING -o {n.bridge} -m addrtype --src-type LOCAL -j MASQUERADE")
        if n.masquerade and not n.internal:
            rules.append(_masquerade(n))
    # Hairpin: a container reaching its own published port comes back to itself; without the
    # masquerade its reply would skip the NAT and be dropped.
    rules += [f"-A POSTROUTING -s {p.container_ip}/32 -d {p.container_ip}/32 "
              f"{_match(p, p.container_port)} -j MASQUERADE" for p in pub]
    # No `! -i BRIDGE`: other containers on the bridge reach published ports at the host's address.
    rules += [f"-A DOCKER{f' -d {p.host_ip}/32' if p.host_ip else ''} {_match(p, p.host_port)} "
              f"-j DNAT --to-destination {p.container_ip}:{p.container_port}" for p in pub]
    return _table("nat", NAT_CHAINS, rules)


def _render_raw(pub: list[PublishedPort]) -> str:
    # A port published on a loopback address must not be reachable from other hosts, which
    # route_localnet plus the DNAT would otherwise allow (as Docker 28 does, drop it early).
    rules = [f"-A PREROUTING -d {p.host_ip}/32 ! -i lo {_match(p, p.host_port)} -j DROP"
             for p in pub if p.host_ip and IPv4Address(p.host_ip).is_loopback]
    return _table("raw", (), rules)


def _masquerade(n: BridgeNet) -> str:
    return f"-A POSTROUTING -s {_subnet(n)} ! -o {n.bridge} -j MASQUERADE"


def _table(name: str, chains: tuple[str, ...], rules: list[str]) -> str:
    lines = [f"*{name}"] + [f":{c} - [0:0]" for c in chains] + rules + ["COMMIT"]
    return "\n".join(lines) + "\n"


def build_restore(nets: list[BridgeNet], current: dict[str, str],
                  stale_bridges: tuple[str, ...] | list[str] = (),
                  ports: tuple[PublishedPort, ...] | list[PublishedPort] = ()) -> dict[str, str]:
    """The --noflush batch that turns `current` (iptables-save text per table) into shoal's rules.

    Shoal's chains are redeclared (flushed) and refilled. In built-in chains, every existing copy
    of a shoal rule (jumps to its chains, its MASQUERADE rules, those of `stale_bridges`) is
    deleted and the wanted rules are inserted at the top, so each exists exactly once and
    DOCKER-USER comes first. DOCKER-USER itself is only declared when it is missing.
    """
    rendered = render_rules(nets, ports)
    bridges = {n.bridge for n in nets} | set(stale_bridges)
    batch: dict[str, str] = {}
    for table, text in rendered.items():
        lines = text.strip().splitlines()
        decls = [ln for ln in lines if ln.startswith(":")]
        rules = [ln for ln in lines if ln.startswith("-A ")]
        existing = _save_rules(current.get(table, ""))
        if table == "filter" and USER_CHAIN not in _save_chains(current.get(table, "")):
            decls.append(f":{USER_CHAIN} - [0:0]")
        out = [f"*{table}"] + decls
        for chain in BUILTIN_CHAINS[table]:
            wanted = [r for r in rules if _chain_of(r) == chain]
            for old in existing:
                if _chain_of(old) == chain and (old in wanted or _is_owned(table, old, bridges)):
                    out.append("-D" + old[2:])
            out += [f"-I {chain} {i} {r.split(' ', 2)[2]}" for i, r in enumerate(wanted, 1)]
        out += [r for r in rules if _chain_of(r) not in BUILTIN_CHAINS[table]]
        out.append("COMMIT")
        batch[table] = "\n".join(out) + "\n"
    return batch


def _is_owned(table: str, rule: str, bridges: set[str]) -> bool:
    words = rule.split()
    target = words[words.index("-j") + 1] if "-j" in words else None
    if target in _OWNED_TARGETS[table]:
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
    # Host-to-bridge: -o BRIDGE -m addrtype --src-type LOCAL -j MASQUERADE
    if len(words) == 10 and words[2] == "-o" and words[3] in bridges and words[4:7] == [
            "-m", "addrtype", "--src-type"]:
        return True
    # Hairpin: -s CIP/32 -d CIP/32 -p P -m P --dport N -j MASQUERADE (same address both sides)
    return (len(words) == 14 and words[2] == "-s" and words[4] == "-d" and words[3] == words[5]
            and words[3].endswith("/32") and words[6] == "-p" and words[10] == "--dport")


def _chain_of(rule: str) -> str:
    return rule.split()[1]


def _save_rules(save: str) -> list[str]:
    return [ln.strip() for ln in save.splitlines() if ln.startswith("-A ")]


def _save_chains(save: str) -> set[str]:
    return {ln[1:].split()[0] for ln in save.splitlines() if ln.startswith(":")}


def apply_rules(nets: list[BridgeNet], stale_bridges: tuple[str, ...] | list[str] = (),
                ports: tuple[PublishedPort, ...] | list[PublishedPort] = ()) -> None:
    """Make the current namespace's iptables match render_rules(nets, ports), one atomic batch.

    `stale_bridges` names bridges of removed networks whose MASQUERADE rules must go too.
    Running it twice leaves the same rules, none duplicated. Bridges that exist and publish
    ports get route_localnet=1, so the host's 127.0.0.1 connections can be DNATed to them.
    """
    current = {t: _run(["iptables-save", "-t", t]) for t in BUILTIN_CHAINS}
    batch = build_restore(nets, current, stale_bridges, ports)
    _run(["iptables-restore", "-w", "--noflush"], stdin="".join(batch[t] for t in BUILTIN_CHAINS))
    for bridge in sorted({p.bridge for p in _published(nets, ports)}):
        key = f"net.ipv4.conf.{bridge}.route_localnet"
        if sysctl_path(key).exists():
            write_sysctl(key, "1")


def rules_in_place(nets: list[BridgeNet], ports: tuple[PublishedPort, ...] | list[PublishedPort] = ()
                   ) -> bool:
    """Whether the current namespace still holds exactly shoal's rules (one iptables-save per table).

    False after anything flushed or edited them (`iptables -F`, a firewalld reload): shoal's chains
    must match rule for rule, and each built-in chain must start with shoal's jumps, once each.
    """
    current = {t: _run(["iptables-save", "-t", t]) for t in BUILTIN_CHAINS}
    return rules_match(render_rules(nets, ports), current)


def rules_match(rendered: dict[str, str], current: dict[str, str]) -> bool:
    """The pure comparison behind rules_in_place: rendered rules vs iptables-save text per table."""
    for table, text in rendered.items():
        wanted = _save_rules(text)
        have = _save_rules(current.get(table, ""))
        chains = _save_chains(current.get(table, ""))
        for chain in [ln[1:].split()[0] for ln in text.splitlines() if ln.startswith(":")]:
            if chain not in chains:
                return False
            if [r for r in have if _chain_of(r) == chain] != [r for r in wanted if _chain_of(r) == chain]:
                return False
        if table == "filter" and USER_CHAIN not in chains:
            return False
        for chain in BUILTIN_CHAINS[table]:
            mine = [r for r in wanted if _chain_of(r) == chain]
            theirs = [r for r in have if _chain_of(r) == chain]
            if theirs[:len(mine)] != mine or any(theirs.count(r) != 1 for r in mine):
                return False
    return True


def ensure_docker_user_chain() -> None:
    """Create an empty DOCKER-USER chain in filter if it is missing; never touch its rules."""
    chains = _save_chains(_run(["iptables-save", "-t", "filter"]))
    if USER_CHAIN not in chains:
        # A restore that only declares the chain creates it; no race with a concurrent -N.
        _run(["iptables-restore", "-w", "--noflush"], stdin=f"*filter\n:{USER_CHAIN} - [0:0]\nCOMMIT\n")


def enable_ip_forward() -> None:
    """net.ipv4.ip_forward=1 in the current network namespace."""
    write_sysctl("net.ipv4.ip_forward", "1")


def _run(argv: list[str], stdin: str | None = None) -> str:
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

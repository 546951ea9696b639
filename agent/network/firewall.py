"""iptables rules for bridge networks, laid out in Docker 28's chains and applied as atomic batches.
Used by the network controller after networks change; rendering is pure, apply_rules does the I/O."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Network

from agent.network.sysctl import write_sysctl

USER_CHAIN = "DOCKER-USER"
# Chains shoal owns: every apply flushes and rewrites them (never DOCKER-USER, never others').
FILTER_CHAINS = ("DOCKER", "DOCKER-BRIDGE", "DOCKER-CT", "DOCKER-FORWARD",
                 "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2")
NAT_CHAINS = ("DOCKER",)
BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
}
# Targets whose jumps from built-in chains shoal re-creates on every apply (old copies are removed).
_OWNED_TARGETS = {"filter": (USER_CHAIN, "DOCKER-FORWARD"), "nat": ("DOCKER",)}
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


def render_rules(nets: list[BridgeNet]) -> dict[str, str]:
    """Shoal's complete rule set, table name -> iptables-restore text, as iptables-save prints it.

    Declaring a chain in a --noflush restore flushes it, so applying this rewrites shoal's chains;
    DOCKER-USER is deliberately not declared (its content belongs to the user).
    """
    _check_nets(nets)
    return {"filter": _render_filter(nets), "nat": _render_nat(nets)}


def _render_filter(nets: list[BridgeNet]) -> str:
    fwd = [n for n in nets if not n.internal]
    rules = ["-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-FORWARD"]
    # DOCKER: what reaches a bridge from outside it is dropped unless a published port accepts it first.
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


def _render_nat(nets: list[BridgeNet]) -> str:
    rules = ["-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
             "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER"]
    rules += [_masquerade(n) for n in nets if n.masquerade and not n.internal]
    return _table("nat", NAT_CHAINS, rules)


def _masquerade(n: BridgeNet) -> str:
    return f"-A POSTROUTING -s {_subnet(n)} ! -o {n.bridge} -j MASQUERADE"


def _table(name: str, chains: tuple[str, ...], rules: list[str]) -> str:
    lines = [f"*{name}"] + [f":{c} - [0:0]" for c in chains] + rules + ["COMMIT"]
    return "\n".join(lines) + "\n"


def build_restore(nets: list[BridgeNet], current: dict[str, str],
                  stale_bridges: tuple[str, ...] | list[str] = ()) -> dict[str, str]:
    """The --noflush batch that turns `current` (iptables-save text per table) into shoal's rules.

    Shoal's chains are redeclared (flushed) and refilled. In built-in chains, every existing copy
    of a shoal rule (jumps to its chains, its MASQUERADE rules, those of `stale_bridges`) is
    deleted and the wanted rules are inserted at the top, so each exists exactly once and
    DOCKER-USER comes first. DOCKER-USER itself is only declared when it is missing.
    """
    rendered = render_rules(nets)
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
    # Docker's MASQUERADE shape for a bridge shoal manages: -s SUBNET ! -o BRIDGE -j MASQUERADE
    return (table == "nat" and len(words) == 9 and words[1:3] == ["POSTROUTING", "-s"]
            and words[4:6] == ["!", "-o"] and words[6] in bridges
            and words[7:] == ["-j", "MASQUERADE"])


def _chain_of(rule: str) -> str:
    return rule.split()[1]


def _save_rules(save: str) -> list[str]:
    return [ln.strip() for ln in save.splitlines() if ln.startswith("-A ")]


def _save_chains(save: str) -> set[str]:
    return {ln[1:].split()[0] for ln in save.splitlines() if ln.startswith(":")}


def apply_rules(nets: list[BridgeNet], stale_bridges: tuple[str, ...] | list[str] = ()) -> None:
    """Make the current namespace's iptables match render_rules(nets), one atomic batch per table.

    `stale_bridges` names bridges of removed networks whose MASQUERADE rules must go too.
    Running it twice leaves the same rules, none duplicated.
    """
    current = {t: _run(["iptables-save", "-t", t]) for t in BUILTIN_CHAINS}
    batch = build_restore(nets, current, stale_bridges)
    _run(["iptables-restore", "-w", "--noflush"], stdin="".join(batch[t] for t in BUILTIN_CHAINS))


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

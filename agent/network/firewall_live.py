"""The firewall of one network namespace as it lives: shoal's rules plus a model of what the kernel
holds, so one container's ports change in one small batch and the watch's check stays cheap.

Used by the network controller (and bench/firewall.py); the rules themselves come from
agent.network.firewall, firewall_watch.FirewallWatch calls in_place and re-applies.
"""
from __future__ import annotations

import threading

from agent.network.firewall import (
    BUILTIN_CHAINS, BridgeNet, FirewallError, Layout, PublishedPort, Slots, apply_rules, chain_names,
    layout_matches, needs_raw, parse_save, ports_by_owner, publishable, render_layout, route_localnet,
    run_tool, save_tables, slot_rules)
from agent.network.firewall_markers import MarkerCheck


class Firewall:
    """Shoal's rules in the current network namespace (the caller's thread's), with their model.

    apply_all rewrites everything (start-up, network create/remove, repair). publish/unpublish
    touch only one container's slot chains (see firewall.Slots): one `iptables-restore
    --noflush` batch that flushes and fills those and, for a new slot, inserts its jumps at the
    head of the DOCKER chains; nothing in it reads or rewrites the other containers' rules.
    in_place checks two marker rules (in-process through libnftables once calibrated, see
    firewall_markers); every `deep_every`-th call compares the whole ruleset
    with the model. Thread-safe: the watch checks from another thread than the one applying.
    """

    def __init__(self, deep_every: int = 15) -> None:
        if deep_every < 1:
            raise ValueError(f"invalid deep_every {deep_every!r}: must be at least 1")
        self._lock = threading.Lock()
        self.nets: list[BridgeNet] = []
        self._ports: dict[str, list[PublishedPort]] = {}  # owner (container id) -> its ports
        self.slots = Slots({})
        self._layout: Layout | None = None  # None until an apply went through
        self.full_applies = 0  # how many times everything was rewritten (apply_all, repairs)
        self.deep_every = deep_every
        self._checks = 0
        self.markers = MarkerCheck()  # the two marker rules (firewall_markers: in-process once calibrated)

    def apply_all(self, nets: list[BridgeNet], stale_bridges: tuple[str, ...] | list[str] = (),
                  ports: tuple[PublishedPort, ...] | list[PublishedPort] = ()) -> None:
        """Rewrite all of shoal's rules for these networks and ports (each port's owner field
        says which container it belongs to). Containers keep their slots."""
        with self._lock:
            self._apply_all(list(nets), stale_bridges, list(ports))

    def publish(self, owner: str, ports: list[PublishedPort]) -> None:
        """Give container `owner` exactly these published ports (replacing any it had)."""
        with self._lock:
            new = [_owned(p, owner) for p in publishable(self.nets, ports)]  # validates first
            self._change(owner, new)

    def unpublish(self, owner: str) -> None:
        """Remove every published-port rule of container `owner`; no error if it has none."""
        with self._lock:
            if owner in self._ports or owner in self.slots.of:
                self._change(owner, [])

    @property
    def applied(self) -> bool:
        """Whether a full apply went through (the model says what the kernel holds)."""
        with self._lock:
            return self._layout is not None

    def ports(self) -> list[PublishedPort]:
        with self._lock:
            return self._all_ports()

    def in_place(self, deep: bool = False) -> bool:
        """Whether the kernel still holds the rules (cheap unless `deep`; see the class);
        False before any apply."""
        with self._lock:
            if self._layout is None:
                return False
            self._checks += 1
            if deep or self._checks % self.deep_every == 0:
                return layout_matches(self._layout, parse_save(save_tables()))
            return self.markers()

    def _all_ports(self) -> list[PublishedPort]:
        return [p for owner in sorted(self._ports) for p in self._ports[owner]]

    def _apply_all(self, nets: list[BridgeNet], stale_bridges: tuple[str, ...] | list[str],
                   ports: list[PublishedPort]) -> None:
        pub = publishable(nets, ports)  # validates before anything changes
        by_owner = ports_by_owner(pub)
        slots = self.slots.assign(list(by_owner), {o for o, ps in by_owner.items() if needs_raw(ps)})
        layout = render_layout(nets, pub, slots)
        self._layout = None  # unknown until the batch went through
        self.full_applies += 1
        apply_rules(nets, stale_bridges, pub, slots)
        self.nets, self._ports, self.slots, self._layout = nets, by_owner, slots, layout

    def _change(self, owner: str, new: list[PublishedPort]) -> None:
        if new:
            self._ports[owner] = new
        else:
            self._ports.pop(owner, None)
        if self._layout is None:  # never applied, or the last full apply failed
            self._apply_all(self.nets, (), self._all_ports())
            return
        ops, slots = plan_publish(self._layout, self.slots, owner, new)
        self.slots = slots
        try:
            if ops:
                run_tool(["iptables-restore", "-w", "--noflush"], stdin=restore_text(ops))
            for bridge in sorted({p.bridge for p in new}):
                route_localnet(bridge)
        except FirewallError:
            # The kernel was not what the model said (someone edited the rules): rewrite it all.
            self._apply_all(self.nets, (), self._all_ports())


def plan_publish(layout: Layout, slots: Slots, owner: str, ports: list[PublishedPort]
                 ) -> tuple[dict[str, list[str]], Slots]:
    """The restore lines, per table, that give `owner` exactly `ports` ([]: none), and the new
    slots; pure. Updates `layout` to what the kernel holds once they ran.

    An owner without a slot takes the lowest free one, else a new one (its chains declared and
    their jumps inserted at the head of filter DOCKER, nat DOCKER and nat POSTROUTING). Only the
    owner's chains whose content changes are flushed (-F) and refilled; an unpublished owner's
    chains are emptied and its slot freed, jumps kept.
    """
    of, count, raw = dict(slots.of), slots.count, set(slots.raw)
    decls: dict[str, list[str]] = {}  # per table: chains declared (created or flushed) ...
    fills: dict[str, list[str]] = {}  # ... then filled ...
    jumps: dict[str, list[str]] = {}  # ... then jumped to
    k = of.pop(owner, None)
    if not ports and k is None:
        return {}, slots
    if ports and k is None:
        free = sorted(set(range(count)) - set(of.values()))
        k = free[0] if free else count
        if k == count:
            count += 1
            ports_chain, dnat, hairpin, _ = chain_names(k)
            for table, chain, target in (("filter", "DOCKER", ports_chain), ("nat", "DOCKER", dnat),
                                         ("nat", "POSTROUTING", hairpin)):
                layout.chains[(table, chain)].insert(0, f"-j {target}")
                jumps.setdefault(table, []).append(f"-I {chain} 1 -j {target}")
            for key in (("filter", ports_chain), ("nat", dnat), ("nat", hairpin)):
                layout.owned.append(key)
                layout.chains[key] = []
                decls.setdefault(key[0], []).append(f":{key[1]} - [0:0]")
    assert k is not None
    if ports:
        of[owner] = k
    rules = slot_rules(ports)
    ports_chain, dnat, hairpin, loopback = chain_names(k)
    if ports and needs_raw(ports) and k not in raw:
        # Raw is per packet: only slots that guard a loopback port get a chain there. Jumps stay
        # in slot order (highest first), as render_layout puts them.
        position = 1 + sum(1 for other in raw if other > k)
        raw.add(k)
        layout.owned.append(("raw", loopback))
        layout.chains[("raw", loopback)] = []
        layout.chains[("raw", "PREROUTING")].insert(position - 1, f"-j {loopback}")
        decls.setdefault("raw", []).append(f":{loopback} - [0:0]")
        jumps.setdefault("raw", []).append(f"-I PREROUTING {position} -j {loopback}")
    kinds = [("filter", ports_chain, "ports"), ("nat", dnat, "dnat"), ("nat", hairpin, "hairpin")]
    if k in raw:
        kinds.append(("raw", loopback, "loopback"))
    for table, chain, kind in kinds:
        want = rules.get((table, kind), [])
        if layout.chains[(table, chain)] == want:
            continue
        if layout.chains[(table, chain)]:
            # -F, not a declaration: redeclaring an existing chain costs iptables-nft a chain lookup more.
            fills.setdefault(table, []).append(f"-F {chain}")
        layout.chains[(table, chain)] = list(want)
        fills.setdefault(table, []).extend(f"-A {chain} {spec}" for spec in want)
    ops = {t: decls.get(t, []) + fills.get(t, []) + jumps.get(t, []) for t in BUILTIN_CHAINS
           if t in decls or t in fills or t in jumps}
    return ops, Slots(of, count, raw)


def restore_text(ops: dict[str, list[str]]) -> str:
    """iptables-restore input for the lines of plan_publish, one COMMIT per table."""
    return "".join(f"*{t}\n" + "".join(f"{op}\n" for op in ops[t]) + "COMMIT\n" for t in BUILTIN_CHAINS if t in ops)


def _owned(p: PublishedPort, owner: str) -> PublishedPort:
    return PublishedPort(p.bridge, p.container_ip, p.container_port, p.proto, p.host_ip, p.host_port, owner)

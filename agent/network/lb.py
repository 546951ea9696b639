"""VIP load balancing in every sandbox that sits on a network with services, and the services' DNS names.
Fed ServiceBindings (agent.network.service_binding); plans with lbplan, programs with lbnft, names with lbdns.

Like Docker, each sandbox translates its own connections to a VIP (Docker: IPVS in every
container's namespace; shoal: an nftables table there, see lbplan), so a task sees its client's
own address. Kernel calls block: the owner runs them on its kernel thread.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from agent.network import lbdns, lbplan
from agent.network.dns import NameTable
from agent.network.lbnft import NftContext, NftError
from agent.network.nsthread import entered
from agent.network.service_binding import ServiceBinding

log = logging.getLogger(__name__)

_CONNTRACK = shutil.which("conntrack", path="/usr/sbin:/sbin:/usr/bin:/bin") or "conntrack"
# One thread for every namespace's conntrack runs: off the changes' path, in order.
_CONNTRACK_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lb-conntrack")


def flows_to_forget(listing: str, backends: frozenset[IPv4Address]) -> list[IPv4Address]:
    """The backends among `backends` that a flow of `conntrack -L` output is answered by (its reply tuple's
    source, the second src=), in order, each once."""
    found: list[IPv4Address] = []
    for line in listing.splitlines():
        sources = [word[4:] for word in line.split() if word.startswith("src=")]
        if len(sources) < 2:
            continue
        try:
            backend = IPv4Address(sources[1])
        except ValueError:
            continue
        if backend in backends and backend not in found:
            found.append(backend)
    return found


def _delete_udp_flows(netns_path: str | None, vip: IPv4Address, backends: frozenset[IPv4Address]) -> None:
    """Forgets the UDP flows to vip answered by one of backends: one listing of the VIP's flows, then a delete per
    backend that has one (a service with no UDP client, the common case, costs one conntrack run per VIP)."""
    try:
        with contextlib.ExitStack() as stack:
            if netns_path is not None:
                stack.enter_context(entered(netns_path))
            listing = subprocess.run([_CONNTRACK, "-L", "-p", "udp", "--orig-dst", str(vip)],
                                     capture_output=True, text=True, timeout=10).stdout
            for backend in flows_to_forget(listing, backends):
                # Exit status 1 only means that the flow went meanwhile.
                subprocess.run([_CONNTRACK, "-D", "-p", "udp", "--orig-dst", str(vip), "--reply-src", str(backend)],
                               capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("conntrack in %s: %s", netns_path, exc)


def _removed_backends(old: lbplan.LbTable, new: lbplan.LbTable,
                      changes: Iterable[IPv4Address]) -> dict[IPv4Address, frozenset[IPv4Address]]:
    """VIP -> the backends the change took away from it, for the VIPs that still have a backend to move a flow to:
    a VIP that goes, or is left with none, strands its flows whatever conntrack says (a service removed or scaled
    to 0 would otherwise cost a conntrack run per task in every sandbox of the node)."""
    gone: dict[IPv4Address, frozenset[IPv4Address]] = {}
    for vip in changes:
        before = old.slots.get(vip, ())
        after = new.slots.get(vip, ())
        if not before or not after or after[:len(before)] == before:  # kept every slot (tuples compare by identity first)
            continue
        kept = set(after)
        removed = frozenset(ip for ip in before if ip not in kept)
        if removed:
            gone[vip] = removed
    return gone


class SandboxLb:
    """The shoal_lb table of one namespace and a model of what it holds.

    set_all replaces every VIP, change touches only the VIPs given; both send only the
    difference. A table found missing or changed (in_place) is written again whole (reassert)."""

    def __init__(self, netns_path: str | Path | None) -> None:
        self.nft = NftContext(netns_path)
        self.table: lbplan.LbTable | None = None  # None: nothing of ours written yet
        self.batches = 0  # how many batches were sent (for tests and the benchmark)
        self._pending: list[Future[None]] = []  # conntrack runs queued or under way

    def set_all(self, wanted: dict[IPv4Address, frozenset[IPv4Address]], plans: lbplan.Plans | None = None) -> None:
        """Serve exactly these VIPs. plans: shared by the sandboxes of one pass (see lbplan.Plans)."""
        if self.table is None:
            self._write_full(lbplan.table_from_wanted(wanted))
            return
        changes: dict[IPv4Address, frozenset[IPv4Address] | None] = dict(wanted)
        changes.update({vip: None for vip in self.table.slots if vip not in wanted})
        self.change(changes, plans)

    def change(self, changes: dict[IPv4Address, frozenset[IPv4Address] | None],
               plans: lbplan.Plans | None = None) -> None:
        """Set these VIPs' backends (None: stop serving the VIP); others are left as they are."""
        if self.table is None:
            self._write_full(lbplan.table_from_wanted({v: b for v, b in changes.items() if b is not None}))
            return
        new, script = (plans or lbplan.Plans()).plan(self.table, changes)
        if not script:
            return
        try:
            self.nft.run(script)
        except NftError:
            # The table is not what the model says (flushed, edited): write it whole.
            log.warning("shoal_lb in %s differs from its model; writing it again", self.nft.netns_path)
            self._write_full(new)
            return
        self.batches += 1
        old, self.table = self.table, new
        self._forget_udp_flows(_removed_backends(old, new, changes))

    def _forget_udp_flows(self, gone: dict[IPv4Address, frozenset[IPv4Address]]) -> None:
        # A UDP flow's conntrack entry lives as long as packets keep coming, so a client sending
        # from one port would stay on a removed backend for ever (kube-proxy clears them too).
        # TCP needs nothing: the backend's end answers RST or goes silent, and the client
        # reconnects through the rules. Done by a worker after the commit (new flows already
        # avoid the backend): a conntrack process costs milliseconds, tens under load, which the
        # change itself must not pay.
        self._pending = [f for f in self._pending if not f.done()]
        for vip, backends in gone.items():
            self._pending.append(_CONNTRACK_WORKER.submit(_delete_udp_flows, self.nft.netns_path, vip, backends))

    def settle(self) -> None:
        """Wait until the UDP flows of removed backends are forgotten (tests and the benchmark)."""
        for future in self._pending:
            future.result()
        self._pending = []

    def in_place(self) -> bool:
        """Whether the kernel still holds our table with its two hooked chains. Cheap whatever the
        number of services (listing chains reads no set elements; listing a rule would read them
        all): it catches `nft flush ruleset` and a deleted table, not a hand-edited rule."""
        if self.table is None:
            return False
        try:
            listing = self.nft.run(f"list chains {lbplan.FAMILY}\n")
        except NftError:
            return False
        return lbplan.chains_in_place(listing)

    def reassert(self) -> bool:
        """Write the table again when it is not in place; whether it had to."""
        if self.table is None or self.in_place():
            return False
        self._write_full(self.table)
        return True

    def remove(self) -> None:
        """Delete our table (nothing else) and let go of the namespace."""
        try:
            self.nft.run(f"table {lbplan.FAMILY} {lbplan.TABLE}\ndelete table {lbplan.FAMILY} {lbplan.TABLE}\n")
        except NftError as exc:  # the namespace may be gone already
            log.debug("shoal_lb: %s", exc)
        self.table = None
        # Its flows go with the namespace: the conntrack runs still queued are dropped, not waited for. Waiting here
        # (under the load balancer's lock, on the one conntrack worker every namespace shares) held every other
        # sandbox's set-up for minutes after a 100-task service was removed.
        for future in self._pending:
            future.cancel()
        self._pending = []
        self.nft.close()

    def _write_full(self, table: lbplan.LbTable) -> None:
        table = lbplan.LbTable(table.slots, lbplan.needed_picks(table))
        self.nft.run(lbplan.render_full(table))
        self.batches += 1
        self.table = table


@dataclass(slots=True)
class _Sandbox:
    netns_path: str
    network_ids: frozenset[str]
    lb: SandboxLb | None = None  # made when a VIP first concerns it: most containers have none
    adopted: bool = False  # may hold an earlier run's table: checked at the first full resync
    error: str = ""  # the last failure to program it ("" when in step)


@dataclass(slots=True)
class ServiceLoadBalancer:
    """Every service binding the node knows, every sandbox, and the DNS table: a binding's change
    reaches the sandboxes on its network (one small batch each) and its DNS names before
    `update` returns. A sandbox gets a table only once a VIP on its networks exists."""

    dns: NameTable | None = None
    # Runs a change of the DNS table: the table is read by the event loop, so an owner calling
    # update() from its kernel thread passes loop.call_soon_threadsafe; None runs it at once.
    dns_dispatch: Callable[[Callable[[], None]], object] | None = None
    bindings: dict[tuple[str, str], ServiceBinding] = field(default_factory=dict)  # (service, network)
    sandboxes: dict[str, _Sandbox] = field(default_factory=dict)
    _vip_owner: dict[tuple[str, IPv4Address], str] = field(default_factory=dict)  # (network, VIP) -> service
    _lock: threading.RLock = field(default_factory=threading.RLock)
    # A full resync stopped half-way (a sandbox on two networks saw one VIP claimed twice): the
    # sandboxes after it were not programmed, so the next full resync looks at every sandbox.
    _unfinished: bool = False

    # ---- bindings ---------------------------------------------------------------------
    def update(self, binding: ServiceBinding) -> None:
        """Add or replace one service's binding on one network. ValueError (nothing changed)
        when its VIP is another service's on that network."""
        with self._lock:
            key = (binding.service_id, binding.network_id)
            old = self.bindings.get(key)
            if old == binding:
                return
            if binding.vip is not None:
                owner = self._vip_owner.get((binding.network_id, lbplan.address(binding.vip)))
                if owner is not None and owner != binding.service_id:
                    raise ValueError(f"VIP {binding.vip} on network {binding.network_id} is already "
                                     f"service {owner}'s, not {binding.service_id}'s")
            lbdns.check(binding)  # the names are valid before anything changes
            self._dns(lambda t: lbdns.publish(t, binding))
            self.bindings[key] = binding
            changes: dict[IPv4Address, frozenset[IPv4Address] | None] = {}
            if old is not None and old.vip is not None and old.vip != binding.vip:
                changes[lbplan.address(old.vip)] = None
                self._vip_owner.pop((old.network_id, lbplan.address(old.vip)), None)
            if binding.vip is not None:
                changes[lbplan.address(binding.vip)] = frozenset(lbplan.address(b.ip) for b in binding.backends)
                self._vip_owner[(binding.network_id, lbplan.address(binding.vip))] = binding.service_id
            self._change_network(binding.network_id, changes)

    def remove(self, service_id: str, network_id: str) -> None:
        """The service left that network (or was removed): its VIP and names go."""
        with self._lock:
            old = self.bindings.pop((service_id, network_id), None)
            if old is None:
                return
            self._dns(lambda t: lbdns.withdraw(t, service_id, network_id))
            if old.vip is not None:
                self._vip_owner.pop((network_id, lbplan.address(old.vip)), None)
                self._change_network(network_id, {lbplan.address(old.vip): None})

    def set_bindings(self, bindings: Iterable[ServiceBinding]) -> None:
        """Replace every binding (a full resync from the endpoint table): one batch per sandbox
        whose networks' bindings changed. ValueError (nothing changed) when two services claim one VIP."""
        with self._lock:
            wanted = {(b.service_id, b.network_id): b for b in bindings}
            by_network: dict[str, list[ServiceBinding]] = {}
            for b in wanted.values():
                by_network.setdefault(b.network_id, []).append(b)
            # Validates before anything changes; kept: the VIPs of a sandbox on one network.
            vips = {network_id: lbplan.wanted_vips(group, [network_id]) for network_id, group in by_network.items()}
            changed = [(b, lbdns.service_names(b)) for b in wanted.values()
                       if self.bindings.get((b.service_id, b.network_id)) != b]
            for b, (names_of, _ptr) in changed:
                lbdns.check_names(b, names_of)
            gone = [k for k in self.bindings if k not in wanted]

            def names(table: NameTable) -> None:
                for key in gone:
                    lbdns.withdraw(table, *key)
                for b, (names_of, ptr) in changed:
                    table.set_service_names(b.service_id, b.network_id, names_of, ptr)
            self._dns(names)
            self.bindings = wanted
            self._vip_owner = {(b.network_id, lbplan.address(b.vip)): b.service_id
                               for b in wanted.values() if b.vip is not None}
            # A sandbox none of whose networks' bindings changed already serves what they want
            # (update, remove and attach keep the tables in step): it is left alone unless it is
            # behind after a failure or may hold an earlier run's table.
            dirty = {b.network_id for b, _ in changed} | {network_id for _, network_id in gone}
            per_networks: dict[frozenset[str], dict[IPv4Address, frozenset[IPv4Address]]] = {}
            plans = lbplan.Plans()
            resync_all, self._unfinished = self._unfinished, True  # a pass cut short: the next one does all
            for sandbox in self.sandboxes.values():
                if not (resync_all or sandbox.adopted or sandbox.error or not dirty.isdisjoint(sandbox.network_ids)):
                    continue
                want = per_networks.get(sandbox.network_ids)
                if want is None:
                    want = self._wanted_in(sandbox.network_ids, vips)
                    per_networks[sandbox.network_ids] = want
                if sandbox.adopted and sandbox.lb is None and not want:
                    self._program(sandbox, lambda s=sandbox: SandboxLb(s.netns_path).remove())
                sandbox.adopted = False
                self._set_all(sandbox, want, plans)
            self._unfinished = False

    def close_contexts(self) -> None:
        """Let go of every namespace, leaving the tables serving (the daemon stops, its
        containers keep running)."""
        with self._lock:
            for sandbox in self.sandboxes.values():
                if sandbox.lb is not None:
                    sandbox.lb.nft.close()
                    sandbox.lb = None
            self.sandboxes.clear()

    # ---- sandboxes --------------------------------------------------------------------
    def attach(self, key: str, netns_path: str | Path, network_ids: Iterable[str], *,
               adopted: bool = False) -> None:
        """Serve the VIPs of these networks inside the sandbox `key` (a container id); called
        again when its networks change. `adopted`: a running container found at start-up, whose
        namespace may hold a table of the daemon's earlier run; that table keeps serving until
        the first full resync (set_bindings), which rewrites it or removes it."""
        with self._lock:
            networks = frozenset(network_ids)
            sandbox = self.sandboxes.get(key)
            if sandbox is not None and sandbox.netns_path != str(netns_path):
                self.detach(key)
                sandbox = None
            if sandbox is None:
                sandbox = _Sandbox(str(netns_path), networks)
                self.sandboxes[key] = sandbox
            sandbox.network_ids = networks
            sandbox.adopted = sandbox.adopted or adopted
            self._set_all(sandbox)

    def detach(self, key: str) -> None:
        """The sandbox is going: drop our table from it (if it got one)."""
        with self._lock:
            sandbox = self.sandboxes.pop(key, None)
            if sandbox is not None and sandbox.lb is not None:
                sandbox.lb.remove()

    def in_place(self) -> bool:
        """Whether every sandbox's table is there and none is behind after a failure (cheap:
        one `list chains` per sandbox that has a table; for a periodic watch)."""
        with self._lock:
            sandboxes = list(self.sandboxes.values())
        return all(not s.error and (s.lb is None or s.lb.in_place()) for s in sandboxes)

    def reassert(self) -> list[str]:
        """Rewrite the table of every sandbox that lost it (or failed before); their keys."""
        fixed = []
        with self._lock:
            for key, sandbox in self.sandboxes.items():
                if sandbox.error:
                    self._set_all(sandbox)
                    fixed.append(key)
                elif sandbox.lb is not None and sandbox.lb.reassert():
                    fixed.append(key)
        return fixed

    def close(self) -> None:
        with self._lock:
            for key in list(self.sandboxes):
                self.detach(key)

    # ---- internals --------------------------------------------------------------------
    def _wanted(self, networks: frozenset[str]) -> dict[IPv4Address, frozenset[IPv4Address]]:
        return lbplan.wanted_vips((b for b in self.bindings.values() if b.network_id in networks), networks)

    def _wanted_in(self, networks: frozenset[str], by_network: dict[str, dict[IPv4Address, frozenset[IPv4Address]]]
                   ) -> dict[IPv4Address, frozenset[IPv4Address]]:
        """_wanted, read from the VIPs already worked out per network when the sandbox is on one network
        (a task on one overlay: the common case)."""
        if len(networks) == 1:
            [network_id] = networks
            return dict(by_network.get(network_id, {}))
        return self._wanted(networks)

    def _set_all(self, sandbox: _Sandbox, wanted: dict[IPv4Address, frozenset[IPv4Address]] | None = None,
                 plans: lbplan.Plans | None = None) -> None:
        if wanted is None:
            wanted = self._wanted(sandbox.network_ids)
        if sandbox.lb is None and not wanted:
            return
        self._program(sandbox, lambda: self._lb(sandbox).set_all(wanted, plans))

    def _change_network(self, network_id: str, changes: dict[IPv4Address, frozenset[IPv4Address] | None]) -> None:
        if not changes:
            return
        plans = lbplan.Plans()
        for sandbox in self.sandboxes.values():
            if network_id not in sandbox.network_ids:
                continue
            if sandbox.lb is None or sandbox.error:
                self._set_all(sandbox)  # its first VIP, or a retry: the whole table
            else:
                self._program(sandbox, lambda s=sandbox: self._lb(s).change(changes, plans))

    def _dns(self, change: Callable[[NameTable], None]) -> None:
        table = self.dns
        if table is None:
            return
        if self.dns_dispatch is None:
            change(table)
        else:
            self.dns_dispatch(lambda: change(table))

    def _lb(self, sandbox: _Sandbox) -> SandboxLb:
        if sandbox.lb is None:
            sandbox.lb = SandboxLb(sandbox.netns_path)
        return sandbox.lb

    def _program(self, sandbox: _Sandbox, work: Callable[[], None]) -> None:
        # One sandbox failing (its namespace went away under us) must not stop the others;
        # reassert tries it again.
        try:
            work()
            sandbox.error = ""
        except (NftError, OSError) as exc:
            sandbox.error = str(exc)
            log.warning("VIP load balancing in %s: %s", sandbox.netns_path, exc)

"""Gossip on a swarm node: a GossipShell (agent/gossip/shell.py) on the advertise address, port 7946, encrypted with
the keys of the dispatcher session, joined through the managers, carrying a NetworkDB (agent/gossip/netdb.py).
Started by shoal/swarm/node.py when the first session message brings keys; read by shoal/api/routes_gossip.py.

The shell API used (the gossip helper's contract): GossipShell(name, bind_addr, bind_port, advertise_addr, keys,
delegate, events, config), await start(), await join(seed_addrs), members(), await leave(), await stop(),
set_keys(keys, primary), send_to(member_name, bytes). Keys are given primary first; set_keys gets the primary key.

Entry points for the other parts of the node (engine.swarm.gossip, None until the first keyed session message):
overlay(sink) once, with the vxlan side's PeerSink; endpoint_up/endpoint_down for a local endpoint on an overlay;
service_endpoint_up/down, service_bindings(network_id) and watch_services(callback) for tasks and the load
balancer; network_peers(network_id) for `network inspect --verbose`; status() for GET /shoal/gossip;
set_down_nodes(ids) with every session message: the nodes the managers hold DOWN, whose entries stop counting at once.
A daemon shutdown stops gossip without a leave (the others keep this node's entries suspended); swarm leave leaves."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.gossip.delegate import Member
from agent.gossip import netdb_services
from agent.gossip.netdb import NetDBConfig, NetworkDB
from agent.network.service_binding import ServiceBinding
from agent.network.overlay_peers import OverlayPeers, PeerSink
from common.errdefs import Conflict, NotFound
from vxlan.types import OverlayPeer

log = logging.getLogger(__name__)

GOSSIP_PORT = 7946
REJOIN_S = 5.0  # while alone, try the managers again this often (the core also rejoins by itself)
RECONCILE_S = 10.0  # the overlay sink is made to hold exactly the table's peers this often
ShellFactory = Callable[..., Any]


@dataclass(slots=True, frozen=True)
class KeyRing:
    keys: tuple[bytes, ...]  # oldest first, as the session sends them
    lamport: int
    primary: int  # index in keys

    def primary_first(self) -> list[bytes]:
        p = self.keys[self.primary]
        return [p] + [k for k in self.keys if k != p]


def key_ring(keys: Sequence[bytes], lamport: int, primary: int) -> KeyRing | None:
    """The session's keys, or None when it has none usable (an old leader, a malformed message)."""
    ks = tuple(bytes(k) for k in keys)
    if not ks or not 0 <= primary < len(ks) or any(len(k) not in (16, 24, 32) for k in ks):
        return None
    return KeyRing(ks, lamport, primary)


def seed_addrs(managers: Sequence[str], own_ip: str, port: int = GOSSIP_PORT) -> list[str]:
    """The managers' "host:2377" addresses (or bare node addresses) as gossip seeds "host:7946", this node's own
    left out."""
    out: list[str] = []
    for m in managers:
        try:
            host = str(ipaddress.ip_address(m))  # a bare address (a node's status address)
        except ValueError:
            host = m.rpartition(":")[0].strip("[]")  # host:port
        seed = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if host and host != own_ip and seed not in out:
            out.append(seed)
    return out


def default_shell_factory() -> ShellFactory:
    from agent.gossip.shell import GossipShell  # the gossip helper's module; absent until it lands

    return GossipShell


class GossipAgent:
    def __init__(self, node_id: str, advertise_ip: str, managers: Callable[[], list[str]], port: int = GOSSIP_PORT,
                 shell_factory: ShellFactory | None = None, config: NetDBConfig | None = None,
                 shell_config: Any = None) -> None:
        self.node_id = node_id
        self.advertise_ip = advertise_ip
        self.managers = managers
        self.port = port
        self.db = NetworkDB(node_id, random.Random(), config)
        self.shell: Any = None
        self.ring: KeyRing | None = None
        self.error = ""
        self.joined = False
        self._shell_factory = shell_factory
        self._shell_config = shell_config
        self._task: asyncio.Task[None] | None = None
        self.overlay_peers: OverlayPeers | None = None
        self._local: dict[str, set[str]] = {}  # network id -> this node's endpoint ids on it
        self._service_watchers: list[Callable[[str], None]] = []  # watch_services callbacks
        self._wake: asyncio.Event | None = None  # set by networkdb's on_change: the loop looks again at once
        # when the loop wakes by itself (-inf while it runs): an input that queues no message and moves no deadline
        # before it (a duplicate event, most of a burst) need not wake it
        self._sleep_until = -math.inf

    # ------------------------------------------------------------------ keys from the session
    def on_keys(self, ring: KeyRing | None) -> None:
        """A session message's keys: the first start gossip, a newer set rotates them, an older set is ignored."""
        if ring is None or (self.ring is not None and ring.lamport < self.ring.lamport) or ring == self.ring:
            return
        self.ring = ring
        if self.shell is not None:
            self.shell.set_keys(ring.primary_first(), ring.keys[ring.primary])
            log.info("gossip: keys rotated (lamport %d)", ring.lamport)
        elif self._task is None:
            self._task = asyncio.create_task(self._run(), name="gossip-agent")

    # ------------------------------------------------------------------ the overlay driver's entry points
    def overlay(self, sink: PeerSink) -> OverlayPeers:
        """Remote peers of every overlay network go to sink (the vxlan side), now and as the table changes."""
        if self.overlay_peers is None:
            self.overlay_peers = OverlayPeers(self.db, sink, ipaddress.IPv4Address(self.advertise_ip))
            self.overlay_peers.start()
        return self.overlay_peers

    def endpoint_up(self, network_id: str, endpoint_id: str, peer: OverlayPeer) -> None:
        """A local endpoint on an overlay: the node joins the network's gossip (the first one) and announces it."""
        if not self.db.joined(network_id):
            self.db.join_network(network_id)
        self._local.setdefault(network_id, set()).add(endpoint_id)
        OverlayPeers.publish_to(self.db, network_id, endpoint_id, peer)

    def endpoint_down(self, network_id: str, endpoint_id: str) -> None:
        """A local endpoint gone: withdrawn; with the last one the node leaves the network's gossip."""
        with contextlib.suppress(NotFound):
            self.db.delete_entry("overlay_peer_table", network_id, endpoint_id)
        eps = self._local.get(network_id, set())
        eps.discard(endpoint_id)
        if not eps:
            self._local.pop(network_id, None)
            if self.db.joined(network_id):
                self.db.leave_network(network_id)

    # ------------------------------------------------------------------ service endpoints (helpers tasks and lb)
    def service_endpoint_up(self, network_id: str, endpoint_id: str, record: netdb_services.EndpointRecord) -> None:
        """A local task's endpoint of a service on an overlay: announced in endpoint_table."""
        if not self.db.joined(network_id):
            self.db.join_network(network_id)
        self._local.setdefault(network_id, set()).add(endpoint_id)
        data = netdb_services.encode_record(record)
        try:
            self.db.create_entry(netdb_services.TABLE, network_id, endpoint_id, data)
        except Conflict:
            self.db.update_entry(netdb_services.TABLE, network_id, endpoint_id, data)

    def service_endpoint_down(self, network_id: str, endpoint_id: str) -> None:
        with contextlib.suppress(NotFound):
            self.db.delete_entry(netdb_services.TABLE, network_id, endpoint_id)
        self.endpoint_down(network_id, endpoint_id)

    def service_bindings(self, network_id: str) -> list[ServiceBinding]:
        """The services on network_id with their backends on every node (a failed node's left out)."""
        return netdb_services.fold_service_bindings(self.db, network_id)

    def watch_services(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """callback(network_id) whenever a service endpoint on that network changes (or stops or starts counting: a
        node held DOWN or released); returns the cancel."""
        cancel_db = self.db.watch(netdb_services.TABLE, lambda _ev, nid, _k, _v: callback(nid), replay=False)
        self._service_watchers.append(callback)

        def cancel() -> None:
            cancel_db()
            if callback in self._service_watchers:
                self._service_watchers.remove(callback)
        return cancel

    def set_down_nodes(self, node_ids: Sequence[str]) -> None:
        """The nodes the managers hold DOWN (the session message's down_nodes; gossip member names are node ids).
        Their entries are suspended at once, so the VIPs, the mesh and DNS leave their tasks out within a pass of the
        service glue rather than after gossip's failure detection; a node released counts again once its own bulk sync
        confirms its entries (agent/gossip/netdb.py hold())."""
        before = self.db.held()
        self.db.hold(node_ids)
        if self.db.held() == before:
            return
        log.info("gossip: nodes held down by the managers: %s", ",".join(sorted(self.db.held())) or "none")
        for nid in self.db.networks():
            for cb in list(self._service_watchers):
                try:
                    cb(nid)
                except Exception:  # noqa: BLE001 - a watcher's failure is not ours
                    log.exception("gossip: service watcher failed")

    # ------------------------------------------------------------------ lifecycle
    async def _run(self) -> None:
        assert self.ring is not None
        try:
            factory = self._shell_factory or default_shell_factory()
        except ImportError as e:
            self.error = f"gossip core not available: {e}"
            log.warning("gossip: %s", self.error)
            return
        try:
            self.shell = factory(self.node_id, self.advertise_ip, self.port, self.advertise_ip,
                                 self.ring.primary_first(), self.db, self.db, self._shell_config)
            await _maybe_await(self.shell.start())
        except Exception as e:  # noqa: BLE001 - the node keeps working without gossip; the diagnostic says why
            self.error = f"gossip could not start on {self.advertise_ip}:{self.port}: {e}"
            log.error("gossip: %s", self.error)
            self.shell = None
            return
        self.error = ""
        log.info("gossip: %s listening on %s:%d", self.node_id[:12], self.advertise_ip, self.port)
        loop = asyncio.get_running_loop()
        wake = self._wake = asyncio.Event()
        self.db.clock = loop.time
        self.db.on_change = self._poke
        next_join = 0.0
        next_reconcile = loop.time() + RECONCILE_S
        # Event-driven: networkdb says when it has work (next_deadline) and wakes the loop when an input queued
        # something (on_change); an idle node passes here for its periodic syncs only.
        while True:
            wake.clear()
            self._sleep_until = -math.inf
            now = loop.time()
            if now >= next_join:
                next_join = now + REJOIN_S
                if not self._has_others():
                    await self._join()
            self.db.tick(now)
            if self.overlay_peers is not None and now >= next_reconcile:
                next_reconcile = now + RECONCILE_S
                self.overlay_peers.reconcile()
            await self.flush()
            due = min(self.db.next_deadline(), next_join, next_reconcile)
            self._sleep_until = due
            if wake.is_set():
                continue
            try:
                async with asyncio.timeout(max(due - loop.time(), 0.0)):
                    await wake.wait()
            except TimeoutError:
                pass

    def _poke(self) -> None:
        """networkdb took an input: the loop runs (its new deadline, its messages) and the shell re-arms (the core
        piggybacks networkdb's network events). The loop is woken only for messages to send or an earlier deadline
        than the one it sleeps until."""
        if self._wake is not None and not self._wake.is_set() and (
                self.db.outbox or self.db.next_deadline() < self._sleep_until):
            self._wake.set()
        poke = getattr(self.shell, "poke", None)
        if poke is not None:
            poke()

    async def _join(self) -> None:
        seeds = seed_addrs(self.managers(), self.advertise_ip, self.port)
        if not seeds:
            return  # the first manager: others join it
        try:
            await _maybe_await(self.shell.join(seeds))
            self.joined = True
        except Exception as e:  # noqa: BLE001 - no manager reachable now: retried
            log.info("gossip: join through %s failed: %s", ",".join(seeds), e)

    async def flush(self) -> None:
        """Hand networkdb's direct messages to the shell."""
        for to, data in self.db.take_outgoing():
            try:
                await _maybe_await(self.shell.send_to(to, data))
            except Exception as e:  # noqa: BLE001 - a member gone meanwhile: gossip is best effort
                log.debug("gossip: send to %s failed: %s", to, e)

    def _has_others(self) -> bool:
        try:
            return any(m.name != self.node_id for m in self.shell.members())
        except Exception:  # noqa: BLE001
            return False

    async def leave(self) -> None:
        """swarm leave: tell the others (they delete this node's entries at once), then stop."""
        if self.shell is not None:
            with contextlib.suppress(Exception):
                await _maybe_await(self.shell.leave())
        await self.stop()

    async def stop(self) -> None:
        """Daemon shutdown: stop without a leave, so the others keep this node's entries suspended until it is back."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self.shell is not None:
            with contextlib.suppress(Exception):
                await _maybe_await(self.shell.stop())
            self.shell = None

    # ------------------------------------------------------------------ diagnostics
    def members(self) -> list[Member]:
        if self.shell is None:
            return []
        try:
            return list(self.shell.members())
        except Exception:  # noqa: BLE001
            return []

    def network_peers(self, network_id: str) -> list[dict[str, str]]:
        """`network inspect --verbose`'s Peers of an overlay: this node (when on it) and the alive nodes on it."""
        out = [{"Name": self.node_id, "IP": self.advertise_ip}] if self.db.joined(network_id) else []
        for name in self.db.peers(network_id):
            out.append({"Name": name, "IP": self._address_of(name)})
        return out

    def network_services(self, network_id: str) -> dict[str, dict[str, Any]]:
        """`network inspect --verbose`'s Services of an overlay, from its endpoint table."""
        return netdb_services.inspect_services(self.db, network_id, self._address_of)

    def _address_of(self, name: str) -> str:
        """A gossip member's address (this node's own included); "" for one no longer known."""
        if name == self.node_id:
            return self.advertise_ip
        node = self.db.nodes.get(name)
        return node.member.addr if node is not None else ""

    def status(self) -> dict[str, Any]:
        """What GET /shoal/gossip returns: this node, its members and states, its networks' peer counts."""
        members = [{"Name": m.name, "Addr": m.addr, "Port": m.port, "State": m.state.value, "Incarnation": m.incarnation}
                   for m in sorted(self.members(), key=lambda m: m.name)]
        counts = self.db.peer_counts()
        entries = self.db.entry_counts()
        return {
            "NodeID": self.node_id,
            "Addr": f"{self.advertise_ip}:{self.port}",
            "Running": self.shell is not None,
            "Error": self.error,
            "KeyLamport": self.ring.lamport if self.ring else 0,
            "Keys": len(self.ring.keys) if self.ring else 0,
            "Members": members,
            "Networks": [{"ID": nid, "Peers": counts[nid], "Entries": entries.get(nid, 0),
                          "EntryOwners": self.db.entry_owners(nid)} for nid in sorted(counts)],
            "Counters": dict(self.db.counters),
        }


async def _maybe_await(r: Any) -> Any:
    if inspect.isawaitable(r):
        return await r
    return r

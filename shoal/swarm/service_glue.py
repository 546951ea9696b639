"""Service endpoints on a swarm node: this node's running tasks announced in gossip's endpoint_table
(shoal/swarm/gossip_agent.py), and every node's folded ServiceBindings applied to the VIP load balancer and DNS
(agent/network/lb.py) and to the routing mesh (agent/network/mesh.py, shoal/swarm/ingress_glue.py).

Started beside the worker by shoal/swarm/worker_glue.py; one ServiceGlue per SwarmNode, kept across sessions.
It reconciles (what should be announced and applied vs what is) on every endpoint_table change and every
RESYNC_S, so a lost event or a replaced gossip agent only delays, never strands, a record. A change of the
worker's tasks (poke) announces at once, without waiting for the pass (which may be waiting for the kernel thread).

A burst of endpoints (a service's tasks starting over a second or two, arriving in a dozen gossip events) would make a
dozen full passes, each one nftables transaction per sandbox: a change that only adds backends to services already
served is held until HOLD_S after the last apply, so the burst's additions share a few passes. Anything else (a backend
or a service gone, a new service, a VIP or a name changed), and an addition after a quiet spell, applies at once.
While this node is itself starting tasks (accepted, not yet running or failed), such additions also wait for those
starts to end, at most STARTS_HOLD_S: the starts get the two cores first, and the sandboxes' tables are rewritten once
after them (the last start's task, running, wakes the pass), not once per HOLD_S during them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from agent.gossip.netdb_services import EndpointRecord
from agent.network import lbplan
from agent.network.service_binding import ServiceBinding
from proto import objects_pb2 as pb
from shoal.swarm.executor import service_name
from shoal.swarm.ingress_glue import announce, ensure_mesh

log = logging.getLogger(__name__)

RESYNC_S = 1.0
# How long after an apply further additions of backends wait to be applied together (a removal never waits).
HOLD_S = 0.25
# The longest additions wait for this node's task starts to end (a task that keeps restarting must not hold them).
STARTS_HOLD_S = 2.0
RUNNING = pb.TaskState.TASK_STATE_RUNNING
ACCEPTED = pb.TaskState.TASK_STATE_ACCEPTED
COMPLETE = pb.TaskState.TASK_STATE_COMPLETE
INGRESS_MODE = 0  # PortConfig.publish_mode INGRESS
_PROTOS = {0: "tcp", 1: "udp", 2: "sctp"}


@functools.lru_cache(maxsize=4096)
def _ip(cidr: str) -> ipaddress.IPv4Address | None:
    # Remembered: every pass and every poke makes the records of every running task again, and parsing their
    # addresses was nearly all of that.
    try:
        return ipaddress.IPv4Interface(cidr).ip
    except ValueError:
        return None


def task_records(task: pb.Task, overlay_ids: set[str] | frozenset[str]) -> dict[str, EndpointRecord]:
    """network id -> the record a running task announces there (only overlays this node has: gossip is theirs)."""
    vips = {v.network_id: _ip(v.addr) for v in task.endpoint.virtual_ips}
    dnsrr = task.endpoint.spec.mode == pb.EndpointSpec.ResolutionMode.DNSRR
    ports = tuple(sorted((p.published_port, p.target_port, _PROTOS.get(p.protocol, "tcp"))
                         for p in task.endpoint.ports if p.publish_mode == INGRESS_MODE and p.published_port))
    name = service_name(task)
    out: dict[str, EndpointRecord] = {}
    for att in task.networks:
        nid = att.network.id
        ip = _ip(att.addresses[0]) if att.addresses else None
        if nid not in overlay_ids or ip is None:
            continue
        ingress = att.network.spec.ingress
        aliases = tuple(dict.fromkeys(a for a in att.aliases if a and a != name))
        out[nid] = EndpointRecord(service_id=task.service_id, service_name=name,
                                  vip=None if dnsrr else vips.get(nid), task_ip=ip, task_name=task.annotations.name,
                                  task_id=task.id, aliases=aliases, ingress_ports=ports if ingress else ())
    return out


@dataclass(slots=True)
class ServiceGlue:
    node: Any  # shoal/swarm/node.SwarmNode
    published: dict[tuple[str, str], EndpointRecord] = field(default_factory=dict)  # (network, task id) -> record
    applied: list[ServiceBinding] | None = None
    _gossip: Any = None
    _unwatch: Any = None
    _announced: Any = None  # the gossip agent the ingress sandbox's endpoint was announced to
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    applied_at: float = float("-inf")  # time.monotonic() of the last apply's start
    held_until: float | None = None  # additions held back: the pass that applies them is due then
    starts_held_since: float | None = None  # additions held for this node's task starts since then
    _mesh_fed: tuple[Any, list[ServiceBinding]] | None = None  # the mesh and the ingress bindings it last took
    # task id -> (its task object, the overlays, its records): see _records_of
    _records: dict[str, tuple[pb.Task, frozenset[str], dict[str, EndpointRecord]]] = field(default_factory=dict)

    async def run(self) -> None:
        """Reconciles until cancelled (the session ends); errors are logged and retried at the next pass."""
        try:
            while True:
                self._wake.clear()
                try:
                    await self.reconcile(hold=True)
                except Exception:  # noqa: BLE001 - the next pass tries again
                    log.exception("service endpoints: reconcile failed")
                    self.held_until = None  # a failing pass waits as any does: for a wake or RESYNC_S, no spin
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._until_next_pass()):
                        await self._wake.wait()
        finally:
            self._drop_watch()

    def _until_next_pass(self) -> float:
        """Seconds until the pass that is due without a wake: the periodic one, or the held additions'."""
        if self.held_until is None:
            return RESYNC_S
        return min(RESYNC_S, max(0.0, self.held_until - time.monotonic()))

    def _drop_watch(self) -> None:
        if self._unwatch is not None:
            with contextlib.suppress(Exception):
                self._unwatch()
        self._unwatch = None

    def _attach(self, gossip: Any) -> None:
        """A new gossip agent: watch its endpoint_table, announce everything again, and (until the overlay
        glue does it) connect it with the overlay driver so remote task endpoints get VXLAN peers."""
        self._drop_watch()
        self._gossip = gossip
        self.published.clear()
        self.applied = None
        loop = asyncio.get_running_loop()
        self._unwatch = gossip.watch_services(lambda _nid: loop.call_soon_threadsafe(self._wake.set))

    def _wire_overlay(self, gossip: Any) -> None:
        """Until the overlay glue (issue 11) does it: the overlay driver (enabled after the swarm join, and made
        again by a restart of the data plane) and gossip connected, so remote endpoints become VXLAN peers."""
        driver = self.node.engine.net.drivers.find("overlay")
        if hasattr(driver, "plane") and getattr(driver, "on_endpoint_up", None) is None:
            from shoal.swarm.overlay import wire_gossip

            wire_gossip(driver, gossip, asyncio.get_running_loop())

    def wanted(self) -> dict[tuple[str, str], EndpointRecord]:
        """What this node announces: one record per running task per overlay it is attached to."""
        worker = self.node.worker
        engine = self.node.engine
        overlays = frozenset(nid for nid, n in engine.net.networks.items() if n.driver == "overlay")
        out: dict[tuple[str, str], EndpointRecord] = {}
        if worker is None:
            return out
        tasks = dict(worker.tasks)
        for tid, task in tasks.items():
            st = worker.statuses.get(tid)
            if not task.service_id or task.desired_state > COMPLETE or st is None or st.state != RUNNING:
                continue
            for nid, rec in self._records_of(tid, task, overlays).items():
                out[(nid, tid)] = rec
        for tid in [t for t in self._records if t not in tasks]:
            del self._records[tid]
        return out

    def _records_of(self, tid: str, task: pb.Task, overlays: frozenset[str]) -> dict[str, EndpointRecord]:
        """task_records, made again only for a new task object or other overlays: every pass and every poke asks
        for every running task's records, and an assignment replaces a task's object rather than changing it."""
        kept = self._records.get(tid)
        if kept is None or kept[0] is not task or kept[1] != overlays:
            kept = (task, overlays, task_records(task, overlays))
            self._records[tid] = kept
        return kept[2]

    def _starting(self) -> bool:
        """Whether this node is starting a task now: accepted (or further), not yet running, and to run (a task held
        at READY, e.g. for its restart delay, is not starting)."""
        worker = self.node.worker
        if worker is None:
            return False
        for tid, st in list(worker.statuses.items()):
            if ACCEPTED <= st.state < RUNNING:
                task = worker.tasks.get(tid)
                if task is not None and task.desired_state in (RUNNING, COMPLETE):  # a job's task: COMPLETE
                    return True
        return False

    def bindings(self) -> list[ServiceBinding]:
        engine = self.node.engine
        out: list[ServiceBinding] = []
        for nid, n in sorted(engine.net.networks.items()):
            if n.driver == "overlay":
                out.extend(self._gossip.service_bindings(nid))
        return out

    def announce(self, gossip: Any) -> bool:
        """endpoint_table made to hold this node's running tasks (gossip's tables are memory: no await, so a pass
        and a poke never interleave); whether it changed anything."""
        want = self.wanted()
        changed = False
        for key in [k for k in self.published if k not in want]:
            gossip.service_endpoint_down(key[0], key[1])
            del self.published[key]
            changed = True
        for key, rec in want.items():
            if self.published.get(key) != rec:
                log.debug("perf: announce task %s", key[1][:12])
                gossip.service_endpoint_up(key[0], key[1], rec)
                self.published[key] = rec
                changed = True
        return changed

    def poke(self) -> None:
        """The worker's tasks or their states changed: announce now (the other nodes' VIPs and names need not wait
        for this node's next pass), and wake the pass for the local load balancer and mesh. A poke that announced
        nothing new (a task on its way to running) wakes nothing: the pass would find the endpoint table as it was."""
        gossip = getattr(self.node, "gossip", None)
        if gossip is not None and gossip is self._gossip:
            try:
                if not self.announce(gossip):
                    return
            except Exception:  # noqa: BLE001 - the next pass tries again
                log.exception("service endpoints: announce failed")
        self._wake.set()

    async def reconcile(self, hold: bool = False) -> None:
        """One pass. hold: additions of backends that come soon after an apply wait for HOLD_S after it."""
        gossip = getattr(self.node, "gossip", None)
        if gossip is None:
            return
        if gossip is not self._gossip:
            self._attach(gossip)
        self._wire_overlay(gossip)
        self.announce(gossip)
        if getattr(self.node.engine, "mesh", None) is None:
            try:
                if await ensure_mesh(self.node) is not None:
                    self.applied = None  # the new mesh gets every binding
            except Exception:  # noqa: BLE001 - retried at the next pass; VIPs and DNS work without it
                log.exception("routing mesh: the ingress sandbox could not be made")
        if self._announced is not gossip and getattr(self.node.engine, "mesh", None) is not None:
            if announce(self.node.engine, gossip):
                self._announced = gossip
        bindings = self.bindings()
        if bindings == self.applied:
            self.held_until = None
            return
        t0 = time.monotonic()
        if hold and only_additions(self.applied, bindings):
            if t0 < self.applied_at + HOLD_S:
                self.held_until = self.applied_at + HOLD_S
                return
            if self._starting():
                if self.starts_held_since is None:
                    self.starts_held_since = t0
                if t0 < self.starts_held_since + STARTS_HOLD_S:
                    # A start's end that is no running task (failed, rejected) pokes nothing: looked at again soon.
                    self.held_until = min(t0 + HOLD_S, self.starts_held_since + STARTS_HOLD_S)
                    return
        self.held_until = None
        self.starts_held_since = None
        self.applied_at = t0
        await self.apply(bindings)
        self.applied = bindings
        log.debug("perf: bindings applied (%d backends) in %.3f s", sum(len(b.backends) for b in bindings),
                  time.monotonic() - t0)

    async def apply(self, bindings: list[ServiceBinding]) -> None:
        engine = self.node.engine
        good = _one_per_vip(bindings)
        ingress = {nid for nid, n in engine.net.networks.items() if n.ingress}
        # The ingress network's VIPs serve only the ingress sandbox (as Docker's): no names, no tables in tasks.
        # One trip to the kernel thread for both: node-wide kernel work holds every sandbox's work off meanwhile.
        await engine._kernel(self._program, engine.sandboxes.lb, getattr(engine, "mesh", None), good,
                             [b for b in good if b.network_id not in ingress])

    def _program(self, lb: Any, mesh: Any, good: list[ServiceBinding], tasks: list[ServiceBinding]) -> None:
        """Kernel thread: the VIPs and names of the tasks' networks, then the routing mesh (FirewallIngress publishes
        through the firewall itself). The mesh is left alone when its own bindings (the ingress network's) are
        those it was last given: most passes change only the tasks' networks."""
        lb.set_bindings(tasks)
        if mesh is None:
            return
        network_id = getattr(mesh, "ingress_network_id", None)
        mine = [b for b in good if b.network_id == network_id] if network_id is not None else None
        if mine is not None and self._mesh_fed is not None and self._mesh_fed[0] is mesh and self._mesh_fed[1] == mine:
            return
        self._mesh_fed = None  # until it took them
        mesh.set_bindings(good)
        if mine is not None:
            self._mesh_fed = (mesh, mine)


def only_additions(applied: list[ServiceBinding] | None, bindings: list[ServiceBinding]) -> bool:
    """Whether `bindings` differ from `applied` only by backends added to services already applied (what may wait:
    the services keep serving with the backends they have). A backend or a service gone, a new service, or any other
    field changed is not: a removed task must leave the rotation at once."""
    if applied is None:
        return False
    before = {(b.service_id, b.network_id): b for b in applied}
    if len(before) != len(bindings):
        return False
    for b in bindings:
        old = before.get((b.service_id, b.network_id))
        if old is None:
            return False
        if old == b:
            continue
        if (old.service_name, old.vip, old.aliases, old.ingress_ports) != \
                (b.service_name, b.vip, b.aliases, b.ingress_ports):
            return False
        now = {x.task_id: x for x in b.backends}  # by task id: a Backend hashes its address in Python
        for x in old.backends:
            y = now.get(x.task_id)
            if y is not x and y != x:
                return False
    return True


def _one_per_vip(bindings: list[ServiceBinding]) -> list[ServiceBinding]:
    """A VIP two services claim (a stale record of a removed service whose VIP was reused) would make the
    load balancer refuse every binding: the first claimant keeps it, the other is left out and logged."""
    seen: dict[tuple[str, ipaddress.IPv4Address], str] = {}
    out: list[ServiceBinding] = []
    for b in bindings:
        if b.vip is not None:
            key = (b.network_id, lbplan.address(b.vip))
            if seen.setdefault(key, b.service_id) != b.service_id:
                log.warning("service endpoints: VIP %s on %s claimed by %s and %s; %s left out",
                            b.vip, b.network_id[:12], seen[key][:12], b.service_id[:12], b.service_id[:12])
                continue
        out.append(b)
    return out


def glue_for(node: Any) -> ServiceGlue:
    """The node's one ServiceGlue (made on first use)."""
    glue = getattr(node, "service_glue", None)
    if glue is None:
        glue = ServiceGlue(node)
        node.service_glue = glue
    return glue

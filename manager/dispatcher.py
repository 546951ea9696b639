"""The dispatcher (swarmkit's manager/dispatcher, first form): agents keep a session with the leader, register,
heartbeat at the period the cluster sets and learn the managers to fail over to and the nodes held DOWN (their VIP,
mesh and DNS backends stop counting at once); a node that misses 3 periods is DOWN.
A leader-only component of the ManagerNode (manager/node.py); the store writes go through manager/nodes.py."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from manager import gossip_keys, metrics
from common.aiowait import wait_event
from manager.ca.auth import Authorizer
from manager.dispatcher_tasks import StatusBatcher, StatusRefused, stream_assignments
from manager.nodes import NodeOps, Role, State
from manager.store.errors import StoreError
from proto import objects_pb2 as pb
from proto import swarm_pb2, swarm_pb2_grpc

log = logging.getLogger(__name__)
DEFAULT_HEARTBEAT_S = 5.0  # swarmkit's DefaultHeartBeatPeriod
MISSES = 3  # heartbeat periods without a heartbeat before a node is DOWN
NOT_LEADER = "dispatcher is not running on this manager: it is not the leader"


RATE_LIMIT_PERIOD_S = 8.0  # swarmkit's DefaultRateLimitPeriod
RATE_LIMIT_COUNT = 3  # registrations a node may make within one period


class RegistrationLimiter:
    """Per-node registration rate limit (swarmkit's nodeStore.CheckRateLimit): a node that keeps re-registering
    (a crash loop, a bad agent) must not turn every attempt into a raft write."""

    def __init__(self, clock: Callable[[], float], period: float = RATE_LIMIT_PERIOD_S, count: int = RATE_LIMIT_COUNT) -> None:
        self.clock = clock
        self.period = period
        self.count = count
        self._seen: dict[str, tuple[float, int]] = {}  # node id -> (start of its window, attempts in it)

    def check(self, node_id: str) -> str | None:
        """None when node_id may register now, else the refusal."""
        now = self.clock()
        start, n = self._seen.get(node_id, (now, 0))
        if now - start > self.period:
            start, n = now, 0
        n += 1
        self._seen[node_id] = (start, n)
        if n > self.count:
            return f"node {node_id} exceeded rate limit count of registrations"
        return None


@dataclass(slots=True)
class _Session:
    node_id: str
    session_id: str
    deadline: float
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False


def peer_ip(ctx: grpc.aio.ServicerContext) -> str:
    """"ipv4:192.168.200.14:51234" -> "192.168.200.14"."""
    peer = ctx.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return ""


class Dispatcher(swarm_pb2_grpc.DispatcherServicer):
    name = "dispatcher"

    def __init__(self, ops: NodeOps, auth: Authorizer, clock: Callable[[], float] = time.monotonic) -> None:
        self.ops = ops
        self.auth = auth
        self.clock = clock
        self.running = False
        self.sessions: dict[str, _Session] = {}
        self._grace: dict[str, float] = {}  # nodes known at leader start, not yet registered here
        self._checker: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        self.heartbeats = 0
        self.limiter = RegistrationLimiter(clock)
        self.statuses = StatusBatcher(ops.raft.store, ops.raft.propose)  # task status from all sessions, batched
        self.unseal: Callable[[pb.Secret], bytes] | None = None  # secrets' plaintext for assignments (nodes_manager)
        # ids of the nodes the store holds DOWN, sorted: every session message carries them (down_nodes), so each
        # agent drops those nodes' VIP, mesh and DNS backends as soon as the managers decide, not when gossip does
        self.down_nodes: tuple[str, ...] = ()

    # ------------------------------------------------------------------ leader component
    async def start(self) -> None:
        self.running = True
        deadline = self.clock() + MISSES * self.period()
        self._grace = {n.id: deadline for n in self.ops.raft.store.view().list("node") if n.status.state != State.DOWN}
        self.refresh_down()
        self._checker = asyncio.create_task(self._check_loop(), name="dispatcher-check")
        # the watch is made here, not in the task: a change committed before the task first runs is not missed
        self._follower = asyncio.create_task(self._follow_store(self.ops.raft.store.watch({"node", "cluster"})),
                                             name="dispatcher-nodes")
        self.statuses.start()

    async def stop(self) -> None:
        self.running = False
        await self.statuses.stop()
        for task in (self._checker, self._follower):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._checker = self._follower = None
        for s in self.sessions.values():
            s.ended = True
            s.wake.set()
        self.sessions.clear()
        self._grace.clear()

    def period(self) -> float:
        c = self.ops.local_cluster()
        if c is not None:
            d = c.spec.dispatcher.heartbeat_period
            if d.seconds or d.nanos:
                return d.ToNanoseconds() / 1e9
        return DEFAULT_HEARTBEAT_S

    def alive(self, node_id: str) -> bool:
        return node_id in self.sessions

    async def _check_loop(self) -> None:
        while self.running:
            await asyncio.sleep(max(0.05, self.period() / 4))
            await self.check_once()

    async def check_once(self) -> None:
        """One pass of the checker: gossip keys rotated when due, nodes past their deadline marked DOWN, and the
        sessions told the new DOWN set."""
        await self._rotate_gossip_keys()
        now = self.clock()
        expired = [s.node_id for s in self.sessions.values() if s.deadline < now]
        expired += [nid for nid, dl in self._grace.items() if dl < now and nid not in self.sessions]
        self._publish_node_counts()
        for nid in expired:
            s = self.sessions.pop(nid, None)
            self._grace.pop(nid, None)
            if s is not None:
                s.ended = True
                s.wake.set()
            try:
                await self.ops.set_status(nid, State.DOWN, message="heartbeat failure")
                log.info("dispatcher: node %s is down (no heartbeat for %d periods)", nid, MISSES)
            except Exception as e:  # lost leadership, no quorum: the next leader decides
                log.info("dispatcher: could not mark node %s down: %s", nid, e)
            self.refresh_down()  # at once: the other nodes' load balancers wait for this, not for the next pass
        self.refresh_down()  # a status written elsewhere (a removed node, a previous leader's write)

    def refresh_down(self) -> bool:
        """down_nodes from the store; on a change every session is woken to send it. Returns whether it changed."""
        down = tuple(sorted(n.id for n in self.ops.raft.store.view().list("node") if n.status.state == State.DOWN))
        if down == self.down_nodes:
            return False
        self.down_nodes = down
        for s in self.sessions.values():
            s.wake.set()
        return True

    async def _follow_store(self, watch: Any) -> None:
        """Wakes the sessions whose message a store change alters: a node's own session when its node changes (its
        ingress attachment, role, availability, labels), every session when a manager changes (the managers list) or
        the cluster does (heartbeat period, gossip keys). Without it such a change reached the agent only with the next
        periodic message, up to half a heartbeat period later (2.5 s by default)."""
        while self.running:
            try:
                async for ev in watch:
                    obj = ev.object
                    if ev.kind == "cluster" or obj.role == Role.MANAGER or obj.HasField("manager_status"):
                        for s in self.sessions.values():
                            s.wake.set()
                    elif (s := self.sessions.get(obj.id)) is not None:
                        s.wake.set()
            except StoreError as e:  # the watch fell behind or a snapshot replaced the store: every session re-sends
                log.info("dispatcher: node watch ended (%s)", e.message)
                for s in self.sessions.values():
                    s.wake.set()
            finally:
                watch.close()
            watch = self.ops.raft.store.watch({"node", "cluster"})

    async def _rotate_gossip_keys(self) -> None:
        """The leader makes the gossip keys (and rotates them, three kept); sessions push them to the agents."""
        c = self.ops.local_cluster()
        now = datetime.datetime.now(datetime.timezone.utc)
        if c is None or not gossip_keys.rotation_due(c, now):
            return
        try:
            if await gossip_keys.rotate_if_due(self.ops.raft, c.id, now):
                log.info("dispatcher: gossip encryption keys rotated")
                for s in self.sessions.values():
                    s.wake.set()
        except Exception as e:  # no quorum, lost leadership: the next check (or leader) does it
            log.info("dispatcher: could not rotate the gossip keys: %s", e)

    def _publish_node_counts(self) -> None:
        counts: dict[str, int] = {}
        for n in self.ops.raft.store.view().list("node"):
            name = pb.NodeStatus.State.Name(n.status.state).lower()
            counts[name] = counts.get(name, 0) + 1
        metrics.set_nodes_by_state(counts)
        metrics.set_dispatcher_sessions(len(self.sessions))

    # ------------------------------------------------------------------ RPCs
    async def Session(self, request: swarm_pb2.SessionRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[swarm_pb2.SessionMessage]:
        who = await self.auth.check(context, managers_only=False)
        if not self.running:
            await context.abort(grpc.StatusCode.UNAVAILABLE, NOT_LEADER)
        limited = self.limiter.check(who.node_id)
        if limited is not None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, limited)
        try:
            node = await self.ops.set_status(who.node_id, State.READY, peer_ip(context), request.description)
        except Exception as e:  # no quorum, lost leadership: the agent tries again (maybe elsewhere)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"could not register node {who.node_id}: {e}")
        if node is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"node {who.node_id} not found")
        old = self.sessions.get(who.node_id)
        if old is not None:
            old.ended = True
            old.wake.set()
        s = _Session(who.node_id, uuid.uuid4().hex, self.clock() + MISSES * self.period())
        self.sessions[who.node_id] = s
        self._grace.pop(who.node_id, None)
        metrics.set_dispatcher_sessions(len(self.sessions))
        self.refresh_down()  # the node is READY again: every node may count its (re-announced) endpoints again
        log.info("dispatcher: node %s registered (session %s)", who.node_id, s.session_id[:12])
        last: bytes = b""
        try:
            while not s.ended and self.running:
                msg = self._message(s)
                data = msg.SerializeToString(deterministic=True)
                if data != last:
                    last = data
                    yield msg
                await wait_event(s.wake, max(0.05, self.period() / 2))  # wait_for could swallow the stream's cancel
                s.wake.clear()
        finally:
            if self.sessions.get(who.node_id) is s and not self.running:
                self.sessions.pop(who.node_id, None)
            elif self.sessions.get(who.node_id) is s and not s.ended:
                # the agent's end went away (its daemon died, its host dropped off): a live agent opens a new
                # session within a retry, so one period is grace enough; waiting the full 3 periods, as swarm
                # does, only delays rescheduling its tasks
                s.deadline = min(s.deadline, self.clock() + self.period())
            metrics.set_dispatcher_sessions(len(self.sessions))
        await context.abort(grpc.StatusCode.UNAVAILABLE, "session ended: reconnect" if self.running else NOT_LEADER)

    def _message(self, s: _Session) -> swarm_pb2.SessionMessage:
        node = self.ops.local_node(s.node_id) or pb.Node(id=s.node_id)
        managers = [swarm_pb2.WeightedPeer(node_id=nid, addr=addr, weight=1) for nid, addr in self.ops.managers()]
        # the node's status changes with every registration: leave it out so only real changes are pushed
        node = self.ops.decorate(node)
        node.ClearField("status")
        node.ClearField("meta")
        node.ClearField("description")
        if node.HasField("manager_status"):
            node.manager_status.leader = False
            node.manager_status.reachability = 0
        return swarm_pb2.SessionMessage(session_id=s.session_id, node=node, managers=managers,
                                        heartbeat_period_ms=int(self.period() * 1000), down_nodes=self.down_nodes,
                                        **gossip_keys.session_fields(self.ops.local_cluster()))

    async def Heartbeat(self, request: swarm_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext) -> swarm_pb2.HeartbeatResponse:
        who = await self.auth.check(context, managers_only=False)
        if not self.running:
            await context.abort(grpc.StatusCode.UNAVAILABLE, NOT_LEADER)
        s = self.sessions.get(who.node_id)
        if s is None or s.session_id != request.session_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, "node not registered")
        period = self.period()
        s.deadline = self.clock() + MISSES * period
        self.heartbeats += 1
        metrics.heartbeat_received()
        # jitter (swarmkit adds up to ±epsilon) so agents do not beat in step; never above the period
        return swarm_pb2.HeartbeatResponse(period_ms=int(period * 1000 * random.uniform(0.8, 1.0)))

    # ------------------------------------------------------------------ tasks (TaskDispatcher service)
    async def _session_of(self, context: grpc.aio.ServicerContext, session_id: str) -> _Session:
        who = await self.auth.check(context, managers_only=False)
        if not self.running:
            await context.abort(grpc.StatusCode.UNAVAILABLE, NOT_LEADER)
        s = self.sessions.get(who.node_id)
        if s is None or s.session_id != session_id or s.ended:
            await context.abort(grpc.StatusCode.NOT_FOUND, "node not registered")
        assert s is not None
        return s

    async def Assignments(self, request: swarm_pb2.AssignmentsRequest,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[swarm_pb2.AssignmentsMessage]:
        """The node's tasks (with the configs and networks they use): the whole set, then changes as the store moves."""
        s = await self._session_of(context, request.session_id)
        async for msg in stream_assignments(self.ops.raft.store, s.node_id, lambda: self.running and not s.ended,
                                            unseal=self.unseal):
            yield msg
        await context.abort(grpc.StatusCode.UNAVAILABLE, "session ended: reconnect" if self.running else NOT_LEADER)

    async def UpdateTaskStatus(self, request: swarm_pb2.UpdateTaskStatusRequest,
                               context: grpc.aio.ServicerContext) -> swarm_pb2.UpdateTaskStatusResponse:
        """Queued for the next batch write (swarmkit answers before the write too: the agent re-sends its state
        after a reconnect, and a state never moves back, so a lost batch costs nothing but time)."""
        s = await self._session_of(context, request.session_id)
        try:
            self.statuses.submit(s.node_id, list(request.updates))
        except StatusRefused as e:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        return swarm_pb2.UpdateTaskStatusResponse()

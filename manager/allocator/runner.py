"""The allocator on the raft leader: a LeaderComponent (manager/node.py) that runs core.Allocator over the store each
time it changes (events batched for a moment) and proposes the updates in few entries. Routes come from the kernel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from ipaddress import IPv4Network
from typing import Any

from google.protobuf.message import Message

from manager import timing
from common.aiowait import LeadingWindow, next_or_none
from manager.store.errors import StoreError

from proto import objects_pb2 as pb

from .core import NEW, Allocator, Plan, task_dead
from .pools import DEFAULT_QUARANTINE_S

log = logging.getLogger(__name__)
READY = pb.NodeStatus.READY

KINDS = {"network", "service", "task", "node", "cluster"}
# At most one pass per window while changes keep coming (common/aiowait.LeadingWindow). Shorter than the orchestrator's
# and the scheduler's 20 ms: a `service create` costs the allocator two passes in a row (the service's VIPs, then the
# tasks the orchestrator made meanwhile), and the second one waited out the window on the way to the nodes. Over a
# thousand tasks a pass takes longer than either window (bench/allocator.py: ~70 ms), and the window changes nothing.
BATCH_S = 0.01
TICK_S = 30.0  # a pass at least this often even with no relevant change (a failed proposal is retried)
CHUNK = 100  # updates per proposal (the store takes at most 200 actions)
ROUTES_TTL_S = 2.0  # the manager's routes are read again at most this often


def manager_routes() -> list[IPv4Network]:
    """IPv4 destinations routed or addressed on this manager (default routes left out): never given to a network."""
    from pyroute2 import IPRoute

    found: list[IPv4Network] = []
    with IPRoute() as ipr:
        for route in ipr.get_routes(family=socket.AF_INET, table=254):
            if route["dst_len"]:
                found.append(IPv4Network(f"{route.get_attr('RTA_DST')}/{route['dst_len']}", strict=False))
        for addr in ipr.get_addr(family=socket.AF_INET):
            net = IPv4Network(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}", strict=False)
            if not net.is_loopback:
                found.append(net)
    return sorted(set(found))


class AllocatorRunner:
    """start()/stop() follow leadership. Each pass: core.plan over the committed view, then one proposal per CHUNK
    updates, each waited for (applied here) before the next pass, so the view the next pass reads includes them."""

    name = "allocator"

    def __init__(self, raft: Any, routes: Callable[[], list[IPv4Network]] = manager_routes,
                 quarantine_s: float = DEFAULT_QUARANTINE_S, clock: Callable[[], float] = time.time) -> None:
        self.raft = raft
        self.routes = routes
        self.quarantine_s = quarantine_s
        self.clock = clock
        self.core: Allocator | None = None
        self.last_plan: Plan | None = None
        self.passes = 0
        self._task: asyncio.Task[None] | None = None
        self._routes: tuple[float, list[IPv4Network]] = (-ROUTES_TTL_S, [])
        self._window = LeadingWindow(BATCH_S)

    async def start(self) -> None:
        self.core = Allocator(self.quarantine_s)  # a new leader rebuilds everything from the store
        self._task = asyncio.create_task(self._run(), name="allocator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        store = self.raft.store
        while True:
            watch = store.watch(KINDS)
            try:
                while True:
                    try:
                        await self._pass()
                    except (asyncio.CancelledError, StoreError):
                        raise
                    except Exception:  # a bug must not stop allocation for good: log it, go on at the next change
                        log.exception("allocator: pass failed")
                    await self._wait(watch)
            except StoreError as e:  # the watch fell behind or a snapshot replaced the store: read again
                log.info("allocator: %s", e.message)
            finally:
                watch.close()

    async def _wait(self, watch: Any) -> None:
        """Until a change that can matter to allocation (then up to BATCH_S more, to take a burst in one pass) or TICK_S.
        A pass reads the whole store: task status updates between live states and node heartbeats do not cost one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TICK_S
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                event = await next_or_none(watch, remaining)  # not wait_for: it could swallow stop()'s cancel
            except StopAsyncIteration:
                return
            if event is None:
                return
            if needs_pass(event):
                break
        await self._window.settle()
        watch.drain()

    async def _pass(self) -> None:
        assert self.core is not None
        view = self.raft.store.view()
        routes: list[IPv4Network] = []
        if picks_a_subnet(view):
            # Only a pool subnet must avoid the manager's routes; reading them (netlink, in a thread) costs
            # milliseconds, so a pass over tasks and VIPs alone does not.
            routes = await self._current_routes()
            view = self.raft.store.view()  # the read awaited: plan over what is committed now
        span = timing.Span("allocator")
        plan = self.core.plan(view, self.clock(), routes)
        span.plan_done()
        self.last_plan = plan
        self.passes += 1
        for dup in plan.duplicates:
            log.error("allocator: duplicate address %s", dup)
        work: list[tuple[str, Message | str]] = [*plan.updates, *plan.removals]
        for i in range(0, len(work), CHUNK):
            chunk = work[i:i + CHUNK]
            started = time.monotonic()
            try:
                await self.raft.propose(lambda tx, chunk=chunk: _write(tx, chunk))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the next pass re-reads the store and tries again
                log.warning("allocator: proposal of %d updates failed: %s", len(chunk), e)
            span.proposed(started, len(chunk))
        span.end()

    async def _current_routes(self) -> list[IPv4Network]:
        read_at, routes = self._routes
        if time.monotonic() - read_at < ROUTES_TTL_S:
            return routes
        try:
            routes = await asyncio.to_thread(self.routes)
        except Exception as e:  # noqa: BLE001 - without routes the pools alone decide; say so
            log.warning("allocator: cannot read the manager's routes: %s", e)
        self._routes = (time.monotonic(), routes)
        return routes


def picks_a_subnet(view: Any) -> bool:
    """Whether a pass over view takes a network's subnet from the pools (a network not allocated yet that names
    no subnet of its own): the one use of the manager's routes."""
    return any(not n.vni and not (n.spec.ipam.configs and n.spec.ipam.configs[0].subnet) for n in view.list("network"))


def needs_pass(event: Any) -> bool:
    """Whether a committed change can give the allocator work: new or removed objects, networks, services and the
    cluster always; a task only when it is NEW, dies or changes its attachments; a node when it becomes or stops
    being READY or its ingress attachment changes."""
    if event.kind in ("network", "service", "cluster") or event.action != "update" or event.old is None:
        return True
    old, new = event.old, event.object
    if event.kind == "task":
        return new.status.state == NEW or task_dead(old) != task_dead(new) or list(old.networks) != list(new.networks)
    if event.kind == "node":
        return (old.status.state == READY) != (new.status.state == READY) or old.attachment != new.attachment
    return True


def _write(tx: Any, chunk: list[tuple[str, Message | str]]) -> None:
    """Updates whose object changed since the pass read it are left out (the next pass sees the new one);
    a removal is an id."""
    for kind, obj in chunk:
        if isinstance(obj, str):
            if tx.get(kind, obj) is not None:
                tx.remove(kind, obj)
            continue
        current = tx.get(kind, obj.id)  # type: ignore[attr-defined]
        if current is None or current.meta.version.index != obj.meta.version.index:  # type: ignore[attr-defined]
            continue
        tx.update(kind, obj)

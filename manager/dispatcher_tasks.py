"""The dispatcher's task side (swarmkit's dispatcher Assignments/UpdateTaskStatus): what each node must run,
computed from the store and streamed as a full set then changes; task status from every node batched into few writes.
Used by manager/dispatcher.py (the RPCs, sessions); reads and writes the store of manager/store through a propose call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from manager import timing
from common.aiowait import BatchWindow, LeadingWindow, next_or_none
from manager.orchestrator.update import status_to_store
from manager.store.kinds import KINDS
from proto import objects_pb2 as pb
from proto import swarm_pb2

log = logging.getLogger(__name__)

BATCH_INTERVAL_S = 0.1  # swarmkit's maxBatchInterval
BATCH_ITEMS = 200  # one proposal holds at most the store's MAX_ACTIONS changes
COALESCE_S = 0.05  # assignment messages to one node at most one per this while changes keep coming
NOT_THIS_NODE = "cannot update a task not assigned this node"  # swarmkit's wording (PermissionDenied)

Key = tuple[str, str]  # (kind, id): ("task", id), ("config", id), ("network", id), ("secret", id)
# Secrets travel with the tasks that use them when this build has them all: the store's kind, the spec's references and
# the Assignment field (objects.proto/swarm.proto additions of the lead); until then configs only.
SECRETS = ("secret" in KINDS and "secrets" in pb.ContainerSpec.DESCRIPTOR.fields_by_name
           and "secret" in swarm_pb2.Assignment.DESCRIPTOR.fields_by_name)
Change = swarm_pb2.AssignmentChange


class StatusRefused(Exception):
    """An update names a task of another node: the whole request is refused (nothing queued)."""


def assigned_set(view: Any, node_id: str) -> dict[Key, Any]:
    """Everything node_id must know now: its tasks from ASSIGNED on (swarmkit skips earlier ones: not scheduled
    yet), the configs they reference and the networks they attach to, each as a fresh copy."""
    out: dict[Key, Any] = {}
    for t in view.select("task", lambda t: t.node_id == node_id and t.status.state >= pb.TASK_STATE_ASSIGNED):
        out[("task", t.id)] = t
        for ref in t.spec.container.configs:
            if ("config", ref.config_id) not in out:
                c = view.get("config", ref.config_id)
                if c is not None:
                    out[("config", c.id)] = c
        if SECRETS:  # once the store has secrets (the lead's kind) and Assignment carries them
            for ref in t.spec.container.secrets:
                if ("secret", ref.secret_id) not in out:
                    sec = view.get("secret", ref.secret_id)
                    if sec is not None:
                        out[("secret", sec.id)] = sec
        for att in t.networks:
            nid = att.network.id
            if nid and ("network", nid) not in out:
                n = view.get("network", nid)
                if n is not None:
                    out[("network", n.id)] = n
    return out


def fingerprint(kind: str, obj: Any) -> bytes:
    """What makes a change worth sending. A task's own status (the node wrote it) and meta change with every
    report: left out, so a node's report does not come back to it as an assignment."""
    if kind == "task":
        dup = pb.Task()
        dup.CopyFrom(obj)
        dup.ClearField("status")
        dup.ClearField("meta")
        return dup.SerializeToString(deterministic=True)
    return obj.SerializeToString(deterministic=True)


Unseal = Callable[[Any], bytes]  # a stored (sealed) secret -> its plaintext (manager/configs.py SecretOps.plaintext)


def _assignment(kind: str, obj: Any, unseal: Unseal | None = None) -> swarm_pb2.Assignment:
    a = swarm_pb2.Assignment()
    getattr(a, kind).CopyFrom(obj)
    if kind == "secret":
        # the only place a secret's plaintext exists on a manager: the message to the node that runs its task
        a.secret.spec.data = unseal(obj) if unseal is not None else b""
    return a


def _removal(kind: str, object_id: str) -> swarm_pb2.Assignment:
    a = swarm_pb2.Assignment()
    getattr(a, kind).id = object_id
    return a


@dataclass(slots=True)
class AssignmentDiff:
    """The node's set as last sent (fingerprints), and the messages that bring the node to the store's set."""

    sent: dict[Key, bytes] = field(default_factory=dict)
    last_id: str = ""
    unseal: Unseal | None = None

    def _update(self, key: Key, obj: Any) -> Any | None:
        try:
            return Change(assignment=_assignment(key[0], obj, self.unseal), action=Change.UPDATE)
        except Exception as e:  # noqa: BLE001 - a secret this manager cannot open: left out, its task is rejected
            log.warning("dispatcher: %s %s left out of the assignments: %s", key[0], key[1], e)
            return None

    def complete(self, current: dict[Key, Any]) -> swarm_pb2.AssignmentsMessage:
        changes = [c for c in (self._update(k, current[k]) for k in sorted(current)) if c is not None]
        self.sent = {k: fingerprint(k[0], o) for k, o in current.items()}
        self.last_id = uuid.uuid4().hex
        return swarm_pb2.AssignmentsMessage(type=swarm_pb2.AssignmentsMessage.COMPLETE, results_in=self.last_id, changes=changes)

    def incremental(self, current: dict[Key, Any]) -> swarm_pb2.AssignmentsMessage | None:
        """None when nothing the node cares about changed."""
        changes: list[Any] = []
        now: dict[Key, bytes] = {}
        for k in sorted(current):
            fp = fingerprint(k[0], current[k])
            now[k] = fp
            if self.sent.get(k) != fp:
                change = self._update(k, current[k])
                if change is not None:
                    changes.append(change)
        # removals after updates: a task's new config arrives before the old one goes
        for k in sorted(set(self.sent) - set(now)):
            changes.append(Change(assignment=_removal(k[0], k[1]), action=Change.REMOVE))
        if not changes:
            return None
        prev, self.last_id, self.sent = self.last_id, uuid.uuid4().hex, now
        return swarm_pb2.AssignmentsMessage(type=swarm_pb2.AssignmentsMessage.INCREMENTAL, applies_to=prev,
                                            results_in=self.last_id, changes=changes)


_TASK_FIELDS_BUT_STATUS = tuple(f.name for f in pb.Task.DESCRIPTOR.fields if f.name not in ("status", "meta"))


def status_only(event: Any) -> bool:
    """A task update that changed nothing but its status (and meta) while assigned, before and after: the node's set
    and its fingerprints (fingerprint() leaves status and meta out) are the same, nothing to recompute. Every report
    of an agent is such an update: without this, each status batch recomputed every node's set."""
    old, new = event.old, event.object
    if event.kind != "task" or event.action != "update" or old is None:
        return False
    if old.status.state < pb.TASK_STATE_ASSIGNED or new.status.state < pb.TASK_STATE_ASSIGNED:
        return False
    return all(getattr(old, name) == getattr(new, name) for name in _TASK_FIELDS_BUT_STATUS)


def touches(event: Any, node_id: str, sent: dict[Key, bytes]) -> bool:
    """Whether a store event may change node_id's set (cheap filter before recomputing it)."""
    if event.kind == "task":
        objs = [event.object] + ([event.old] if event.old is not None else [])
        return any(o.node_id == node_id for o in objs) and not status_only(event)
    return (event.kind, event.object.id) in sent


async def stream_assignments(store: Any, node_id: str, alive: Callable[[], bool],
                             coalesce_s: float = COALESCE_S, unseal: Unseal | None = None) -> Any:
    """Async generator of AssignmentsMessage for node_id: a COMPLETE one, then INCREMENTAL ones as the store changes,
    changes within coalesce_s sent together. Ends when alive() turns false or the watch fails (the agent reconnects)."""
    diff = AssignmentDiff(unseal=unseal)
    window = LeadingWindow(coalesce_s)
    view = store.view()
    watch = store.watch({"task", "config", "network"} | ({"secret"} if SECRETS else set()))  # no await since view(): no event is missed
    try:
        yield diff.complete(assigned_set(view, node_id))
        while alive():
            try:
                event = await next_or_none(watch, 1.0)  # not wait_for: it could swallow the stream's cancel
            except StopAsyncIteration:
                return
            if event is None:
                continue
            if not touches(event, node_id, diff.sent):
                continue  # nothing for this node: it must not use up the window of the change that will be
            first = time.monotonic()
            await window.settle()  # a burst's first change goes at once, the rest of it within coalesce_s
            watch.drain()  # what came meanwhile is in the message: it is built from the store as it is now
            msg = diff.incremental(assigned_set(store.view(), node_id))
            if msg is not None:
                timing.note("dispatcher: %s: %d changes sent %.1f ms after the first event (index %d)",
                            node_id[:12], len(msg.changes), (time.monotonic() - first) * 1e3, event.index)
                yield msg
    finally:
        watch.close()


# ---------------------------------------------------------------------------------------------- status batching
Propose = Callable[[Callable[[Any], Any]], Awaitable[Any]]


@dataclass(slots=True)
class BatchStats:
    proposals: int = 0
    written: int = 0
    dropped_backwards: int = 0
    dropped_gone: int = 0
    refused: int = 0
    failed: int = 0


class StatusBatcher:
    """Collects task status updates from every session and writes them in one proposal per window (interval or
    items, whichever comes first). Only the latest update per task is kept; an update never moves a task back."""

    def __init__(self, store: Any, propose: Propose, interval: float = BATCH_INTERVAL_S, items: int = BATCH_ITEMS) -> None:
        self.store = store
        self.propose = propose
        self.interval = interval
        self.items = items
        self.pending: dict[str, pb.TaskStatus] = {}
        self.stats = BatchStats()
        self._kick = asyncio.Event()
        self._window = BatchWindow(interval)  # no wake-ups while nothing is pending
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dispatcher-task-status")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.pending.clear()

    def submit(self, node_id: str, updates: list[swarm_pb2.TaskStatusUpdate]) -> int:
        """Queues the updates of node_id; raises StatusRefused (nothing queued) if one names a task assigned to
        another node. Updates of tasks no longer in the store are skipped (deleted meanwhile). Returns the count queued."""
        view = self.store.view()
        valid: list[swarm_pb2.TaskStatusUpdate] = []
        for u in updates:
            if not u.HasField("status"):
                continue
            t = view.get("task", u.task_id)
            if t is None:
                self.stats.dropped_gone += 1
                continue
            if t.node_id != node_id:
                self.stats.refused += 1
                raise StatusRefused(NOT_THIS_NODE)
            valid.append(u)
        for u in valid:
            old = self.pending.get(u.task_id)
            if old is None or u.status.state >= old.state:  # a late older report does not undo a newer one
                self.pending[u.task_id] = status_to_store(old, u.status)  # a RUNNING overtaken keeps its time
        if valid:
            self._idle.clear()
            self._window.note()
            if len(self.pending) >= self.items:
                self._kick.set()
        return len(valid)

    async def flushed(self) -> None:
        """Returns when everything submitted so far has been written (or dropped)."""
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            if not self.pending:
                self._idle.set()
            await self._window.wait(bool(self.pending), self._kick)  # no wait_for: it could swallow stop()'s cancel
            self._kick.clear()
            if self.pending:
                await self.flush()

    async def flush(self) -> None:
        """Writes the pending updates, up to `items` per proposal."""
        while self.pending:
            batch = dict(list(self.pending.items())[: self.items])
            for tid in batch:
                del self.pending[tid]
            span = timing.Span("dispatcher status")
            started = time.monotonic()
            try:
                written = await self.propose(lambda tx: self._write(tx, batch))
                span.proposed(started, written or 0)
                span.end()
                self.stats.proposals += 1
            except Exception as e:  # noqa: BLE001 - lost leadership, no quorum: the agents send again on reconnect
                self.stats.failed += len(batch)
                log.info("dispatcher: %d task status updates not written: %s", len(batch), e)

    def _write(self, tx: Any, batch: dict[str, pb.TaskStatus]) -> int:
        n = 0
        for tid, status in batch.items():
            cur = tx.get("task", tid)
            if cur is None:
                self.stats.dropped_gone += 1
                continue
            if status.state < cur.status.state:
                self.stats.dropped_backwards += 1
                continue
            status = status_to_store(cur.status, status)  # the time it started running, for the update monitor
            if cur.status == status:
                continue
            upd = pb.Task()
            upd.CopyFrom(cur)
            upd.status.CopyFrom(status)
            tx.update("task", upd)
            n += 1
        self.stats.written += n
        return n

"""MemoryStore: the managers' replicated objects as a deterministic state machine over raft entries.
prepare() turns a WriteTx (tx.py) into one StoreProposal; apply() commits it on every manager; watch.py streams events."""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from google.protobuf.message import DecodeError, Message

from proto import objects_pb2 as pb

from . import errors
from .errors import StoreError
from .kinds import (
    KINDS,
    UNIQUE_NAME_KINDS,
    action_field,
    check_kind,
    copy_of,
    name_key,
    name_of,
    snapshot_field,
    version_of,
    with_version,
)
from .tx import CREATE, PENDING_VERSION, REMOVE, UPDATE, ReadTx, Table, WriteTx
from .watch import Event, Watch

__all__ = [
    "MAX_PROPOSAL_BYTES", "MAX_ACTIONS", "DEDUPE_WINDOW", "WATCH_BUFFER",
    "ApplyResult", "Event", "MemoryStore", "ReadTx", "Watch", "WriteTx",
]

MAX_PROPOSAL_BYTES = 1_572_864  # 1.5 MiB, swarmkit's MaxTransactionBytes
MAX_ACTIONS = 200  # swarmkit's MaxChangesPerTransaction
# Request ids remembered for de-duplication. Part of the replicated state: every manager must use
# the same value, or a retry could be a no-op on one manager and applied again on another.
DEDUPE_WINDOW = 20_000
WATCH_BUFFER = 10_000  # events a watcher may leave unread before it is closed

_ACTION_NAMES = {CREATE: "create", UPDATE: "update", REMOVE: "remove"}

T = TypeVar("T")


@dataclass(slots=True)
class ApplyResult:
    """The outcome of one entry. duplicate: the request id was applied before; error is its outcome then."""

    request_id: str
    error: StoreError | None
    events: list[Event] = field(default_factory=list)
    index: int = 0
    duplicate: bool = False


@dataclass(slots=True)
class _Outcome:
    index: int
    error: StoreError | None


class MemoryStore:
    """Committed objects of every kind plus the last applied index. Single-threaded (one event loop);
    view() then watch() with no await between gives a consistent start for a watcher."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        dedupe_window: int = DEDUPE_WINDOW,
        watch_buffer: int = WATCH_BUFFER,
    ) -> None:
        self.last_index = 0
        self._clock = clock
        self._dedupe_window = dedupe_window
        self._watch_buffer = watch_buffer
        self._tables: dict[str, Table] = {kind: Table() for kind in KINDS}
        self._readers: weakref.WeakSet[ReadTx] = weakref.WeakSet()
        self._applied: OrderedDict[str, _Outcome] = OrderedDict()
        self._watchers: list[Watch] = []

    # ---- reads ----

    def view(self) -> ReadTx:
        return self._reader(ReadTx(self._tables))

    # ---- proposing ----

    def prepare(self, fn: Callable[[WriteTx], T], request_id: str) -> tuple[bytes, T]:
        """Runs fn on a transaction over committed state and returns (serialized StoreProposal, fn's
        result). Changes nothing: the proposal takes effect when apply() sees it committed. Raises
        fn's StoreError, or INVALID_ARGUMENT if the transaction exceeds MAX_ACTIONS/MAX_PROPOSAL_BYTES."""
        tx = self._reader(WriteTx(self._tables, self._clock))
        try:
            result = fn(tx)
        finally:
            tx.close()
        if len(tx.actions) > MAX_ACTIONS:
            raise errors.too_many_actions(len(tx.actions), MAX_ACTIONS)
        proposal = pb.StoreProposal(request_id=request_id)
        for action, kind, obj, _before in tx.actions:
            store_action = proposal.actions.add(action=action)
            getattr(store_action, action_field(kind)).CopyFrom(obj)
        data = proposal.SerializeToString(deterministic=True)
        if len(data) > MAX_PROPOSAL_BYTES:
            raise errors.too_many_bytes(len(data), MAX_PROPOSAL_BYTES)
        return data, result

    # ---- the state machine ----

    def apply(self, index: int, data: bytes) -> ApplyResult:
        """Applies the committed entry at index: every action or none. Never raises for bad data:
        the refusal is in the result. Entries at or below last_index are already reflected: ignored."""
        if index <= self.last_index:
            return ApplyResult(request_id="", error=None, events=[], index=index)
        self.last_index = index
        try:
            proposal = _parse(pb.StoreProposal, data, f"store proposal at index {index}")
        except StoreError as error:
            return ApplyResult(request_id="", error=error, events=[], index=index)
        request_id = proposal.request_id
        earlier = self._applied.get(request_id) if request_id else None
        if earlier is not None:
            return ApplyResult(request_id, earlier.error, [], index, duplicate=True)
        try:
            tx = self._replay(proposal, len(data))
        except StoreError as error:
            self._remember(request_id, index, error)
            return ApplyResult(request_id, error, [], index)
        events = self._commit(tx, index)
        self._remember(request_id, index, None)
        self._publish(events)
        return ApplyResult(request_id, None, events, index)

    def _replay(self, proposal: pb.StoreProposal, size: int) -> WriteTx:
        # Caps again: a proposal from a buggy or hostile member is refused the same way everywhere.
        if len(proposal.actions) > MAX_ACTIONS:
            raise errors.too_many_actions(len(proposal.actions), MAX_ACTIONS)
        if size > MAX_PROPOSAL_BYTES:
            raise errors.too_many_bytes(size, MAX_PROPOSAL_BYTES)
        tx = WriteTx(self._tables, clock=None)
        for position, store_action in enumerate(proposal.actions):
            kind = store_action.WhichOneof("target")
            if kind is None:
                raise errors.invalid(f"store action {position} has no object")
            obj = getattr(store_action, kind)
            if store_action.action == CREATE:
                tx.create(kind, obj)
            elif store_action.action == UPDATE:
                tx.update(kind, obj)
            elif store_action.action == REMOVE:
                tx.remove(kind, obj.id)
            else:
                raise errors.invalid(f"store action {position} has unknown action {store_action.action}")
        return tx

    def _commit(self, tx: WriteTx, index: int) -> list[Event]:
        touched = {kind for kind, _ in tx.pending}
        tables = {kind: self._writable(kind) for kind in sorted(touched)}
        # Free every old name first, then claim new ones: a transaction may hand a name on.
        for (kind, object_id) in tx.pending:
            table = tables[kind]
            old = table.objects.pop(object_id, None)
            if old is not None and kind in UNIQUE_NAME_KINDS:
                key = name_key(name_of(kind, old))
                if table.names.get(key) == object_id:
                    del table.names[key]
        for (kind, object_id), obj in tx.pending.items():
            if obj is None:
                continue
            table = tables[kind]
            # pending objects are the transaction's own copies (create/update made them): stamp in place
            obj.meta.version.index = index  # type: ignore[attr-defined]
            table.objects[object_id] = obj
            if kind in UNIQUE_NAME_KINDS and name_of(kind, obj):
                table.names[name_key(name_of(kind, obj))] = object_id
        return [_event(index, action, kind, obj, before) for action, kind, obj, before in tx.actions]

    def _writable(self, kind: str) -> Table:
        table = self._tables[kind]
        if self._readers and any(reader._tables.get(kind) is table for reader in self._readers):
            table = table.copy()  # a live view holds this one: leave it as it was
            self._tables[kind] = table
        return table

    def _reader(self, tx: ReadTx) -> ReadTx:
        self._readers.add(tx)
        return tx

    def _remember(self, request_id: str, index: int, error: StoreError | None) -> None:
        if not request_id:
            return
        self._applied[request_id] = _Outcome(index, error)
        while len(self._applied) > self._dedupe_window:
            self._applied.popitem(last=False)

    # ---- snapshots ----

    def snapshot(self) -> bytes:
        """Serialized StoreSnapshot: every object (sorted by id), last_index, remembered request ids."""
        snap = pb.StoreSnapshot(last_index=self.last_index)
        for kind in KINDS:
            objects = self._tables[kind].objects
            getattr(snap, snapshot_field(kind)).extend(objects[object_id] for object_id in sorted(objects))
        for request_id, outcome in self._applied.items():
            snap.applied_requests.add(
                request_id=request_id,
                index=outcome.index,
                error_code=outcome.error.code if outcome.error else "",
                error_message=outcome.error.message if outcome.error else "",
            )
        return snap.SerializeToString(deterministic=True)

    def restore(self, data: bytes) -> None:
        """Replaces the whole state with a snapshot's. INVALID_ARGUMENT (and no change) if it is not a
        valid one. Open watches end with FAILED_PRECONDITION: their consumers must list again."""
        snap = _parse(pb.StoreSnapshot, data, "store snapshot")
        tables: dict[str, Table] = {}
        for kind in KINDS:
            table = Table()
            for obj in getattr(snap, snapshot_field(kind)):
                if not obj.id or obj.id in table.objects:
                    raise errors.invalid(f"store snapshot has a {kind} with a missing or repeated id {obj.id!r}")
                table.objects[obj.id] = copy_of(obj)
                name = name_of(kind, obj)
                if kind in UNIQUE_NAME_KINDS and name:
                    if name_key(name) in table.names:
                        raise errors.invalid(f"store snapshot has two {kind}s named {name!r}")
                    table.names[name_key(name)] = obj.id
            tables[kind] = table
        applied: OrderedDict[str, _Outcome] = OrderedDict()
        for record in snap.applied_requests:
            error = None
            if record.error_code:
                if record.error_code not in errors.CODES:
                    raise errors.invalid(f"store snapshot has unknown error code {record.error_code!r}")
                error = StoreError(record.error_code, record.error_message)
            applied[record.request_id] = _Outcome(record.index, error)
        self._tables = tables
        self._applied = applied
        self.last_index = snap.last_index
        for watch in list(self._watchers):
            watch.fail(StoreError(errors.FAILED_PRECONDITION,
                                  f"store replaced by a snapshot at index {snap.last_index}: watch again"))

    # ---- watching ----

    def watch(self, kinds: set[str] | None = None) -> Watch:
        """Events of the given kinds (all if None) from the next applied entry on, in commit order."""
        wanted = frozenset(check_kind(kind) for kind in kinds) if kinds is not None else None
        watch = Watch(wanted, self._watch_buffer, self._forget_watch)
        self._watchers.append(watch)
        return watch

    def _forget_watch(self, watch: Watch) -> None:
        if watch in self._watchers:
            self._watchers.remove(watch)

    def _publish(self, events: list[Event]) -> None:
        """Hands each watcher the entry's events of its kinds in one push. Watchers asking for the same kinds
        (the dispatcher's one per node) share one filtered list: the filtering is per kind set, not per watcher."""
        if not events or not self._watchers:
            return
        wanted: dict[frozenset[str] | None, list[Event]] = {None: events}
        for watch in list(self._watchers):
            kinds = watch.kinds
            chosen = wanted.get(kinds)
            if chosen is None:
                chosen = wanted[kinds] = [event for event in events if event.kind in kinds]  # type: ignore[operator]
            watch.push_all(chosen)


def _event(index: int, action: int, kind: str, obj: Message, before: Message | None) -> Event:
    name = _ACTION_NAMES[action]
    if action == REMOVE:
        assert before is not None
        return Event(index, name, kind, _committed_copy(before, index))
    old = _committed_copy(before, index) if before is not None else None
    return Event(index, name, kind, with_version(obj, index), old)


def _committed_copy(obj: Message, index: int) -> Message:
    # An object written earlier in the same entry carries the pending version; its real one is index.
    return with_version(obj, index) if version_of(obj) == PENDING_VERSION else copy_of(obj)


def _parse(cls: type[Message], data: bytes, what: str) -> Message:
    message = cls()
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError, TypeError) as exc:
        raise errors.invalid(f"invalid {what}: {exc or 'undecodable bytes'}") from None
    return message

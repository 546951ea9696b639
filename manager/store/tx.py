"""Read and write transactions over the store's tables: ReadTx is a fixed view, WriteTx records actions.
store.py makes them: prepare() runs a caller's WriteTx to build a proposal, apply() replays one to re-validate."""

from __future__ import annotations

from typing import Callable, Mapping

from google.protobuf.message import Message

from proto import objects_pb2 as pb

from . import errors, validate
from .kinds import (
    UNIQUE_NAME_KINDS,
    check_kind,
    check_object,
    copy_of,
    message_class,
    name_key,
    name_of,
    version_of,
    with_version,
)

CREATE = pb.StoreAction.CREATE
UPDATE = pb.StoreAction.UPDATE
REMOVE = pb.StoreAction.REMOVE

# Objects written earlier in the same transaction show this version: their real one is the index
# of the raft entry, unknown until commit. An update naming it is in sequence within that transaction.
PENDING_VERSION = 0


class Table:
    """One kind's committed objects by id, and the id holding each (lowercased) unique name.
    The store never mutates a Table a live ReadTx holds: it copies it first (copy-on-write)."""

    __slots__ = ("objects", "names")

    def __init__(self, objects: dict[str, Message] | None = None, names: dict[str, str] | None = None) -> None:
        self.objects: dict[str, Message] = objects if objects is not None else {}
        self.names: dict[str, str] = names if names is not None else {}

    def copy(self) -> Table:
        return Table(dict(self.objects), dict(self.names))


class ReadTx:
    """A consistent view of committed state: later commits do not show through. Hands out copies."""

    def __init__(self, tables: Mapping[str, Table]) -> None:
        self._tables: dict[str, Table] = dict(tables)

    def get(self, kind: str, object_id: str) -> Message | None:
        found = self._lookup(check_kind(kind), object_id)
        return copy_of(found) if found is not None else None

    def exists(self, kind: str, object_id: str) -> bool:
        """Whether there is an object of that kind with that id (no copy made: a check, not a read)."""
        return self._lookup(check_kind(kind), object_id) is not None

    def ids(self, kind: str) -> list[str]:
        """The ids of every object of that kind, sorted (no copy made); a transaction's own writes included."""
        return [obj.id for obj in self._all(check_kind(kind))]

    def find_by_name(self, kind: str, name: str) -> Message | None:
        """The object of that kind named name, case-insensitively as in swarmkit; None for ""."""
        if not name:
            return None
        found = self._lookup_name(check_kind(kind), name_key(name))
        return copy_of(found) if found is not None else None

    def list(self, kind: str) -> list[Message]:
        """Every object of that kind, sorted by id."""
        return [copy_of(obj) for obj in self._all(check_kind(kind))]

    def select(self, kind: str, keep: Callable[[Message], bool]) -> list[Message]:
        """The objects of that kind keep() accepts, sorted by id, as copies: only those are copied (list() copies
        every object). keep sees the stored object: it must only read it."""
        return [copy_of(obj) for obj in self._all(check_kind(kind)) if keep(obj)]

    def _lookup(self, kind: str, object_id: str) -> Message | None:
        return self._tables[kind].objects.get(object_id)

    def _lookup_name(self, kind: str, key: str) -> Message | None:
        if kind in UNIQUE_NAME_KINDS:
            holder = self._tables[kind].names.get(key)
            return self._tables[kind].objects.get(holder) if holder is not None else None
        return _first_named(kind, self._all(kind), key)

    def _all(self, kind: str) -> list[Message]:
        objects = self._tables[kind].objects
        return [objects[object_id] for object_id in sorted(objects)]


class WriteTx(ReadTx):
    """A transaction over committed state that sees its own writes and records them as actions.

    With a clock (prepare), create stamps meta.created_at/updated_at and update stamps updated_at;
    without one (apply), objects keep the timestamps they were proposed with.
    """

    def __init__(self, tables: Mapping[str, Table], clock: Callable[[], float] | None = None) -> None:
        super().__init__(tables)
        self._clock = clock
        self._closed = False
        # (kind, id) -> the object as this transaction left it (version PENDING_VERSION), None if removed
        self.pending: dict[tuple[str, str], Message | None] = {}
        self._pending_names: dict[str, dict[str, str]] = {}  # kind -> name key -> id, pending objects only
        # (action, kind, object as proposed, object before the action or None)
        self.actions: list[tuple[int, str, Message, Message | None]] = []

    def create(self, kind: str, obj: Message) -> None:
        """Adds obj (its id set by the caller); ALREADY_EXISTS if the id or the name is taken."""
        self._check_open()
        obj = check_object(check_kind(kind), obj)
        if self._lookup(kind, obj.id) is not None:  # type: ignore[attr-defined]
            raise errors.id_conflict(kind, obj.id)  # type: ignore[attr-defined]
        validate.check_write(kind, obj, self)
        self._check_name(kind, obj)
        proposed = with_version(obj, PENDING_VERSION)
        if self._clock is not None:
            meta = proposed.meta  # type: ignore[attr-defined]
            if not meta.HasField("created_at"):
                meta.created_at.FromNanoseconds(_nanos(self._clock()))
            meta.updated_at.CopyFrom(meta.created_at)
        self.actions.append((CREATE, kind, proposed, None))
        self._write(kind, proposed.id, proposed)  # type: ignore[attr-defined]

    def update(self, kind: str, obj: Message) -> None:
        """Replaces the object with obj's id. obj.meta.version must be the version read (else
        "update out of sequence"); NOT_FOUND if it is gone; ALREADY_EXISTS if renamed onto a taken name."""
        self._check_open()
        obj = check_object(check_kind(kind), obj)
        current = self._lookup(kind, obj.id)  # type: ignore[attr-defined]
        if current is None:
            raise errors.not_found(kind, obj.id)  # type: ignore[attr-defined]
        if version_of(obj) != version_of(current):
            raise errors.sequence_conflict()
        validate.check_write(kind, obj, self)
        self._check_name(kind, obj)
        proposed = copy_of(obj)
        if self._clock is not None:
            meta = proposed.meta  # type: ignore[attr-defined]
            # created_at is the store's record, not the caller's to rewrite.
            if current.meta.HasField("created_at"):  # type: ignore[attr-defined]
                meta.created_at.CopyFrom(current.meta.created_at)  # type: ignore[attr-defined]
            else:
                meta.ClearField("created_at")
            meta.updated_at.FromNanoseconds(_nanos(self._clock()))
        self.actions.append((UPDATE, kind, proposed, current))
        self._write(kind, proposed.id, with_version(proposed, PENDING_VERSION))  # type: ignore[attr-defined]

    def remove(self, kind: str, object_id: str) -> None:
        """Deletes the object; NOT_FOUND if there is none with that id."""
        self._check_open()
        check_kind(kind)
        current = self._lookup(kind, object_id) if object_id else None
        if current is None:
            raise errors.not_found(kind, object_id)
        validate.check_remove(kind, object_id, name_of(kind, current), self)
        # A remove carries only the id: the object's body would only make the entry bigger.
        self.actions.append((REMOVE, kind, message_class(kind)(id=object_id), current))
        self._write(kind, object_id, None)

    def close(self) -> None:
        """Ends the transaction: later writes raise (a tx kept past prepare() would propose nothing)."""
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise errors.StoreError(errors.FAILED_PRECONDITION, "transaction already finished")

    def _check_name(self, kind: str, obj: Message) -> None:
        if kind not in UNIQUE_NAME_KINDS:
            return
        name = name_of(kind, obj)
        if not name:
            return
        holder = self._lookup_name(kind, name_key(name))
        if holder is not None and holder.id != obj.id:  # type: ignore[attr-defined]
            raise errors.name_conflict()

    def _write(self, kind: str, object_id: str, obj: Message | None) -> None:
        if kind in UNIQUE_NAME_KINDS:
            names = self._pending_names.setdefault(kind, {})
            old = self._lookup(kind, object_id)
            if old is not None:
                old_key = name_key(name_of(kind, old))
                if names.get(old_key) == object_id:
                    del names[old_key]
            if obj is not None and name_of(kind, obj):
                names[name_key(name_of(kind, obj))] = object_id
        self.pending[(kind, object_id)] = obj

    def _lookup(self, kind: str, object_id: str) -> Message | None:
        key = (kind, object_id)
        if key in self.pending:
            return self.pending[key]
        return super()._lookup(kind, object_id)

    def _lookup_name(self, kind: str, key: str) -> Message | None:
        if kind not in UNIQUE_NAME_KINDS:
            return _first_named(kind, self._all(kind), key)
        pending_id = self._pending_names.get(kind, {}).get(key)
        if pending_id is not None:
            return self.pending[(kind, pending_id)]
        committed_id = self._tables[kind].names.get(key)
        # A committed holder this transaction removed or renamed no longer holds the name.
        if committed_id is None or (kind, committed_id) in self.pending:
            return None
        return self._tables[kind].objects.get(committed_id)

    def _all(self, kind: str) -> list[Message]:
        merged = dict(self._tables[kind].objects)
        for (pending_kind, object_id), obj in self.pending.items():
            if pending_kind != kind:
                continue
            if obj is None:
                merged.pop(object_id, None)
            else:
                merged[object_id] = obj
        return [merged[object_id] for object_id in sorted(merged)]


def _first_named(kind: str, objects: list[Message], key: str) -> Message | None:
    for obj in objects:
        if name_key(name_of(kind, obj)) == key:
            return obj
    return None


def _nanos(seconds: float) -> int:
    return int(round(seconds * 1_000_000_000))

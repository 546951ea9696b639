"""The kinds of object the store keeps (network, config, node, service, task, cluster, secret) and their rules.
Maps each kind to its protobuf class, StoreAction/StoreSnapshot field and name; used by tx.py and store.py."""

from __future__ import annotations

from google.protobuf.message import Message

from proto import objects_pb2 as pb

from . import errors

# kind -> (message class, StoreAction oneof field, StoreSnapshot repeated field)
_KINDS: dict[str, tuple[type[Message], str, str]] = {
    "network": (pb.Network, "network", "networks"),
    "config": (pb.Config, "config", "configs"),
    "node": (pb.Node, "node", "nodes"),
    "service": (pb.Service, "service", "services"),
    "task": (pb.Task, "task", "tasks"),
    "cluster": (pb.Cluster, "cluster", "clusters"),
    "secret": (pb.Secret, "secret", "secrets"),
}
KINDS: tuple[str, ...] = tuple(_KINDS)

# Task names are derived (<service>.<slot>.<id>) and not an identity, as in swarmkit: no uniqueness.
UNIQUE_NAME_KINDS = frozenset(KINDS) - {"task"}


def message_class(kind: str) -> type[Message]:
    return _KINDS[check_kind(kind)][0]


def action_field(kind: str) -> str:
    return _KINDS[kind][1]


def snapshot_field(kind: str) -> str:
    return _KINDS[kind][2]


def check_kind(kind: str) -> str:
    if kind not in _KINDS:
        raise errors.invalid(f"unknown object kind {kind!r}: expected one of {', '.join(KINDS)}")
    return kind


def check_object(kind: str, obj: object) -> Message:
    cls = message_class(kind)
    if not isinstance(obj, cls):
        raise errors.invalid(f"{kind} object must be a {cls.DESCRIPTOR.full_name}, not {type(obj).__name__}")
    if not obj.id:  # type: ignore[attr-defined]
        raise errors.invalid(f"{kind} id must not be empty")
    return obj


def name_of(kind: str, obj: Message) -> str:
    """The object's user-facing name: Task.annotations.name, else spec.annotations.name."""
    if kind == "task":
        return obj.annotations.name  # type: ignore[attr-defined]
    return obj.spec.annotations.name  # type: ignore[attr-defined]


def name_key(name: str) -> str:
    # swarmkit indexes names lowercased: "Web" and "web" conflict.
    return name.lower()


def copy_of(obj: Message) -> Message:
    dup = type(obj)()
    dup.CopyFrom(obj)
    return dup


def version_of(obj: Message) -> int:
    return obj.meta.version.index  # type: ignore[attr-defined]


def with_version(obj: Message, index: int) -> Message:
    """A copy of obj whose meta.version.index is index."""
    dup = copy_of(obj)
    dup.meta.version.index = index  # type: ignore[attr-defined]
    return dup

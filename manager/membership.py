"""Member addresses as the raft log records them: the snapshot envelope (cluster id, address book, store
data) and the book file a manager keeps beside its log. Used by manager/raftnode.py; nothing a peer sends
outside committed membership entries and snapshots changes the book."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from common.fsutil import write_atomic
from manager.raft.wirecheck import address_error

MAGIC = b"SHOALSNAP1\n"
# A normal entry that starts with a NUL byte is not a store proposal (no protobuf field 0): this one says a
# member has started with its data, as etcd's published member attributes do. A member that is started
# and comes back empty is refused at bootstrap ("member N has already been bootstrapped").
STARTED_PREFIX = b"\x00shoal:started "
_LEN = struct.Struct(">I")
BOOK_FILE = "members.json"


class SnapshotFormatError(ValueError):
    """Snapshot data that is not an envelope this manager can read."""


@dataclass(slots=True)
class ClusterInfo:
    cluster_id: str = ""
    members: dict[int, str] = field(default_factory=dict)  # raft id -> HOST:PORT
    started: frozenset[int] = frozenset()  # members whose start is in the log: they hold data


def _body(info: ClusterInfo) -> dict[str, object]:
    return {
        "cluster_id": info.cluster_id,
        "members": {str(k): v for k, v in sorted(info.members.items())},
        "started": sorted(info.started),
    }


def founding_cluster_id(founders: dict[int, str]) -> str:
    """Every founder computes the same id from the same --peers, as etcd derives its cluster ID from the
    initial cluster; a different founding set (another cluster) gets another id."""
    text = ",".join(f"{k}={v}" for k, v in sorted(founders.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def encode_started(node_id: int, request_id: str) -> bytes:
    return STARTED_PREFIX + f"{node_id} {request_id}".encode()


def decode_started(data: bytes) -> tuple[int, str] | None:
    """(member id, request id) of a started entry; None if data is something else."""
    if not data.startswith(STARTED_PREFIX):
        return None
    try:
        nid, _, rid = data[len(STARTED_PREFIX):].decode().partition(" ")
        return int(nid), rid
    except ValueError:
        return None


def pack_snapshot(info: ClusterInfo, store_data: bytes) -> bytes:
    header = json.dumps(_body(info)).encode()
    return MAGIC + _LEN.pack(len(header)) + header + store_data


def unpack_snapshot(data: bytes) -> tuple[ClusterInfo | None, bytes]:
    """(cluster info, store data); (None, data) for a snapshot written before the envelope existed."""
    if not data.startswith(MAGIC):
        return None, data
    at = len(MAGIC)
    if len(data) < at + _LEN.size:
        raise SnapshotFormatError("snapshot envelope is truncated")
    (n,) = _LEN.unpack_from(data, at)
    at += _LEN.size
    if len(data) < at + n:
        raise SnapshotFormatError("snapshot envelope header is truncated")
    return parse_info(data[at : at + n], "snapshot envelope"), data[at + n :]


def parse_info(raw: bytes, what: str) -> ClusterInfo:
    try:
        obj = json.loads(raw)
        members = {int(k): v for k, v in obj["members"].items()}
        cluster_id = obj.get("cluster_id", "")
        started = frozenset(int(n) for n in obj.get("started", []))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SnapshotFormatError(f"invalid {what}: {e}") from None
    if not isinstance(cluster_id, str):
        raise SnapshotFormatError(f"invalid {what}: cluster_id is not a string")
    for nid, addr in members.items():
        if nid <= 0 or not isinstance(addr, str) or address_error(addr) is not None:
            raise SnapshotFormatError(f"invalid {what}: member {nid} at {addr!r}")
    return ClusterInfo(cluster_id, members, started)


def load_book(data_dir: Path) -> tuple[int, ClusterInfo] | None:
    """(applied index it was written at, info) from the book file, None if there is none."""
    path = data_dir / BOOK_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    info = parse_info(raw, str(path))
    try:
        index = int(json.loads(raw).get("index", 0))
    except (ValueError, TypeError) as e:
        raise SnapshotFormatError(f"invalid {path}: {e}") from None
    return index, info


def save_book(data_dir: Path, index: int, info: ClusterInfo) -> None:
    body = {"index": index, **_body(info)}
    write_atomic(data_dir / BOOK_FILE, json.dumps(body, indent=1) + "\n")

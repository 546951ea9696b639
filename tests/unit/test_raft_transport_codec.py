"""Raft messages survive the trip to protobuf and back; bad protobuf is refused with a clear error."""

from __future__ import annotations

import pytest

from manager.raft.messages import ConfState, Entry, EntryKind, Message, MessageType, Snapshot, SnapshotMeta
from manager.transport import (
    CodecError,
    batch_messages,
    join_snapshot,
    message_from_pb,
    message_to_pb,
    split_snapshot,
)
from proto import raft_pb2


def roundtrip(m: Message) -> Message:
    wire = message_to_pb(m).SerializeToString()
    return message_from_pb(raft_pb2.RaftMessage.FromString(wire))


def test_append_with_entries_of_every_kind_roundtrips() -> None:
    m = Message(
        MessageType.APP, to=2, from_=1, term=7, log_term=6, index=41, commit=40,
        entries=[Entry(42, 7, EntryKind.NORMAL, b"\x00data"), Entry(43, 7, EntryKind.CONF_CHANGE, b"add 4"), Entry(44, 7, EntryKind.EMPTY)],
    )
    assert roundtrip(m) == m


def test_rejected_append_response_roundtrips() -> None:
    m = Message(MessageType.APP_RESP, to=1, from_=3, term=9, index=17, reject=True, reject_hint=12)
    assert roundtrip(m) == m


def test_vote_with_transfer_context_roundtrips() -> None:
    m = Message(MessageType.VOTE, to=2, from_=3, term=4, log_term=3, index=99, context=b"transfer")
    assert roundtrip(m) == m


def test_local_proposal_with_term_zero_roundtrips() -> None:
    m = Message(MessageType.PROP, to=1, from_=2, entries=[Entry(0, 0, EntryKind.NORMAL, b"x")])
    assert roundtrip(m) == m


def test_snapshot_message_roundtrips_with_membership() -> None:
    snap = Snapshot(SnapshotMeta(500, 3, ConfState((1, 2, 4), (3,))), b"state" * 100)
    m = Message(MessageType.SNAP, to=4, from_=1, term=3, snapshot=snap)
    assert roundtrip(m) == m


def test_message_without_snapshot_decodes_to_none() -> None:
    assert roundtrip(Message(MessageType.HEARTBEAT, to=2, from_=1, term=1, commit=5)).snapshot is None


def test_unknown_message_type_is_refused() -> None:
    pb = message_to_pb(Message(MessageType.HEARTBEAT, to=2, from_=1))
    pb.type = 99
    with pytest.raises(CodecError, match="invalid raft message type 99"):
        message_from_pb(pb)


def test_unknown_entry_kind_is_refused() -> None:
    pb = message_to_pb(Message(MessageType.APP, to=2, from_=1, entries=[Entry(5, 1)]))
    pb.entries[0].kind = 7
    with pytest.raises(CodecError, match="invalid entry kind 7 at index 5"):
        message_from_pb(pb)


def test_message_without_sender_is_refused() -> None:
    pb = message_to_pb(Message(MessageType.HEARTBEAT, to=2, from_=1))
    setattr(pb, "from", 0)
    with pytest.raises(CodecError, match="has no sender"):
        message_from_pb(pb)


def test_snap_without_snapshot_is_refused() -> None:
    pb = message_to_pb(Message(MessageType.SNAP, to=2, from_=1))
    with pytest.raises(CodecError, match="SNAP carries no snapshot"):
        message_from_pb(pb)


def test_snapshot_is_split_into_chunks_and_joined_back() -> None:
    data = bytes(range(256)) * 41  # 10,496 bytes
    m = Message(MessageType.SNAP, to=2, from_=1, term=5, snapshot=Snapshot(SnapshotMeta(10, 5, ConfState((1, 2))), data))
    chunks = split_snapshot(m, chunk_bytes=4096)
    assert [len(c.data) for c in chunks] == [4096, 4096, 2304]
    assert [c.HasField("message") for c in chunks] == [True, False, False]
    assert chunks[0].message.snapshot.data == b""  # the data travels only in the chunks
    joined = join_snapshot(raft_pb2.SnapshotChunk.FromString(c.SerializeToString()) for c in chunks)
    assert joined == m


def test_default_snapshot_chunks_stay_within_four_mib() -> None:
    m = Message(MessageType.SNAP, to=2, from_=1, snapshot=Snapshot(SnapshotMeta(10, 5, ConfState((1, 2))), b"z" * (9 << 20)))
    chunks = split_snapshot(m)
    assert len(chunks) == 3
    assert all(c.ByteSize() <= 4 << 20 for c in chunks)


def test_snapshot_stream_must_start_with_its_message() -> None:
    with pytest.raises(CodecError, match="does not start with its message"):
        join_snapshot([raft_pb2.SnapshotChunk(data=b"x")])


def test_batches_split_before_the_size_limit() -> None:
    msgs = [Message(MessageType.APP, to=2, from_=1, entries=[Entry(i, 1, data=b"x" * 1000)]) for i in range(1, 11)]
    batches = batch_messages(msgs, limit=3500)
    assert [len(b.messages) for b in batches] == [3, 3, 3, 1]
    assert [message_from_pb(pb) for b in batches for pb in b.messages] == msgs


def test_one_message_over_the_limit_still_gets_its_own_batch() -> None:
    msgs = [Message(MessageType.APP, to=2, from_=1, entries=[Entry(1, 1, data=b"x" * 5000)])]
    assert [len(b.messages) for b in batch_messages(msgs, limit=100)] == [1]

"""Specification of manager/raft/wirecheck.py: which messages from a peer the core may step (one rule per test).
Pure: Message records in, a reason (or None) out; the lab test test_manager_wire.py sends the same over gRPC."""

from __future__ import annotations

from manager.raft.messages import ConfState, Entry, EntryKind, Message, MessageType as MT, Snapshot, SnapshotMeta
from manager.raft.wirecheck import MAX_VALUE, Rpc, check_message

ME = 1


def app(**kw: object) -> Message:
    base: dict[object, object] = dict(to=ME, from_=2, term=5, log_term=4, index=8, commit=8,
                                      entries=[Entry(9, 5), Entry(10, 5)])
    base.update(kw)
    return Message(MT.APP, **base)  # type: ignore[arg-type]


def snap(voters: tuple[int, ...] = (1, 2, 3), removed: tuple[int, ...] = (), index: int = 20, term: int = 5, **kw: object) -> Message:
    s = Snapshot(SnapshotMeta(index, term, ConfState(voters, removed)), b"data")
    base: dict[object, object] = dict(to=ME, from_=2, term=5, snapshot=s)
    base.update(kw)
    return Message(MT.SNAP, **base)  # type: ignore[arg-type]


def test_a_well_formed_append_is_accepted() -> None:
    assert check_message(app(), ME, Rpc.STEP) is None


def test_a_well_formed_snapshot_is_accepted() -> None:
    assert check_message(snap(), ME, Rpc.SNAPSHOT) is None


def test_a_read_index_request_with_term_zero_is_accepted() -> None:
    assert check_message(Message(MT.READ_INDEX, to=ME, from_=2, context=b"ctx"), ME, Rpc.STEP) is None


def test_message_without_sender_is_refused() -> None:
    assert check_message(app(from_=0), ME, Rpc.STEP) == "APP has no sender"


def test_message_claiming_to_come_from_this_member_is_refused() -> None:
    assert check_message(app(from_=ME), ME, Rpc.STEP) == "APP claims to come from this member (1)"


def test_message_for_another_member_is_refused() -> None:
    assert check_message(app(to=3), ME, Rpc.STEP) == "APP is addressed to member 3, not 1"


def test_snapshot_on_the_step_rpc_is_refused() -> None:
    assert check_message(snap(), ME, Rpc.STEP) == "SNAP is not carried by the Step RPC"


def test_append_on_the_snapshot_rpc_is_refused() -> None:
    assert check_message(app(), ME, Rpc.SNAPSHOT) == "APP is not carried by the StreamSnapshot RPC"


def test_forwarded_proposal_on_the_step_rpc_is_refused() -> None:
    m = Message(MT.PROP, to=ME, from_=2, entries=[Entry(0, 0, EntryKind.NORMAL, b"x")])
    assert check_message(m, ME, Rpc.STEP) == "PROP is not carried by the Step RPC"


def test_leadership_transfer_on_the_step_rpc_is_refused() -> None:
    assert check_message(Message(MT.TRANSFER_LEADER, to=ME, from_=2), ME, Rpc.STEP) == "TRANSFER_LEADER is not carried by the Step RPC"


def test_heartbeat_with_term_two_to_the_63_is_refused() -> None:
    m = Message(MT.HEARTBEAT, to=ME, from_=2, term=2**63)
    assert check_message(m, ME, Rpc.STEP) == f"HEARTBEAT term {2**63} out of range [0, {MAX_VALUE}]"


def test_index_beyond_the_storage_range_is_refused() -> None:
    m = Message(MT.APP_RESP, to=ME, from_=2, term=5, index=MAX_VALUE + 1)
    assert check_message(m, ME, Rpc.STEP) == f"APP_RESP index {MAX_VALUE + 1} out of range [0, {MAX_VALUE}]"


def test_commit_beyond_the_storage_range_is_refused() -> None:
    m = Message(MT.HEARTBEAT, to=ME, from_=2, term=5, commit=2**64 - 1)
    assert check_message(m, ME, Rpc.STEP) == f"HEARTBEAT commit {2**64 - 1} out of range [0, {MAX_VALUE}]"


def test_append_with_term_zero_is_refused() -> None:
    assert check_message(app(term=0, log_term=0, entries=[]), ME, Rpc.STEP) == "APP has term 0"


def test_log_term_above_the_message_term_is_refused() -> None:
    m = Message(MT.VOTE, to=ME, from_=2, term=5, log_term=6, index=10)
    assert check_message(m, ME, Rpc.STEP) == "VOTE log term 6 above its term 5"


def test_append_with_non_contiguous_entries_is_refused() -> None:
    m = app(entries=[Entry(9, 5), Entry(11, 5)])
    assert check_message(m, ME, Rpc.STEP) == "APP entries not contiguous: entry 1 has index 11, expected 10"


def test_append_whose_first_entry_does_not_follow_its_index_is_refused() -> None:
    m = app(entries=[Entry(12, 5)])
    assert check_message(m, ME, Rpc.STEP) == "APP entries not contiguous: entry 0 has index 12, expected 9"


def test_entry_term_above_the_message_term_is_refused() -> None:
    m = app(entries=[Entry(9, 6)])
    assert check_message(m, ME, Rpc.STEP) == "APP entry 9 has term 6, outside [1, 5] (the message's term)"


def test_entry_terms_going_down_are_refused() -> None:
    m = app(entries=[Entry(9, 5), Entry(10, 4)])
    assert check_message(m, ME, Rpc.STEP) == "APP entry 10 has term 4, below the term 5 before it"


def test_unreadable_membership_entry_is_refused() -> None:
    m = app(entries=[Entry(9, 5, EntryKind.CONF_CHANGE, b"promote 4")])
    assert check_message(m, ME, Rpc.STEP) == "APP entry 9: invalid membership change b'promote 4'"


def test_membership_entry_with_a_bad_address_is_refused() -> None:
    m = app(entries=[Entry(9, 5, EntryKind.CONF_CHANGE, b"add 4 nowhere")])
    assert check_message(m, ME, Rpc.STEP) == "APP entry 9: invalid member address 'nowhere': expected HOST:PORT"


def test_entries_on_a_heartbeat_are_refused() -> None:
    m = Message(MT.HEARTBEAT, to=ME, from_=2, term=5, entries=[Entry(9, 5)])
    assert check_message(m, ME, Rpc.STEP) == "HEARTBEAT carries entries"


def test_oversized_read_context_is_refused() -> None:
    m = Message(MT.READ_INDEX, to=ME, from_=2, context=b"x" * 1025)
    assert check_message(m, ME, Rpc.STEP) == "READ_INDEX context of 1025 bytes exceeds 1024"


def test_snapshot_with_an_empty_member_list_is_refused() -> None:
    assert check_message(snap(voters=()), ME, Rpc.SNAPSHOT) == "SNAP snapshot has no voters"


def test_snapshot_taken_before_its_sender_was_added_is_accepted() -> None:
    assert check_message(snap(voters=(1, 3)), ME, Rpc.SNAPSHOT) is None


def test_snapshot_that_lists_its_sender_as_removed_is_refused() -> None:
    assert check_message(snap(voters=(1, 3), removed=(2,)), ME, Rpc.SNAPSHOT) == "SNAP snapshot lists its sender 2 as removed"


def test_snapshot_with_a_repeated_voter_is_refused() -> None:
    assert check_message(snap(voters=(1, 2, 2)), ME, Rpc.SNAPSHOT) == "SNAP snapshot repeats a voter: [1, 2, 2]"


def test_snapshot_with_a_member_both_voter_and_removed_is_refused() -> None:
    assert check_message(snap(removed=(3,)), ME, Rpc.SNAPSHOT) == "SNAP snapshot lists [3] as both voter and removed"


def test_snapshot_with_member_id_zero_is_refused() -> None:
    assert check_message(snap(voters=(0, 2)), ME, Rpc.SNAPSHOT) == "SNAP snapshot has an invalid member id in voters [0, 2] / removed []"


def test_snapshot_term_above_the_message_term_is_refused() -> None:
    assert check_message(snap(term=6), ME, Rpc.SNAPSHOT) == "SNAP snapshot term 6 outside [1, 5] (the message's term)"


def test_snapshot_at_index_zero_is_refused() -> None:
    assert check_message(snap(index=0), ME, Rpc.SNAPSHOT) == f"SNAP snapshot index 0 out of range [1, {MAX_VALUE}]"

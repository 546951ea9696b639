"""Specification of manager/membership.py and ConfChange's address: where member addresses live (the snapshot
envelope, committed membership entries, the book file) and the started marker. Pure, plus a tmp dir for the book."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from manager.membership import (
    ClusterInfo,
    SnapshotFormatError,
    decode_started,
    encode_started,
    founding_cluster_id,
    load_book,
    pack_snapshot,
    save_book,
    unpack_snapshot,
)
from manager.raft.messages import ConfChange, ConfChangeOp

INFO = ClusterInfo("c0ffee", {1: "127.0.0.1:4001", 2: "127.0.0.2:4002"}, frozenset({1}))


def test_snapshot_envelope_roundtrips_info_and_store_data() -> None:
    assert unpack_snapshot(pack_snapshot(INFO, b"\x0astore")) == (INFO, b"\x0astore")


def test_snapshot_data_without_envelope_is_store_data_alone() -> None:
    assert unpack_snapshot(b"\x0astore") == (None, b"\x0astore")


def test_truncated_envelope_is_refused() -> None:
    data = pack_snapshot(INFO, b"")
    with pytest.raises(SnapshotFormatError, match="^snapshot envelope header is truncated$"):
        unpack_snapshot(data[:-3])


def test_envelope_with_a_bad_member_address_is_refused() -> None:
    data = pack_snapshot(ClusterInfo("c", {1: "no-port"}), b"")
    with pytest.raises(SnapshotFormatError, match="^invalid snapshot envelope: member 1 at 'no-port'$"):
        unpack_snapshot(data)


def test_book_file_roundtrips_and_leaves_no_temp_file(tmp_path: Path) -> None:
    save_book(tmp_path, 42, INFO)
    assert load_book(tmp_path) == (42, INFO)
    assert os.listdir(tmp_path) == ["members.json"]


def test_missing_book_file_is_none(tmp_path: Path) -> None:
    assert load_book(tmp_path) is None


def test_started_marker_roundtrips_and_is_not_a_store_proposal() -> None:
    data = encode_started(3, "3-abc-1")
    assert decode_started(data) == (3, "3-abc-1")
    assert data[:1] == b"\x00"  # protobuf has no field 0: no StoreProposal starts with this byte
    assert decode_started(b"\x0astore") is None


def test_founders_agree_on_the_cluster_id_and_another_founding_set_differs() -> None:
    a = founding_cluster_id({1: "127.0.0.1:1", 2: "127.0.0.2:1"})
    assert a == founding_cluster_id({2: "127.0.0.2:1", 1: "127.0.0.1:1"})
    assert a != founding_cluster_id({1: "127.0.0.1:1", 2: "127.0.0.2:2"})
    assert len(a) == 32


def test_membership_change_carries_the_address_of_an_added_member() -> None:
    cc = ConfChange(ConfChangeOp.ADD, 4, "127.0.0.4:4004")
    assert cc.encode() == b"add 4 127.0.0.4:4004"
    assert ConfChange.decode(cc.encode()) == cc
    assert ConfChange.decode(b"remove 4") == ConfChange(ConfChangeOp.REMOVE, 4)


def test_unreadable_membership_change_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="^invalid membership change b'promote 4'$"):
        ConfChange.decode(b"promote 4")

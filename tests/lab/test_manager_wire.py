"""One message from a peer must not stop a manager, and a peer is who its certificate says: three real
`python -m manager run` processes on 127.0.0.x (tests/support/cluster.py) get hostile Raft messages over the
real Step/StreamSnapshot/Propose RPCs, and must keep serving and committing. Needs no root."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from manager.raft.messages import ConfState, Entry, Message, MessageType as MT, Snapshot, SnapshotMeta
from manager.transport import GRPC_OPTIONS, TLS_SERVER_NAME, TLSFiles, batch_messages, split_snapshot
from proto import control_pb2, control_pb2_grpc, objects_pb2, raft_pb2
from tests.support.cluster import LocalCluster
from tests.support.pki import make_pki

pytestmark = pytest.mark.lab
T = TypeVar("T")
DEADLINE = 30.0
BAD_NAME = "bad name with spaces!"


@pytest.fixture(autouse=True)
def _require_root() -> None:
    """Overrides the lab conftest: these managers only need loopback addresses, not root."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, tick_ms=50)
    try:
        c.start(3)
        yield c
    finally:
        c.stop_all()


def wait_for(fn: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            value = fn()
        except grpc.RpcError:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def spec(name: str) -> objects_pb2.ConfigSpec:
    return objects_pb2.ConfigSpec(annotations=objects_pb2.Annotations(name=name), data=b"payload")


def create(c: LocalCluster, member: int, name: str) -> objects_pb2.Config:
    with c.channel(member) as ch:
        return control_pb2_grpc.ControlStub(ch).CreateConfig(control_pb2.CreateConfigRequest(spec=spec(name)), timeout=DEADLINE).config


def names_on(c: LocalCluster, member: int) -> list[str]:
    with c.channel(member) as ch:
        resp = control_pb2_grpc.ControlStub(ch).ListConfigs(control_pb2.ListConfigsRequest(), timeout=DEADLINE)
    return sorted(cfg.spec.annotations.name for cfg in resp.configs)


def step(ch: grpc.Channel, msgs: list[Message]) -> None:
    call = ch.stream_unary("/shoal.v1.Raft/Step", request_serializer=lambda b: b.SerializeToString(), response_deserializer=lambda b: b)
    call(iter(batch_messages(msgs)), timeout=5)


def stream_snapshot(ch: grpc.Channel, m: Message) -> None:
    call = ch.stream_unary("/shoal.v1.Raft/StreamSnapshot", request_serializer=lambda b: b.SerializeToString(), response_deserializer=lambda b: b)
    call(iter(split_snapshot(m)), timeout=5)


def hostile_messages(to: int, sender: int, term: int) -> tuple[list[Message], Message]:
    """The four reproductions of issue 8 item 1, as member `sender` would send them to member `to`."""
    on_step = [
        Message(MT.HEARTBEAT, to=to, from_=sender, term=2**63),
        Message(MT.APP, to=to, from_=sender, term=term, log_term=term, index=8, commit=11,
                entries=[Entry(9, term), Entry(11, term)]),
        Message(MT.APP, to=to, from_=sender, term=0, log_term=0, index=1000, commit=1001,
                entries=[Entry(1001, 0)]),
    ]
    empty_members = Message(MT.SNAP, to=to, from_=sender, term=term,
                            snapshot=Snapshot(SnapshotMeta(10_000, term, ConfState(())), b""))
    return on_step, empty_members


def test_hostile_raft_messages_are_dropped_counted_and_every_manager_keeps_serving(cluster: LocalCluster) -> None:
    leader = cluster.leader(DEADLINE)
    term = cluster.status(leader).term
    for i in sorted(cluster.members):
        sender = next(j for j in sorted(cluster.members) if j != i)
        on_step, snap = hostile_messages(i, sender, term)
        with cluster.channel(i) as ch:
            step(ch, on_step)
            with pytest.raises(grpc.RpcError) as refused:
                stream_snapshot(ch, snap)
        assert (refused.value.code(), refused.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid raft snapshot: dropped")
    create(cluster, cluster.leader(DEADLINE), "after-the-attack")
    for i in sorted(cluster.members):
        assert cluster.alive(i), f"manager {i} exited; log in {cluster.members[i].log_path}"
        assert names_on(cluster, i) == ["after-the-attack"]
        st = cluster.status(i)
        assert st.term < 2**62 and st.voters == [1, 2, 3]
        assert st.invalid_messages == 4
    log = cluster.members[leader].log_path.read_text()
    assert f"dropped a message from member {next(j for j in (1, 2, 3) if j != leader)}" in log


def test_a_batch_carrying_an_address_book_changes_no_address(cluster: LocalCluster) -> None:
    leader = cluster.leader(DEADLINE)
    follower = next(i for i in sorted(cluster.members) if i != leader)
    book = cluster.members[follower].data_dir / "members.json"
    before = wait_for(lambda: json.loads(book.read_text())["members"], "the book file")
    hb = Message(MT.HEARTBEAT_RESP, to=follower, from_=leader, term=cluster.status(leader).term)
    raw = batch_messages([hb])[0].SerializeToString()
    # field 2 was RaftBatch.peers (map<uint64,string>): {leader: "127.0.0.9:1"} encoded by hand
    entry = b"\x08" + bytes([leader]) + b"\x12\x0b127.0.0.9:1"
    raw += b"\x12" + bytes([len(entry)]) + entry
    with cluster.channel(follower) as ch:
        ch.stream_unary("/shoal.v1.Raft/Step", request_serializer=lambda b: b, response_deserializer=lambda b: b)(iter([raw]), timeout=5)
    create(cluster, follower, "still-replicating")
    assert cluster.status(follower).leader_addr == cluster.members[leader].addr
    assert json.loads(book.read_text())["members"] == before == {str(i): m.addr for i, m in cluster.members.items()}
    assert names_on(cluster, follower) == ["still-replicating"]


def _bad_proposal() -> raft_pb2.ProposeRequest:
    cfg = objects_pb2.Config(id="evil1", spec=spec(BAD_NAME))
    action = objects_pb2.StoreAction(action=objects_pb2.StoreAction.CREATE, config=cfg)
    data = objects_pb2.StoreProposal(request_id="evil-1", actions=[action]).SerializeToString()
    req = raft_pb2.ProposeRequest(data=data, request_id="evil-1")
    setattr(req, "from", 2)
    return req


def _propose(ch: grpc.Channel, req: raft_pb2.ProposeRequest) -> raft_pb2.ProposeResponse:
    call = ch.unary_unary("/shoal.v1.Raft/Propose", request_serializer=lambda r: r.SerializeToString(),
                          response_deserializer=raft_pb2.ProposeResponse.FromString)
    return call(req, timeout=DEADLINE)


def test_a_proposal_of_an_invalid_config_that_bypasses_the_control_api_is_not_applied(cluster: LocalCluster) -> None:
    leader = cluster.leader(DEADLINE)
    with cluster.channel(leader) as ch:
        resp = _propose(ch, _bad_proposal())
    assert (resp.error_code, resp.error_message) == (
        "INVALID_ARGUMENT",
        "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]",
    )
    create(cluster, leader, "good")
    assert [names_on(cluster, i) for i in sorted(cluster.members)] == [["good"]] * 3


def _channel_as(addr: str, files: TLSFiles) -> grpc.Channel:
    opts = [*GRPC_OPTIONS, ("grpc.ssl_target_name_override", TLS_SERVER_NAME)]
    return grpc.secure_channel(addr, files.channel_credentials(), options=opts)


def test_with_tls_a_member_speaking_for_another_is_refused(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    members, client = make_pki(pki, [1, 2, 3])
    c = LocalCluster(tmp_path / "cluster", tick_ms=50, tls=members, client_tls=client)
    try:
        c.start(3)
        leader = c.leader(DEADLINE)
        impostor = next(i for i in (1, 2, 3) if i != leader)
        claimed = next(i for i in (1, 2, 3) if i not in (leader, impostor))
        req = _bad_proposal()
        setattr(req, "from", claimed)
        with _channel_as(c.members[leader].addr, members[impostor]) as ch:
            with pytest.raises(grpc.RpcError) as proposal:
                _propose(ch, req)
            term = c.status(leader).term
            with pytest.raises(grpc.RpcError) as stepped:
                step(ch, [Message(MT.HEARTBEAT_RESP, to=leader, from_=claimed, term=term)])
        assert (proposal.value.code(), proposal.value.details()) == (
            grpc.StatusCode.PERMISSION_DENIED, f"proposal from member {claimed} on a connection authenticated as member {impostor}")
        assert (stepped.value.code(), stepped.value.details()) == (
            grpc.StatusCode.PERMISSION_DENIED, f"raft message from member {claimed} on a connection authenticated as member {impostor}")
        with _channel_as(c.members[leader].addr, client) as ch:
            with pytest.raises(grpc.RpcError) as worker:
                step(ch, [Message(MT.HEARTBEAT_RESP, to=leader, from_=claimed, term=term)])
        assert (worker.value.code(), worker.value.details()) == (
            grpc.StatusCode.PERMISSION_DENIED, "certificate OU=swarm-worker,CN=client is not a manager's (OU is not swarm-manager)")
        create(c, leader, "good")
        assert [names_on(c, i) for i in sorted(c.members)] == [["good"]] * 3
    finally:
        c.stop_all()


def test_a_stream_from_another_cluster_is_refused(cluster: LocalCluster) -> None:
    leader = cluster.leader(DEADLINE)
    ours = wait_for(lambda: json.loads((cluster.members[leader].data_dir / "members.json").read_text())["cluster_id"],
                    "the cluster id")
    other = next(i for i in sorted(cluster.members) if i != leader)
    hb = Message(MT.HEARTBEAT_RESP, to=leader, from_=other, term=cluster.status(leader).term)
    with cluster.channel(leader) as ch:
        call = ch.stream_unary("/shoal.v1.Raft/Step", request_serializer=lambda b: b.SerializeToString(), response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as refused:
            call(iter(batch_messages([hb])), timeout=5, metadata=(("shoal-cluster-id", "another-cluster"),))
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"cluster ID mismatch: the sender belongs to cluster another-cluster, this member to cluster {ours}",
    )
    create(cluster, leader, "still-serving")


def test_a_forwarded_proposal_over_the_transaction_limit_stays_out_of_the_log(cluster: LocalCluster) -> None:
    leader = cluster.leader(DEADLINE)
    req = raft_pb2.ProposeRequest(data=b"\x0a" * 2_000_000, request_id="big-1")
    setattr(req, "from", next(i for i in sorted(cluster.members) if i != leader))
    book = cluster.members[leader].data_dir / "members.json"
    wait_for(lambda: json.loads(book.read_text())["started"] == [1, 2, 3], "every member's start committed")
    commit_before = cluster.status(leader).commit
    with cluster.channel(leader) as ch:
        resp = _propose(ch, req)
    assert (resp.index, resp.error_code, resp.error_message) == (
        0, "INVALID_ARGUMENT", "transaction too large: 2000000 bytes exceeds 1572864")
    assert cluster.status(leader).commit == commit_before

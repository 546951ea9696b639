"""Three managers as real processes on 127.0.0.x: election, configs through any manager, failover, restart, bad input.
Drives tests/support/cluster.py's LocalCluster and the Control/Raft gRPC services; needs no root and no namespaces."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from proto import control_pb2, control_pb2_grpc, objects_pb2, raft_pb2
from tests.support.cluster import LocalCluster
from tests.support.pki import make_pki

pytestmark = pytest.mark.lab
T = TypeVar("T")
DEADLINE = 30.0


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


def wait_for(fn: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = fn()
        except grpc.RpcError as e:  # e.g. UNAVAILABLE while an election runs
            last, value = e, None
        if value is not None and value is not False:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def spec(name: str, data: bytes = b"payload", labels: dict[str, str] | None = None) -> objects_pb2.ConfigSpec:
    return objects_pb2.ConfigSpec(annotations=objects_pb2.Annotations(name=name, labels=labels or {}), data=data)


def create(c: LocalCluster, member: int, s: objects_pb2.ConfigSpec) -> objects_pb2.Config:
    with c.channel(member) as ch:
        return control_pb2_grpc.ControlStub(ch).CreateConfig(control_pb2.CreateConfigRequest(spec=s), timeout=DEADLINE).config


def names_on(c: LocalCluster, member: int) -> list[str]:
    with c.channel(member) as ch:
        resp = control_pb2_grpc.ControlStub(ch).ListConfigs(control_pb2.ListConfigsRequest(), timeout=DEADLINE)
    return sorted(cfg.spec.annotations.name for cfg in resp.configs)


def follower_of(c: LocalCluster, leader: int) -> int:
    return next(i for i in sorted(c.members) if i != leader and c.alive(i))


def create_with_retry(c: LocalCluster, member: int, s: objects_pb2.ConfigSpec) -> objects_pb2.Config:
    """Clients retry UNAVAILABLE (no leader yet); the store makes a retried name show up as ALREADY_EXISTS."""

    def attempt() -> objects_pb2.Config | None:
        try:
            return create(c, member, s)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                return None
            raise

    return wait_for(attempt, f"config {s.annotations.name} created on {member}")


def test_three_managers_elect_exactly_one_leader(cluster: LocalCluster) -> None:
    leader = cluster.leader(DEADLINE)
    roles = sorted(wait_for(lambda: cluster.status(i), f"status of {i}").role for i in cluster.members)
    assert roles == ["follower", "follower", "leader"]
    assert {cluster.status(i).leader_id for i in cluster.members} == {leader}


def test_config_created_on_a_follower_is_read_back_from_every_manager(cluster: LocalCluster) -> None:
    follower = follower_of(cluster, cluster.leader(DEADLINE))
    made = create(cluster, follower, spec("app-conf", b"listen 80\n", {"tier": "web"}))
    assert len(made.id) == 25
    assert made.meta.version.index > 0
    for i in cluster.members:
        with cluster.channel(i) as ch:
            got = control_pb2_grpc.ControlStub(ch).GetConfig(control_pb2.GetConfigRequest(config_id=made.id), timeout=DEADLINE).config
        assert got == made, f"manager {i}"


def test_duplicate_config_name_is_already_exists_and_changes_nothing(cluster: LocalCluster) -> None:
    leader = cluster.leader(DEADLINE)
    first = create(cluster, leader, spec("dup", b"one"))
    with pytest.raises(grpc.RpcError) as err:
        create(cluster, follower_of(cluster, leader), spec("dup", b"two"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert err.value.details() == "config dup already exists"
    with cluster.channel(leader) as ch:
        configs = control_pb2_grpc.ControlStub(ch).ListConfigs(control_pb2.ListConfigsRequest(), timeout=DEADLINE).configs
    assert list(configs) == [first]


def test_oversize_config_data_is_invalid_argument(cluster: LocalCluster) -> None:
    leader = cluster.leader(DEADLINE)
    with pytest.raises(grpc.RpcError) as err:
        create(cluster, leader, spec("big", b"x" * (1000 * 1024)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "config data must be larger than 0 and less than 1024000 bytes"
    assert names_on(cluster, leader) == []


def test_invalid_config_name_is_invalid_argument(cluster: LocalCluster) -> None:
    leader = cluster.leader(DEADLINE)
    with pytest.raises(grpc.RpcError) as err:
        create(cluster, leader, spec("-bad name"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("invalid name, only 64 [a-zA-Z0-9-_.] characters allowed")


def test_removed_config_is_gone_everywhere(cluster: LocalCluster) -> None:
    leader = cluster.leader(DEADLINE)
    made = create(cluster, leader, spec("short-lived"))
    with cluster.channel(follower_of(cluster, leader)) as ch:
        stub = control_pb2_grpc.ControlStub(ch)
        stub.RemoveConfig(control_pb2.RemoveConfigRequest(config_id=made.id), timeout=DEADLINE)
        with pytest.raises(grpc.RpcError) as err:
            stub.RemoveConfig(control_pb2.RemoveConfigRequest(config_id=made.id), timeout=DEADLINE)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == f"config {made.id} not found"
    assert [names_on(cluster, i) for i in sorted(cluster.members)] == [[], [], []]


def test_kill_9_of_the_leader_elects_a_new_one_that_kept_every_acknowledged_config(cluster: LocalCluster) -> None:
    old = cluster.leader(DEADLINE)
    acked = [create(cluster, follower_of(cluster, old), spec(f"before-{n}")).spec.annotations.name for n in range(20)]
    cluster.kill(old, signal.SIGKILL)
    new = cluster.leader(DEADLINE)
    assert new != old
    survivor = follower_of(cluster, new)
    create_with_retry(cluster, survivor, spec("after"))
    for i in (new, survivor):
        assert names_on(cluster, i) == sorted([*acked, "after"])


def test_state_survives_a_restart_of_all_managers(cluster: LocalCluster) -> None:
    leader = cluster.leader(DEADLINE)
    made = [create(cluster, leader, spec(f"keep-{n}", bytes([n]) * 100)) for n in range(10)]
    for i in sorted(cluster.members):
        cluster.kill(i, signal.SIGKILL)
    for i in sorted(cluster.members):
        cluster.restart(i)
    cluster.leader(DEADLINE)
    for i in sorted(cluster.members):
        with cluster.channel(i) as ch:
            got = wait_for(
                lambda: control_pb2_grpc.ControlStub(ch).ListConfigs(control_pb2.ListConfigsRequest(), timeout=DEADLINE).configs,
                f"configs on {i}",
            )
        assert sorted(got, key=lambda c: c.spec.annotations.name) == made


def test_garbage_on_the_raft_port_is_refused_and_the_manager_keeps_serving(cluster: LocalCluster) -> None:
    leader = cluster.leader(DEADLINE)
    host, port = cluster.members[leader].addr.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:  # not even HTTP/2
        s.sendall(b"\x16\x03\x01garbage" * 1000)
    with cluster.channel(leader) as ch:
        step = ch.stream_unary("/shoal.v1.Raft/Step", request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as garbage:
            step(iter([b"\xff\xfe not a protobuf"]), timeout=5)
        stranger = raft_pb2.RaftBatch(messages=[raft_pb2.RaftMessage(type=8, to=leader, term=99, **{"from": 9})])
        with pytest.raises(grpc.RpcError) as unknown:
            step(iter([stranger.SerializeToString()]), timeout=5)
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert garbage.value.details().startswith("invalid raft batch:")
    assert unknown.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert unknown.value.details() == "unknown raft member 9"
    assert cluster.status(leader).term < 99  # the stranger's term changed nothing
    create(cluster, leader, spec("still-serving"))
    assert names_on(cluster, follower_of(cluster, leader)) == ["still-serving"]


# ---------------------------------------------------------------------------------- mutual TLS
def test_managers_with_mutual_tls_replicate_and_refuse_clients_without_a_certificate(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    members, client = make_pki(pki, [1, 2, 3])
    c = LocalCluster(tmp_path / "cluster", tick_ms=50, tls=members, client_tls=client)
    try:
        c.start(3)
        leader = c.leader(DEADLINE)
        create(c, follower_of(c, leader), spec("secret-ish"))
        assert [names_on(c, i) for i in sorted(c.members)] == [["secret-ish"]] * 3
        with grpc.secure_channel(
            c.members[leader].addr,
            grpc.ssl_channel_credentials(client.ca.read_bytes()),  # trusts the CA but shows no certificate
            options=[("grpc.ssl_target_name_override", "shoal-manager")],
        ) as ch:
            with pytest.raises(grpc.RpcError) as err:
                control_pb2_grpc.ControlStub(ch).Status(control_pb2.StatusRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(c.members[leader].addr) as ch:
            with pytest.raises(grpc.RpcError) as plain:
                control_pb2_grpc.ControlStub(ch).Status(control_pb2.StatusRequest(), timeout=5)
        assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        c.stop_all()


# ---------------------------------------------------------------------------------- membership (in one process)
async def _start_manager(node_id: int, addrs: dict[int, str], data_dir: Path, join: bool = False):  # type: ignore[no-untyped-def]
    from manager.controlapi import ControlServicer
    from manager.raftnode import ManagerConfig, RaftManager
    from manager.transport import GRPC_OPTIONS

    cfg = ManagerConfig(node_id, addrs[node_id], dict(addrs), data_dir, join=join, tick_s=0.05, storage="memory")
    m = RaftManager(cfg)
    server = grpc.aio.server(options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers((m.servicer.handler(),))
    control_pb2_grpc.add_ControlServicer_to_server(ControlServicer(m), server)
    server.add_insecure_port(cfg.listen)
    await m.start()
    await server.start()
    return m, server


async def _wait(cond: Callable[[], bool], what: str) -> None:
    import asyncio

    deadline = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_members_join_through_a_snapshot_and_a_removal_that_loses_quorum_is_refused(tmp_path: Path) -> None:
    import asyncio

    from tests.support.cluster import free_port
    from manager.raft.core import QuorumLossError

    async def scenario() -> None:
        addrs = {i: f"127.0.0.{i}:{free_port(f'127.0.0.{i}')}" for i in (1, 2, 3)}
        running = {}
        try:
            for i in (1, 2, 3):
                running[i] = await _start_manager(i, addrs, tmp_path / f"m{i}")
            await _wait(lambda: any(m.is_leader for m, _ in running.values()), "a leader")
            leader = next(m for m, _ in running.values() if m.is_leader)
            await leader.propose(lambda tx: tx.create("config", objects_pb2.Config(id="c1", spec=spec("early"))))
            # member 4 starts empty and learns everything (membership included) from the leader's snapshot
            addrs4 = {**addrs, 4: f"127.0.0.4:{free_port('127.0.0.4')}"}
            running[4] = await _start_manager(4, addrs4, tmp_path / "m4", join=True)
            await leader.add_member(4, addrs4[4])
            m4 = running[4][0]
            await _wait(lambda: m4.node is not None and m4.node.voters == [1, 2, 3, 4], "member 4 sees 4 voters")
            got = await m4.read(lambda v: v.get("config", "c1"))
            assert got is not None and got.spec.annotations.name == "early"
            # the address came with the committed membership entry: every member has it, 4 has everyone's
            await _wait(lambda: all(m.info.members == addrs4 for m, _ in running.values()), "every book has 4 members")
            await leader.remove_member(4)
            assert leader.node.voters == [1, 2, 3]
            assert 4 not in leader.info.members and 4 not in leader.transport.peers
            assert leader.member_error(4) == "unknown raft member 4: it was removed from the raft"
            # with one follower stopped, removing the other would leave 2 members, 1 reachable: refused
            stopped, other = [i for i in (1, 2, 3) if i != leader.id]
            for i in (stopped, 4):
                m, server = running.pop(i)
                await server.stop(0)
                await m.stop()
            await _wait(lambda: leader.node.progress[stopped].inactive_ticks >= leader.cfg.election_tick, f"{stopped} inactive")
            with pytest.raises(QuorumLossError, match="this would result in a loss of quorum"):
                await leader.remove_member(other)
            assert leader.node.voters == [1, 2, 3]
            assert leader.is_leader
        finally:
            for m, server in running.values():
                await server.stop(0)
                await m.stop()

    asyncio.run(scenario())


def test_a_leader_asked_to_remove_itself_hands_leadership_over_and_the_new_leader_removes_it(tmp_path: Path) -> None:
    import asyncio

    from manager.raft.core import NotLeader
    from tests.support.cluster import free_port

    async def scenario() -> None:
        addrs = {i: f"127.0.0.{i}:{free_port(f'127.0.0.{i}')}" for i in (1, 2, 3)}
        running = {}
        try:
            for i in (1, 2, 3):
                running[i] = await _start_manager(i, addrs, tmp_path / f"m{i}")
            await _wait(lambda: any(m.is_leader for m, _ in running.values()), "a leader")
            old = next(m for m, _ in running.values() if m.is_leader)
            with pytest.raises(NotLeader) as e:
                await old.remove_member(old.id)
            new = running[e.value.leader_id][0]
            assert e.value.leader_id != old.id and not old.is_leader and old.node.voters == [1, 2, 3]
            await _wait(lambda: new.is_leader, "the named member leads")
            await new.remove_member(old.id)
            assert new.node.voters == sorted(set(addrs) - {old.id})
        finally:
            for m, server in running.values():
                await server.stop(0)
                await m.stop()

    asyncio.run(scenario())

"""--force-new-cluster (issue 8 item 3, etcd's and swarm's recovery from a lost quorum): three `python -m manager run`
processes lose two members; the third, restarted with the flag, keeps its data and takes writes alone; managers join it again."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from proto import control_pb2, control_pb2_grpc, objects_pb2
from tests.support.cluster import LocalCluster, free_port, wait_for

pytestmark = pytest.mark.lab
DEADLINE = 30.0


@pytest.fixture(autouse=True)
def _require_root() -> None:
    """Overrides the lab conftest: these managers only need loopback addresses, not root."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, tick_ms=50)
    try:
        yield c
    finally:
        c.stop_all()



def create(c: LocalCluster, member: int, name: str, timeout: float = DEADLINE) -> None:
    spec = objects_pb2.ConfigSpec(annotations=objects_pb2.Annotations(name=name), data=b"x")
    with c.channel(member) as ch:
        control_pb2_grpc.ControlStub(ch).CreateConfig(control_pb2.CreateConfigRequest(spec=spec), timeout=timeout)


def names_on(c: LocalCluster, member: int) -> list[str]:
    with c.channel(member) as ch:
        resp = control_pb2_grpc.ControlStub(ch).ListConfigs(control_pb2.ListConfigsRequest(), timeout=DEADLINE)
    return sorted(cfg.spec.annotations.name for cfg in resp.configs)


def alone_and_leading(c: LocalCluster, member: int) -> bool:
    st = c.status(member)
    return st is not None and st.role == "leader" and list(st.voters) == [member]


def test_the_survivor_of_a_lost_quorum_forced_into_a_new_cluster_keeps_its_data_and_takes_writes_alone(cluster: LocalCluster) -> None:
    cluster.start(3)
    leader = cluster.leader(DEADLINE)
    create(cluster, leader, "before")
    survivor = next(i for i in (3, 2, 1) if i != leader)
    wait_for(lambda: names_on(cluster, survivor) == ["before"], "the survivor to hold the write")
    for i in (1, 2, 3):
        if i != survivor:
            cluster.kill(i)
    with pytest.raises(grpc.RpcError) as refused:
        create(cluster, survivor, "no-quorum", timeout=3.0)
    assert refused.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    cluster.kill(survivor, signal.SIGTERM)  # a clean stop, as `swarm init --force-new-cluster` does first
    cluster.extra_args.append("--force-new-cluster")
    cluster.spawn(survivor)
    wait_for(lambda: alone_and_leading(cluster, survivor), "the forced member to lead a one-member cluster")
    create(cluster, survivor, "after")
    assert names_on(cluster, survivor) == ["after", "before"]
    # the new cluster is on disk: a plain restart finds it as it was
    cluster.kill(survivor)
    cluster.extra_args.remove("--force-new-cluster")
    cluster.spawn(survivor)
    wait_for(lambda: alone_and_leading(cluster, survivor), "the one-member cluster after a restart")
    create(cluster, survivor, "again")
    assert names_on(cluster, survivor) == ["after", "again", "before"]


def test_force_new_cluster_without_raft_data_is_refused_and_leaves_the_data_dir_as_it_was(cluster: LocalCluster) -> None:
    cluster.extra_args.append("--force-new-cluster")
    cluster.start(1)
    proc = cluster.members[1].proc
    assert proc is not None and proc.wait(timeout=DEADLINE) == 1
    data_dir = cluster.members[1].data_dir
    last = cluster.members[1].log_path.read_text().strip().splitlines()[-1]
    assert last == f"manager 1: cannot force a new cluster: raft store {data_dir / 'raft.db'} holds no raft data of member 1"
    assert not (data_dir / "raft.db").exists()


def test_managers_join_the_forced_cluster_under_new_ids_and_receive_its_data(tmp_path: Path) -> None:
    from manager.raftnode import ManagerConfig, RaftManager
    from manager.transport import GRPC_OPTIONS

    async def start(node_id: int, addrs: dict[int, str], join: bool = False, force: bool = False):  # type: ignore[no-untyped-def]
        cfg = ManagerConfig(node_id, addrs[node_id], dict(addrs), tmp_path / f"m{node_id}", join=join, tick_s=0.05,
                            force_new_cluster=force)
        m = RaftManager(cfg)
        server = grpc.aio.server(options=GRPC_OPTIONS)
        server.add_generic_rpc_handlers((m.servicer.handler(),))
        server.add_insecure_port(cfg.listen)
        await m.start()
        await server.start()
        return m, server

    async def until(cond: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    def config(name: str) -> objects_pb2.Config:
        return objects_pb2.Config(id=f"id-{name}", spec=objects_pb2.ConfigSpec(annotations=objects_pb2.Annotations(name=name), data=b"x"))

    async def scenario() -> None:
        addrs = {i: f"127.0.0.{i}:{free_port(f'127.0.0.{i}')}" for i in (1, 2, 3)}
        running = {i: await start(i, addrs) for i in (1, 2, 3)}
        try:
            await until(lambda: any(m.is_leader for m, _ in running.values()), "a leader")
            leader = next(m for m, _ in running.values() if m.is_leader)
            await leader.propose(lambda tx: tx.create("config", config("before")))
            await until(lambda: all(m.applied == leader.applied for m, _ in running.values()), "every member applied it")
            for m, server in running.values():
                await server.stop(0)
                await m.stop()
            running.clear()
            running[1] = await start(1, addrs, force=True)
            m1 = running[1][0]
            await until(lambda: m1.is_leader, "member 1 to lead alone")
            assert m1.node.voters == [1] and sorted(m1.node.removed) == [2, 3]
            assert sorted(m1.info.members) == [1]  # the removals committed: their addresses are gone
            addrs4 = {**addrs, 4: f"127.0.0.4:{free_port('127.0.0.4')}"}
            running[4] = await start(4, addrs4, join=True)
            await m1.add_member(4, addrs4[4])
            m4 = running[4][0]
            await until(lambda: m4.node is not None and m4.node.voters == [1, 4], "member 4 to join")
            got = await m4.read(lambda v: v.find_by_name("config", "before"))
            assert got is not None
            await m4.propose(lambda tx: tx.create("config", config("after")))  # forwarded to 1, committed by both
            assert (await m1.read(lambda v: v.find_by_name("config", "after"))) is not None
        finally:
            for m, server in running.values():
                await server.stop(0)
                await m.stop()

    asyncio.run(scenario())
